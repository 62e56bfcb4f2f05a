// The meeting's side panels: chat (over the reliable data channel, topic `chat`: sender, time,
// and an unread count on the Chat button while the panel is closed), the participants list
// (everyone, with mute markers) and the camera and microphone choice (enumerateDevices). One
// panel is open at a time; each is a labelled region, its fields labelled; in the chat, Enter
// sends.

import type { FanoutClient } from '../fanout';

/** The data message topic of chat messages. */
export const CHAT_TOPIC = 'chat';

/** A panel shown beside the tiles, opened and closed by its control. */
function panel(id: string, title: string): HTMLElement {
  const aside = document.createElement('aside');
  aside.id = id;
  aside.className = 'panel';
  aside.setAttribute('aria-label', title);
  aside.hidden = true;
  const heading = document.createElement('h2');
  heading.textContent = title;
  aside.append(heading);
  return aside;
}

const clock = (d: Date) => d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

type AddControl = (label: string, key: string, icon: string, run: () => void, toggle?: boolean) => HTMLButtonElement;

/**
 * Builds the chat and participants panels into `container`, with their buttons through
 * `addControl`. `ownName` labels our own messages and list entry.
 */
export function sidePanels(container: HTMLElement, client: FanoutClient, addControl: AddControl, ownName: string): { refreshPeople(): void } {
  const chat = panel('chat', 'Chat');
  const messages = document.createElement('ol');
  messages.className = 'messages';
  messages.setAttribute('aria-live', 'polite');
  const form = document.createElement('form');
  form.className = 'compose';
  const label = document.createElement('label');
  label.htmlFor = 'chat-input';
  label.textContent = 'Message';
  const input = document.createElement('input');
  input.id = 'chat-input';
  input.type = 'text';
  input.autocomplete = 'off';
  input.maxLength = 2000;
  const send = document.createElement('button');
  send.type = 'submit';
  send.textContent = 'Send';
  form.append(label, input, send);
  chat.append(messages, form);

  const people = panel('people', 'Participants');
  const list = document.createElement('ul');
  list.className = 'people';
  people.append(list);

  const devices = panel('devices', 'Devices');
  const choose = (id: string, text: string): HTMLSelectElement => {
    const l = document.createElement('label');
    l.htmlFor = id;
    l.textContent = text;
    const select = document.createElement('select');
    select.id = id;
    devices.append(l, select);
    return select;
  };
  const cameras = choose('camera-device', 'Camera');
  const microphones = choose('microphone-device', 'Microphone');
  const fillDevices = async () => {
    // Not on a page served over plain HTTP from another host (no secure context): no devices.
    const all = (await navigator.mediaDevices?.enumerateDevices()) ?? [];
    for (const [select, kind] of [
      [cameras, 'videoinput'],
      [microphones, 'audioinput'],
    ] as const) {
      const current = select.value;
      select.replaceChildren(
        ...all
          .filter((d) => d.kind === kind)
          .map((d, i) => new Option(d.label || `${kind === 'videoinput' ? 'Camera' : 'Microphone'} ${i + 1}`, d.deviceId)),
      );
      if (current) select.value = current;
    }
  };
  for (const [select, source] of [
    [cameras, 'camera'],
    [microphones, 'microphone'],
  ] as const) {
    select.addEventListener('change', () => {
      client.switchDevice(source, select.value).then(
        () => (devices.dataset.switched = source),
        (err: unknown) => (devices.dataset.problem = err instanceof Error ? err.message : String(err)),
      );
    });
  }
  // `mediaDevices` is undefined outside a secure context (plain HTTP from another host).
  navigator.mediaDevices?.addEventListener('devicechange', () => void fillDevices());
  container.append(chat, people, devices);

  let unread = 0;
  const chatButton = addControl('Chat', 'C', '💬', () => toggle(chat), true);
  const badge = document.createElement('span');
  badge.className = 'unread';
  badge.hidden = true;
  chatButton.append(badge);
  const peopleButton = addControl('Participants', 'P', '👥', () => toggle(people), true);
  const devicesButton = addControl('Devices', 'D', '⚙', () => toggle(devices), true);

  const toggle = (which: HTMLElement) => {
    const open = which.hidden;
    for (const [p, b] of [
      [chat, chatButton],
      [people, peopleButton],
      [devices, devicesButton],
    ] as const) {
      p.hidden = !(open && p === which);
      b.setAttribute('aria-pressed', String(open && p === which));
    }
    container.hidden = !open;
    if (open && which === chat) {
      if (client.roomMode === 'sfu') client.enableData();
      unread = 0;
      badge.hidden = true;
      input.focus();
    }
    if (open && which === people) refreshPeople();
    if (open && which === devices) void fillDevices();
    // The tiles' area changed size: the layout follows (a resize observer sees it).
  };

  const show = (from: string, text: string, at: Date, own: boolean) => {
    const item = document.createElement('li');
    item.toggleAttribute('data-own', own);
    const who = document.createElement('span');
    who.className = 'sender';
    who.textContent = from;
    const time = document.createElement('time');
    time.dateTime = at.toISOString();
    time.textContent = clock(at);
    const body = document.createElement('p');
    body.textContent = text;
    item.append(who, time, body);
    messages.append(item);
    item.scrollIntoView({ block: 'end' });
    if (chat.hidden) {
      unread++;
      badge.hidden = false;
      badge.textContent = String(unread);
      chatButton.title = `Chat (C): ${unread} unread`;
    }
  };

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    try {
      client.sendData(text, { topic: CHAT_TOPIC });
      show(`${ownName} (you)`, text, new Date(), true);
      input.value = '';
    } catch (err) {
      show('Fanout', `Not sent: ${err instanceof Error ? err.message : String(err)}`, new Date(), true);
    }
  });
  client.on('data', (m) => {
    if (m.topic !== CHAT_TOPIC || typeof m.payload !== 'string') return;
    const from = m.participantId === null ? 'Fanout' : (client.participants.get(m.participantId)?.name ?? m.identity);
    show(from, m.payload, new Date(), false);
  });

  const refreshPeople = () => {
    if (people.hidden) return;
    const rows: [string, boolean, boolean][] = [[`${ownName} (you)`, client.isMuted('microphone'), client.isMuted('camera')]];
    for (const p of client.participants.values()) {
      const audio = p.tracks.some((t) => t.kind === 'audio' && t.muted);
      const video = p.tracks.some((t) => t.kind === 'video' && t.source === 'camera' && t.muted);
      rows.push([p.name, audio, video]);
    }
    list.replaceChildren(
      ...rows.map(([name, audio, video]) => {
        const li = document.createElement('li');
        li.textContent = name;
        const marks = [audio ? 'microphone muted' : '', video ? 'camera off' : ''].filter(Boolean).join(', ');
        if (marks) {
          const m = document.createElement('span');
          m.className = 'marks';
          m.setAttribute('role', 'img');
          m.setAttribute('aria-label', marks);
          m.textContent = `${audio ? '🔇' : ''}${video ? '🚫📷' : ''}`;
          li.append(' ', m);
        }
        return li;
      }),
    );
  };
  for (const ev of ['participant_joined', 'participant_left', 'track_published', 'track_unpublished', 'track_muted'] as const) {
    client.on(ev, () => refreshPeople());
  }
  return { refreshPeople };
}

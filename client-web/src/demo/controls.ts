// The meeting's control bar: microphone, camera, screen share and leave (then rejoin). Each is a
// `<button>` with an accessible name that does not change (`aria-label`), `aria-pressed` for the
// toggles, and a one-key shortcut (`aria-keyshortcuts`, also in its tooltip) that works while
// focus is not in a text field. The buttons act through the client library's public API only.

import type { FanoutClient } from '../fanout';

/** What the control bar tells the page. */
export interface ControlHooks {
  /** The camera went off (`true`) or on (captured anew: the preview shows the new track). */
  camera(off: boolean): void;
  /** We left the room (the page clears the call). */
  left(): void;
  /** Something failed (e.g. the camera could not be captured again). */
  problem(text: string): void;
}

interface Control {
  button: HTMLButtonElement;
  /** Runs the control (a click or its shortcut). */
  run(): void;
}

/** A control button: `label` is its accessible name; `toggle` gives it `aria-pressed`. */
function controlButton(label: string, key: string, icon: string, toggle: boolean): HTMLButtonElement {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'control';
  button.setAttribute('aria-label', label);
  button.setAttribute('aria-keyshortcuts', key);
  button.title = `${label} (${key})`;
  if (toggle) button.setAttribute('aria-pressed', 'false');
  const glyph = document.createElement('span');
  glyph.setAttribute('aria-hidden', 'true');
  glyph.textContent = icon;
  const text = document.createElement('span');
  text.className = 'control-text';
  text.textContent = label;
  button.append(glyph, text);
  return button;
}

const setPressed = (b: HTMLButtonElement, on: boolean) => b.setAttribute('aria-pressed', String(on));

/**
 * Builds the control bar into `bar` for `client`, its buttons disabled until `ready(published)`
 * (once joined; `published`: camera and microphone are published, else those two stay
 * disabled). `add` adds more controls (chat, participants).
 */
export function controlBar(
  bar: HTMLElement,
  client: FanoutClient,
  hooks: ControlHooks,
): { ready(published: boolean): void; add(label: string, key: string, icon: string, run: () => void, toggle?: boolean): HTMLButtonElement } {
  const controls = new Map<string, Control>();
  /** Leave stays the last control: later ones go before it. */
  let last: HTMLButtonElement | null = null;
  const add = (label: string, key: string, icon: string, run: () => void, toggle = false): HTMLButtonElement => {
    const button = controlButton(label, key, icon, toggle);
    button.addEventListener('click', run);
    bar.insertBefore(button, last);
    controls.set(key.toLowerCase(), { button, run });
    return button;
  };

  const mic = add('Microphone', 'M', '🎤', () => {
    const on = mic.getAttribute('aria-pressed') !== 'true';
    client.setMicrophoneEnabled(on);
    setPressed(mic, on);
  }, true);
  let cameraBusy = false;
  const camera = add('Camera', 'V', '📷', () => {
    if (cameraBusy) return;
    const on = camera.getAttribute('aria-pressed') !== 'true';
    cameraBusy = true;
    setPressed(camera, on);
    if (!on) hooks.camera(true);
    client.setCameraEnabled(on).then(
      () => {
        cameraBusy = false;
        if (on) hooks.camera(false);
      },
      (err: unknown) => {
        cameraBusy = false;
        setPressed(camera, false);
        hooks.camera(true);
        hooks.problem(`Could not turn the camera on: ${err instanceof Error ? err.message : String(err)}`);
      },
    );
  }, true);
  const share = add('Share screen', 'S', '🖥', () => {
    if (share.getAttribute('aria-pressed') === 'true') {
      client.stopScreenShare();
      setPressed(share, false);
      return;
    }
    // getDisplayMedia needs this click (a user gesture).
    client.publishScreen().then(
      (stream) => {
        setPressed(share, true);
        stream.getVideoTracks()[0]?.addEventListener('ended', () => setPressed(share, false));
      },
      (err: unknown) => {
        if (err instanceof DOMException && err.name === 'NotAllowedError') return; // the user cancelled
        hooks.problem(`Could not share the screen: ${err instanceof Error ? err.message : String(err)}`);
      },
    );
  }, true);
  const leave = add('Leave', 'Q', '📞', () => {
    client.leave();
    for (const c of controls.values()) if (c.button !== rejoin) c.button.disabled = true;
    leave.hidden = true;
    rejoin.hidden = false;
    rejoin.focus();
    hooks.left();
  });
  leave.classList.add('leave');
  // Joining again is a fresh page load: the same room and name, a new session.
  const rejoin = add('Rejoin', 'R', '↩', () => location.reload());
  rejoin.hidden = true;
  last = leave;

  for (const b of [mic, camera, share]) b.disabled = true;

  addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    const target = e.target as HTMLElement | null;
    if (target && (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName))) return;
    const control = controls.get(e.key.toLowerCase());
    if (!control || control.button.disabled || control.button.hidden) return;
    e.preventDefault();
    control.run();
  });

  return {
    ready(published: boolean) {
      share.disabled = false;
      mic.disabled = camera.disabled = !published;
      setPressed(mic, published && !client.isMuted('microphone'));
      setPressed(camera, published && !client.isMuted('camera'));
    },
    add,
  };
}

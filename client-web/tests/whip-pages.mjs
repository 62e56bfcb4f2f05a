// Page functions of a WHIP publisher and a WHEP player written against the browser's own WebRTC
// API (not the client library): what an independent WHIP/WHEP client does. Pass them to
// `page.evaluate` (Playwright or puppeteer); they leave their peer connection in `window.fanout.pc`
// for the shared probes.

/** In the page: publishes camera and microphone to `url` over WHIP; resolves to the session's URL. */
export function whipPublish(url) {
  return (async () => {
    const media = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } });
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    window.fanout = { pc };
    for (const track of media.getTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [media] });
    const pending = [];
    let session = null;
    const patch = async (candidates) => {
      const ufrag = pc.localDescription.sdp.match(/a=ice-ufrag:(\S+)/)[1];
      const pwd = pc.localDescription.sdp.match(/a=ice-pwd:(\S+)/)[1];
      const body =
        `a=ice-ufrag:${ufrag}\r\na=ice-pwd:${pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n` +
        candidates.map((c) => `a=${c.candidate}\r\n`).join('');
      const res = await fetch(session, { method: 'PATCH', headers: { 'Content-Type': 'application/trickle-ice-sdpfrag' }, body });
      window.whipPatches = (window.whipPatches ?? []).concat(res.status);
    };
    pc.onicecandidate = (e) => {
      if (!e.candidate || !e.candidate.candidate) return;
      if (session) patch([e.candidate]);
      else pending.push(e.candidate);
    };
    await pc.setLocalDescription(await pc.createOffer());
    const res = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
    if (res.status !== 201) throw new Error(`POST ${url}: ${res.status} ${await res.text()}`);
    session = new URL(res.headers.get('Location'), url).toString();
    await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
    if (pending.length > 0) await patch(pending);
    window.whipSession = session;
    return session;
  })();
}

/** In the page: plays `url` over WHEP (receives audio and video); resolves to the session's URL. */
export function whepPlay(url) {
  return (async () => {
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    window.fanout = { pc };
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.ontrack = (e) => {
      window.whepStreams = (window.whepStreams ?? []).concat(e.streams.map((s) => s.id));
    };
    await pc.setLocalDescription(await pc.createOffer());
    const res = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
    if (res.status !== 201) throw new Error(`POST ${url}: ${res.status} ${await res.text()}`);
    const session = new URL(res.headers.get('Location'), url).toString();
    await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
    window.whepSession = session;
    return session;
  })();
}

"""A WHIP publisher or WHEP player on aiortc (PyPI), a WebRTC stack independent of the browsers and
of webrtc-rs, for client-web/tests/aiortc.test.mjs.

    python aiortc_client.py whip URL SECONDS    publishes a moving test picture (VP8, 640x360)
                                                and silence (Opus) for SECONDS, then DELETEs
    python aiortc_client.py whep URL SECONDS    plays for SECONDS, then DELETEs

Prints one JSON line when done: {"session": ..., "frames": N, "width": W, "height": H}
(frames decoded by a player; frames sent by a publisher).
"""

import asyncio
import fractions
import json
import sys
import urllib.parse
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
from av import VideoFrame

WIDTH, HEIGHT = 640, 360


class TestPicture(VideoStreamTrack):
    """A 640x360 picture whose colour changes every frame (so every frame differs)."""

    def __init__(self):
        super().__init__()
        self.sent = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(width=WIDTH, height=HEIGHT, format="yuv420p")
        shade = (self.sent * 7) % 256
        for i, plane in enumerate(frame.planes):
            plane.update(bytes([shade if i == 0 else 128]) * plane.buffer_size)
        frame.pts = pts
        frame.time_base = time_base or fractions.Fraction(1, 90000)
        self.sent += 1
        return frame


def http(method, url, body=None):
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/sdp")
    with urllib.request.urlopen(req, timeout=10) as res:
        return res.status, res.headers.get("Location"), res.read().decode()


async def run(mode, url, seconds):
    pc = RTCPeerConnection()
    picture = None
    decoded = {"frames": 0, "width": 0, "height": 0}
    if mode == "whip":
        picture = TestPicture()
        pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        pc.addTransceiver(picture, direction="sendonly")
    else:
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")

        @pc.on("track")
        def on_track(track):
            if track.kind != "video":
                return

            async def count():
                while True:
                    try:
                        frame = await track.recv()
                    except MediaStreamError:  # the track ended (closed)
                        return
                    decoded["frames"] += 1
                    decoded["width"], decoded["height"] = frame.width, frame.height

            asyncio.ensure_future(count())

    # aiortc gathers every candidate before setLocalDescription returns: no trickle needed.
    await pc.setLocalDescription(await pc.createOffer())
    loop = asyncio.get_running_loop()
    status, location, answer = await loop.run_in_executor(
        None, http, "POST", url, pc.localDescription.sdp.encode()
    )
    if status != 201:
        raise SystemExit(f"POST {url}: {status} {answer}")
    session = urllib.parse.urljoin(url, location)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.sleep(seconds)
    status, _, _ = await loop.run_in_executor(None, http, "DELETE", session)
    await pc.close()
    result = {"session": session, "delete": status, "ice": pc.iceConnectionState}
    if picture is not None:
        result.update(frames=picture.sent, width=WIDTH, height=HEIGHT)
    else:
        result.update(decoded)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2], float(sys.argv[3])))

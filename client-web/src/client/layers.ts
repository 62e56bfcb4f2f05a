// Reporting how remote video is shown (`track_settings`): which elements show which remote
// video track, and per track whether any of them is visible and at what size, so that the server
// forwards the smallest simulcast layer that looks sharp and nothing that nobody sees.

import type { TrackSettingsMessage } from '../protocol';

/**
 * How remote video is shown, for the server (`track_settings`): the elements attached with
 * `attachVideo` and the `TrackView` per remote video track that watches them.
 */
export class VideoReports {
  /** Per remote video track id, the elements showing it, observed to report how it is shown. */
  private views = new Map<string, TrackView>();
  /** Elements attached with `attachVideo`, and what they show. */
  private attachments = new Map<HTMLVideoElement, Attachment>();

  constructor(
    private readonly send: (msg: TrackSettingsMessage) => void,
    /** The `TR_` ids of the video tracks received from a participant, in their stream's order. */
    private readonly videoTrackIds: (participantId: string) => string[],
  ) {}

  /** See `FanoutClient.attachVideo`. */
  attachVideo(target: string, element: HTMLVideoElement): () => void {
    this.attachments.get(element)?.detach();
    const attachment: Attachment = {
      target,
      trackId: null,
      stop: null,
      detach: () => {
        if (this.attachments.get(element) !== attachment) return;
        this.attachments.delete(element);
        attachment.stop?.();
      },
    };
    this.attachments.set(element, attachment);
    this.bind(element, attachment);
    return attachment.detach;
  }

  /** See `FanoutClient.observeVideo`. */
  observeVideo(trackId: string, element: HTMLVideoElement): () => void {
    let view = this.views.get(trackId);
    if (!view) {
      view = new TrackView(trackId, (msg) => this.send(msg));
      this.views.set(trackId, view);
    }
    const v = view;
    v.add(element);
    return () => {
      if (v.remove(element) && this.views.get(trackId) === v) this.views.delete(trackId);
    };
  }

  /**
   * Re-binds the elements attached to `participantId` (or to `trackId`): their video may have
   * changed. `resend`: report again even if an element still shows the same track.
   */
  rebind(participantId: string, trackId: string | null = null, resend = true): void {
    for (const [element, attachment] of this.attachments) {
      if (attachment.target === participantId || (trackId !== null && attachment.target === trackId)) {
        this.bind(element, attachment, resend);
      }
    }
  }

  /** Points an attached element's reports at the track it shows now (see `attachVideo`). */
  private bind(element: HTMLVideoElement, attachment: Attachment, resend = true): void {
    const trackId = attachment.target.startsWith('TR_')
      ? attachment.target
      : (this.videoTrackIds(attachment.target)[0] ?? null);
    if (trackId !== null && trackId === attachment.trackId && this.views.has(trackId)) {
      if (resend) this.views.get(trackId)!.refresh(); // re-attached: say it again
      return;
    }
    attachment.stop?.();
    attachment.trackId = trackId;
    attachment.stop = trackId === null ? null : this.observeVideo(trackId, element);
  }

  /** Stops every view and forgets the attachments (the peer connection is gone). */
  clear(): void {
    for (const view of this.views.values()) view.dispose();
    this.views.clear();
    this.attachments.clear();
  }

  /** Stops the view of a track that was unpublished. */
  forget(trackId: string): void {
    this.views.get(trackId)?.dispose();
    this.views.delete(trackId);
  }
}

/** An element attached with `attachVideo`: what it follows and the track it reports for. */
interface Attachment {
  target: string;
  trackId: string | null;
  stop: (() => void) | null;
  detach: () => void;
}

/** How long size reports wait for the size to settle. */
const RESIZE_DEBOUNCE_MS = 100;

/** How a track is shown: visible or not and, if visible, the size in device pixels. */
interface Shown {
  visible: boolean;
  width: number;
  height: number;
}

/**
 * Watches the elements showing one remote video track and reports (`track_settings`) how the
 * track is shown: visible when any element is (on screen per IntersectionObserver, not zero-sized,
 * the tab visible), at the largest width and height among the visible ones. A change of
 * visibility goes out at once, a change of size once it has settled for 100 ms.
 */
class TrackView {
  private elements = new Set<HTMLVideoElement>();
  private intersecting = new WeakMap<Element, boolean>();
  private resizeObserver = new ResizeObserver(() => this.changed());
  private intersectionObserver = new IntersectionObserver((entries) => {
    for (const e of entries) this.intersecting.set(e.target, e.isIntersecting);
    this.changed();
  });
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** What the server was last told; `null` forces the next report. */
  private last: Shown | null = null;
  private disposed = false;
  private onChange = () => this.changed();

  constructor(
    private readonly trackId: string,
    private readonly send: (msg: TrackSettingsMessage) => void,
  ) {
    document.addEventListener('visibilitychange', this.onChange);
  }

  /** Starts watching `element` and reports at once (also when it was watched already). */
  add(element: HTMLVideoElement): void {
    if (this.disposed) return;
    if (!this.elements.has(element)) {
      this.elements.add(element);
      // Until the observer's first callback, judge by the layout.
      this.intersecting.set(element, inViewport(element));
      this.resizeObserver.observe(element);
      this.intersectionObserver.observe(element);
      // The video's own size (object-fit) arrives with the first frame and may change.
      element.addEventListener('loadedmetadata', this.onChange);
      element.addEventListener('resize', this.onChange);
    }
    this.refresh();
  }

  /**
   * Stops watching `element`. Returns true when no element is left: the view then says the
   * track is not shown (if it said otherwise) and is disposed.
   */
  remove(element: HTMLVideoElement): boolean {
    if (this.elements.delete(element)) {
      this.resizeObserver.unobserve(element);
      this.intersectionObserver.unobserve(element);
      element.removeEventListener('loadedmetadata', this.onChange);
      element.removeEventListener('resize', this.onChange);
    }
    if (this.disposed) return true;
    if (this.elements.size > 0) {
      this.changed();
      return false;
    }
    this.report();
    this.dispose();
    return true;
  }

  /** Reports the current state even if unchanged (after a (re)attachment). */
  refresh(): void {
    this.last = null;
    this.report();
  }

  /** Stops everything without a word (the track is gone). */
  dispose(): void {
    this.disposed = true;
    this.resizeObserver.disconnect();
    this.intersectionObserver.disconnect();
    document.removeEventListener('visibilitychange', this.onChange);
    for (const element of this.elements) {
      element.removeEventListener('loadedmetadata', this.onChange);
      element.removeEventListener('resize', this.onChange);
    }
    this.elements.clear();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Something may have changed: visibility changes are reported now, sizes debounced. */
  private changed(): void {
    if (this.disposed) return;
    const now = this.measure();
    if (!this.last || now.visible !== this.last.visible) {
      this.report();
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.report();
    }, RESIZE_DEBOUNCE_MS);
  }

  private measure(): Shown {
    let width = 0;
    let height = 0;
    let visible = false;
    if (document.visibilityState === 'visible') {
      for (const element of this.elements) {
        if (!this.intersecting.get(element)) continue;
        const size = displayedSize(element);
        if (size.width === 0 || size.height === 0) continue;
        visible = true;
        width = Math.max(width, size.width);
        height = Math.max(height, size.height);
      }
    }
    return { visible, width, height };
  }

  private report(): void {
    if (this.disposed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const now = this.measure();
    const last = this.last;
    if (last && last.visible === now.visible && (!now.visible || (last.width === now.width && last.height === now.height))) {
      return;
    }
    this.last = now;
    this.send(
      now.visible
        ? { type: 'track_settings', track_id: this.trackId, visible: true, width: now.width, height: now.height }
        : { type: 'track_settings', track_id: this.trackId, visible: false },
    );
  }
}

/** Whether any of `element`'s box is inside the viewport (before IntersectionObserver says). */
function inViewport(element: Element): boolean {
  const r = element.getBoundingClientRect();
  return r.bottom >= 0 && r.right >= 0 && r.top <= innerHeight && r.left <= innerWidth;
}

/**
 * The size, in device pixels, at which `video` draws its picture: the element's box, scaled as
 * `object-fit` does for the video's aspect ratio (`cover` may draw larger than the box, `none`
 * draws the video's own size). Zero for an element that is not rendered.
 */
function displayedSize(video: HTMLVideoElement): { width: number; height: number } {
  const box = video.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  let w = box.width;
  let h = box.height;
  const vw = video.videoWidth;
  const vh = video.videoHeight;
  if (w > 0 && h > 0 && vw > 0 && vh > 0) {
    const fit = getComputedStyle(video).objectFit;
    const contain = Math.min(w / vw, h / vh);
    const scale =
      fit === 'cover' ? Math.max(w / vw, h / vh)
      : fit === 'none' ? 1
      : fit === 'scale-down' ? Math.min(1, contain)
      : fit === 'fill' ? null
      : contain; // 'contain', the default for <video>
    if (scale !== null) {
      w = vw * scale;
      h = vh * scale;
    }
  }
  return { width: Math.round(w * dpr), height: Math.round(h * dpr) };
}

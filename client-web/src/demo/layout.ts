// The meeting's layout: every tile fits the window without scrolling, each as large as the window
// allows for the tile count. Without a stage, a grid of equal 16:9 tiles (the column count that
// gives the largest tile); with a stage (a pinned tile, else the newest screen share), that tile
// takes the space left by a strip holding the others (below it in a landscape window, beside it
// in a portrait one). Tiles are placed absolutely inside the grid element, recomputed whenever
// its size or its tiles change; a tile's displayed size is what the client reports to the
// server, so the simulcast layer follows the layout.

const ASPECT = 16 / 9;
/** Pixels between tiles and around them. */
const GAP = 8;
/** The strip's share of the stage area's short side. */
const STRIP_SHARE = 0.2;

export interface Rect {
  left: number;
  top: number;
  width: number;
  height: number;
}

/**
 * `count` tiles of `aspect` in a `width` x `height` box: the grid (columns, rows) whose tiles are
 * largest, and their size. Exported for tests.
 */
export function bestGrid(count: number, width: number, height: number, gap = GAP, aspect = ASPECT): { cols: number; rows: number; tileWidth: number; tileHeight: number } {
  let best = { cols: 1, rows: 1, tileWidth: 0, tileHeight: 0 };
  for (let cols = 1; cols <= Math.max(1, count); cols++) {
    const rows = Math.ceil(Math.max(1, count) / cols);
    const w = Math.min((width - gap * (cols + 1)) / cols, ((height - gap * (rows + 1)) / rows) * aspect);
    if (w > best.tileWidth) best = { cols, rows, tileWidth: w, tileHeight: w / aspect };
  }
  best.tileWidth = Math.max(0, Math.floor(best.tileWidth));
  best.tileHeight = Math.max(0, Math.floor(best.tileHeight));
  return best;
}

/** Where each of `count` grid tiles goes in a `width` x `height` box, centred. */
export function gridRects(count: number, width: number, height: number, box: Rect = { left: 0, top: 0, width, height }): Rect[] {
  const { cols, rows, tileWidth, tileHeight } = bestGrid(count, box.width, box.height);
  const usedHeight = rows * tileHeight + (rows - 1) * GAP;
  const top0 = box.top + (box.height - usedHeight) / 2;
  const rects: Rect[] = [];
  for (let i = 0; i < count; i++) {
    const row = Math.floor(i / cols);
    // The last row is centred on its own.
    const inRow = row === rows - 1 ? count - row * cols : cols;
    const rowWidth = inRow * tileWidth + (inRow - 1) * GAP;
    const left0 = box.left + (box.width - rowWidth) / 2;
    rects.push({
      left: Math.round(left0 + (i - row * cols) * (tileWidth + GAP)),
      top: Math.round(top0 + row * (tileHeight + GAP)),
      width: tileWidth,
      height: tileHeight,
    });
  }
  return rects;
}

/** The stage tile's rect and the strip's tiles' rects (`others` of them). */
export function stageRects(others: number, width: number, height: number): { stage: Rect; strip: Rect[] } {
  if (others === 0) return { stage: gridRects(1, width, height)[0]!, strip: [] };
  const landscape = width >= height;
  const stripSize = Math.round((landscape ? height : width) * STRIP_SHARE);
  const stageBox = landscape
    ? { left: 0, top: 0, width, height: height - stripSize }
    : { left: 0, top: 0, width: width - stripSize, height };
  const stripBox = landscape
    ? { left: 0, top: height - stripSize, width, height: stripSize }
    : { left: width - stripSize, top: 0, width: stripSize, height };
  const stage = gridRects(1, width, height, stageBox)[0]!;
  // One row (or column) in the strip, as large as fits.
  const strip = landscape ? rowRects(others, stripBox) : columnRects(others, stripBox);
  return { stage, strip };
}

function rowRects(count: number, box: Rect): Rect[] {
  const w = Math.floor(Math.min((box.width - GAP * (count + 1)) / count, (box.height - 2 * GAP) * ASPECT));
  const h = Math.floor(w / ASPECT);
  const left0 = box.left + (box.width - (count * w + (count - 1) * GAP)) / 2;
  return Array.from({ length: count }, (_, i) => ({ left: Math.round(left0 + i * (w + GAP)), top: Math.round(box.top + (box.height - h) / 2), width: w, height: h }));
}

function columnRects(count: number, box: Rect): Rect[] {
  const h = Math.floor(Math.min((box.height - GAP * (count + 1)) / count, (box.width - 2 * GAP) / ASPECT));
  const w = Math.floor(h * ASPECT);
  const top0 = box.top + (box.height - (count * h + (count - 1) * GAP)) / 2;
  return Array.from({ length: count }, (_, i) => ({ left: Math.round(box.left + (box.width - w) / 2), top: Math.round(top0 + i * (h + GAP)), width: w, height: h }));
}

/**
 * Lays out the `.tile` children of `grid` and keeps them laid out. A tile with `data-pinned`, or
 * else the newest with `data-screen`, is the stage. Tiles hidden with `display: none` take no
 * place; a tile with `data-fixed-size` keeps the size set on it (tests) and is only placed.
 * Returns the function that lays out again (after hiding a tile, say).
 */
export function keepLaidOut(grid: HTMLElement): () => void {
  const place = (tile: HTMLElement, r: Rect) => {
    tile.style.left = `${r.left}px`;
    tile.style.top = `${r.top}px`;
    if (tile.hasAttribute('data-fixed-size')) return;
    tile.style.width = `${r.width}px`;
    tile.style.height = `${r.height}px`;
  };
  const update = () => {
    const tiles = [...grid.querySelectorAll<HTMLElement>(':scope > .tile')].filter((t) => t.style.display !== 'none');
    const { width, height } = grid.getBoundingClientRect();
    const stage = tiles.find((t) => t.hasAttribute('data-pinned')) ?? tiles.filter((t) => t.hasAttribute('data-screen')).pop();
    grid.toggleAttribute('data-stage', stage !== undefined);
    for (const t of tiles) t.toggleAttribute('data-on-stage', t === stage);
    if (stage) {
      const others = tiles.filter((t) => t !== stage);
      const { stage: big, strip } = stageRects(others.length, width, height);
      place(stage, big);
      others.forEach((t, i) => place(t, strip[i]!));
    } else {
      const rects = gridRects(tiles.length, width, height);
      tiles.forEach((t, i) => place(t, rects[i]!));
    }
  };
  const resize = new ResizeObserver(update);
  resize.observe(grid);
  // Tiles come and go, and get pinned; `place` writes only `style`, which is not watched.
  const changes = new MutationObserver(update);
  changes.observe(grid, { childList: true, subtree: true, attributes: true, attributeFilter: ['data-pinned', 'data-screen'] });
  update();
  return update;
}

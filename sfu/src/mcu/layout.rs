//! Where each picture goes in a composite: a pure function from the canvas size and the tiles
//! (cameras and screen shares) to one rectangle per tile.
//!
//! The rules, in order:
//! - no tiles, nothing; one tile fills the canvas (letterboxed to keep its aspect);
//! - a screen share, when there is one, is the main picture and everything else goes to a strip
//!   below it (a screen share beats the active speaker: it is what people are looking at);
//! - among three or more cameras, the active speaker is the main picture and the others go to
//!   the strip (with two, both stay equal: a main picture would only shrink the other);
//! - otherwise, and within the strip, a grid whose columns and rows make the pictures as large as
//!   possible for the area's and the videos' aspect ratios, centred, its last row centred too.
//!
//! The main area is the top [`MAIN_SHARE`] of the canvas, the strip the rest. All rectangles are
//! even (I420 chroma is half size), inside the canvas and disjoint. Decides only: drawing is
//! `canvas.rs`'s.

use super::canvas::Rect;

/// Share of the canvas height given to the main picture when there is one (numerator,
/// denominator): 3/4, leaving a strip of a quarter for the others.
pub const MAIN_SHARE: (u32, u32) = (3, 4);

/// The aspect ratio assumed for a tile whose source size is not known yet.
const DEFAULT_ASPECT: (u32, u32) = (16, 9);

/// What a tile shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TileKind {
    /// A participant's camera.
    Camera,
    /// A screen share.
    Screen,
}

/// One picture to place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile<Id> {
    /// The caller's key (a track, a participant).
    pub id: Id,
    /// Camera or screen share.
    pub kind: TileKind,
    /// Whether this is the active speaker (only the first one marked counts).
    pub active_speaker: bool,
    /// The source picture's size, or any width and height in its ratio; 0 in either means "not
    /// known yet" and is laid out as 16:9.
    pub source: (u32, u32),
}

/// Where one tile goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement<Id> {
    /// The tile's key.
    pub id: Id,
    /// The tile's slot, disjoint from every other slot. Slots are as tight as the pictures: a
    /// slot is larger than its picture only in a grid mixing aspect ratios, whose slots share one
    /// size (the largest picture's width and height).
    pub cell: Rect,
    /// The picture inside the slot, with the source's aspect ratio, centred: what
    /// `Draw::blit_scaled` into `cell` draws (the rest of the cell is letterbox).
    pub picture: Rect,
}

/// Places `tiles` on a `width x height` canvas (odd sizes use the even part), in the order given.
/// A tile is left out only when the canvas is too small to give it a nonzero rectangle.
pub fn layout<Id: Copy>(width: u32, height: u32, tiles: &[Tile<Id>]) -> Vec<Placement<Id>> {
    let canvas = Rect::new(0, 0, width & !1, height & !1);
    if tiles.len() < 2 {
        return grid(canvas, tiles.iter());
    }
    let cameras = tiles.iter().filter(|t| t.kind == TileKind::Camera).count();
    let main = tiles
        .iter()
        .position(|t| t.kind == TileKind::Screen)
        .or_else(|| {
            let speaker = tiles
                .iter()
                .position(|t| t.kind == TileKind::Camera && t.active_speaker);
            speaker.filter(|_| cameras >= 3)
        });
    let Some(main) = main else {
        return grid(canvas, tiles.iter());
    };
    let main_h = (u64::from(canvas.h) * u64::from(MAIN_SHARE.0) / u64::from(MAIN_SHARE.1)) as u32;
    let main_area = Rect::new(0, 0, canvas.w, main_h & !1);
    let strip = Rect::new(0, main_area.h, canvas.w, canvas.h - main_area.h);
    let others = tiles
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != main)
        .map(|(_, t)| t);
    let mut placements = grid(strip, others);
    let picture = fit(main_area, tiles[main].source);
    if !is_empty(picture) {
        let placement = Placement {
            id: tiles[main].id,
            cell: picture,
            picture,
        };
        placements.insert(main.min(placements.len()), placement);
    }
    placements
}

/// The best grid for `tiles` in `area`: every column count is tried and the one giving the
/// largest total picture area wins (ties go to more columns, side by side), then cells shrink
/// to the pictures and the grid is centred.
fn grid<'a, Id: Copy + 'a>(
    area: Rect,
    tiles: impl Iterator<Item = &'a Tile<Id>> + Clone,
) -> Vec<Placement<Id>> {
    let n = tiles.clone().count() as u32;
    let mut best: Option<(u64, u32, u32, u32)> = None;
    for cols in 1..=n {
        let rows = n.div_ceil(cols);
        let cell = Rect::new(0, 0, (area.w / cols) & !1, (area.h / rows) & !1);
        if is_empty(cell) {
            continue;
        }
        let score: u64 = tiles.clone().map(|t| pixels(fit(cell, t.source))).sum();
        // Tile size: the largest picture in either direction, so the grid is tight.
        let (w, h) = tiles.clone().fold((0, 0), |(w, h), t| {
            let p = fit(cell, t.source);
            (p.w.max(w), p.h.max(h))
        });
        if best.is_none_or(|(top, ..)| score >= top) && w > 0 && h > 0 {
            best = Some((score, cols, w, h));
        }
    }
    let Some((_, cols, w, h)) = best else {
        return Vec::new();
    };
    let rows = n.div_ceil(cols);
    let x0 = area.x + (((area.w - cols * w) / 2) & !1);
    let y0 = area.y + (((area.h - rows * h) / 2) & !1);
    let last_row = n - (rows - 1) * cols;
    tiles
        .enumerate()
        .map(|(i, tile)| {
            let (row, col) = (i as u32 / cols, i as u32 % cols);
            let indent = if row == rows - 1 {
                ((cols - last_row) * w / 2) & !1
            } else {
                0
            };
            let cell = Rect::new(x0 + indent + col * w, y0 + row * h, w, h);
            Placement {
                id: tile.id,
                cell,
                picture: fit(cell, tile.source),
            }
        })
        .collect()
}

/// The largest even rectangle with `source`'s aspect ratio centred in `cell` (at least 2x2 when
/// the cell is, so a very thin source still shows).
fn fit(cell: Rect, source: (u32, u32)) -> Rect {
    let (sw, sh) = match source {
        (0, _) | (_, 0) => DEFAULT_ASPECT,
        size => size,
    };
    let (sw, sh, cw, ch) = (
        u64::from(sw),
        u64::from(sh),
        u64::from(cell.w),
        u64::from(cell.h),
    );
    let (w, h) = if sw * ch >= sh * cw {
        (cw, cw * sh / sw)
    } else {
        (ch * sw / sh, ch)
    };
    let floor = |v: u64, max: u64| (v & !1).max(2.min(max & !1)) as u32;
    let (w, h) = (floor(w, cw), floor(h, ch));
    Rect::new(
        cell.x + (((cell.w - w) / 2) & !1),
        cell.y + (((cell.h - h) / 2) & !1),
        w,
        h,
    )
}

fn pixels(rect: Rect) -> u64 {
    u64::from(rect.w) * u64::from(rect.h)
}

fn is_empty(rect: Rect) -> bool {
    rect.w == 0 || rect.h == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(id: u32) -> Tile<u32> {
        Tile {
            id,
            kind: TileKind::Camera,
            active_speaker: false,
            source: (1280, 720),
        }
    }

    fn cameras(n: u32) -> Vec<Tile<u32>> {
        (0..n).map(camera).collect()
    }

    fn speaking(mut tile: Tile<u32>) -> Tile<u32> {
        tile.active_speaker = true;
        tile
    }

    fn screen(id: u32) -> Tile<u32> {
        Tile {
            kind: TileKind::Screen,
            source: (1920, 1080),
            ..camera(id)
        }
    }

    fn cells(placements: &[Placement<u32>]) -> Vec<Rect> {
        placements.iter().map(|p| p.cell).collect()
    }

    #[test]
    fn no_tiles_no_rectangles() {
        assert!(layout::<u32>(1280, 720, &[]).is_empty());
    }

    #[test]
    fn one_tile_fills_the_canvas_letterboxed() {
        let full = Rect::new(0, 0, 640, 360);
        let placed = layout(640, 360, &[camera(7)]);
        assert_eq!(
            placed,
            [Placement {
                id: 7,
                cell: full,
                picture: full
            }]
        );
        let four_three = Tile {
            source: (640, 480),
            ..camera(7)
        };
        let placed = layout(640, 360, &[four_three]);
        assert_eq!(placed[0].picture, Rect::new(80, 0, 480, 360));
        assert_eq!(placed[0].cell, placed[0].picture);
    }

    #[test]
    fn cameras_make_the_grid_with_the_largest_pictures() {
        // Two side by side (the tie with stacking goes to columns), vertically centred.
        let two = cells(&layout(1280, 720, &cameras(2)));
        assert_eq!(
            two,
            [Rect::new(0, 180, 640, 360), Rect::new(640, 180, 640, 360)]
        );
        // Three: 2x2 with the last row centred, not three thin columns.
        let three = cells(&layout(1280, 720, &cameras(3)));
        assert_eq!(three[2], Rect::new(320, 360, 640, 360));
        // Four 4:3 cameras on a 4:3 canvas: 2x2 exactly.
        let four_three: Vec<_> = (0..4)
            .map(|i| Tile {
                source: (4, 3),
                ..camera(i)
            })
            .collect();
        let four = layout(480, 360, &four_three);
        assert_eq!(four[3].cell, Rect::new(240, 180, 240, 180));
        assert!(four.iter().all(|p| p.cell == p.picture));
        // Two 16:9 cameras on a 4:3 canvas stack: 320x180 each beats 240x134.
        let stacked = cells(&layout(480, 360, &cameras(2)));
        assert_eq!(
            stacked,
            [Rect::new(80, 0, 320, 180), Rect::new(80, 180, 320, 180)]
        );
    }

    #[test]
    fn active_speaker_among_three_or_more_gets_the_main_area() {
        let mut tiles = cameras(4);
        tiles[2] = speaking(tiles[2]);
        let placed = layout(1280, 720, &tiles);
        assert_eq!(
            placed.iter().map(|p| p.id).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(placed[2].picture, Rect::new(160, 0, 960, 540));
        assert_eq!(placed[2].cell, placed[2].picture);
        for other in [0, 1, 3] {
            assert!(placed[other].cell.y >= 540, "{:?}", placed[other]);
            assert!(placed[other].picture.w < 960 / 2);
        }
        // With two cameras the speaker changes nothing.
        let pair = [speaking(camera(0)), camera(1)];
        assert_eq!(layout(1280, 720, &pair), layout(1280, 720, &cameras(2)));
    }

    #[test]
    fn screen_share_beats_the_speaker() {
        let tiles = [speaking(camera(0)), camera(1), screen(9), camera(2)];
        let placed = layout(1280, 720, &tiles);
        let main = placed.iter().find(|p| p.id == 9).unwrap();
        assert_eq!(main.cell, Rect::new(160, 0, 960, 540));
        for camera in placed.iter().filter(|p| p.id != 9) {
            assert!(camera.cell.y >= 540, "{camera:?}");
        }
        // A screen share alone, or with one camera, is still the main picture.
        assert_eq!(
            layout(1280, 720, &[screen(9)])[0].picture,
            Rect::new(0, 0, 1280, 720)
        );
        let with_one = layout(1280, 720, &[camera(0), screen(9)]);
        assert_eq!(with_one[1].cell, Rect::new(160, 0, 960, 540));
        assert!(with_one[0].cell.y >= 540);
    }

    #[test]
    fn too_small_a_canvas_places_nothing_rather_than_empty_rects() {
        assert!(layout(1, 1, &cameras(3)).is_empty());
        assert!(layout(0, 720, &cameras(1)).is_empty());
    }

    fn check(width: u32, height: u32, tiles: &[Tile<u32>]) {
        let canvas = Rect::new(0, 0, width, height);
        let placed = layout(width, height, tiles);
        let what = format!("{} tiles on {width}x{height}", tiles.len());
        assert_eq!(placed.len(), tiles.len(), "{what}");
        for (p, t) in placed.iter().zip(tiles) {
            assert_eq!(p.id, t.id, "{what}: order");
            for r in [p.cell, p.picture] {
                assert!(r.w > 0 && r.h > 0, "{what}: empty {r:?}");
                assert!(
                    [r.x, r.y, r.w, r.h].iter().all(|v| v % 2 == 0),
                    "{what}: odd {r:?}"
                );
                assert!(canvas.contains(&r), "{what}: {r:?} outside");
            }
            assert!(p.cell.contains(&p.picture), "{what}: {p:?}");
        }
        for (i, a) in placed.iter().enumerate() {
            for b in &placed[i + 1..] {
                assert!(!a.cell.overlaps(&b.cell), "{what}: {a:?} overlaps {b:?}");
            }
        }
    }

    #[test]
    fn every_layout_is_even_inside_disjoint_and_nonzero() {
        for (width, height) in [(320, 180), (640, 360), (1280, 720), (480, 360), (360, 640)] {
            for n in 1..=16 {
                let plain = cameras(n);
                check(width, height, &plain);
                let mut mixed = plain.clone();
                for (i, tile) in mixed.iter_mut().enumerate() {
                    tile.source = if i % 2 == 0 { (640, 480) } else { (1280, 720) };
                }
                mixed[n as usize / 2].active_speaker = true;
                check(width, height, &mixed);
                let mut shared = mixed.clone();
                shared[n as usize - 1] = screen(n - 1);
                check(width, height, &shared);
            }
        }
    }
}

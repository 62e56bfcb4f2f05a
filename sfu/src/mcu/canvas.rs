//! I420 pictures for the composite, and scaling one picture into a rectangle of another.
//!
//! Owns the pixel work of compositing on `fanout-codecs`' [`I420`] (the decoder's output and the
//! encoder's input, so a picture never changes type on its way): [`Rect`], [`canvas`], and
//! [`Draw::blit_scaled`]. Where each rectangle goes is `layout.rs`'s business, not this file's.
//! Pure: no IO, no clock, no allocation per call.
//!
//! Black is video-range black (Y 16, U 128, V 128), what a browser shows as black for VP8.

use codecs::I420;

/// A rectangle in pixels. Rectangles from `layout.rs` have even coordinates and sizes (I420
/// chroma is half size); [`Draw::blit_scaled`] accepts any and clips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
}

impl Rect {
    /// A rectangle at `(x, y)` of `w x h`.
    pub const fn new(x: u32, y: u32, w: u32, h: u32) -> Self {
        Self { x, y, w, h }
    }

    /// Whether the two share any pixel.
    pub fn overlaps(&self, other: &Rect) -> bool {
        let (a, b) = (self.edges(), other.edges());
        a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
    }

    /// Whether `inner` lies entirely within `self`.
    pub fn contains(&self, inner: &Rect) -> bool {
        let (a, b) = (self.edges(), inner.edges());
        a.0 <= b.0 && a.1 <= b.1 && b.2 <= a.2 && b.3 <= a.3
    }

    /// Left, top, right, bottom, in u64 so a rectangle near `u32::MAX` cannot overflow.
    fn edges(&self) -> (u64, u64, u64, u64) {
        let (x, y) = (u64::from(self.x), u64::from(self.y));
        (x, y, x + u64::from(self.w), y + u64::from(self.h))
    }
}

/// A black picture to draw on (video-range black, [`I420::BLACK`]); odd sizes are rounded up
/// to even, so chroma lines up with every even rectangle.
pub fn canvas(width: u32, height: u32) -> I420 {
    I420::new(
        width.saturating_add(width & 1),
        height.saturating_add(height & 1),
    )
}

/// Drawing on an [`I420`]: what the composite does to its canvas.
pub trait Draw {
    /// Sets the pixels of `rect` (clipped to the picture, shrunk to even edges) to one colour.
    fn fill_rect(&mut self, rect: Rect, colour: (u8, u8, u8));

    /// Scales `src` into `rect` keeping its aspect ratio: the picture is centred in the rect and
    /// the bars beside or above it (letterbox) are filled black, so a previous, differently
    /// shaped picture does not show through. Bilinear, in 16.16 fixed point.
    ///
    /// The rect is shrunk to even edges (so chroma lines up) and whatever falls outside `self`
    /// is clipped; pixels outside the rect never change. An empty or inconsistent source
    /// (planes of the wrong length) draws nothing; nothing here panics.
    fn blit_scaled(&mut self, src: &I420, rect: Rect);
}

impl Draw for I420 {
    fn fill_rect(&mut self, rect: Rect, (y, u, v): (u8, u8, u8)) {
        let Some(area) = even_area(self, rect) else {
            return;
        };
        let (width, cw) = (self.width as usize, half(self.width));
        fill_plane(&mut self.y, width, area, y);
        let chroma = area.map(|c| c / 2);
        fill_plane(&mut self.u, cw, chroma, u);
        fill_plane(&mut self.v, cw, chroma, v);
    }

    fn blit_scaled(&mut self, src: &I420, rect: Rect) {
        if self.check().is_err() || src.check().is_err() || src.width == 0 || src.height == 0 {
            return;
        }
        let Some(clip) = even_area(self, rect) else {
            return;
        };
        let outer = even_rect(rect);
        let fit = fit_inside(outer, src.width, src.height);
        self.fill_rect(rect, I420::BLACK);
        let (width, cw) = (self.width as usize, half(self.width));
        let luma = (&src.y[..], src.width as usize, src.height as usize);
        scale_plane(luma, &mut self.y, width, fit, clip);
        let (scw, sch) = (half(src.width), half(src.height));
        let (cfit, cclip) = (fit.map(|c| c / 2), clip.map(|c| c / 2));
        scale_plane((&src.u, scw, sch), &mut self.u, cw, cfit, cclip);
        scale_plane((&src.v, scw, sch), &mut self.v, cw, cfit, cclip);
    }
}

/// `rect` with even edges, intersected with `picture`'s even area; `None` when empty.
fn even_area(picture: &I420, rect: Rect) -> Option<Area> {
    let r = even_rect(rect);
    let (w, h) = (
        i64::from(picture.width & !1),
        i64::from(picture.height & !1),
    );
    let area = Area::new(r.x0.max(0), r.y0.max(0), r.x1.min(w), r.y1.min(h));
    (area.x0 < area.x1 && area.y0 < area.y1).then_some(area)
}

/// A half-open pixel range `[x0, x1) x [y0, y1)`, in i64 so no edge arithmetic can overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Area {
    x0: i64,
    y0: i64,
    x1: i64,
    y1: i64,
}

impl Area {
    const fn new(x0: i64, y0: i64, x1: i64, y1: i64) -> Self {
        Self { x0, y0, x1, y1 }
    }

    fn map(self, f: impl Fn(i64) -> i64) -> Self {
        Self::new(f(self.x0), f(self.y0), f(self.x1), f(self.y1))
    }
}

/// A source plane: samples, width, height.
type Plane<'a> = (&'a [u8], usize, usize);

fn half(luma: u32) -> usize {
    luma.div_ceil(2) as usize
}

/// `rect` shrunk inwards to even edges (left and top rounded up, right and bottom down).
fn even_rect(rect: Rect) -> Area {
    let (x, y) = (i64::from(rect.x), i64::from(rect.y));
    let (x0, y0) = ((x + 1) & !1, (y + 1) & !1);
    let x1 = ((x + i64::from(rect.w)) & !1).max(x0);
    let y1 = ((y + i64::from(rect.h)) & !1).max(y0);
    Area::new(x0, y0, x1, y1)
}

/// The largest even-sized area of `src_w : src_h` centred in `outer` (even edges).
fn fit_inside(outer: Area, src_w: u32, src_h: u32) -> Area {
    let (ow, oh) = (outer.x1 - outer.x0, outer.y1 - outer.y0);
    // In i128: a 2^33-pixel rect times a 2^32-pixel source overflows i64.
    let (sw, sh) = (i128::from(src_w), i128::from(src_h));
    let (w, h) = if sw * i128::from(oh) >= sh * i128::from(ow) {
        (ow, (i128::from(ow) * sh / sw) as i64)
    } else {
        ((i128::from(oh) * sw / sh) as i64, oh)
    };
    let (w, h) = (w & !1, h & !1);
    let x0 = outer.x0 + (((ow - w) / 2) & !1);
    let y0 = outer.y0 + (((oh - h) / 2) & !1);
    Area::new(x0, y0, x0 + w, y0 + h)
}

fn fill_plane(plane: &mut [u8], stride: usize, area: Area, value: u8) {
    for row in area.y0..area.y1 {
        let start = row as usize * stride;
        if let Some(line) = plane.get_mut(start + area.x0 as usize..start + area.x1 as usize) {
            line.fill(value);
        }
    }
}

/// Bilinear scale of `src` onto the full-size area `fit` of `dst`, writing only the pixels of
/// `fit` that are inside `clip`. Positions step in 16.16 fixed point, weights are 8 bits.
fn scale_plane(
    (data, src_w, src_h): Plane<'_>,
    dst: &mut [u8],
    stride: usize,
    fit: Area,
    clip: Area,
) {
    let (fw, fh) = (fit.x1 - fit.x0, fit.y1 - fit.y0);
    let (x0, x1) = (fit.x0.max(clip.x0), fit.x1.min(clip.x1));
    let (y0, y1) = (fit.y0.max(clip.y0), fit.y1.min(clip.y1));
    if fw <= 0 || fh <= 0 || x0 >= x1 || y0 >= y1 || src_w == 0 || src_h == 0 {
        return;
    }
    let (sw, sh) = (src_w as i64, src_h as i64);
    // Pixel centres map to pixel centres: s = (d + 0.5) * sw / fw - 0.5.
    let x_step = (sw << 16) / fw;
    let y_step = (sh << 16) / fh;
    let x_start = (x0 - fit.x0) * x_step + x_step / 2 - (1 << 15);
    let (max_x, max_y) = ((sw - 1) << 16, (sh - 1) << 16);
    for (i, row) in (y0..y1).enumerate() {
        let sy = ((row - fit.y0) * y_step + y_step / 2 - (1 << 15)).clamp(0, max_y);
        let (top, fy) = ((sy >> 16) as usize, ((sy >> 8) & 0xff) as u32);
        let bottom = (top + 1).min(src_h - 1);
        let top_line = &data[top * src_w..(top + 1) * src_w];
        let bottom_line = &data[bottom * src_w..(bottom + 1) * src_w];
        let start = (y0 as usize + i) * stride;
        let Some(out) = dst.get_mut(start + x0 as usize..start + x1 as usize) else {
            return;
        };
        let mut sx = x_start;
        for pixel in out {
            let p = sx.clamp(0, max_x);
            let (left, fx) = ((p >> 16) as usize, ((p >> 8) & 0xff) as u32);
            let right = (left + 1).min(src_w - 1);
            let upper = u32::from(top_line[left]) * (256 - fx) + u32::from(top_line[right]) * fx;
            let lower =
                u32::from(bottom_line[left]) * (256 - fx) + u32::from(bottom_line[right]) * fx;
            *pixel = ((upper * (256 - fy) + lower * fy + (1 << 15)) >> 16) as u8;
            sx += x_step;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RED: (u8, u8, u8) = (81, 90, 240);
    const BLUE: (u8, u8, u8) = (41, 240, 110);
    const GREY: (u8, u8, u8) = (50, 60, 70);

    fn solid(width: u32, height: u32, (y, u, v): (u8, u8, u8)) -> I420 {
        let mut p = I420::new(width, height);
        p.fill(y, u, v);
        p
    }

    fn halves(width: u32, height: u32) -> I420 {
        let mut p = solid(width, height, RED);
        let blue = Rect::new(width / 2, 0, width / 2, height);
        p.fill_rect(blue, BLUE);
        p
    }

    fn luma(p: &I420, x: u32, y: u32) -> u8 {
        p.y[(y * p.width + x) as usize]
    }

    fn chroma(p: &I420, x: u32, y: u32) -> (u8, u8) {
        let i = (y / 2) as usize * half(p.width) + (x / 2) as usize;
        (p.u[i], p.v[i])
    }

    /// Asserts every pixel outside `rect` still has `GREY`.
    fn assert_outside_untouched(p: &I420, rect: Rect) {
        for y in 0..p.height {
            for x in 0..p.width {
                if !rect.contains(&Rect::new(x, y, 1, 1)) {
                    assert_eq!(luma(p, x, y), GREY.0, "luma changed at ({x}, {y})");
                    assert_eq!(chroma(p, x, y), (GREY.1, GREY.2), "chroma at ({x}, {y})");
                }
            }
        }
    }

    #[test]
    fn solid_source_fills_the_rect_and_nothing_else() {
        let mut canvas = solid(320, 180, GREY);
        let rect = Rect::new(40, 20, 160, 90);
        canvas.blit_scaled(&solid(64, 36, RED), rect);
        for y in rect.y..rect.y + rect.h {
            for x in rect.x..rect.x + rect.w {
                assert_eq!(luma(&canvas, x, y), RED.0, "({x}, {y})");
                assert_eq!(chroma(&canvas, x, y), (RED.1, RED.2), "({x}, {y})");
            }
        }
        assert_outside_untouched(&canvas, rect);
    }

    #[test]
    fn other_aspect_is_letterboxed_black_inside_the_rect() {
        let mut canvas = solid(320, 180, GREY);
        let rect = Rect::new(0, 0, 160, 90);
        // 4:3 into 16:9: a 120x90 picture centred, black bars of 20 on each side.
        canvas.blit_scaled(&solid(40, 30, RED), rect);
        assert_eq!(luma(&canvas, 10, 45), I420::BLACK.0);
        assert_eq!(luma(&canvas, 150, 45), I420::BLACK.0);
        assert_eq!(luma(&canvas, 20, 0), RED.0);
        assert_eq!(luma(&canvas, 139, 89), RED.0);
        assert_eq!(luma(&canvas, 19, 45), I420::BLACK.0);
        assert_eq!(luma(&canvas, 140, 45), I420::BLACK.0);
        assert_outside_untouched(&canvas, rect);
    }

    #[test]
    fn two_colours_keep_their_order_scaled_down_and_up() {
        let src = halves(64, 36);
        for rect in [Rect::new(0, 0, 32, 18), Rect::new(0, 0, 320, 180)] {
            let mut canvas = canvas(320, 180);
            canvas.blit_scaled(&src, rect);
            let middle = rect.h / 2;
            // Away from the columns where bilinear blends the two.
            assert_eq!(luma(&canvas, 1, middle), RED.0, "{rect:?}");
            assert_eq!(luma(&canvas, rect.w / 2 - 4, middle), RED.0, "{rect:?}");
            assert_eq!(luma(&canvas, rect.w / 2 + 4, middle), BLUE.0, "{rect:?}");
            assert_eq!(luma(&canvas, rect.w - 1, middle), BLUE.0, "{rect:?}");
            assert_eq!(chroma(&canvas, 0, 0), (RED.1, RED.2), "{rect:?}");
            assert_eq!(chroma(&canvas, rect.w - 1, 0), (BLUE.1, BLUE.2), "{rect:?}");
            let edge = luma(&canvas, rect.w / 2, middle);
            assert!((BLUE.0..=RED.0).contains(&edge), "{rect:?}: {edge}");
        }
    }

    #[test]
    fn odd_and_out_of_bounds_rects_are_clipped() {
        let src = halves(64, 36);
        let max = u32::MAX;
        let odd = [
            (301, 171, 101, 77),
            (3, 5, 101, 77),
            (1, 1, 1, 1),
            (319, 0, 1, 180),
        ];
        let outside = [
            (400, 400, 50, 50),
            (0, 0, 0, 0),
            (max - 1, max - 1, max, max),
        ];
        let huge = [(0, 0, max, max)];
        for (x, y, w, h) in odd.into_iter().chain(outside).chain(huge) {
            let rect = Rect::new(x, y, w, h);
            let mut canvas = solid(320, 180, GREY);
            canvas.blit_scaled(&src, rect);
            assert_outside_untouched(&canvas, rect);
        }
        // Half of the picture off the right edge: the left (red) half is what shows.
        let mut canvas = solid(320, 180, GREY);
        canvas.blit_scaled(&src, Rect::new(160, 0, 320, 180));
        assert_eq!(luma(&canvas, 162, 90), RED.0);
        assert_eq!(luma(&canvas, 300, 90), RED.0);
        assert_eq!(luma(&canvas, 158, 90), GREY.0);
    }

    #[test]
    fn bad_pictures_draw_nothing() {
        let mut canvas = solid(320, 180, GREY);
        let before = canvas.clone();
        let mut broken = solid(64, 36, RED);
        broken.u.pop();
        canvas.blit_scaled(&broken, Rect::new(0, 0, 320, 180));
        canvas.blit_scaled(&I420::new(0, 0), Rect::new(0, 0, 320, 180));
        assert_eq!(canvas, before);
        // An odd-sized but consistent source (a decoded frame) is fine.
        let odd = I420 {
            width: 3,
            height: 3,
            y: vec![RED.0; 9],
            u: vec![RED.1; 4],
            v: vec![RED.2; 4],
        };
        canvas.blit_scaled(&odd, Rect::new(0, 0, 90, 90));
        assert_eq!(luma(&canvas, 45, 45), RED.0);
    }

    #[test]
    fn canvas_rounds_up_to_even_and_is_black_and_rects_compare() {
        let p = canvas(5, 3);
        assert_eq!((p.width, p.height, p.y.len(), p.u.len()), (6, 4, 24, 6));
        assert!(p.y.iter().all(|&s| s == 16) && p.v.iter().all(|&s| s == 128));
        let a = Rect::new(0, 0, 10, 10);
        assert!(a.overlaps(&Rect::new(9, 9, 2, 2)));
        assert!(!a.overlaps(&Rect::new(10, 0, 2, 2)));
        assert!(a.contains(&Rect::new(2, 2, 8, 8)));
        assert!(!a.contains(&Rect::new(2, 2, 9, 8)));
    }
}

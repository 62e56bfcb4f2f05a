//! The I420 picture: what the VP8 decoder produces and the encoder takes.
//!
//! Planes are tightly packed (no stride padding): Y is `width x height`, U and V are
//! `(width + 1) / 2 x (height + 1) / 2`. libvpx's own images are strided; `vp8.rs` copies rows in
//! and out, so nothing outside this crate ever sees a libvpx buffer.

use crate::{Error, Result};

/// An 8-bit 4:2:0 picture with tightly packed planes (stride = width for Y, `(width + 1) / 2` for
/// U and V).
#[derive(Clone, PartialEq, Eq)]
pub struct I420 {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Luma, `width * height` bytes, row after row.
    pub y: Vec<u8>,
    /// Blue-difference chroma, `chroma_width() * chroma_height()` bytes.
    pub u: Vec<u8>,
    /// Red-difference chroma, `chroma_width() * chroma_height()` bytes.
    pub v: Vec<u8>,
}

impl I420 {
    /// Video-range (BT.601 "studio swing") black: what a browser shows as black for VP8, whose
    /// decoders assume limited range. Full-range black would be Y 0.
    pub const BLACK: (u8, u8, u8) = (16, 128, 128);

    /// A `width x height` picture filled with [`I420::BLACK`] (Y 16, U 128, V 128).
    pub fn new(width: u32, height: u32) -> Self {
        let (y, u, v) = Self::BLACK;
        let luma = width as usize * height as usize;
        let chroma = chroma_len(width) * chroma_len(height);
        Self {
            width,
            height,
            y: vec![y; luma],
            u: vec![u; chroma],
            v: vec![v; chroma],
        }
    }

    /// Sets every pixel to one colour.
    pub fn fill(&mut self, y: u8, u: u8, v: u8) {
        self.y.fill(y);
        self.u.fill(u);
        self.v.fill(v);
    }

    /// Width of the U and V planes: `(width + 1) / 2`.
    pub fn chroma_width(&self) -> u32 {
        self.width.div_ceil(2)
    }

    /// Height of the U and V planes: `(height + 1) / 2`.
    pub fn chroma_height(&self) -> u32 {
        self.height.div_ceil(2)
    }

    /// Checks that the planes' lengths match the size (the fields are public, so a caller can
    /// build an inconsistent picture; the encoder refuses one rather than read out of bounds).
    pub fn check(&self) -> Result<()> {
        let luma = self.width as usize * self.height as usize;
        let chroma = chroma_len(self.width) * chroma_len(self.height);
        if self.y.len() != luma || self.u.len() != chroma || self.v.len() != chroma {
            return Err(Error::InvalidArgument(format!(
                "{}x{} picture needs planes of {luma}/{chroma}/{chroma} bytes, has {}/{}/{}",
                self.width,
                self.height,
                self.y.len(),
                self.u.len(),
                self.v.len()
            )));
        }
        Ok(())
    }
}

impl std::fmt::Debug for I420 {
    // The planes are large and say nothing to a reader of a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "I420({}x{})", self.width, self.height)
    }
}

fn chroma_len(luma: u32) -> usize {
    luma.div_ceil(2) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_is_video_range_black_with_rounded_up_chroma() {
        let p = I420::new(5, 3);
        assert_eq!((p.y.len(), p.u.len(), p.v.len()), (15, 6, 6));
        assert!(p.y.iter().all(|&s| s == 16));
        assert!(p.u.iter().chain(&p.v).all(|&s| s == 128));
        assert!(p.check().is_ok());
    }

    #[test]
    fn fill_sets_every_plane_and_check_catches_bad_planes() {
        let mut p = I420::new(4, 4);
        p.fill(81, 90, 240);
        assert!(p.y.iter().all(|&s| s == 81));
        assert!(p.u.iter().all(|&s| s == 90));
        assert!(p.v.iter().all(|&s| s == 240));
        p.v.pop();
        assert!(matches!(p.check(), Err(Error::InvalidArgument(_))));
    }
}

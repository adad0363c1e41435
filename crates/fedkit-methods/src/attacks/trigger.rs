//! Pixel triggers for backdoor attacks on images `[c, h, w]`: the shapes of the backdoor
//! literature, placed at (x, y) (the top-left corner of the trigger's bounding box), with a
//! value written into every channel. Not a registered method: `backdoor`, `blind` and `dba` use it.
//! - `plus`: a plus sign spanning `size` pixels each way (the middle row and column of a size x
//!   size box);
//! - `square`: a filled size x size square;
//! - `pattern`: four horizontal bars of length `size` in two rows and two columns (one pixel
//!   apart, rows 2 apart), DBA's distributed trigger (Xie et al., ICLR 2020): piece k of 4 is bar k.
//! A trigger that does not fit the image is an error naming the parameter.

use fedkit_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// The trigger's shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    #[default]
    Plus,
    Square,
    Pattern,
}

/// Where and what a trigger is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Trigger {
    pub shape: Shape,
    /// Side (plus, square) or bar length (pattern), in pixels.
    pub size: usize,
    /// Column of the bounding box's left edge.
    pub x: usize,
    /// Row of the bounding box's top edge.
    pub y: usize,
    /// The value written (pixels are in [0, 1]).
    pub value: f32,
}

impl Default for Trigger {
    fn default() -> Self {
        Trigger { shape: Shape::Plus, size: 5, x: 1, y: 1, value: 1.0 }
    }
}

/// Pieces of the `pattern` trigger.
pub const PIECES: usize = 4;

impl Trigger {
    /// (row, column) of the trigger's pixels; `piece`: only that piece of the pattern.
    fn cells(&self, piece: Option<usize>) -> Vec<(usize, usize)> {
        let (s, x, y) = (self.size, self.x, self.y);
        match self.shape {
            Shape::Plus => {
                let mid = s / 2;
                let mut v: Vec<(usize, usize)> = (0..s).map(|k| (y + mid, x + k)).collect();
                v.extend((0..s).filter(|&k| k != mid).map(|k| (y + k, x + mid)));
                v
            }
            Shape::Square => (0..s).flat_map(|r| (0..s).map(move |c| (y + r, x + c))).collect(),
            Shape::Pattern => (0..PIECES)
                .filter(|p| piece.is_none_or(|q| q == *p))
                .flat_map(|p| {
                    let (row, col) = (y + 2 * (p / 2), x + (p % 2) * (s + 1));
                    (0..s).map(move |k| (row, col + k))
                })
                .collect(),
        }
    }

    /// The trigger's (feature offset, value) pairs for samples of `shape` (`[c, h, w]`), all
    /// channels; `piece`: only that piece (pattern triggers). An error when it does not fit.
    pub fn pixels(&self, shape: &[usize], piece: Option<usize>) -> Result<Vec<(u32, f32)>> {
        let [c, h, w] = match shape {
            [c, h, w] => [*c, *h, *w],
            _ => {
                return Err(Error::config(
                    "shape",
                    format!("pixel triggers need image samples [c, h, w], the data's are {shape:?}"),
                ));
            }
        };
        if self.size == 0 {
            return Err(Error::config("size", "must be at least 1"));
        }
        if piece.is_some_and(|p| p >= PIECES) || (piece.is_some() && self.shape != Shape::Pattern) {
            return Err(Error::config("shape", "pieces exist for the `pattern` trigger only (4 pieces)"));
        }
        let cells = self.cells(piece);
        let (max_r, max_c) = cells.iter().fold((0, 0), |(a, b), &(r, col)| (a.max(r), b.max(col)));
        if max_r >= h || max_c >= w {
            return Err(Error::config(
                "x",
                format!(
                    "the {:?} trigger of size {} at (x {}, y {}) reaches row {max_r}, column {max_c}: outside the {h}x{w} image",
                    self.shape, self.size, self.x, self.y
                ),
            ));
        }
        Ok((0..c)
            .flat_map(|ch| cells.iter().map(move |&(r, col)| ((ch * h * w + r * w + col) as u32, self.value)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_have_their_pixels_and_stay_inside_the_image() {
        let plus = Trigger { shape: Shape::Plus, size: 3, x: 0, y: 0, value: 1.0 };
        let mut p: Vec<u32> = plus.pixels(&[1, 5, 5], None).unwrap().iter().map(|x| x.0).collect();
        p.sort_unstable();
        assert_eq!(p, vec![1, 5, 6, 7, 11], "a 3-pixel plus at the corner: its middle row and column");
        let square = Trigger { shape: Shape::Square, size: 2, x: 3, y: 3, ..plus.clone() };
        assert_eq!(square.pixels(&[2, 5, 5], None).unwrap().len(), 8, "4 pixels in each of 2 channels");
        assert!(Trigger { x: 4, ..square.clone() }.pixels(&[1, 5, 5], None).is_err(), "outside the image");
        assert!(plus.pixels(&[25], None).is_err(), "vector data has no image");
        // The pattern's four pieces assemble into the global trigger.
        let pat = Trigger { shape: Shape::Pattern, size: 4, x: 1, y: 1, value: 1.0 };
        let global: std::collections::BTreeSet<u32> =
            pat.pixels(&[1, 28, 28], None).unwrap().iter().map(|x| x.0).collect();
        let mut union = std::collections::BTreeSet::new();
        for k in 0..PIECES {
            let piece: Vec<u32> = pat.pixels(&[1, 28, 28], Some(k)).unwrap().iter().map(|x| x.0).collect();
            assert_eq!(piece.len(), 4);
            union.extend(piece);
        }
        assert_eq!(union, global);
        assert_eq!(global.len(), 16, "the pieces are disjoint");
        assert!(plus.pixels(&[1, 28, 28], Some(0)).is_err());
    }
}

//! Heat maps of a matrix of values in [0, 1] (rows x columns, e.g. attacks x defences), as SVG
//! and as PNG (an 8x8 bitmap font for the labels, so no system fonts are needed). Cells show the
//! mean; the SVG also the spread. Missing cells are grey with "-".

use std::path::Path;

use anyhow::{Context, Result};
use font8x8::{BASIC_FONTS, UnicodeFonts};

/// One heat map: a title, row and column labels, and per cell (mean, spread) or nothing.
pub struct HeatMap<'a> {
    pub title: &'a str,
    pub rows: &'a [String],
    pub cols: &'a [String],
    /// Row-major, rows.len() x cols.len().
    pub cells: &'a [Option<(f64, f64)>],
}

const CELL_W: usize = 64;
const CELL_H: usize = 26;
const GLYPH: usize = 8;
const PAD: usize = 8;

/// Viridis, sampled at 0, 0.25, 0.5, 0.75, 1 and interpolated linearly.
fn color(v: f64) -> [u8; 3] {
    const ANCHORS: [[f64; 3]; 5] =
        [[68.0, 1.0, 84.0], [59.0, 82.0, 139.0], [33.0, 145.0, 140.0], [94.0, 201.0, 98.0], [253.0, 231.0, 37.0]];
    let x = v.clamp(0.0, 1.0) * 4.0;
    let i = (x.floor() as usize).min(3);
    let t = x - i as f64;
    let c = |k: usize| (ANCHORS[i][k] * (1.0 - t) + ANCHORS[i + 1][k] * t).round() as u8;
    [c(0), c(1), c(2)]
}

/// Dark text on light cells, light text on dark ones.
fn text_color(v: f64) -> [u8; 3] {
    if v > 0.6 { [0, 0, 0] } else { [255, 255, 255] }
}

impl HeatMap<'_> {
    fn geometry(&self) -> (usize, usize, usize, usize) {
        let longest = |v: &[String]| v.iter().map(|s| s.chars().count()).max().unwrap_or(0);
        let left = longest(self.rows) * GLYPH + 2 * PAD;
        let top = GLYPH * 2 + longest(self.cols) * GLYPH + 2 * PAD;
        let width = (left + self.cols.len() * CELL_W + PAD).max(self.title.chars().count() * GLYPH + 2 * PAD);
        let height = top + self.rows.len() * CELL_H + PAD;
        (left, top, width, height)
    }
    fn cell(&self, r: usize, c: usize) -> Option<(f64, f64)> {
        self.cells.get(r * self.cols.len() + c).copied().flatten()
    }

    /// The heat map as an SVG document.
    pub fn svg(&self) -> String {
        let (left, top, width, height) = self.geometry();
        let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"monospace\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{PAD}\" y=\"{}\" font-size=\"13\">{}</text>\n",
            PAD + 10,
            esc(self.title)
        );
        for (c, name) in self.cols.iter().enumerate() {
            let x = left + c * CELL_W + CELL_W / 2 + 4;
            s += &format!("<text transform=\"translate({x},{}) rotate(-90)\">{}</text>\n", top - PAD, esc(name));
        }
        for (r, name) in self.rows.iter().enumerate() {
            let y = top + r * CELL_H;
            s += &format!("<text x=\"{PAD}\" y=\"{}\">{}</text>\n", y + CELL_H / 2 + 4, esc(name));
            for c in 0..self.cols.len() {
                let x = left + c * CELL_W;
                let (fill, label, ink) = match self.cell(r, c) {
                    Some((m, sd)) => {
                        let [a, b, cc] = color(m);
                        let [ta, tb, tc] = text_color(m);
                        let label = if sd > 0.0 { format!("{m:.2}±{sd:.2}") } else { format!("{m:.2}") };
                        (format!("rgb({a},{b},{cc})"), label, format!("rgb({ta},{tb},{tc})"))
                    }
                    None => ("rgb(200,200,200)".into(), "-".into(), "black".into()),
                };
                s += &format!(
                    "<rect x=\"{x}\" y=\"{y}\" width=\"{CELL_W}\" height=\"{CELL_H}\" fill=\"{fill}\" stroke=\"white\"/>\n<text x=\"{}\" y=\"{}\" fill=\"{ink}\" text-anchor=\"middle\">{label}</text>\n",
                    x + CELL_W / 2,
                    y + CELL_H / 2 + 4
                );
            }
        }
        s + "</svg>\n"
    }

    /// The heat map as RGB pixels (width, height, data).
    pub fn pixels(&self) -> (usize, usize, Vec<u8>) {
        let (left, top, width, height) = self.geometry();
        let mut img = Canvas { w: width, h: height, px: vec![255; width * height * 3] };
        img.text(PAD, PAD, self.title, [0, 0, 0], false);
        for (c, name) in self.cols.iter().enumerate() {
            let x = left + c * CELL_W + CELL_W / 2 - GLYPH / 2;
            img.text(x, top - PAD, name, [0, 0, 0], true);
        }
        for (r, name) in self.rows.iter().enumerate() {
            let y = top + r * CELL_H;
            img.text(PAD, y + (CELL_H - GLYPH) / 2, name, [0, 0, 0], false);
            for c in 0..self.cols.len() {
                let x = left + c * CELL_W;
                let (fill, label, ink) = match self.cell(r, c) {
                    Some((m, _)) => (color(m), format!("{m:.2}"), text_color(m)),
                    None => ([200, 200, 200], "-".to_string(), [0, 0, 0]),
                };
                img.rect(x + 1, y + 1, CELL_W - 2, CELL_H - 2, fill);
                let tx = x + (CELL_W - label.chars().count() * GLYPH) / 2;
                img.text(tx, y + (CELL_H - GLYPH) / 2, &label, ink, false);
            }
        }
        (width, height, img.px)
    }

    /// Write `<stem>.svg` and `<stem>.png`.
    pub fn write(&self, stem: &Path) -> Result<()> {
        let svg = stem.with_extension("svg");
        std::fs::write(&svg, self.svg()).with_context(|| format!("cannot write {}", svg.display()))?;
        let png = stem.with_extension("png");
        let (w, h, px) = self.pixels();
        crate::png_out::write_rgb(&png, w, h, &px)
    }
}

/// An RGB pixel buffer.
struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.w && y < self.h {
            let i = (y * self.w + x) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }
    fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, c: [u8; 3]) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, c);
            }
        }
    }
    /// Text with its top-left corner at (x, y); `vertical`: reading upwards from (x, y), the
    /// baseline on the right.
    fn text(&mut self, x: usize, y: usize, s: &str, c: [u8; 3], vertical: bool) {
        for (k, ch) in s.chars().enumerate() {
            let glyph = BASIC_FONTS.get(ch).or_else(|| BASIC_FONTS.get('?')).unwrap_or([0; 8]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..GLYPH {
                    if bits >> col & 1 == 1 {
                        if vertical {
                            let py = (y + 1).checked_sub(k * GLYPH + col + 1);
                            if let Some(py) = py {
                                self.set(x + row, py, c);
                            }
                        } else {
                            self.set(x + k * GLYPH + col, y + row, c);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_coloured_by_value_and_labelled() {
        let rows = vec!["none".to_string(), "backdoor".to_string()];
        let cols = vec!["mean".to_string(), "krum".to_string()];
        let cells = [Some((0.0, 0.0)), Some((1.0, 0.1)), None, Some((0.5, 0.0))];
        let h = HeatMap { title: "t", rows: &rows, cols: &cols, cells: &cells };
        let svg = h.svg();
        assert!(svg.contains("rgb(68,1,84)") && svg.contains("rgb(253,231,37)"), "viridis ends");
        assert!(svg.contains(">1.00±0.10<") && svg.contains(">-<") && svg.contains(">backdoor<"));
        let (w, hgt, px) = h.pixels();
        assert_eq!(px.len(), w * hgt * 3);
        let (left, top, _, _) = h.geometry();
        // The centre-left of the first cell (away from its label) is the colour of 0.
        let at = |x: usize, y: usize| px[(y * w + x) * 3..(y * w + x) * 3 + 3].to_vec();
        assert_eq!(at(left + 3, top + 3), vec![68, 1, 84]);
        assert_eq!(at(left + CELL_W + 3, top + 3), vec![253, 231, 37]);
        assert_eq!(at(left + 3, top + CELL_H + 3), vec![200, 200, 200]);
    }
}

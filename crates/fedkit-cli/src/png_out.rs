//! Writing 8-bit RGB pixel buffers as PNG files (heatmaps, attack reconstructions).

use std::path::Path;

use anyhow::{Context, Result};

/// Write `px` (`w * h` RGB triples, row-major) to `path`.
pub fn write_rgb(path: &Path, w: usize, h: usize, px: &[u8]) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().with_context(|| format!("cannot write {}", path.display()))?;
    writer.write_image_data(px).with_context(|| format!("cannot write {}", path.display()))?;
    writer.finish().with_context(|| format!("cannot write {}", path.display()))
}

//! Scatter plots of 2-D points in several groups (e.g. source and target features projected
//! by PCA), one panel per condition, side by side.

use anyhow::{bail, Result};
use image::{Rgb, RgbImage};
use std::path::Path;

use super::font::{self, text_height, text_width};
use super::{draw_rect_outline, fill_rect, save_png, PALETTE, WHITE};

/// One panel: a title and points `(x, y, group)`; `group` indexes the legend and the palette.
#[derive(Debug, Clone, PartialEq)]
pub struct ScatterPanel {
    /// Shown above the panel.
    pub title: String,
    /// The points, drawn in order (interleave the groups so that none hides the others).
    pub points: Vec<(f64, f64, usize)>,
}

/// Draws `panels` side by side (each scaled to its own points), under `title`, with a legend of
/// `groups` in palette colours.
pub fn scatter_image(panels: &[ScatterPanel], groups: &[String], title: &str) -> Result<RgbImage> {
    if panels.is_empty() {
        bail!("nothing to draw: no panels given");
    }
    if groups.is_empty() || groups.len() > PALETTE.len() {
        bail!("a scatter plot takes 1 to {} groups, got {}", PALETTE.len(), groups.len());
    }
    if let Some(p) = panels.iter().flat_map(|p| &p.points).find(|p| p.2 >= groups.len()) {
        bail!("a point belongs to group {} but only {} groups are named", p.2, groups.len());
    }
    let ts = 2u32;
    let th = text_height(ts) as i64;
    let side = 400i64;
    let gap = 24i64;
    let (top, bottom) = (2 * th + 36, th + 24);
    let width = gap + panels.len() as i64 * (side + gap);
    let height = top + side + bottom;
    let mut img = RgbImage::from_pixel(width as u32, height as u32, Rgb(WHITE));
    let text = [30, 30, 30];
    font::draw_text_centred(&mut img, width / 2, 8, title, text, ts);
    for (k, panel) in panels.iter().enumerate() {
        let x0 = gap + k as i64 * (side + gap);
        let y0 = top;
        font::draw_text_centred(&mut img, x0 + side / 2, top - th - 8, &panel.title, text, ts);
        draw_rect_outline(&mut img, x0, y0, side, side, [120, 120, 120]);
        let finite: Vec<&(f64, f64, usize)> =
            panel.points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
        if finite.is_empty() {
            continue;
        }
        let (mut lo_x, mut hi_x, mut lo_y, mut hi_y) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for p in &finite {
            (lo_x, hi_x, lo_y, hi_y) = (lo_x.min(p.0), hi_x.max(p.0), lo_y.min(p.1), hi_y.max(p.1));
        }
        let span_x = (hi_x - lo_x).max(1e-12);
        let span_y = (hi_y - lo_y).max(1e-12);
        let inner = (side - 16) as f64;
        for p in finite {
            let px = x0 + 8 + ((p.0 - lo_x) / span_x * inner).round() as i64;
            let py = y0 + 8 + ((hi_y - p.1) / span_y * inner).round() as i64;
            fill_rect(&mut img, px - 1, py - 1, 3, 3, PALETTE[p.2]);
        }
    }
    let mut x = gap;
    let y = top + side + 12;
    for (g, name) in groups.iter().enumerate() {
        fill_rect(&mut img, x, y + 2, th - 4, th - 4, PALETTE[g]);
        font::draw_text(&mut img, x + th + 4, y, name, text, ts);
        x += th + 4 + text_width(name, ts) as i64 + 32;
    }
    Ok(img)
}

/// Writes [`scatter_image`] as a PNG file.
pub fn save_scatter_png(panels: &[ScatterPanel], groups: &[String], title: &str, path: &Path) -> Result<()> {
    save_png(&scatter_image(panels, groups, title)?, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_land_in_their_panel_in_their_colour() {
        let panels = vec![
            ScatterPanel { title: "before".into(), points: vec![(0.0, 0.0, 0), (1.0, 1.0, 1)] },
            ScatterPanel { title: "after".into(), points: vec![(5.0, -3.0, 1), (6.0, -2.0, 1)] },
        ];
        let groups = vec!["source".to_string(), "target".to_string()];
        let img = scatter_image(&panels, &groups, "features").unwrap();
        let count = |colour: [u8; 3], x_range: std::ops::Range<u32>| {
            img.enumerate_pixels().filter(|(x, _, p)| x_range.contains(x) && p.0 == colour).count()
        };
        let split = 24 + 400 + 12;
        // Group 0 has one point, in the first panel (plus the legend swatch, below the panels).
        assert!(count(PALETTE[0], 0..split) >= 9);
        assert_eq!(count(PALETTE[0], split..img.width()), 0);
        // Group 1: one point in the first panel, two in the second.
        assert!(count(PALETTE[1], split..img.width()) >= 18);
        assert!(scatter_image(&panels, &groups[..1], "x").unwrap_err().to_string().contains("group 1"));
        assert!(scatter_image(&[], &groups, "x").is_err());
    }
}

//! Histograms of one score for several groups (e.g. the inception scores of many GAN runs for
//! EBGAN and for a GAN baseline), drawn as side-by-side bars over shared bins.

use anyhow::{bail, Result};
use image::{Rgb, RgbImage};
use std::path::Path;

use super::curve::{format_tick, nice_ticks};
use super::font::{self, cap_height, text_height, text_width};
use super::{draw_rect_outline, fill_rect, save_png, PALETTE, WHITE};

/// Counts of `values` in `bins` equal-width bins over `[lo, hi]`; values outside are clamped into
/// the first or last bin, non-finite values are skipped.
pub fn bin_counts(values: &[f64], lo: f64, hi: f64, bins: usize) -> Result<Vec<usize>> {
    if bins == 0 || hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        bail!("a histogram needs at least one bin and lo < hi, got {bins} bins over [{lo}, {hi}]");
    }
    let mut counts = vec![0; bins];
    for &v in values.iter().filter(|v| v.is_finite()) {
        let k = (((v - lo) / (hi - lo)) * bins as f64).floor();
        counts[(k.max(0.0) as usize).min(bins - 1)] += 1;
    }
    Ok(counts)
}

/// Draws the histograms of `groups` (name, values) over `bins` bins of `[lo, hi]`, one colour per
/// group, with a title, an x-axis label, counts on the y axis and a legend.
pub fn histogram_image(
    groups: &[(String, Vec<f64>)],
    lo: f64,
    hi: f64,
    bins: usize,
    title: &str,
    x_label: &str,
) -> Result<RgbImage> {
    if groups.is_empty() {
        bail!("nothing to draw: no groups given");
    }
    let counts: Vec<Vec<usize>> = groups.iter().map(|(_, v)| bin_counts(v, lo, hi, bins)).collect::<Result<_>>()?;
    let max_count = counts.iter().flatten().copied().max().unwrap_or(0).max(1);
    let (width, height) = (900i64, 480i64);
    let ts = 2u32;
    let th = text_height(ts) as i64;
    let ch = cap_height(ts) as i64;
    let (y_ticks, y_step) = nice_ticks(0.0, max_count as f64, 5);
    let y_top = *y_ticks.last().unwrap_or(&(max_count as f64));
    let left = y_ticks.iter().map(|&v| text_width(&format_tick(v, y_step), ts)).max().unwrap_or(0) as i64 + 16;
    let (right, top, bottom) = (24, th + 20, 2 * th + 24);
    let (pw, ph) = (width - left - right, height - top - bottom);
    let mut img = RgbImage::from_pixel(width as u32, height as u32, Rgb(WHITE));
    let (grid, axis, text) = ([232, 232, 232], [60, 60, 60], [30, 30, 30]);
    let py = |c: f64| (top + ph) as f64 - c / y_top * ph as f64;
    for &v in &y_ticks {
        let y = py(v).round() as i64;
        fill_rect(&mut img, left, y, pw, 1, grid);
        let label = format_tick(v, y_step);
        font::draw_text(&mut img, left - 8 - text_width(&label, ts) as i64, y - ch / 2, &label, text, ts);
    }
    let bin_w = pw as f64 / bins as f64;
    let bar_w = ((bin_w * 0.8) / groups.len() as f64).max(1.0);
    for (g, c) in counts.iter().enumerate() {
        for (k, &n) in c.iter().enumerate() {
            let x = left as f64 + k as f64 * bin_w + bin_w * 0.1 + g as f64 * bar_w;
            let y = py(n as f64);
            let h = (top + ph) as f64 - y;
            fill_rect(
                &mut img,
                x.round() as i64,
                y.round() as i64,
                bar_w.round() as i64,
                h.round() as i64,
                PALETTE[g % 10],
            );
        }
    }
    let (x_ticks, x_step) = nice_ticks(lo, hi, 8);
    for &v in x_ticks.iter().filter(|&&v| v >= lo - 1e-9 && v <= hi + 1e-9) {
        let x = (left as f64 + (v - lo) / (hi - lo) * pw as f64).round() as i64;
        fill_rect(&mut img, x, top + ph, 1, 5, axis);
        font::draw_text_centred(&mut img, x, top + ph + 8, &format_tick(v, x_step), text, ts);
    }
    draw_rect_outline(&mut img, left, top, pw + 1, ph + 1, axis);
    font::draw_text_centred(&mut img, left + pw / 2, 8, title, text, ts);
    font::draw_text_centred(&mut img, left + pw / 2, height - th - 6, x_label, text, ts);
    // Legend, top left inside the plot.
    let row_h = th + 6;
    let legend_w = groups.iter().map(|(n, _)| text_width(n, ts) as i64).max().unwrap_or(0) + 48;
    let (lx, ly) = (left + 8, top + 8);
    fill_rect(&mut img, lx, ly, legend_w, row_h * groups.len() as i64 + 8, WHITE);
    draw_rect_outline(&mut img, lx, ly, legend_w, row_h * groups.len() as i64 + 8, [180, 180, 180]);
    for (g, (name, _)) in groups.iter().enumerate() {
        let ry = ly + 6 + g as i64 * row_h;
        fill_rect(&mut img, lx + 8, ry, 20, ch, PALETTE[g % 10]);
        font::draw_text(&mut img, lx + 36, ry, name, text, ts);
    }
    Ok(img)
}

/// [`histogram_image`] written as PNG.
pub fn save_histogram_png(
    groups: &[(String, Vec<f64>)],
    range: (f64, f64),
    bins: usize,
    title: &str,
    x_label: &str,
    path: &Path,
) -> Result<()> {
    save_png(&histogram_image(groups, range.0, range.1, bins, title, x_label)?, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_count_clamp_and_skip() {
        let c = bin_counts(&[0.0, 0.49, 0.5, 0.99, 1.0, 7.0, -3.0, f64::NAN], 0.0, 1.0, 2).unwrap();
        assert_eq!(c, vec![3, 4]);
        assert!(bin_counts(&[1.0], 1.0, 1.0, 3).is_err());
        assert!(bin_counts(&[1.0], 0.0, 1.0, 0).is_err());
    }

    #[test]
    fn bars_are_drawn_in_each_groups_colour() {
        let groups = vec![("a".to_string(), vec![1.5, 1.6, 1.7]), ("b".to_string(), vec![9.5])];
        let img = histogram_image(&groups, 1.0, 10.0, 9, "scores", "inception score").unwrap();
        let has = |c: [u8; 3]| img.pixels().filter(|p| p.0 == c).count();
        // Three runs of group a in one bin make a bar three times as tall as group b's single run.
        let (a, b) = (has(PALETTE[0]), has(PALETTE[1]));
        assert!(a > 2 * b && b > 0, "{a} {b}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.png");
        save_histogram_png(&groups, (1.0, 10.0), 9, "t", "x", &p).unwrap();
        assert_eq!(image::open(&p).unwrap().width(), 900);
        assert!(histogram_image(&[], 0.0, 1.0, 3, "", "").is_err());
    }
}

//! Line plots of training metrics.
//!
//! The metrics log is JSON Lines: one object per line, with a numeric `"step"` and any number of
//! other fields, e.g. `{"step": 12, "loss": 0.53, "lr": 0.001, "accuracy": 0.91}`. A line may
//! lack some metrics; blank lines are skipped; `null` counts as absent. Each requested metric is
//! drawn as a line of its own colour over the step, on shared axes with tick labels and a legend.

use super::font::{self, cap_height, text_height, text_width};
use super::{draw_line, draw_rect_outline, fill_rect, save_png, PALETTE, WHITE};
use anyhow::{bail, Context, Result};
use image::{Rgb, RgbImage};
use std::path::Path;

/// A named series of `(x, y)` points.
pub type Series = (String, Vec<(f64, f64)>);

/// How [`plot_curves_from_jsonl_with`] and [`curves_image`] draw.
#[derive(Debug, Clone, PartialEq)]
pub struct CurveOptions {
    /// Title above the plot (none when empty).
    pub title: String,
    /// Name of the horizontal axis.
    pub x_label: String,
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// Trailing moving-average window in points; 0 or 1 draws the raw values only. With a larger
    /// window the raw values are drawn faintly and the average on top.
    pub smoothing: usize,
    /// Logarithmic vertical axis (non-positive values are left out).
    pub log_y: bool,
}

impl Default for CurveOptions {
    fn default() -> Self {
        Self { title: String::new(), x_label: "step".to_string(), width: 800, height: 500, smoothing: 0, log_y: false }
    }
}

/// Reads the series `keys` (all numeric fields but `"step"` when `keys` is empty, in name order)
/// from a JSON Lines metrics log, as `(step, value)` points sorted by step.
///
/// Errors name the file and the 1-based line number of a malformed line, a line without a
/// numeric `"step"`, or a requested field that holds something other than a number; asking for
/// a field that no line has is an error listing the fields that exist.
pub fn read_metrics_jsonl(log: &Path, keys: &[&str]) -> Result<Vec<Series>> {
    let text = std::fs::read_to_string(log).with_context(|| format!("cannot read metrics log {}", log.display()))?;
    let mut names: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let all = names.is_empty();
    let mut points: Vec<Vec<(f64, f64)>> = vec![Vec::new(); names.len()];
    let mut seen: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{} line {n}: malformed JSON", log.display()))?;
        let obj = value
            .as_object()
            .with_context(|| format!("{} line {n}: expected a JSON object, found {line}", log.display()))?;
        let step = obj
            .get("step")
            .and_then(|s| s.as_f64())
            .with_context(|| format!("{} line {n}: no numeric \"step\" field", log.display()))?;
        for (k, v) in obj {
            if k == "step" {
                continue;
            }
            if !seen.contains(k) {
                seen.push(k.clone());
            }
            if all && v.is_number() && !names.contains(k) {
                names.push(k.clone());
                points.push(Vec::new());
            }
        }
        for (name, pts) in names.iter().zip(points.iter_mut()) {
            match obj.get(name) {
                None | Some(serde_json::Value::Null) => {}
                Some(v) => {
                    let y = v
                        .as_f64()
                        .with_context(|| format!("{} line {n}: \"{name}\" is {v}, expected a number", log.display()))?;
                    if y.is_finite() {
                        pts.push((step, y));
                    }
                }
            }
        }
    }
    let mut series: Vec<Series> = names.into_iter().zip(points).collect();
    if all {
        series.sort_by(|a, b| a.0.cmp(&b.0));
        if series.is_empty() {
            bail!("{}: no numeric metric besides \"step\" in any line", log.display());
        }
    }
    for (name, pts) in &mut series {
        if pts.is_empty() && !seen.contains(name) {
            seen.sort();
            bail!(
                "{}: no line has the metric \"{name}\" (metrics present: {})",
                log.display(),
                if seen.is_empty() { "none".to_string() } else { seen.join(", ") }
            );
        }
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Ok(series)
}

/// Plots the metrics `keys` of a JSON Lines log (see [`read_metrics_jsonl`]) as an 800x500 PNG
/// titled with the log's file name.
pub fn plot_curves_from_jsonl(log: &Path, keys: &[&str], out: &Path) -> Result<()> {
    let title = log.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let opts = CurveOptions { title, ..CurveOptions::default() };
    plot_curves_from_jsonl_with(log, keys, &opts, out)
}

/// Plots the metrics `keys` of a JSON Lines log with the given options.
pub fn plot_curves_from_jsonl_with(log: &Path, keys: &[&str], opts: &CurveOptions, out: &Path) -> Result<()> {
    let series = read_metrics_jsonl(log, keys)?;
    let img = curves_image(&series, opts).with_context(|| format!("cannot plot {}", log.display()))?;
    save_png(&img, out)
}

/// Plots named series of `(x, y)` points as an 800x500 PNG with the given title.
pub fn plot_curves(series: &[Series], title: &str, out: &Path) -> Result<()> {
    let opts = CurveOptions { title: title.to_string(), ..CurveOptions::default() };
    let img = curves_image(series, &opts)?;
    save_png(&img, out)
}

/// Trailing moving average over `window` points.
fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len());
    let mut sum = 0.0;
    for (i, &(x, y)) in points.iter().enumerate() {
        sum += y;
        if i >= window {
            sum -= points[i - window].1;
        }
        out.push((x, sum / (i + 1).min(window) as f64));
    }
    out
}

/// Tick positions of about `target` round values (1, 2 or 5 times a power of ten) covering
/// `[lo, hi]`, returned with the step; the first and last tick enclose the range.
pub(crate) fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, f64) {
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let step = mag
        * if norm < 1.5 {
            1.0
        } else if norm < 3.0 {
            2.0
        } else if norm < 7.0 {
            5.0
        } else {
            10.0
        };
    let first = (lo / step + 1e-9).floor() as i64;
    let last = (hi / step - 1e-9).ceil() as i64;
    let ticks = (first..=last).map(|k| k as f64 * step).collect();
    (ticks, step)
}

/// Formats a tick value with as many decimals as the step needs.
pub(crate) fn format_tick(v: f64, step: f64) -> String {
    if v.abs() < step * 1e-6 {
        return "0".to_string();
    }
    let a = step.abs();
    if !(1e-4..1e6).contains(&a) {
        let digits = (v.abs().log10().floor() - a.log10().floor()).clamp(0.0, 6.0) as usize;
        let s = format!("{v:.digits$e}");
        // Drop trailing zeros of the mantissa: 2.50e-5 -> 2.5e-5.
        match s.split_once('e') {
            Some((m, e)) if m.contains('.') => {
                format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.'))
            }
            _ => s,
        }
    } else {
        let decimals = (-a.log10().floor()).max(0.0) as usize;
        format!("{v:.decimals$}")
    }
}

/// Draws `series` on shared axes: title, gridlines, tick labels, one coloured line per series
/// and a legend, on a white background.
pub fn curves_image(series: &[Series], opts: &CurveOptions) -> Result<RgbImage> {
    if opts.width < 200 || opts.height < 150 || opts.width > 8000 || opts.height > 8000 {
        bail!("plot size {}x{} is out of the supported range (200x150 to 8000x8000)", opts.width, opts.height);
    }
    if series.is_empty() {
        bail!("nothing to plot: no series given");
    }
    let ty = |y: f64| if opts.log_y { y.log10() } else { y };
    let keep = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!opts.log_y || y > 0.0);
    let cleaned: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, pts)| {
            let mut p: Vec<(f64, f64)> = pts.iter().filter(|p| keep(p)).map(|&(x, y)| (x, ty(y))).collect();
            p.sort_by(|a, b| a.0.total_cmp(&b.0));
            (name.as_str(), p)
        })
        .collect();
    let all = cleaned.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        bail!(
            "nothing to plot: the series {} have no finite{} values",
            series.iter().map(|s| s.0.as_str()).collect::<Vec<_>>().join(", "),
            if opts.log_y { " positive" } else { "" }
        );
    }
    if x1 - x0 <= 0.0 {
        x0 -= 1.0;
        x1 += 1.0;
    }
    if y1 - y0 <= 0.0 {
        let pad = if opts.log_y { 0.5 } else { (y0.abs() * 0.1).max(1e-3) };
        y0 -= pad;
        y1 += pad;
    }
    let (x_ticks, x_step) = nice_ticks(x0, x1, 8);
    let (y_ticks, y_step) = if opts.log_y {
        let lo = y0.floor();
        let hi = y1.ceil().max(lo + 1.0);
        let stride = ((hi - lo) / 6.0).ceil().max(1.0);
        let ticks: Vec<f64> = (0..).map(|k| lo + k as f64 * stride).take_while(|&t| t <= hi + stride - 1e-9).collect();
        (ticks, stride)
    } else {
        nice_ticks(y0, y1, 6)
    };
    let (x0, x1) = (x_ticks[0], *x_ticks.last().unwrap_or(&x1));
    let (y0, y1) = (y_ticks[0], *y_ticks.last().unwrap_or(&y1));
    let y_label = |v: f64| {
        if opts.log_y {
            format!("1e{}", v.round() as i64)
        } else {
            format_tick(v, y_step)
        }
    };

    let ts = 2u32; // text scale
    let th = text_height(ts) as i64;
    let ch = cap_height(ts) as i64;
    let (w, h) = (opts.width as i64, opts.height as i64);
    let y_label_w = y_ticks.iter().map(|&v| text_width(&y_label(v), ts)).max().unwrap_or(0) as i64;
    let left = y_label_w + 16;
    let right = 24 + text_width(&format_tick(x1, x_step), ts) as i64 / 2;
    let top = if opts.title.is_empty() { 16 } else { th + 20 };
    let bottom = th + 12 + if opts.x_label.is_empty() { 0 } else { th + 8 };
    let (pw, ph) = (w - left - right, h - top - bottom);
    if pw < 40 || ph < 40 {
        bail!("plot size {w}x{h} leaves no room for the axes and labels");
    }
    let px = |x: f64| left as f64 + (x - x0) / (x1 - x0) * pw as f64;
    let py = |y: f64| (top + ph) as f64 - (y - y0) / (y1 - y0) * ph as f64;

    let mut img = RgbImage::from_pixel(opts.width, opts.height, Rgb(WHITE));
    let grid = [232, 232, 232];
    let axis = [60, 60, 60];
    let text = [30, 30, 30];
    for &v in &x_ticks {
        let x = px(v).round() as i64;
        fill_rect(&mut img, x, top, 1, ph, grid);
        fill_rect(&mut img, x, top + ph, 1, 5, axis);
        font::draw_text_centred(&mut img, x, top + ph + 8, &format_tick(v, x_step), text, ts);
    }
    for &v in &y_ticks {
        let y = py(v).round() as i64;
        fill_rect(&mut img, left, y, pw, 1, grid);
        fill_rect(&mut img, left - 5, y, 5, 1, axis);
        let label = y_label(v);
        let lw = text_width(&label, ts) as i64;
        font::draw_text(&mut img, left - 8 - lw, y - ch / 2, &label, text, ts);
    }
    draw_rect_outline(&mut img, left, top, pw + 1, ph + 1, axis);
    if !opts.title.is_empty() {
        font::draw_text_centred(&mut img, left + pw / 2, 8, &opts.title, text, ts);
    }
    if !opts.x_label.is_empty() {
        font::draw_text_centred(&mut img, left + pw / 2, h - th - 6, &opts.x_label, text, ts);
    }

    let smoothing = opts.smoothing > 1;
    for (k, (_, pts)) in cleaned.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let faint = colour.map(|c| ((c as u16 + 2 * 255) / 3) as u8);
        let mut layers = vec![(pts.clone(), if smoothing { faint } else { colour })];
        if smoothing {
            layers.push((moving_average(pts, opts.smoothing), colour));
        }
        for (layer, c) in layers {
            if layer.len() == 1 {
                let (x, y) = (px(layer[0].0).round() as i64, py(layer[0].1).round() as i64);
                fill_rect(&mut img, x - 2, y - 2, 5, 5, c);
            }
            for pair in layer.windows(2) {
                let a = (px(pair[0].0), py(pair[0].1));
                let b = (px(pair[1].0), py(pair[1].1));
                draw_line(&mut img, a, b, c, 2);
            }
        }
    }

    // Legend, top right inside the plot area.
    let swatch = 24i64;
    let row_h = th + 6;
    let legend_w = cleaned.iter().map(|(name, _)| text_width(name, ts) as i64).max().unwrap_or(0) + swatch + 24;
    let legend_h = row_h * cleaned.len() as i64 + 8;
    let (lx, ly) = (left + pw - legend_w - 8, top + 8);
    fill_rect(&mut img, lx, ly, legend_w, legend_h, WHITE);
    draw_rect_outline(&mut img, lx, ly, legend_w, legend_h, [180, 180, 180]);
    for (k, (name, _)) in cleaned.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let ry = ly + 6 + k as i64 * row_h;
        fill_rect(&mut img, lx + 8, ry + ch / 2 - 1, swatch, 3, colour);
        font::draw_text(&mut img, lx + 8 + swatch + 8, ry, name, text, ts);
    }
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_log(dir: &Path, text: &str) -> std::path::PathBuf {
        let p = dir.join("metrics.jsonl");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reads_series_with_missing_keys_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = write_log(
            dir.path(),
            "{\"step\": 2, \"loss\": 0.5, \"lr\": 0.001}\n\n{\"step\": 1, \"loss\": 0.9, \"phase\": \"train\"}\n   \n{\"step\": 3, \"accuracy\": 0.8, \"loss\": null}\n",
        );
        let s = read_metrics_jsonl(&log, &["loss", "accuracy"]).unwrap();
        assert_eq!(s[0], ("loss".to_string(), vec![(1.0, 0.9), (2.0, 0.5)]));
        assert_eq!(s[1], ("accuracy".to_string(), vec![(3.0, 0.8)]));
        let all = read_metrics_jsonl(&log, &[]).unwrap();
        let names: Vec<&str> = all.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(names, vec!["accuracy", "loss", "lr"]);
    }

    #[test]
    fn malformed_line_error_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = write_log(dir.path(), "{\"step\": 1, \"loss\": 0.5}\n\n{\"step\": 2, \"loss\": 0.4\n");
        let err = format!("{:#}", read_metrics_jsonl(&log, &["loss"]).unwrap_err());
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("metrics.jsonl"), "{err}");
        let out = dir.path().join("out.png");
        let err = format!("{:#}", plot_curves_from_jsonl(&log, &["loss"], &out).unwrap_err());
        assert!(err.contains("line 3"), "{err}");
        assert!(!out.exists());

        let log = write_log(dir.path(), "{\"step\": 1, \"loss\": \"high\"}\n");
        let err = format!("{:#}", read_metrics_jsonl(&log, &["loss"]).unwrap_err());
        assert!(err.contains("line 1") && err.contains("\"loss\""), "{err}");
        let log = write_log(dir.path(), "{\"loss\": 1}\n");
        let err = format!("{:#}", read_metrics_jsonl(&log, &["loss"]).unwrap_err());
        assert!(err.contains("line 1") && err.contains("step"), "{err}");
        let log = write_log(dir.path(), "{\"step\": 1, \"loss\": 1}\n");
        let err = format!("{:#}", read_metrics_jsonl(&log, &["acc"]).unwrap_err());
        assert!(err.contains("\"acc\"") && err.contains("loss"), "{err}");
    }

    fn count_colour(img: &RgbImage, colour: [u8; 3]) -> usize {
        img.pixels().filter(|p| p.0 == colour).count()
    }

    #[test]
    fn curve_png_decodes_and_shows_each_series() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for step in 0..200 {
            let loss = 2.0 * (-(step as f64) / 50.0).exp() + 0.05 * ((step * 7) % 5) as f64;
            text.push_str(&format!("{{\"step\": {step}, \"loss\": {loss}"));
            if step % 10 == 0 {
                text.push_str(&format!(", \"accuracy\": {}", step as f64 / 200.0));
            }
            text.push_str("}\n");
        }
        let log = write_log(dir.path(), &text);
        let out = dir.path().join("plots/curves.png");
        plot_curves_from_jsonl(&log, &["loss", "accuracy"], &out).unwrap();
        let img = image::open(&out).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (800, 500));
        assert_eq!(img.get_pixel(2, 2).0, WHITE);
        let non_white = img.pixels().filter(|p| p.0 != WHITE).count();
        assert!(non_white > 2000, "only {non_white} non-white pixels");
        assert!(count_colour(&img, PALETTE[0]) > 300);
        assert!(count_colour(&img, PALETTE[1]) > 300);

        let smooth = dir.path().join("smooth.png");
        let opts = CurveOptions { smoothing: 10, log_y: true, title: "loss (log)".into(), ..CurveOptions::default() };
        plot_curves_from_jsonl_with(&log, &["loss"], &opts, &smooth).unwrap();
        let img = image::open(&smooth).unwrap().to_rgb8();
        assert!(count_colour(&img, PALETTE[0]) > 300);
    }

    #[test]
    fn plot_curves_handles_flat_and_single_point_series() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("flat.png");
        let series = vec![("flat".to_string(), vec![(0.0, 1.0), (10.0, 1.0)]), ("dot".to_string(), vec![(5.0, 1.0)])];
        plot_curves(&series, "flat", &out).unwrap();
        let img = image::open(&out).unwrap().to_rgb8();
        assert!(count_colour(&img, PALETTE[0]) > 100);
        assert!(count_colour(&img, PALETTE[1]) >= 25);
        let empty = vec![("none".to_string(), vec![(0.0, f64::NAN)])];
        assert!(plot_curves(&empty, "x", &out).is_err());
        assert!(plot_curves(&[], "x", &out).is_err());
    }

    #[test]
    fn ticks_are_round_and_formatted() {
        let (t, s) = nice_ticks(0.03, 0.97, 6);
        assert_eq!(s, 0.2);
        assert!((t[0] - 0.0).abs() < 1e-12 && (t.last().unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(format_tick(0.4, 0.2), "0.4");
        assert_eq!(format_tick(1500.0, 500.0), "1500");
        assert_eq!(format_tick(0.0, 0.5), "0");
        assert_eq!(format_tick(2.5e-5, 5e-6), "2.5e-5");
        assert_eq!(format_tick(3e-5, 1e-5), "3e-5");
        assert_eq!(moving_average(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)], 2), vec![(0.0, 1.0), (1.0, 2.0), (2.0, 4.0)]);
    }
}

//! Pictures of models and training runs, written as PNG without any system font or plotting
//! library.
//!
//! - [`grid`]: image grids of generated or real samples, optionally with a coloured text label
//!   under each image (e.g. the predicted digit, green when right and red when wrong).
//! - [`curve`]: line plots of training metrics read from a JSON Lines log.
//! - [`confusion`]: confusion matrices, computed and drawn as annotated heat maps.
//! - [`histogram`]: histograms of a score for several groups, as side-by-side bars.
//! - [`scatter`]: scatter plots of 2-D points in groups, one panel per condition.
//! - [`font`]: the 5x7 bitmap font the other modules write their text with.
//!
//! Every file is written atomically (see [`zoo_core::atomic::write_atomic`]).

pub mod confusion;
pub mod curve;
pub mod font;
pub mod grid;
pub mod histogram;
pub mod scatter;

pub use confusion::{confusion_image, confusion_matrix, save_confusion_png};
pub use curve::{
    curves_image, plot_curves, plot_curves_from_jsonl, plot_curves_from_jsonl_with, read_metrics_jsonl, CurveOptions,
    Series,
};
pub use grid::{image_grid, labelled_grid, save_image_grid, save_labelled_grid};
pub use histogram::{bin_counts, histogram_image, save_histogram_png};
pub use scatter::{save_scatter_png, scatter_image, ScatterPanel};

use anyhow::{Context, Result};
use image::{ImageEncoder, Rgb, RgbImage};
use std::path::Path;

/// Green used for correct predictions.
pub const CORRECT_GREEN: [u8; 3] = [0, 170, 0];
/// Red used for wrong predictions.
pub const WRONG_RED: [u8; 3] = [220, 20, 20];
/// White.
pub const WHITE: [u8; 3] = [255, 255, 255];
/// Black.
pub const BLACK: [u8; 3] = [0, 0, 0];

/// Ten distinct line colours (the "tab10" palette), used in order for successive series.
pub const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// Writes `img` as a PNG file, atomically, creating parent directories.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    zoo_core::atomic::write_atomic(path, |w| {
        image::codecs::png::PngEncoder::new(w)
            .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
            .context("PNG encoding failed")
    })
    .with_context(|| format!("cannot write PNG {}", path.display()))
}

/// Fills the rectangle `[x, x + w) x [y, y + h)`, clipped to the image.
pub(crate) fn fill_rect(img: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, colour: [u8; 3]) {
    let x0 = x.max(0);
    let y0 = y.max(0);
    let x1 = (x + w).min(img.width() as i64);
    let y1 = (y + h).min(img.height() as i64);
    for yy in y0..y1 {
        for xx in x0..x1 {
            img.put_pixel(xx as u32, yy as u32, Rgb(colour));
        }
    }
}

/// Draws a line from `(x0, y0)` to `(x1, y1)` with a square pen `thickness` pixels wide,
/// clipped to the image.
pub(crate) fn draw_line(img: &mut RgbImage, from: (f64, f64), to: (f64, f64), colour: [u8; 3], thickness: u32) {
    let (x0, y0) = from;
    let (x1, y1) = to;
    if !(x0.is_finite() && y0.is_finite() && x1.is_finite() && y1.is_finite()) {
        return;
    }
    let t = thickness.max(1) as i64;
    let half = (t - 1) / 2;
    let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().clamp(1.0, 100_000.0) as i64;
    for s in 0..=steps {
        let f = s as f64 / steps as f64;
        let x = (x0 + (x1 - x0) * f).round() as i64;
        let y = (y0 + (y1 - y0) * f).round() as i64;
        fill_rect(img, x - half, y - half, t, t, colour);
    }
}

/// Draws a one-pixel rectangle outline.
pub(crate) fn draw_rect_outline(img: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, colour: [u8; 3]) {
    fill_rect(img, x, y, w, 1, colour);
    fill_rect(img, x, y + h - 1, w, 1, colour);
    fill_rect(img, x, y, 1, h, colour);
    fill_rect(img, x + w - 1, y, 1, h, colour);
}

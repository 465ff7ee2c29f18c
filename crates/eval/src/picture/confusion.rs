//! Confusion matrices: counting them, and drawing them as heat maps with the counts written in
//! the cells.
//!
//! Rows are the true classes and columns the predicted ones, so `matrix[t][p]` counts the items of
//! class `t` predicted as `p`. A cell's shade is its share of its row (white = none, dark blue =
//! all of the class), so rare and frequent classes read alike.

use super::font::{self, cap_height, text_height, text_width};
use super::{draw_rect_outline, fill_rect, save_png, WHITE};
use anyhow::{bail, Result};
use image::{Rgb, RgbImage};
use std::path::Path;

/// Colour of a cell holding a whole row (the darkest shade).
pub const FULL_COLOUR: [u8; 3] = [8, 48, 107];

/// Text scale of the picture.
const TEXT_SCALE: u32 = 2;
/// Space around the picture's content, in pixels.
const MARGIN: u32 = 12;

/// Counts `(truth[i], pred[i])` pairs into an `n_classes x n_classes` matrix, rows indexed by the
/// true class and columns by the predicted one.
///
/// Errors when the slices differ in length or a class is not below `n_classes`.
pub fn confusion_matrix(truth: &[u32], pred: &[u32], n_classes: usize) -> Result<Vec<Vec<u64>>> {
    if truth.len() != pred.len() {
        bail!("confusion matrix: {} true labels but {} predictions", truth.len(), pred.len());
    }
    let mut m = vec![vec![0u64; n_classes]; n_classes];
    for (i, (&t, &p)) in truth.iter().zip(pred).enumerate() {
        let (t, p) = (t as usize, p as usize);
        if t >= n_classes || p >= n_classes {
            bail!(
                "confusion matrix: item {i} has true class {t} and predicted class {p}, expected both below {n_classes}"
            );
        }
        m[t][p] += 1;
    }
    Ok(m)
}

/// The shade of a cell holding `fraction` (0..=1) of its row.
fn shade(fraction: f64) -> [u8; 3] {
    let f = fraction.clamp(0.0, 1.0);
    FULL_COLOUR.map(|full| (255.0 + (full as f64 - 255.0) * f).round() as u8)
}

/// Geometry of the picture.
struct Layout {
    n: u32,
    cell: u32,
    /// Left edge of the matrix.
    x0: u32,
    /// Top edge of the matrix.
    y0: u32,
    width: u32,
    height: u32,
}

impl Layout {
    fn new(matrix: &[Vec<u64>], names: &[String]) -> Self {
        let n = matrix.len() as u32;
        let th = text_height(TEXT_SCALE);
        let widest_count = matrix.iter().flatten().map(|c| text_width(&c.to_string(), TEXT_SCALE)).max().unwrap_or(0);
        let widest_name = names.iter().map(|s| text_width(s, TEXT_SCALE)).max().unwrap_or(0);
        let cell = (widest_count + 10).max(th + 16).max(40);
        let row_label_w = widest_name.max(text_width("true", TEXT_SCALE));
        let x0 = MARGIN + row_label_w + 10;
        // "predicted" caption, then the column names, then the matrix.
        let y0 = MARGIN + th + 8 + th + 8;
        let width = (x0 + n * cell + MARGIN).max(x0 + text_width("predicted", TEXT_SCALE) + MARGIN);
        let height = y0 + n * cell + MARGIN;
        Self { n, cell, x0, y0, width, height }
    }

    /// Top-left corner of cell `(row, col)`.
    fn cell_origin(&self, row: usize, col: usize) -> (u32, u32) {
        (self.x0 + col as u32 * self.cell, self.y0 + row as u32 * self.cell)
    }
}

/// Draws a confusion matrix as a heat map, with counts in the cells, the class names along both
/// sides, "true" over the row names and "predicted" over the column names. `class_names` may be
/// empty, in which case the classes are numbered from 0.
pub fn confusion_image(matrix: &[Vec<u64>], class_names: &[String]) -> Result<RgbImage> {
    let n = matrix.len();
    if n == 0 {
        bail!("confusion matrix is empty");
    }
    if n > 200 {
        bail!("confusion matrix of {n} classes is too large to draw (at most 200)");
    }
    if let Some((r, row)) = matrix.iter().enumerate().find(|(_, row)| row.len() != n) {
        bail!("confusion matrix must be square: row {r} has {} entries, expected {n}", row.len());
    }
    let names: Vec<String> = if class_names.is_empty() {
        (0..n).map(|i| i.to_string()).collect()
    } else if class_names.len() == n {
        class_names.to_vec()
    } else {
        bail!("{} class names for a {n}x{n} confusion matrix", class_names.len());
    };
    let layout = Layout::new(matrix, &names);
    let mut img = RgbImage::from_pixel(layout.width, layout.height, Rgb(WHITE));
    let text = [30, 30, 30];
    let th = text_height(TEXT_SCALE) as i64;
    let ch = cap_height(TEXT_SCALE) as i64;
    let cell = layout.cell as i64;
    let matrix_w = layout.n as i64 * cell;

    font::draw_text_centred(&mut img, layout.x0 as i64 + matrix_w / 2, MARGIN as i64, "predicted", text, TEXT_SCALE);
    font::draw_text(&mut img, MARGIN as i64, layout.y0 as i64 - th - 8, "true", text, TEXT_SCALE);
    for (i, name) in names.iter().enumerate() {
        let (cx, cy) = layout.cell_origin(i, i);
        font::draw_text_centred(&mut img, cx as i64 + cell / 2, layout.y0 as i64 - th - 8, name, text, TEXT_SCALE);
        let w = text_width(name, TEXT_SCALE) as i64;
        font::draw_text(&mut img, layout.x0 as i64 - 10 - w, cy as i64 + (cell - ch) / 2, name, text, TEXT_SCALE);
    }
    for (r, row) in matrix.iter().enumerate() {
        let total: u64 = row.iter().sum();
        for (c, &count) in row.iter().enumerate() {
            let fraction = if total == 0 { 0.0 } else { count as f64 / total as f64 };
            let (x, y) = layout.cell_origin(r, c);
            fill_rect(&mut img, x as i64, y as i64, cell, cell, shade(fraction));
            let ink = if fraction > 0.5 { WHITE } else { text };
            font::draw_text_centred(
                &mut img,
                x as i64 + cell / 2,
                y as i64 + (cell - ch) / 2,
                &count.to_string(),
                ink,
                TEXT_SCALE,
            );
        }
    }
    // Thin lines between cells and a frame around the matrix.
    let line = [200, 200, 200];
    for k in 1..layout.n as i64 {
        fill_rect(&mut img, layout.x0 as i64 + k * cell, layout.y0 as i64, 1, matrix_w, line);
        fill_rect(&mut img, layout.x0 as i64, layout.y0 as i64 + k * cell, matrix_w, 1, line);
    }
    draw_rect_outline(&mut img, layout.x0 as i64, layout.y0 as i64, matrix_w, matrix_w, [60, 60, 60]);
    Ok(img)
}

/// Writes [`confusion_image`]'s picture as a PNG file.
pub fn save_confusion_png(matrix: &[Vec<u64>], class_names: &[String], path: &Path) -> Result<()> {
    let img = confusion_image(matrix, class_names)?;
    save_png(&img, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_pairs_by_true_row_and_predicted_column() {
        let truth = [0, 0, 1, 2, 2, 2];
        let pred = [0, 1, 1, 2, 0, 2];
        let m = confusion_matrix(&truth, &pred, 3).unwrap();
        assert_eq!(m, vec![vec![1, 1, 0], vec![0, 1, 0], vec![1, 0, 2]]);
        assert_eq!(m.iter().flatten().sum::<u64>(), 6);
        let err = confusion_matrix(&[0, 3], &[0, 1], 3).unwrap_err().to_string();
        assert!(err.contains("item 1") && err.contains("true class 3"), "{err}");
        assert!(confusion_matrix(&[0], &[0, 1], 3).is_err());
    }

    #[test]
    fn heat_map_png_has_counts_and_shades() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("confusion.png");
        let m = vec![vec![90, 10, 0], vec![0, 100, 0], vec![25, 25, 50]];
        let names: Vec<String> = ["cat", "dog", "bird"].iter().map(|s| s.to_string()).collect();
        save_confusion_png(&m, &names, &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let layout = Layout::new(&m, &names);
        assert_eq!(img.dimensions(), (layout.width, layout.height));
        // Sample each cell near its corner, away from the count text and the grid lines.
        let at = |r: usize, c: usize| {
            let (x, y) = layout.cell_origin(r, c);
            img.get_pixel(x + 3, y + 3).0
        };
        assert_eq!(at(1, 1), FULL_COLOUR);
        assert_eq!(at(0, 2), WHITE);
        assert_eq!(at(0, 0), shade(0.9));
        assert_eq!(at(2, 2), shade(0.5));
        // The count of a full cell is written in white, of an empty cell in dark grey.
        let (x, y) = layout.cell_origin(1, 1);
        let cell = layout.cell;
        let has = |x: u32, y: u32, colour: [u8; 3]| {
            (y..y + cell).any(|yy| (x..x + cell).any(|xx| img.get_pixel(xx, yy).0 == colour))
        };
        assert!(has(x, y, WHITE));
        let (x, y) = layout.cell_origin(0, 2);
        assert!(has(x, y, [30, 30, 30]));
    }

    #[test]
    fn bad_matrices_are_errors() {
        assert!(confusion_image(&[], &[]).is_err());
        assert!(confusion_image(&[vec![1, 2], vec![3]], &[]).is_err());
        assert!(confusion_image(&[vec![1]], &["a".into(), "b".into()]).is_err());
        assert!(confusion_image(&[vec![0, 0], vec![0, 0]], &[]).is_ok());
    }
}

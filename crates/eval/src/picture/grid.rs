//! Image grids: a batch of images `[N, C, H, W]` (C = 1 grey or 3 RGB, values in `[0, 1]`) laid
//! out row by row, optionally with a coloured text label under each image.

use super::font::{self, ADVANCE};
use super::{fill_rect, save_png, WHITE};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use image::{Rgb, RgbImage};
use std::path::Path;

/// Colour of the padding between the cells of [`image_grid`] (mid grey, visible against both
/// black and white images).
pub const GRID_PADDING_COLOUR: [u8; 3] = [128, 128, 128];

/// Padding of [`labelled_grid`], in pixels.
pub const LABELLED_PADDING: u32 = 4;

/// Largest accepted padding, in pixels.
const MAX_PADDING: u32 = 1024;
/// Largest accepted cell side (image side times scale), in pixels.
const MAX_CELL: u32 = 16_384;

/// Images copied to the host as 8-bit RGB, one `H * W * 3` buffer each.
struct HostImages {
    n: usize,
    h: usize,
    w: usize,
    rgb: Vec<u8>,
}

impl HostImages {
    fn from_tensor(images: &Tensor) -> Result<Self> {
        let dims = images.dims().to_vec();
        let (n, c, h, w) = match *dims.as_slice() {
            [n, c, h, w] => (n, c, h, w),
            [n, h, w] => (n, 1, h, w),
            _ => {
                bail!("image grid expects a tensor [N, C, H, W] (or [N, H, W]), got shape {dims:?}")
            }
        };
        if c != 1 && c != 3 {
            bail!("image grid expects 1 (grey) or 3 (RGB) channels, got {c} in shape {dims:?}");
        }
        if n == 0 || h == 0 || w == 0 {
            bail!("image grid needs at least one non-empty image, got shape {dims:?}");
        }
        let values = images
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()
            .context("cannot copy the images to the host")?;
        let to_byte = |v: f32| -> u8 {
            if v.is_nan() {
                0
            } else {
                (v.clamp(0.0, 1.0) * 255.0).round() as u8
            }
        };
        let plane = h * w;
        let mut rgb = vec![0u8; n * plane * 3];
        for i in 0..n {
            for p in 0..plane {
                for ch in 0..3 {
                    let src = if c == 1 { 0 } else { ch };
                    rgb[(i * plane + p) * 3 + ch] = to_byte(values[(i * c + src) * plane + p]);
                }
            }
        }
        Ok(Self { n, h, w, rgb })
    }

    /// Paints image `i`, magnified `scale` times, with its top-left corner at `(x0, y0)`.
    fn paint(&self, i: usize, img: &mut RgbImage, x0: u32, y0: u32, scale: u32) {
        let plane = self.h * self.w;
        for yy in 0..self.h * scale as usize {
            for xx in 0..self.w * scale as usize {
                let p = (yy / scale as usize) * self.w + xx / scale as usize;
                let k = (i * plane + p) * 3;
                let px = Rgb([self.rgb[k], self.rgb[k + 1], self.rgb[k + 2]]);
                img.put_pixel(x0 + xx as u32, y0 + yy as u32, px);
            }
        }
    }
}

/// Grid geometry: `cols x rows` cells of `cell_w x cell_h` separated by `padding`.
struct Layout {
    cols: u32,
    rows: u32,
    cell_w: u32,
    cell_h: u32,
    padding: u32,
}

impl Layout {
    fn new(n: usize, ncols: usize, cell_w: u32, cell_h: u32, padding: u32) -> Result<Self> {
        if ncols == 0 {
            bail!("image grid needs at least one column, got ncols = 0");
        }
        if padding > MAX_PADDING || cell_w > MAX_CELL || cell_h > MAX_CELL {
            bail!(
                "image grid cells of {cell_w}x{cell_h} pixels with padding {padding} are too large (at most {MAX_CELL} pixels per cell side, padding at most {MAX_PADDING})"
            );
        }
        let cols = ncols.min(n) as u32;
        let rows = n.div_ceil(cols as usize) as u32;
        let layout = Self { cols, rows, cell_w, cell_h, padding };
        let (w, h) = (
            cols as u64 * cell_w as u64 + (cols as u64 + 1) * padding as u64,
            rows as u64 * cell_h as u64 + (rows as u64 + 1) * padding as u64,
        );
        if w * h > 1 << 28 {
            bail!("image grid of {w}x{h} pixels is too large (reduce the number of images or the scale)");
        }
        Ok(layout)
    }

    fn width(&self) -> u32 {
        self.cols * self.cell_w + (self.cols + 1) * self.padding
    }

    fn height(&self) -> u32 {
        self.rows * self.cell_h + (self.rows + 1) * self.padding
    }

    /// Top-left corner of cell `i`.
    fn origin(&self, i: usize) -> (u32, u32) {
        let (r, c) = (i as u32 / self.cols, i as u32 % self.cols);
        (self.padding + c * (self.cell_w + self.padding), self.padding + r * (self.cell_h + self.padding))
    }
}

/// Lays out `images` (`[N, C, H, W]`, C = 1 or 3, values clamped to `[0, 1]`) in a grid of
/// `ncols` columns (fewer when N is smaller), each image magnified `scale` times, with `padding`
/// pixels of [`GRID_PADDING_COLOUR`] around and between cells.
///
/// The picture is `cols * W * scale + (cols + 1) * padding` pixels wide and
/// `rows * H * scale + (rows + 1) * padding` high, with `rows = ceil(N / cols)`.
pub fn image_grid(images: &Tensor, ncols: usize, padding: usize, scale: usize) -> Result<RgbImage> {
    let host = HostImages::from_tensor(images)?;
    let side = |len: usize| u32::try_from(len.saturating_mul(scale.max(1))).unwrap_or(u32::MAX);
    let layout = Layout::new(host.n, ncols, side(host.w), side(host.h), u32::try_from(padding).unwrap_or(u32::MAX))?;
    let scale = scale.max(1) as u32;
    let mut img = RgbImage::from_pixel(layout.width(), layout.height(), Rgb(GRID_PADDING_COLOUR));
    for i in 0..host.n {
        let (x, y) = layout.origin(i);
        host.paint(i, &mut img, x, y, scale);
    }
    Ok(img)
}

/// Writes [`image_grid`]'s picture as a PNG file.
pub fn save_image_grid(images: &Tensor, ncols: usize, padding: usize, scale: usize, path: &Path) -> Result<()> {
    let img = image_grid(images, ncols, padding, scale)?;
    save_png(&img, path)
}

/// The longest prefix of `label` that fits `width` pixels at text scale `scale`.
fn fit_label(label: &str, width: u32, scale: u32) -> String {
    let max_chars = ((width + scale) / (ADVANCE * scale)) as usize;
    label.chars().take(max_chars).collect()
}

/// Lays out `images` like [`image_grid`] on a white background, with `labels[i]` written in
/// `colours[i]` under image `i` (one colour for all when `colours` has a single entry).
///
/// Images smaller than 56 pixels are magnified to about 56 pixels; labels too long for the
/// cell width are cut.
pub fn labelled_grid(images: &Tensor, labels: &[String], colours: &[[u8; 3]], ncols: usize) -> Result<RgbImage> {
    let host = HostImages::from_tensor(images)?;
    if labels.len() != host.n {
        bail!("labelled grid: {} labels for {} images", labels.len(), host.n);
    }
    if colours.len() != host.n && colours.len() != 1 {
        bail!(
            "labelled grid: {} colours for {} images (give one per image, or a single one for all)",
            colours.len(),
            host.n
        );
    }
    let scale = (56 / host.h.max(host.w)).max(1) as u32;
    let cell_w = host.w as u32 * scale;
    let text_scale = if cell_w >= 40 { 2 } else { 1 };
    let strip = font::text_height(text_scale) + 4;
    let layout = Layout::new(host.n, ncols, cell_w, host.h as u32 * scale + strip, LABELLED_PADDING)?;
    let mut img = RgbImage::from_pixel(layout.width(), layout.height(), Rgb(WHITE));
    for i in 0..host.n {
        let (x, y) = layout.origin(i);
        host.paint(i, &mut img, x, y, scale);
        let colour = colours[if colours.len() == 1 { 0 } else { i }];
        let text = fit_label(&labels[i], cell_w, text_scale);
        let ty = y + host.h as u32 * scale + 3;
        fill_rect(&mut img, x as i64, ty as i64 - 3, cell_w as i64, strip as i64, WHITE);
        font::draw_text_centred(&mut img, x as i64 + cell_w as i64 / 2, ty as i64, &text, colour, text_scale);
    }
    Ok(img)
}

/// Writes [`labelled_grid`]'s picture as a PNG file.
pub fn save_labelled_grid(
    images: &Tensor,
    labels: &[String],
    colours: &[[u8; 3]],
    ncols: usize,
    path: &Path,
) -> Result<()> {
    let img = labelled_grid(images, labels, colours, ncols)?;
    save_png(&img, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::picture::{CORRECT_GREEN, WRONG_RED};

    /// Five constant 1-channel 4x3 images with values 0, 0.5, 1, 2 (clamped) and -1 (clamped).
    fn constant_images() -> Tensor {
        let values = [0.0f32, 0.5, 1.0, 2.0, -1.0];
        let data: Vec<f32> = values.iter().flat_map(|&v| std::iter::repeat_n(v, 12)).collect();
        Tensor::from_vec(data, (5, 1, 4, 3), &Device::Cpu).unwrap()
    }

    #[test]
    fn grid_png_has_expected_size_cells_and_padding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/grid.png");
        save_image_grid(&constant_images(), 3, 2, 2, &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        // 3 columns of 3*2 px, 2 rows of 4*2 px, padding 2.
        assert_eq!(img.dimensions(), (3 * 6 + 4 * 2, 2 * 8 + 3 * 2));
        let centre = |i: u32| {
            let (r, c) = (i / 3, i % 3);
            let x = 2 + c * (6 + 2) + 3;
            let y = 2 + r * (8 + 2) + 4;
            img.get_pixel(x, y).0
        };
        assert_eq!(centre(0), [0, 0, 0]);
        assert_eq!(centre(1), [128, 128, 128]);
        assert_eq!(centre(2), [255, 255, 255]);
        assert_eq!(centre(3), [255, 255, 255]);
        assert_eq!(centre(4), [0, 0, 0]);
        // Padding and the empty sixth cell.
        assert_eq!(img.get_pixel(0, 0).0, GRID_PADDING_COLOUR);
        assert_eq!(img.get_pixel(8, 5).0, GRID_PADDING_COLOUR);
        assert_eq!(centre(5), GRID_PADDING_COLOUR);
    }

    #[test]
    fn rgb_images_keep_their_channels() {
        // One 2x2 RGB image: red channel 1, green 0.5, blue 0.
        let mut data = vec![1.0f32; 4];
        data.extend([0.5f32; 4]);
        data.extend([0.0f32; 4]);
        let t = Tensor::from_vec(data, (1, 3, 2, 2), &Device::Cpu).unwrap();
        let img = image_grid(&t, 8, 0, 1).unwrap();
        assert_eq!(img.dimensions(), (2, 2));
        assert_eq!(img.get_pixel(1, 1).0, [255, 128, 0]);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let t = Tensor::zeros((2, 2, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(image_grid(&t, 2, 1, 1).unwrap_err().to_string().contains("channels"));
        let t = Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(image_grid(&t, 2, 1, 1).is_err());
        let t = Tensor::zeros((2, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(image_grid(&t, 0, 1, 1).is_err());
    }

    #[test]
    fn labelled_grid_writes_coloured_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labelled.png");
        let images = Tensor::zeros((3, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
        let labels: Vec<String> = ["7", "2", "1"].iter().map(|s| s.to_string()).collect();
        let colours = [CORRECT_GREEN, WRONG_RED, CORRECT_GREEN];
        save_labelled_grid(&images, &labels, &colours, 2, &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let strip = font::text_height(2) + 4;
        assert_eq!(img.dimensions(), (2 * 56 + 3 * 4, 2 * (56 + strip) + 3 * 4));
        // Image pixels are black; the label strip of each cell holds its colour.
        assert_eq!(img.get_pixel(4 + 28, 4 + 28).0, [0, 0, 0]);
        let strip_has = |x0: u32, y0: u32, colour: [u8; 3]| {
            (y0..y0 + strip).any(|y| (x0..x0 + 56).any(|x| img.get_pixel(x, y).0 == colour))
        };
        assert!(strip_has(4, 4 + 56, CORRECT_GREEN));
        assert!(!strip_has(4, 4 + 56, WRONG_RED));
        assert!(strip_has(4 + 56 + 4, 4 + 56, WRONG_RED));
        assert!(strip_has(4, 4 + 56 + strip + 4 + 56, CORRECT_GREEN));

        assert!(labelled_grid(&images, &labels[..2], &colours, 2).is_err());
        assert!(labelled_grid(&images, &labels, &colours[..2], 2).is_err());
        assert!(labelled_grid(&images, &labels, &[WRONG_RED], 2).is_ok());
    }
}

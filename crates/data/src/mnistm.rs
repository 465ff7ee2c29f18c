//! MNIST-M, built as Ganin et al. built it but from other photos, and [`ImageSet`], a labelled
//! set of small colour images (MNIST expanded to RGB, MNIST-M, or a user's folders of PNGs).
//!
//! Construction (deterministic from a seed): for each MNIST digit, a photo chosen uniformly among
//! the six bundled scikit-image photos (`data/photos`), a uniform random 28x28 crop of it, flipped
//! horizontally and vertically each with probability 1/2; the digit binarised (`x / 255 > 0.5`)
//! to 0 or 255; each output channel is `|crop - digit|`. The original used BSDS500 photos, so
//! accuracies on this set differ from the papers' (it is easier: two of the photos are largely
//! black).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use image::RgbImage;
use zoo_core::ZooRng;

use crate::Mnist;

/// The bundled photos, in the order the builder indexes them.
pub const PHOTO_FILES: [&str; 6] =
    ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "retina.jpg"];

/// Background photos for MNIST-M.
#[derive(Debug, Clone)]
pub struct Photos {
    /// The photos as RGB.
    pub images: Vec<RgbImage>,
}

impl Photos {
    /// The six photos shipped in `data/photos` (see its README for authors and licences).
    pub fn bundled() -> Result<Self> {
        Self::from_files(&PHOTO_FILES.map(|f| crate::mnist::workspace_root().join("data/photos").join(f)))
    }

    /// Photos from image files (PNG or JPEG), each at least 28x28.
    pub fn from_files(paths: &[PathBuf]) -> Result<Self> {
        if paths.is_empty() {
            bail!("MNIST-M needs at least one background photo");
        }
        let images = paths
            .iter()
            .map(|p| {
                let img = image::open(p).with_context(|| format!("cannot read photo {}", p.display()))?.to_rgb8();
                if img.width() < 28 || img.height() < 28 {
                    bail!("photo {} is {}x{}, smaller than a 28x28 crop", p.display(), img.width(), img.height());
                }
                Ok(img)
            })
            .collect::<Result<_>>()?;
        Ok(Self { images })
    }
}

/// Labelled colour images stored as bytes, channel-major per image (`[C, H, W]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    /// `len() * channels * rows * cols` bytes.
    pub images: Vec<u8>,
    /// One label per image.
    pub labels: Vec<u8>,
    /// Channels (3 for RGB).
    pub channels: usize,
    /// Height.
    pub rows: usize,
    /// Width.
    pub cols: usize,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn image_len(&self) -> usize {
        self.channels * self.rows * self.cols
    }

    /// MNIST digits repeated to three channels.
    pub fn from_mnist_rgb(mnist: &Mnist) -> Self {
        let n = mnist.rows * mnist.cols;
        let mut images = Vec::with_capacity(mnist.len() * 3 * n);
        for i in 0..mnist.len() {
            let digit = &mnist.images[i * n..(i + 1) * n];
            for _ in 0..3 {
                images.extend_from_slice(digit);
            }
        }
        Self { images, labels: mnist.labels.clone(), channels: 3, rows: mnist.rows, cols: mnist.cols }
    }

    /// Images `[B, C, H, W]` (f32 in `[0, 1]`) and labels `[B]` (u32) of `indices`.
    pub fn batch(&self, indices: &[usize], dev: &Device) -> Result<(Tensor, Tensor)> {
        let n = self.image_len();
        let mut pixels = Vec::with_capacity(indices.len() * n);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            if i >= self.len() {
                bail!("image index {i} is out of bounds for a set of {} images", self.len());
            }
            pixels.extend(self.images[i * n..(i + 1) * n].iter().map(|&p| p as f32 / 255.0));
            labels.push(self.labels[i] as u32);
        }
        let x = Tensor::from_vec(pixels, (indices.len(), self.channels, self.rows, self.cols), dev)?;
        Ok((x, Tensor::from_vec(labels, indices.len(), dev)?))
    }

    /// The images with indices in `range`.
    pub fn subset(&self, range: std::ops::Range<usize>) -> Result<Self> {
        if range.start > range.end || range.end > self.len() {
            bail!("subset range {}..{} is out of bounds for a set of {} images", range.start, range.end, self.len());
        }
        let n = self.image_len();
        Ok(Self {
            images: self.images[range.start * n..range.end * n].to_vec(),
            labels: self.labels[range.clone()].to_vec(),
            ..*self
        })
    }

    /// Writes every image as `dir/<label>/<index>.png` (RGB).
    pub fn export_png_folders(&self, dir: &Path) -> Result<()> {
        if self.channels != 3 {
            bail!("PNG export writes RGB images, this set has {} channels", self.channels);
        }
        let (h, w, n) = (self.rows, self.cols, self.image_len());
        for i in 0..self.len() {
            let img = &self.images[i * n..(i + 1) * n];
            let mut rgb = RgbImage::new(w as u32, h as u32);
            for (k, px) in rgb.pixels_mut().enumerate() {
                px.0 = [img[k], img[h * w + k], img[2 * h * w + k]];
            }
            let class_dir = dir.join(self.labels[i].to_string());
            std::fs::create_dir_all(&class_dir).with_context(|| format!("cannot create {}", class_dir.display()))?;
            let path = class_dir.join(format!("{i:05}.png"));
            rgb.save(&path).with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    /// Reads `dir/<class>/*.{png,jpg,jpeg}` with classes `0`, `1`, ... (folder names that are
    /// numbers), every image resized to `size`x`size` RGB, in sorted file order.
    pub fn from_png_folders(dir: &Path, size: usize) -> Result<Self> {
        let mut classes: Vec<(u8, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read image folder {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
                let label: u8 = name.parse().with_context(|| {
                    format!("class folder {} is not named by a class number (0, 1, ...)", path.display())
                })?;
                classes.push((label, path));
            }
        }
        if classes.is_empty() {
            bail!("{} has no class folders (expected {}/0, {}/1, ...)", dir.display(), dir.display(), dir.display());
        }
        classes.sort();
        let mut set = Self { images: Vec::new(), labels: Vec::new(), channels: 3, rows: size, cols: size };
        for (label, class_dir) in classes {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&class_dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
                    matches!(ext.as_str(), "png" | "jpg" | "jpeg")
                })
                .collect();
            files.sort();
            for f in files {
                let img = image::open(&f).with_context(|| format!("cannot read image {}", f.display()))?;
                let rgb = image::imageops::resize(
                    &img.to_rgb8(),
                    size as u32,
                    size as u32,
                    image::imageops::FilterType::Triangle,
                );
                for c in 0..3 {
                    set.images.extend(rgb.pixels().map(|p| p.0[c]));
                }
                set.labels.push(label);
            }
        }
        if set.is_empty() {
            bail!("no PNG or JPEG images under {}", dir.display());
        }
        Ok(set)
    }
}

/// MNIST-M from `mnist` over `photos`, deterministic from `seed` (see the module documentation).
pub fn build_mnistm(mnist: &Mnist, photos: &Photos, seed: u64) -> Result<ImageSet> {
    let (h, w) = (mnist.rows, mnist.cols);
    let n = h * w;
    let mut rng = ZooRng::derive(seed, "mnist-m");
    let mut images = Vec::with_capacity(mnist.len() * 3 * n);
    for i in 0..mnist.len() {
        let photo = &photos.images[rng.below(photos.images.len())];
        let (pw, ph) = (photo.width() as usize, photo.height() as usize);
        if pw < w || ph < h {
            bail!("photo of {pw}x{ph} is smaller than the {w}x{h} digits");
        }
        let x0 = rng.below(pw - w + 1);
        let y0 = rng.below(ph - h + 1);
        let flip_h = rng.next_f64() < 0.5;
        let flip_v = rng.next_f64() < 0.5;
        let digit = &mnist.images[i * n..(i + 1) * n];
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let sx = if flip_h { w - 1 - x } else { x };
                    let sy = if flip_v { h - 1 - y } else { y };
                    let bg = photo.get_pixel((x0 + sx) as u32, (y0 + sy) as u32).0[c] as i16;
                    let ink = if digit[y * w + x] as f32 / 255.0 > 0.5 { 255 } else { 0 };
                    images.push((bg - ink).unsigned_abs() as u8);
                }
            }
        }
    }
    Ok(ImageSet { images, labels: mnist.labels.clone(), channels: 3, rows: h, cols: w })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mnistm_is_deterministic_and_follows_the_recipe() {
        let mnist = Mnist::bundled_test_slice().unwrap().subset(0..50).unwrap();
        let photos = Photos::bundled().unwrap();
        assert_eq!(photos.images.len(), 6);
        let a = build_mnistm(&mnist, &photos, 3).unwrap();
        assert_eq!(a, build_mnistm(&mnist, &photos, 3).unwrap());
        assert_ne!(a.images, build_mnistm(&mnist, &photos, 4).unwrap().images);
        assert_eq!((a.len(), a.channels, a.rows, a.cols), (50, 3, 28, 28));
        assert_eq!(a.labels, mnist.labels);
        // A one-photo, uniform-colour background makes the recipe checkable pixel by pixel:
        // |c - 0| = c off the digit, |c - 255| on it.
        let flat = Photos { images: vec![RgbImage::from_pixel(40, 30, image::Rgb([10, 200, 255]))] };
        let m = build_mnistm(&mnist, &flat, 0).unwrap();
        for i in 0..mnist.len() {
            for k in 0..784 {
                let on = mnist.images[i * 784 + k] as f32 / 255.0 > 0.5;
                for (c, v) in [10u8, 200, 255].into_iter().enumerate() {
                    let want = if on { 255 - v } else { v };
                    assert_eq!(m.images[i * 3 * 784 + c * 784 + k], want);
                }
            }
        }
        let (x, y) = a.batch(&[0, 49], &Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[2, 3, 28, 28]);
        assert_eq!(y.to_vec1::<u32>().unwrap(), vec![mnist.labels[0] as u32, mnist.labels[49] as u32]);
        assert!(a.batch(&[50], &Device::Cpu).is_err());
    }

    #[test]
    fn png_folders_round_trip_and_bad_folders_are_named() {
        let mnist = Mnist::bundled_test_slice().unwrap().subset(0..12).unwrap();
        let set = build_mnistm(&mnist, &Photos::bundled().unwrap(), 0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        set.export_png_folders(dir.path()).unwrap();
        let back = ImageSet::from_png_folders(dir.path(), 28).unwrap();
        // Folder order groups by class; every exported image comes back exactly.
        assert_eq!(back.len(), 12);
        let mut want: Vec<(u8, &[u8])> =
            (0..12).map(|i| (set.labels[i], &set.images[i * 2352..(i + 1) * 2352])).collect();
        want.sort_by_key(|w| w.0);
        for (i, (label, img)) in want.into_iter().enumerate() {
            assert_eq!(back.labels[i], label);
            assert_eq!(&back.images[i * 2352..(i + 1) * 2352], img);
        }
        std::fs::create_dir_all(dir.path().join("cats")).unwrap();
        let e = ImageSet::from_png_folders(dir.path(), 28).unwrap_err().to_string();
        assert!(e.contains("cats") && e.contains("class number"), "{e}");
        let e = format!("{:#}", Photos::from_files(&[dir.path().join("none.png")]).unwrap_err());
        assert!(e.contains("none.png"), "{e}");
        let rgb = ImageSet::from_mnist_rgb(&mnist);
        assert_eq!(&rgb.images[784..1568], &mnist.images[0..784]);
    }
}

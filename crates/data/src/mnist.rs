//! MNIST: the full data set from a directory of IDX files, and two small subsets shipped with the
//! repository in `data/mnist/` for tests, examples and offline runs.
//!
//! - [`Mnist::bundled_train_subset`]: the first 10,000 images of the MNIST **training** set.
//! - [`Mnist::bundled_test_slice`]: the first 1,000 images of the MNIST **test** set.
//! - [`Mnist::from_dir`]: the full set, from the four standard files (raw or `.gz`), which
//!   `scripts/fetch-data.sh mnist` downloads into [`Mnist::default_dir`].

use crate::idx;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Number of digit classes.
pub const NUM_CLASSES: usize = 10;

/// Environment variable naming a data directory; MNIST is then looked for in its `mnist/`.
pub const DATA_DIR_ENV: &str = "ZOO_DATA_DIR";

/// Which part of MNIST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The 60,000 training images (`train-*` files).
    Train,
    /// The 10,000 test images (`t10k-*` files).
    Test,
}

impl Split {
    /// The standard file names (without `.gz`) of this split's images and labels.
    pub fn file_names(self) -> (&'static str, &'static str) {
        match self {
            Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
            Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        }
    }

    /// The number of images of this split in the full data set.
    pub fn full_len(self) -> usize {
        match self {
            Split::Train => 60_000,
            Split::Test => 10_000,
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// The root of the candle-zoo workspace (two levels above this crate's manifest).
pub fn workspace_root() -> PathBuf {
    let raw = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    raw.canonicalize().unwrap_or(raw)
}

/// The directory holding the bundled subsets: `<workspace root>/data/mnist`.
pub fn bundled_dir() -> PathBuf {
    workspace_root().join("data").join("mnist")
}

/// A set of MNIST images with their labels, held in memory as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mnist {
    /// `len() * rows * cols` pixel bytes (0 = black background, 255 = ink), row-major, one image
    /// after the other.
    pub images: Vec<u8>,
    /// One label (0..=9) per image.
    pub labels: Vec<u8>,
    /// Image height (28 for MNIST).
    pub rows: usize,
    /// Image width (28 for MNIST).
    pub cols: usize,
}

impl Mnist {
    /// Builds a set from pixels and labels, checking that the counts agree and every label is a
    /// digit.
    pub fn new(images: Vec<u8>, labels: Vec<u8>, rows: usize, cols: usize) -> Result<Self> {
        if rows == 0 || cols == 0 {
            bail!("MNIST images must be at least 1x1, got {rows}x{cols}");
        }
        let per_image =
            rows.checked_mul(cols).with_context(|| format!("MNIST images of {rows}x{cols} are too large"))?;
        let n_images = images.len() / per_image;
        if n_images * per_image != images.len() {
            bail!("{} pixel bytes are not a whole number of {rows}x{cols} images", images.len());
        }
        if n_images != labels.len() {
            bail!("image and label counts disagree: {n_images} images, {} labels", labels.len());
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= NUM_CLASSES) {
            bail!("label {l} of item {i} is not a digit (expected 0..=9)");
        }
        Ok(Self { images, labels, rows, cols })
    }

    /// Reads a set from an IDX image file and an IDX label file (each raw or gzip-compressed).
    pub fn from_files(images_path: &Path, labels_path: &Path) -> Result<Self> {
        let images = idx::read_images(images_path)?;
        let labels = idx::read_labels(labels_path)?;
        if images.count != labels.len() {
            bail!(
                "image and label counts disagree: {} has {} images, {} has {} labels",
                images_path.display(),
                images.count,
                labels_path.display(),
                labels.len()
            );
        }
        Self::new(images.pixels, labels, images.rows, images.cols)
            .with_context(|| format!("invalid MNIST data in {} / {}", images_path.display(), labels_path.display()))
    }

    /// The first 10,000 images of the MNIST **training** set, shipped in `data/mnist/`.
    pub fn bundled_train_subset() -> Result<Self> {
        let dir = bundled_dir();
        Self::from_files(&dir.join("train-10k-images-idx3-ubyte.gz"), &dir.join("train-10k-labels-idx1-ubyte.gz"))
            .context("cannot load the bundled MNIST training subset (data/mnist/train-10k-*)")
    }

    /// The first 1,000 images of the MNIST **test** set, shipped in `data/mnist/`.
    pub fn bundled_test_slice() -> Result<Self> {
        let dir = bundled_dir();
        Self::from_files(&dir.join("test-1k-images-idx3-ubyte.gz"), &dir.join("test-1k-labels-idx1-ubyte.gz"))
            .context("cannot load the bundled MNIST test slice (data/mnist/test-1k-*)")
    }

    /// The bundled subset of a split: [`Mnist::bundled_train_subset`] or
    /// [`Mnist::bundled_test_slice`].
    pub fn bundled(split: Split) -> Result<Self> {
        match split {
            Split::Train => Self::bundled_train_subset(),
            Split::Test => Self::bundled_test_slice(),
        }
    }

    /// Where the full data set is looked for by default: `$ZOO_DATA_DIR/mnist` when the variable
    /// is set (and not empty), else `<workspace root>/.cache/mnist`.
    pub fn default_dir() -> PathBuf {
        match std::env::var_os(DATA_DIR_ENV) {
            Some(d) if !d.is_empty() => PathBuf::from(d).join("mnist"),
            _ => workspace_root().join(".cache").join("mnist"),
        }
    }

    /// The image and label files of `split` in `dir`, preferring the raw file over its `.gz`
    /// twin; `None` when either is missing.
    pub fn find_files(dir: &Path, split: Split) -> Option<(PathBuf, PathBuf)> {
        let find = |name: &str| {
            let raw = dir.join(name);
            let gz = dir.join(format!("{name}.gz"));
            if raw.is_file() {
                Some(raw)
            } else if gz.is_file() {
                Some(gz)
            } else {
                None
            }
        };
        let (images, labels) = split.file_names();
        Some((find(images)?, find(labels)?))
    }

    /// Reads a split of the full data set from `dir`, which holds the standard files
    /// (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
    /// `t10k-labels-idx1-ubyte`, each raw or with a `.gz` suffix).
    pub fn from_dir(dir: &Path, split: Split) -> Result<Self> {
        let (images, labels) = Self::find_files(dir, split).with_context(|| missing_message(&[dir], split))?;
        Self::from_files(&images, &labels)
    }

    /// Loads a split for a command-line tool.
    ///
    /// With `data_dir`, the files are read from that directory or from its `mnist/`
    /// subdirectory, and their absence is an error. Without it, [`Mnist::default_dir`] is used;
    /// if the full set is not there and `allow_bundled_fallback` is true, the bundled subset of
    /// the split is returned instead (with a note on standard error), otherwise the error tells
    /// how to get the data. Files that exist but are damaged are always an error.
    pub fn load(data_dir: Option<&Path>, split: Split, allow_bundled_fallback: bool) -> Result<Self> {
        match data_dir {
            Some(dir) => {
                let nested = dir.join("mnist");
                for candidate in [dir, nested.as_path()] {
                    if let Some((images, labels)) = Self::find_files(candidate, split) {
                        return Self::from_files(&images, &labels);
                    }
                }
                bail!(missing_message(&[dir, &nested], split))
            }
            None => {
                let dir = Self::default_dir();
                if let Some((images, labels)) = Self::find_files(&dir, split) {
                    return Self::from_files(&images, &labels);
                }
                if allow_bundled_fallback {
                    let bundled = Self::bundled(split)?;
                    eprintln!(
                        "note: full MNIST {split} set not found in {}; using the bundled subset of {} {split} images (run `scripts/fetch-data.sh mnist` for all {})",
                        dir.display(),
                        bundled.len(),
                        split.full_len()
                    );
                    return Ok(bundled);
                }
                bail!(missing_message(&[&dir], split))
            }
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image (`rows * cols`).
    pub fn image_len(&self) -> usize {
        self.rows.saturating_mul(self.cols)
    }

    /// The pixel bytes of image `i`, or `None` when `i` is out of range.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let n = self.image_len();
        let start = i.checked_mul(n)?;
        self.images.get(start..start.checked_add(n)?)
    }

    /// The label of image `i`, or `None` when `i` is out of range.
    pub fn label(&self, i: usize) -> Option<u8> {
        self.labels.get(i).copied()
    }

    /// The images at `indices` as an `f32` tensor `[B, 1, rows, cols]` with values in `[0, 1]`
    /// and their labels as a `u32` tensor `[B]`, both on `dev`.
    pub fn batch(&self, indices: &[usize], dev: &Device) -> Result<(Tensor, Tensor)> {
        let n = self.image_len();
        let mut pixels = Vec::with_capacity(indices.len() * n);
        let mut labels = Vec::with_capacity(indices.len());
        for (pos, &i) in indices.iter().enumerate() {
            let image = self.image(i).with_context(|| {
                format!("batch index {i} (position {pos}) is out of range for an MNIST set of {} images", self.len())
            })?;
            pixels.extend(image.iter().map(|&p| p as f32 / 255.0));
            labels.push(self.labels[i] as u32);
        }
        let b = indices.len();
        let images = Tensor::from_vec(pixels, (b, 1, self.rows, self.cols), dev)?;
        let labels = Tensor::from_vec(labels, b, dev)?;
        Ok((images, labels))
    }

    /// The images in `range` as a new set.
    pub fn subset(&self, range: Range<usize>) -> Result<Self> {
        if range.start > range.end || range.end > self.len() {
            bail!(
                "subset range {}..{} is out of bounds for an MNIST set of {} images",
                range.start,
                range.end,
                self.len()
            );
        }
        let n = self.image_len();
        Ok(Self {
            images: self.images[range.start * n..range.end * n].to_vec(),
            labels: self.labels[range].to_vec(),
            rows: self.rows,
            cols: self.cols,
        })
    }

    /// How many images of each digit the set holds.
    pub fn class_counts(&self) -> [usize; NUM_CLASSES] {
        let mut counts = [0; NUM_CLASSES];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }
}

fn missing_message(dirs: &[&Path], split: Split) -> String {
    let (images, labels) = split.file_names();
    let places = dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(" or ");
    format!(
        "the full MNIST {split} set was not found in {places} (looked for {images}[.gz] and {labels}[.gz]); \
         run `scripts/fetch-data.sh mnist` to download it into {}, or pass `--data-dir DIR` with DIR holding the MNIST IDX files",
        workspace_root().join(".cache").join("mnist").display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::{write_images, write_labels, Compression, IdxImages};

    fn check_bundled(m: &Mnist, expected: usize) {
        assert_eq!(m.len(), expected);
        assert_eq!((m.rows, m.cols), (28, 28));
        assert_eq!(m.images.len(), expected * 28 * 28);
        let counts = m.class_counts();
        assert_eq!(counts.iter().sum::<usize>(), expected);
        assert!(counts.iter().all(|&c| c > 0), "every class present: {counts:?}");
        assert!(m.labels.iter().all(|&l| l < 10));
    }

    #[test]
    fn bundled_subsets_have_the_right_counts() {
        let train = Mnist::bundled_train_subset().unwrap();
        check_bundled(&train, 10_000);
        // The first training labels of MNIST are 5, 0, 4, 1, 9.
        assert_eq!(&train.labels[..5], &[5, 0, 4, 1, 9]);
        assert_eq!(train.class_counts()[1], 1127);
        let test = Mnist::bundled_test_slice().unwrap();
        check_bundled(&test, 1_000);
        // The first test labels of MNIST are 7, 2, 1, 0, 4.
        assert_eq!(&test.labels[..5], &[7, 2, 1, 0, 4]);
        assert_eq!(Mnist::bundled(Split::Test).unwrap(), test);
    }

    fn write_fake_split(dir: &Path, split: Split, n: usize, compression: Compression) {
        let (images, labels) = split.file_names();
        let suffix = if compression == Compression::Gzip { ".gz" } else { "" };
        let pixels: Vec<u8> = (0..n * 4).map(|i| (i * 37 % 256) as u8).collect();
        let idx_images = IdxImages::new(2, 2, pixels).unwrap();
        write_images(&dir.join(format!("{images}{suffix}")), &idx_images, compression).unwrap();
        let labels_v: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        write_labels(&dir.join(format!("{labels}{suffix}")), &labels_v, compression).unwrap();
    }

    #[test]
    fn from_dir_reads_raw_and_gz_and_checks_counts() {
        let dir = tempfile::tempdir().unwrap();
        write_fake_split(dir.path(), Split::Train, 12, Compression::None);
        write_fake_split(dir.path(), Split::Test, 5, Compression::Gzip);
        let train = Mnist::from_dir(dir.path(), Split::Train).unwrap();
        assert_eq!((train.len(), train.rows, train.cols), (12, 2, 2));
        let test = Mnist::from_dir(dir.path(), Split::Test).unwrap();
        assert_eq!(test.len(), 5);
        assert_eq!(test.labels, vec![0, 1, 2, 3, 4]);

        // Labels of another length.
        write_labels(&dir.path().join("t10k-labels-idx1-ubyte.gz"), &[1, 2, 3], Compression::Gzip).unwrap();
        let err = format!("{:#}", Mnist::from_dir(dir.path(), Split::Test).unwrap_err());
        assert!(err.contains("5 images"), "{err}");
        assert!(err.contains("3 labels"), "{err}");

        // Labels that are not digits.
        write_labels(&dir.path().join("t10k-labels-idx1-ubyte.gz"), &[1, 2, 3, 42, 0], Compression::Gzip).unwrap();
        let err = format!("{:#}", Mnist::from_dir(dir.path(), Split::Test).unwrap_err());
        assert!(err.contains("label 42 of item 3"), "{err}");
    }

    #[test]
    fn missing_data_points_to_the_fetch_script() {
        let dir = tempfile::tempdir().unwrap();
        let err = format!("{:#}", Mnist::from_dir(dir.path(), Split::Train).unwrap_err());
        assert!(err.contains("scripts/fetch-data.sh mnist"), "{err}");
        assert!(err.contains("--data-dir"), "{err}");
        assert!(err.contains("train-images-idx3-ubyte"), "{err}");
        let err = format!("{:#}", Mnist::load(Some(dir.path()), Split::Test, true).unwrap_err());
        assert!(err.contains("scripts/fetch-data.sh mnist"), "{err}");
        assert!(err.contains("t10k-images-idx3-ubyte"), "{err}");
    }

    #[test]
    fn load_accepts_a_parent_directory_with_mnist_inside() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("mnist");
        std::fs::create_dir_all(&nested).unwrap();
        write_fake_split(&nested, Split::Test, 3, Compression::Gzip);
        assert_eq!(Mnist::load(Some(dir.path()), Split::Test, false).unwrap().len(), 3);
        assert_eq!(Mnist::load(Some(&nested), Split::Test, false).unwrap().len(), 3);
    }

    #[test]
    fn batch_subset_and_counts() {
        let m = Mnist::new(vec![0, 255, 51, 102, 10, 20, 30, 40, 1, 2, 3, 4], vec![7, 3, 7], 2, 2).unwrap();
        let (x, y) = m.batch(&[1, 0], &Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[2, 1, 2, 2]);
        assert_eq!(y.dims(), &[2]);
        assert_eq!(y.to_vec1::<u32>().unwrap(), vec![3, 7]);
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!((xs[4] - 0.0).abs() < 1e-6 && (xs[5] - 1.0).abs() < 1e-6 && (xs[6] - 0.2).abs() < 1e-6);
        assert!((xs[0] - 10.0 / 255.0).abs() < 1e-6);
        let err = format!("{:#}", m.batch(&[0, 3], &Device::Cpu).unwrap_err());
        assert!(err.contains("index 3"), "{err}");

        let s = m.subset(1..3).unwrap();
        assert_eq!(s.labels, vec![3, 7]);
        assert_eq!(s.images, vec![10, 20, 30, 40, 1, 2, 3, 4]);
        assert!(m.subset(2..4).is_err());
        let mut counts = [0; 10];
        counts[7] = 2;
        counts[3] = 1;
        assert_eq!(m.class_counts(), counts);
        assert!(Mnist::new(vec![0; 8], vec![1], 2, 2).is_err());
    }

    #[test]
    fn bundled_subsets_are_prefixes_of_the_full_set_when_present() {
        let dir = workspace_root().join(".cache").join("mnist");
        if Mnist::find_files(&dir, Split::Train).is_none() || Mnist::find_files(&dir, Split::Test).is_none() {
            return; // the full set is optional (scripts/fetch-data.sh mnist)
        }
        let train = Mnist::from_dir(&dir, Split::Train).unwrap();
        let test = Mnist::from_dir(&dir, Split::Test).unwrap();
        assert_eq!((train.len(), test.len()), (60_000, 10_000));
        assert_eq!(train.subset(0..10_000).unwrap(), Mnist::bundled_train_subset().unwrap());
        assert_eq!(test.subset(0..1_000).unwrap(), Mnist::bundled_test_slice().unwrap());
    }

    #[test]
    fn default_dir_is_under_the_workspace() {
        // Only checks the fallback form; the environment variable is not touched here because
        // tests run in parallel.
        if std::env::var_os(DATA_DIR_ENV).is_none() {
            let d = Mnist::default_dir();
            assert!(d.ends_with(".cache/mnist"), "{}", d.display());
            assert!(workspace_root().join("Cargo.toml").is_file());
        }
    }
}

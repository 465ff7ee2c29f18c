//! # zoo-data
//!
//! The data sets of candle-zoo and the machinery to feed them to a model reproducibly.
//!
//! - [`idx`]: reading and writing IDX files (the MNIST format), raw or gzip-compressed, with
//!   errors that name the file, the byte offset and what was expected.
//! - [`mnist`]: [`Mnist`], the full data set from a directory (see `scripts/fetch-data.sh`) and
//!   the two subsets shipped in `data/mnist/`: the first 10,000 training images and the first
//!   1,000 test images.
//! - [`mnistm`]: MNIST-M built from the photos in `data/photos` ([`build_mnistm`]) and
//!   [`ImageSet`], labelled colour images (also read from and written to class folders of PNGs).
//! - [`domains`]: [`TwoDomains`], a labelled source set and an unlabelled target set drawn as
//!   separate batches for domain adaptation.
//! - [`batch`]: [`Batcher`], a seeded mini-batch order whose position can be saved with a
//!   checkpoint for an exact resume.

pub mod batch;
pub mod domains;
pub mod idx;
pub mod mnist;
pub mod mnistm;

pub use batch::{BatchPosition, Batcher};
pub use domains::{DomainBatch, TwoDomainPosition, TwoDomains};
pub use mnist::{Mnist, Split};
pub use mnistm::{build_mnistm, ImageSet, Photos};

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

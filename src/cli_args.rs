//! Command-line options shared by the example binaries.

use std::path::PathBuf;

use clap::Args;
use zoo_data::{Mnist, Split};

/// Where the MNIST data comes from, and the device to compute on.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Directory holding the MNIST IDX files (default: $ZOO_DATA_DIR/mnist or .cache/mnist).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Use the small subsets shipped in data/mnist instead of the full set.
    #[arg(long)]
    pub bundled: bool,
    /// Device: cpu, cuda, cuda:N, metal or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl DataArgs {
    /// The requested split: the bundled subset with `--bundled`, else the full set (an error
    /// that explains how to fetch it when it is missing).
    pub fn load(&self, split: Split) -> anyhow::Result<Mnist> {
        if self.bundled {
            Mnist::bundled(split)
        } else {
            Mnist::load(self.data_dir.as_deref(), split, false)
        }
    }
}

/// `export`: a checkpoint rewritten with half-precision storage.
#[derive(Args)]
pub struct ExportArgs {
    /// Manifest id or path of the checkpoint to rewrite.
    #[arg(long)]
    pub weights: String,
    /// Output checkpoint (written atomically).
    #[arg(long)]
    pub out: PathBuf,
}

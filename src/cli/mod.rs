//! Command-line parsing and dispatch of the `zoo` tool.

mod fetch;
mod info;
mod list;
mod verify;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use zoo_core::manifest::Manifest;

/// The `zoo` command line.
#[derive(Debug, Parser)]
#[command(
    name = "zoo",
    version,
    about = "The candle-zoo model zoo: list, inspect, verify and fetch published checkpoints",
    long_about = "The candle-zoo model zoo.\n\n\
        Every published checkpoint is listed in weights-manifest.toml at the workspace root, with \
        its size, SHA-256, licence, training data, the command that trains it and the command that \
        measures its metrics. Bundled checkpoints live in weights/; others are downloaded from the \
        Hugging Face hub, pinned to a commit, and verified before use.\n\n\
        Environment: ZOO_MANIFEST (another manifest file), HF_HUB_CACHE (the download cache; else \
        $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub), \
        HF_ENDPOINT (another hub), HF_HUB_OFFLINE=1 (use only the cache), HF_TOKEN."
)]
pub struct Cli {
    /// Weights manifest to read instead of the workspace's (the ZOO_MANIFEST variable does the
    /// same).
    #[arg(long, global = true, value_name = "FILE")]
    manifest: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the checkpoints of the manifest: id, family, size, where it lives and key metrics.
    List(list::ListArgs),
    /// Show everything the manifest says about one checkpoint, including how to train it again
    /// and how to measure its metrics.
    Info(info::InfoArgs),
    /// Recompute the size and SHA-256 of every bundled checkpoint (and of hub checkpoints in the
    /// local cache); exits non-zero if any file is missing or does not match.
    Verify(verify::VerifyArgs),
    /// Get a verified local copy of a checkpoint (by manifest id) or of any pinned hub file, and
    /// print its path.
    Fetch(fetch::FetchArgs),
    /// Render the gallery of samples of the zoo's models.
    Demo(DemoArgs),
}

/// Options of `zoo demo`.
#[derive(Debug, Args)]
struct DemoArgs {
    /// Directory the gallery is written to.
    #[arg(long, value_name = "DIR", default_value = "out/gallery")]
    out: PathBuf,
}

/// Runs the parsed command; the exit code says whether it succeeded.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let manifest = cli.manifest.as_deref();
    match cli.command {
        Command::List(args) => list::run(&load_manifest(manifest)?, &args),
        Command::Info(args) => info::run(&load_manifest(manifest)?, &args),
        Command::Verify(args) => verify::run(&load_manifest(manifest)?, &args),
        Command::Fetch(args) => fetch::run(manifest, &args),
        Command::Demo(args) => {
            if let Some(path) = manifest {
                // The gallery loads its checkpoints by id, which reads the manifest that this
                // variable names; set before any thread starts.
                std::env::set_var("ZOO_MANIFEST", path);
            }
            candle_zoo::demo::run(&args.out)
                .with_context(|| format!("cannot render the gallery into {}", args.out.display()))?;
            eprintln!("gallery written to {}", args.out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The manifest named by `--manifest`, else the workspace's (see [`Manifest::workspace`]).
fn load_manifest(path: Option<&Path>) -> Result<Manifest> {
    match path {
        Some(path) => Manifest::load(path),
        None => Manifest::workspace(),
    }
}

/// A byte count for people: `1724567` -> `1.64 MiB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// An integer with thousands separators: `431080` -> `431,080`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let first = match digits.len() % 3 {
        0 => 3,
        r => r,
    };
    let (head, rest) = digits.split_at(first.min(digits.len()));
    let mut out = head.to_string();
    for group in rest.as_bytes().chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).unwrap_or_default());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn formats_sizes_and_counts() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1_724_567), "1.64 MiB");
        assert_eq!(thousands(431_080), "431,080");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}

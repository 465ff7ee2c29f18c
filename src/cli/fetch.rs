//! `zoo fetch`: a verified local copy of a checkpoint or of any pinned hub file.

use super::{human_size, load_manifest};
use anyhow::Result;
use clap::{ArgGroup, Args};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use zoo_core::hub::{self, HubClient};
use zoo_core::manifest::Location;

/// Options of `zoo fetch`.
#[derive(Debug, Args)]
#[command(
    group(ArgGroup::new("target").required(true).args(["id", "repo"])),
    after_help = "Examples:\n  \
        zoo fetch judge-mnist\n  \
        zoo fetch --repo org/name --revision <40-hex commit> --file model.safetensors --sha256 <hex>\n\n\
        Downloads go to the Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else \
        $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub) and are verified; a file that does not match is removed from the cache. The local path is \
        printed on stdout."
)]
pub struct FetchArgs {
    /// Manifest id of the checkpoint (see `zoo list`).
    id: Option<String>,
    /// Hub model repository of a file outside the manifest, `org/name`.
    #[arg(long, value_name = "ORG/NAME", requires_all = ["revision", "file"])]
    repo: Option<String>,
    /// Commit of `--repo` to download from (full 40-hex hash).
    #[arg(long, value_name = "COMMIT", requires = "repo")]
    revision: Option<String>,
    /// File inside `--repo`.
    #[arg(long, value_name = "PATH", requires = "repo")]
    file: Option<String>,
    /// Expected SHA-256 of `--file`; the download is rejected if it differs.
    #[arg(long, value_name = "HEX", requires = "repo")]
    sha256: Option<String>,
    /// Use only the local cache, never the network (as HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// Do not show a progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// Fetches and prints the local path.
pub fn run(manifest_path: Option<&Path>, args: &FetchArgs) -> Result<ExitCode> {
    let mut hub = HubClient::from_env().progress(!args.quiet);
    if args.offline {
        hub = hub.offline(true);
    }
    let path = match (&args.id, &args.repo, &args.revision, &args.file) {
        (Some(id), _, _, _) => {
            let manifest = load_manifest(manifest_path)?;
            let entry = manifest.get(id)?;
            let path = manifest.resolve(id, &hub)?;
            if !args.quiet {
                let origin = match entry.location {
                    Location::Bundled { .. } => "bundled",
                    Location::Hub { .. } => "from the hub",
                };
                eprintln!("{id}: verified ({origin}), sha256 {} ({})", entry.sha256, human_size(entry.size));
            }
            path
        }
        (None, Some(repo), Some(revision), Some(file)) => {
            let expected = args.sha256.as_deref().map(str::to_ascii_lowercase);
            let path = hub.fetch(repo, revision, file, expected.as_deref(), None)?;
            if !args.quiet {
                let (sha, size) = hub::sha256_file(&path)?;
                let check = if expected.is_some() { "verified" } else { "not checked against an expected hash" };
                eprintln!("{file}: sha256 {sha}, {size} bytes ({check})");
            }
            path
        }
        _ => anyhow::bail!("give a manifest id, or --repo, --revision and --file"),
    };
    writeln!(std::io::stdout().lock(), "{}", path.display())?;
    Ok(ExitCode::SUCCESS)
}

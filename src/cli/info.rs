//! `zoo info ID`: everything the manifest says about one checkpoint.

use super::{human_size, thousands};
use anyhow::Result;
use clap::Args;
use std::io::Write;
use std::process::ExitCode;
use zoo_core::hub::HubClient;
use zoo_core::manifest::{Location, Manifest};

/// Options of `zoo info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Manifest id of the checkpoint (see `zoo list`).
    id: String,
    /// Print the entry as JSON.
    #[arg(long)]
    json: bool,
}

/// Prints the entry.
pub fn run(manifest: &Manifest, args: &InfoArgs) -> Result<ExitCode> {
    let entry = manifest.get(&args.id)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, entry)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let field = |out: &mut dyn Write, name: &str, value: &str| -> std::io::Result<()> {
        writeln!(out, "{:<12} {value}", format!("{name}:"))
    };
    field(&mut out, "id", &entry.id)?;
    field(&mut out, "family", &entry.family)?;
    field(&mut out, "description", &entry.description)?;
    field(&mut out, "dtype", &entry.dtype)?;
    field(&mut out, "params", &thousands(entry.params))?;
    field(&mut out, "size", &format!("{} bytes ({})", thousands(entry.size), human_size(entry.size)))?;
    field(&mut out, "sha256", &entry.sha256)?;
    field(&mut out, "licence", &entry.licence)?;
    field(&mut out, "dataset", &entry.dataset)?;
    match &entry.location {
        Location::Bundled { path } => {
            field(&mut out, "location", &format!("bundled, {path}"))?;
            field(&mut out, "file", &manifest.bundled_path(path).display().to_string())?;
        }
        Location::Hub { repo, revision, file } => {
            let hub = HubClient::from_env();
            field(&mut out, "location", "Hugging Face hub")?;
            field(&mut out, "repo", repo)?;
            field(&mut out, "revision", revision)?;
            field(&mut out, "file", file)?;
            field(&mut out, "url", &hub.url(repo, revision, file))?;
        }
    }
    field(&mut out, "recipe", &entry.recipe)?;
    if let Some(config) = &entry.config {
        writeln!(out, "config:")?;
        let text = toml::to_string(config).unwrap_or_else(|e| format!("(unprintable: {e})"));
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            writeln!(out, "  {line}")?;
        }
    }
    writeln!(out, "metrics:")?;
    for (name, value) in &entry.metrics.values {
        writeln!(out, "  {name} = {value}")?;
    }
    writeln!(out, "  measured by: {}", entry.metrics.command)?;
    Ok(ExitCode::SUCCESS)
}

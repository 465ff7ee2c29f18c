//! `zoo list`: one line per checkpoint.

use super::human_size;
use anyhow::Result;
use clap::Args;
use std::io::Write;
use std::process::ExitCode;
use zoo_core::manifest::{Location, Manifest, WeightsEntry};

/// Options of `zoo list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print the entries as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Prints the table of checkpoints.
pub fn run(manifest: &Manifest, args: &ListArgs) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, manifest.entries())?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    if manifest.is_empty() {
        writeln!(out, "no checkpoints yet in {}", manifest.origin())?;
        return Ok(ExitCode::SUCCESS);
    }
    let header = ["ID", "FAMILY", "SIZE", "WHERE", "METRICS"].map(String::from);
    let rows: Vec<[String; 5]> = manifest.entries().iter().map(row).collect();
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let line = r.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect::<Vec<_>>().join("  ");
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn row(entry: &WeightsEntry) -> [String; 5] {
    let location = match &entry.location {
        Location::Bundled { .. } => "bundled".to_string(),
        Location::Hub { repo, .. } => format!("hub:{repo}"),
    };
    let metrics =
        entry.metrics.values.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join(" ");
    [entry.id.clone(), entry.family.clone(), human_size(entry.size), location, metrics]
}

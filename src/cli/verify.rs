//! `zoo verify`: recompute the hash of every checkpoint file.

use anyhow::Result;
use clap::Args;
use std::io::Write;
use std::process::ExitCode;
use zoo_core::hub::HubClient;
use zoo_core::manifest::{Manifest, VerifyReport, VerifyStatus};

/// Options of `zoo verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Only verify these ids (default: every entry).
    ids: Vec<String>,
}

/// Verifies the entries and prints one line each; the exit code is 1 if any failed.
pub fn run(manifest: &Manifest, args: &VerifyArgs) -> Result<ExitCode> {
    for id in &args.ids {
        manifest.get(id)?;
    }
    let hub = HubClient::from_env();
    let reports: Vec<VerifyReport> =
        manifest.verify_with(&hub).into_iter().filter(|r| args.ids.is_empty() || args.ids.contains(&r.id)).collect();
    let mut out = std::io::stdout().lock();
    if reports.is_empty() {
        writeln!(out, "no checkpoints to verify in {}", manifest.origin())?;
        return Ok(ExitCode::SUCCESS);
    }
    let width = reports.iter().map(|r| r.id.len()).max().unwrap_or(0);
    for report in &reports {
        let word = match report.status {
            VerifyStatus::Ok => "ok",
            VerifyStatus::Missing => "MISSING",
            VerifyStatus::NotCached => "not cached",
            VerifyStatus::SizeMismatch { .. } | VerifyStatus::HashMismatch { .. } => "MISMATCH",
            VerifyStatus::Unreadable { .. } => "UNREADABLE",
        };
        let path = report.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        let detail = match &report.status {
            VerifyStatus::Ok | VerifyStatus::NotCached => path,
            status => format!("{path}: {status}"),
        };
        writeln!(out, "{word:<10}  {:<width$}  {detail}", report.id)?;
    }
    let failed = reports.iter().filter(|r| r.is_failure()).count();
    let not_cached = reports.iter().filter(|r| r.status == VerifyStatus::NotCached).count();
    let ok = reports.len() - failed - not_cached;
    writeln!(out, "{} checked: {ok} ok, {failed} failed, {not_cached} not cached", reports.len())?;
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

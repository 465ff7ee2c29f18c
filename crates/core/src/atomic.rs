//! Atomic file writes: the content goes to a temporary file beside the target, is flushed and
//! synced, and only then renamed over the target. A crash at any point leaves either the old file
//! or the new one, never a half-written file under the target's name.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary path used while writing `target` (same directory, so the rename is atomic).
pub fn temp_path_for(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".to_string());
    target.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes `target` atomically with whatever `write` puts into the provided writer.
///
/// Parent directories are created. On any error the temporary file is removed and the previous
/// content of `target` (if any) is untouched.
pub fn write_atomic<F>(target: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    if let Some(parent) = target.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create directory {}", parent.display()))?;
        }
    }
    let tmp = temp_path_for(target);
    let result = (|| -> Result<()> {
        let file =
            std::fs::File::create(&tmp).with_context(|| format!("cannot create temporary file {}", tmp.display()))?;
        let mut buffered = std::io::BufWriter::new(file);
        write(&mut buffered)?;
        let file = buffered
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        file.sync_all().with_context(|| format!("cannot sync {}", tmp.display()))?;
        std::fs::rename(&tmp, target)
            .with_context(|| format!("cannot move {} into place as {}", tmp.display(), target.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to `target` atomically.
pub fn write_bytes_atomic(target: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(target, |w| {
        w.write_all(bytes)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_keeps_previous_content() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.bin");
        write_bytes_atomic(&target, b"old").unwrap();
        let err = write_atomic(&target, |w| {
            w.write_all(b"partial new content")?;
            anyhow::bail!("simulated crash in the middle of a save")
        })
        .unwrap_err();
        assert!(err.to_string().contains("simulated crash"));
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary file must be removed");
    }
}

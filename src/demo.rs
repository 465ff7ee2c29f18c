//! The gallery.

/// Renders the gallery into `out`.
pub fn run(out: &std::path::Path) -> anyhow::Result<()> {
    anyhow::bail!(
        "the gallery is not available in this build: {}",
        out.display()
    )
}

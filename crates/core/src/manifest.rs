//! The weights manifest: `weights-manifest.toml` at the workspace root lists every published
//! checkpoint with its provenance, integrity data and where to get it.
//!
//! Each `[[weights]]` table describes one checkpoint:
//!
//! ```toml
//! [[weights]]
//! id = "judge-mnist"                 # unique, lowercase [a-z0-9-]
//! family = "judge"                   # the model family, checked by loaders
//! description = "..."
//! dtype = "f32"
//! params = 431080                    # number of parameters
//! size = 1724567                     # bytes
//! sha256 = "<64 lowercase hex>"
//! licence = "MIT OR Apache-2.0"
//! dataset = "MNIST train (60,000)"
//! recipe = "cargo run --release --example judge -- train ..."
//! config = { hidden = 256 }          # optional, free-form
//! [weights.location]                 # exactly one of:
//! path = "weights/judge-mnist.safetensors"   # bundled, relative to the manifest, inside weights/
//! # or: repo = "org/name", revision = "<40 hex commit>", file = "model.safetensors"
//! [weights.metrics]
//! command = "cargo run --release --example judge -- eval --weights judge-mnist --json"
//! accuracy = 0.9912                  # any number of named metrics
//! ```
//!
//! [`resolve_weights`] is what every `--weights ID|PATH` option uses: an existing file is taken as
//! is, a manifest id is resolved to a verified local file (bundled, or downloaded through
//! [`crate::hub`]).

use crate::hub::{self, HubClient};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// The manifest file name, at the workspace root.
pub const MANIFEST_FILE: &str = "weights-manifest.toml";

/// The environment variable that points the zoo at another manifest file.
pub const MANIFEST_ENV: &str = "ZOO_MANIFEST";

/// The directory (relative to the manifest) that bundled weights must live in.
pub const BUNDLED_DIR: &str = "weights";

/// The data types a checkpoint may declare in `dtype`.
pub const DTYPES: &[&str] = &["u8", "u32", "i16", "i32", "i64", "bf16", "f16", "f32", "f64"];

const WORKSPACE_MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../weights-manifest.toml");
const EMBEDDED_MANIFEST: &str = include_str!("../../../weights-manifest.toml");

/// Where a checkpoint's file is found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Location {
    /// Shipped with the repository, at `path` relative to the manifest (inside `weights/`).
    Bundled {
        /// Relative path, `weights/...`.
        path: String,
    },
    /// Published on the Hugging Face hub, pinned to a commit.
    Hub {
        /// Model repository, `org/name`.
        repo: String,
        /// Full commit hash (40 lowercase hex digits).
        revision: String,
        /// File inside the repository.
        file: String,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Bundled { path } => write!(f, "{path}"),
            Location::Hub { repo, revision, file } => write!(f, "hf://{repo}@{revision}/{file}"),
        }
    }
}

/// How a checkpoint's metrics were measured, and their values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// The command that reproduces the metrics.
    pub command: String,
    /// Named metric values (for example `accuracy = 0.9912`).
    #[serde(flatten)]
    pub values: BTreeMap<String, f64>,
}

/// One checkpoint of the manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightsEntry {
    /// Unique id, lowercase `[a-z0-9-]`.
    pub id: String,
    /// Model family; loaders check it before reading the weights.
    pub family: String,
    /// What the checkpoint is.
    pub description: String,
    /// Data type of the stored tensors.
    pub dtype: String,
    /// Number of parameters.
    pub params: u64,
    /// File size in bytes.
    pub size: u64,
    /// SHA-256 of the file, 64 lowercase hex digits.
    pub sha256: String,
    /// Licence of the weights.
    pub licence: String,
    /// Data the checkpoint was trained on.
    pub dataset: String,
    /// The command that trains it.
    pub recipe: String,
    /// Free-form model configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<toml::Table>,
    /// Where the file is.
    pub location: Location,
    /// Measured metrics.
    pub metrics: Metrics,
}

impl WeightsEntry {
    /// Whether the file is shipped with the repository.
    pub fn is_bundled(&self) -> bool {
        matches!(self.location, Location::Bundled { .. })
    }

    /// Every problem with this entry (empty when it is valid); each message names the entry.
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut problem = |msg: String| out.push(format!("entry '{}': {msg}", self.id));
        if !is_valid_id(&self.id) {
            problem("id must be non-empty lowercase [a-z0-9-], starting with a letter or digit".into());
        }
        if self.family.is_empty()
            || !self.family.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            problem(format!("family '{}' must be non-empty lowercase [a-z0-9_-]", self.family));
        }
        for (name, value) in [
            ("description", &self.description),
            ("licence", &self.licence),
            ("dataset", &self.dataset),
            ("recipe", &self.recipe),
            ("metrics.command", &self.metrics.command),
        ] {
            if value.trim().is_empty() {
                problem(format!("{name} must not be empty"));
            }
        }
        if !DTYPES.contains(&self.dtype.as_str()) {
            problem(format!("dtype '{}' is not one of {}", self.dtype, DTYPES.join(", ")));
        }
        if self.params == 0 {
            problem("params must be greater than 0".into());
        }
        if self.size == 0 {
            problem("size must be greater than 0".into());
        }
        if !hub::is_sha256_hex(&self.sha256) {
            problem(format!("sha256 '{}' must be 64 lowercase hex digits", self.sha256));
        }
        for (name, value) in &self.metrics.values {
            if !value.is_finite() {
                problem(format!("metric '{name}' is not a finite number ({value})"));
            }
        }
        match &self.location {
            Location::Bundled { path } => {
                if let Err(msg) = check_bundled_path(path) {
                    problem(msg);
                }
            }
            Location::Hub { repo, revision, file } => {
                if !hub::is_repo_id(repo) {
                    problem(format!("hub repo '{repo}' must be of the form 'org/name'"));
                }
                if !hub::is_commit_hash(revision) {
                    problem(format!("hub revision '{revision}' must be a full commit hash (40 lowercase hex digits)"));
                }
                if !hub::is_repo_file(file) {
                    problem(format!("hub file '{file}' must be a relative path without '..'"));
                }
            }
        }
        out
    }
}

/// Checks a bundled path: relative, inside `weights/`, plain components only.
fn check_bundled_path(path: &str) -> std::result::Result<(), String> {
    let p = Path::new(path);
    if path.contains('\\') {
        return Err(format!("bundled path '{path}' must use '/' separators, not '\\'"));
    }
    if p.is_absolute() || path.starts_with('/') {
        return Err(format!("bundled path '{path}' must be relative to the manifest, not absolute"));
    }
    if path.split('/').any(|c| c.is_empty() || c == ".") {
        return Err(format!("bundled path '{path}' must be a plain relative path (no empty or '.' components)"));
    }
    let components: Vec<Component<'_>> = p.components().collect();
    if components.iter().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("bundled path '{path}' must not contain '..'"));
    }
    if !components.iter().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!("bundled path '{path}' must be a plain relative path"));
    }
    if components.len() < 2 || components[0] != Component::Normal(BUNDLED_DIR.as_ref()) {
        return Err(format!("bundled path '{path}' must be a file inside {BUNDLED_DIR}/"));
    }
    Ok(())
}

/// Whether `s` has the shape of a manifest id: non-empty lowercase `[a-z0-9-]`, starting with a
/// letter or digit.
pub fn is_valid_id(s: &str) -> bool {
    s.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    weights: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    id: String,
    family: String,
    description: String,
    dtype: String,
    params: u64,
    size: u64,
    sha256: String,
    licence: String,
    dataset: String,
    recipe: String,
    #[serde(default)]
    config: Option<toml::Table>,
    location: RawLocation,
    metrics: Metrics,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocation {
    path: Option<String>,
    repo: Option<String>,
    revision: Option<String>,
    file: Option<String>,
}

impl RawLocation {
    fn into_location(self) -> std::result::Result<Location, String> {
        match (self.path, self.repo, self.revision, self.file) {
            (Some(path), None, None, None) => Ok(Location::Bundled { path }),
            (None, Some(repo), Some(revision), Some(file)) => Ok(Location::Hub { repo, revision, file }),
            (Some(_), _, _, _) => {
                Err("location must have either `path` (bundled) or `repo`, `revision` and `file` (hub), not both"
                    .into())
            }
            (None, None, None, None) => {
                Err("location is empty: give `path` (bundled) or `repo`, `revision` and `file` (hub)".into())
            }
            (None, repo, revision, file) => {
                let missing: Vec<&str> =
                    [("repo", repo.is_none()), ("revision", revision.is_none()), ("file", file.is_none())]
                        .iter()
                        .filter(|(_, absent)| *absent)
                        .map(|(name, _)| *name)
                        .collect();
                Err(format!("hub location is missing {}", missing.join(", ")))
            }
        }
    }
}

/// The parsed and validated weights manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    origin: String,
    root: PathBuf,
    entries: Vec<WeightsEntry>,
}

impl Manifest {
    /// Parses and validates manifest `text`; `origin` names it in error messages. Bundled paths
    /// are taken relative to the current directory (see [`Manifest::with_root`]).
    pub fn parse(text: &str, origin: &str) -> Result<Manifest> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|span| {
                    let (line, col) = line_col(text, span.start);
                    format!(" at line {line}, column {col}")
                })
                .unwrap_or_default();
            anyhow!(e).context(format!("cannot parse the weights manifest {origin}{at}"))
        })?;
        let mut problems = Vec::new();
        let mut entries = Vec::with_capacity(raw.weights.len());
        for entry in raw.weights {
            let location = match entry.location.into_location() {
                Ok(location) => location,
                Err(msg) => {
                    problems.push(format!("entry '{}': {msg}", entry.id));
                    continue;
                }
            };
            entries.push(WeightsEntry {
                id: entry.id,
                family: entry.family,
                description: entry.description,
                dtype: entry.dtype,
                params: entry.params,
                size: entry.size,
                sha256: entry.sha256,
                licence: entry.licence,
                dataset: entry.dataset,
                recipe: entry.recipe,
                config: entry.config,
                location,
                metrics: entry.metrics,
            });
        }
        let manifest = Manifest { origin: origin.to_string(), root: PathBuf::from("."), entries };
        problems.extend(manifest.problems());
        if !problems.is_empty() {
            bail!("invalid weights manifest {origin}:\n  - {}", problems.join("\n  - "));
        }
        Ok(manifest)
    }

    /// Reads, parses and validates the manifest at `path`; bundled paths are relative to its
    /// directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Manifest> {
        let path = path.as_ref();
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the weights manifest {}", path.display()))?;
        let root = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        Ok(Manifest::parse(&text, &path.display().to_string())?.with_root(root))
    }

    /// The zoo's manifest: the file named by `ZOO_MANIFEST` if set, else the workspace's
    /// `weights-manifest.toml`, else the copy embedded at build time (bundled paths then relative
    /// to the current directory).
    pub fn workspace() -> Result<Manifest> {
        if let Some(path) = std::env::var_os(MANIFEST_ENV).filter(|p| !p.is_empty()) {
            return Manifest::load(&path).with_context(|| {
                format!("cannot load the manifest named by {MANIFEST_ENV}={}", Path::new(&path).display())
            });
        }
        let path = Path::new(WORKSPACE_MANIFEST);
        if path.is_file() {
            return Manifest::load(path);
        }
        Manifest::parse(EMBEDDED_MANIFEST, &format!("{MANIFEST_FILE} (embedded copy)"))
    }

    /// The same manifest with bundled paths taken relative to `root`.
    pub fn with_root(mut self, root: impl Into<PathBuf>) -> Manifest {
        self.root = root.into();
        self
    }

    /// The directory bundled paths are relative to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What the manifest was read from, as used in messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// All entries, in file order.
    pub fn entries(&self) -> &[WeightsEntry] {
        &self.entries
    }

    /// All ids, in file order.
    pub fn ids(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.id.as_str()).collect()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the manifest has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks every rule of the schema; the error lists every problem, each naming its entry.
    pub fn validate(&self) -> Result<()> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("invalid weights manifest {}:\n  - {}", self.origin, problems.join("\n  - "))
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, entry) in self.entries.iter().enumerate() {
            if let Some(first) = seen.insert(entry.id.as_str(), i) {
                problems.push(format!("entry '{}': duplicate id (entries {} and {})", entry.id, first + 1, i + 1));
            }
            problems.extend(entry.problems());
        }
        problems
    }

    /// The entry with `id`; an unknown id is an error listing the known ids.
    pub fn get(&self, id: &str) -> Result<&WeightsEntry> {
        self.entries
            .iter()
            .find(|e| e.id == id)
            .ok_or_else(|| anyhow!("no weights '{id}' in {}; {}", self.origin, self.known_ids()))
    }

    /// `known ids: a, b` or a note that the manifest is empty.
    fn known_ids(&self) -> String {
        if self.entries.is_empty() {
            "the manifest has no entries yet".to_string()
        } else {
            format!("known ids: {}", self.ids().join(", "))
        }
    }

    /// The absolute (or root-relative) path of a bundled file.
    pub fn bundled_path(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    /// Recomputes the size and SHA-256 of every bundled file, and of every hub file that is in
    /// the local cache (configured from the environment).
    pub fn verify(&self) -> Vec<VerifyReport> {
        self.verify_with(&HubClient::from_env())
    }

    /// As [`Manifest::verify`], looking for hub files in `hub`'s cache.
    pub fn verify_with(&self, hub: &HubClient) -> Vec<VerifyReport> {
        self.entries.iter().map(|entry| self.verify_entry(entry, hub)).collect()
    }

    fn verify_entry(&self, entry: &WeightsEntry, hub: &HubClient) -> VerifyReport {
        let path = match &entry.location {
            Location::Bundled { path } => self.bundled_path(path),
            Location::Hub { repo, revision, file } => match hub.cached(repo, revision, file) {
                Ok(Some(path)) => path,
                Ok(None) => {
                    return VerifyReport {
                        id: entry.id.clone(),
                        path: hub.snapshot_path(repo, revision, file).ok(),
                        status: VerifyStatus::NotCached,
                    }
                }
                Err(_) => return VerifyReport { id: entry.id.clone(), path: None, status: VerifyStatus::NotCached },
            },
        };
        let status = check_against(entry, &path);
        VerifyReport { id: entry.id.clone(), path: Some(path), status }
    }

    /// A verified local file for `id`: a bundled file after checking its size and SHA-256, or a
    /// hub file fetched (or served from the cache) through `hub` and verified.
    pub fn resolve(&self, id: &str, hub: &HubClient) -> Result<PathBuf> {
        let entry = self.get(id)?;
        match &entry.location {
            Location::Bundled { path } => {
                let path = self.bundled_path(path);
                match check_against(entry, &path) {
                    VerifyStatus::Ok => Ok(path),
                    status => bail!("bundled weights '{id}' ({}) from {}: {status}", path.display(), self.origin),
                }
            }
            Location::Hub { repo, revision, file } => hub
                .fetch(repo, revision, file, Some(&entry.sha256), Some(entry.size))
                .with_context(|| format!("cannot get weights '{id}' listed in {}", self.origin)),
        }
    }

    /// Resolves a `--weights ID|PATH` argument against this manifest: an existing file is used as
    /// is (no entry), otherwise `arg` must be a manifest id, resolved with [`Manifest::resolve`].
    pub fn resolve_weights(&self, arg: &str, hub: &HubClient) -> Result<(PathBuf, Option<WeightsEntry>)> {
        let path = Path::new(arg);
        if path.is_file() {
            return Ok((path.to_path_buf(), None));
        }
        if path.is_dir() {
            bail!("weights '{arg}' is a directory, expected a weights file or a manifest id");
        }
        match self.entries.iter().find(|e| e.id == arg) {
            Some(entry) if is_valid_id(arg) => {
                let resolved = self.resolve(arg, hub)?;
                Ok((resolved, Some(entry.clone())))
            }
            _ => bail!("no such file and no manifest id '{arg}' (in {}); {}", self.origin, self.known_ids()),
        }
    }
}

/// Line and column (both 1-based, column in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

/// Checks the file at `path` against the size and hash of `entry`.
fn check_against(entry: &WeightsEntry, path: &Path) -> VerifyStatus {
    let meta = match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => meta,
        Ok(_) => return VerifyStatus::Unreadable { error: "not a regular file".into() },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return VerifyStatus::Missing,
        Err(e) => return VerifyStatus::Unreadable { error: e.to_string() },
    };
    if meta.len() != entry.size {
        return VerifyStatus::SizeMismatch {
            expected: entry.size,
            actual: meta.len(),
            lfs_pointer: is_lfs_pointer(path),
        };
    }
    match hub::sha256_file(path) {
        Ok((sha, _)) if sha == entry.sha256 => VerifyStatus::Ok,
        Ok((sha, _)) => VerifyStatus::HashMismatch { expected: entry.sha256.clone(), actual: sha },
        Err(e) => VerifyStatus::Unreadable { error: format!("{e:#}") },
    }
}

/// Whether the file is a Git LFS pointer rather than the content it stands for.
fn is_lfs_pointer(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 40];
    std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map(|n| head[..n].starts_with(b"version https://git-lfs"))
        .unwrap_or(false)
}

/// The outcome of checking one entry's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyStatus {
    /// Size and SHA-256 match the manifest.
    Ok,
    /// The bundled file does not exist.
    Missing,
    /// A hub file that is not in the local cache (nothing to check; not a failure).
    NotCached,
    /// The file has the wrong size.
    SizeMismatch {
        /// Size in the manifest.
        expected: u64,
        /// Size on disk.
        actual: u64,
        /// Whether the file is a Git LFS pointer (the content was never pulled).
        lfs_pointer: bool,
    },
    /// The file has the right size but the wrong content.
    HashMismatch {
        /// SHA-256 in the manifest.
        expected: String,
        /// SHA-256 of the file.
        actual: String,
    },
    /// The file could not be read.
    Unreadable {
        /// What went wrong.
        error: String,
    },
}

impl VerifyStatus {
    /// Whether this outcome means the weights are unusable (anything but `Ok` and `NotCached`).
    pub fn is_failure(&self) -> bool {
        !matches!(self, VerifyStatus::Ok | VerifyStatus::NotCached)
    }
}

impl fmt::Display for VerifyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyStatus::Ok => write!(f, "ok"),
            VerifyStatus::Missing => write!(f, "file is missing"),
            VerifyStatus::NotCached => write!(f, "not cached (fetch it with `zoo fetch`)"),
            VerifyStatus::SizeMismatch { expected, actual, lfs_pointer } => {
                write!(f, "size mismatch: expected {expected} bytes, found {actual}")?;
                if *lfs_pointer {
                    write!(f, " (a Git LFS pointer: run `git lfs pull`)")?;
                }
                Ok(())
            }
            VerifyStatus::HashMismatch { expected, actual } => {
                write!(f, "sha256 mismatch: expected {expected}, found {actual}")
            }
            VerifyStatus::Unreadable { error } => write!(f, "cannot read the file: {error}"),
        }
    }
}

/// The result of verifying one manifest entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The entry id.
    pub id: String,
    /// The file checked (for hub entries, where it would be cached), when known.
    pub path: Option<PathBuf>,
    /// The outcome.
    pub status: VerifyStatus,
}

impl VerifyReport {
    /// Whether the entry failed verification.
    pub fn is_failure(&self) -> bool {
        self.status.is_failure()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.id, self.status)?;
        if let Some(path) = &self.path {
            write!(f, " ({})", path.display())?;
        }
        Ok(())
    }
}

/// Resolves manifest `id` to a verified local file, using [`Manifest::workspace`] and a
/// [`HubClient`] configured from the environment.
pub fn resolve(id: &str) -> Result<PathBuf> {
    Manifest::workspace()?.resolve(id, &HubClient::from_env())
}

/// Resolves a `--weights ID|PATH` argument: an existing file path is returned as is (no entry);
/// otherwise `arg` is looked up as a manifest id in [`Manifest::workspace`] and resolved to a
/// verified local file. Anything else is an error listing the known ids.
pub fn resolve_weights(arg: &str) -> Result<(PathBuf, Option<WeightsEntry>)> {
    let path = Path::new(arg);
    if path.is_file() {
        return Ok((path.to_path_buf(), None));
    }
    Manifest::workspace()?.resolve_weights(arg, &HubClient::from_env())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const REV: &str = "0123456789abcdef0123456789abcdef01234567";

    fn entry(id: &str, location: &str) -> String {
        format!(
            r#"
[[weights]]
id = "{id}"
family = "judge"
description = "a test checkpoint"
dtype = "f32"
params = 10
size = 40
sha256 = "{SHA}"
licence = "MIT OR Apache-2.0"
dataset = "none"
recipe = "cargo run --example judge -- train"
config = {{ hidden = 4, name = "x" }}
[weights.location]
{location}
[weights.metrics]
command = "cargo run --example judge -- eval"
accuracy = 0.5
loss = 1
"#
        )
    }

    fn bundled(id: &str) -> String {
        entry(id, &format!("path = \"weights/{id}.safetensors\""))
    }

    fn err_of(text: &str) -> String {
        format!("{:#}", Manifest::parse(text, "test.toml").unwrap_err())
    }

    #[test]
    fn empty_manifest_parses_and_verifies() {
        let m = Manifest::parse("# nothing yet\n", "empty.toml").unwrap();
        assert!(m.is_empty());
        assert!(m.verify().is_empty());
        // The copy embedded at build time is valid, and its bundled files verify against the
        // workspace they were built from.
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let embedded = Manifest::parse(EMBEDDED_MANIFEST, "embedded").unwrap().with_root(root);
        let reports = embedded.verify();
        assert!(reports.iter().all(|r| !r.is_failure()), "{reports:?}");
    }

    #[test]
    fn parses_entries() {
        let text = format!(
            "{}{}",
            bundled("judge-mnist"),
            entry("hub-one", &format!("repo = \"org/name\"\nrevision = \"{REV}\"\nfile = \"model.safetensors\""))
        );
        let m = Manifest::parse(&text, "t.toml").unwrap();
        assert_eq!(m.ids(), vec!["judge-mnist", "hub-one"]);
        let e = m.get("judge-mnist").unwrap();
        assert!(e.is_bundled());
        assert_eq!(e.metrics.values["accuracy"], 0.5);
        assert_eq!(e.metrics.values["loss"], 1.0);
        assert_eq!(e.config.as_ref().unwrap()["hidden"].as_integer(), Some(4));
        assert!(matches!(m.get("hub-one").unwrap().location, Location::Hub { .. }));
    }

    #[test]
    fn duplicate_id() {
        let err = err_of(&format!("{}{}", bundled("a"), bundled("a")));
        assert!(err.contains("entry 'a': duplicate id"), "{err}");
        assert!(err.contains("test.toml"), "{err}");
    }

    #[test]
    fn bad_sha() {
        let text = bundled("a").replace(SHA, "ABC");
        let err = err_of(&text);
        assert!(err.contains("entry 'a'") && err.contains("sha256 'ABC'"), "{err}");
        let upper = bundled("b").replace(SHA, &SHA.to_uppercase());
        assert!(err_of(&upper).contains("entry 'b'"));
    }

    #[test]
    fn zero_size_and_bad_id() {
        let err = err_of(&bundled("a").replace("size = 40", "size = 0"));
        assert!(err.contains("entry 'a': size must be greater than 0"), "{err}");
        let err = err_of(&entry("Bad_Id", "path = \"weights/x.safetensors\""));
        assert!(err.contains("entry 'Bad_Id': id must be"), "{err}");
    }

    #[test]
    fn bundled_paths_must_stay_inside_weights() {
        for (path, what) in [
            ("weights/../secret.safetensors", "'..'"),
            ("../weights/x.safetensors", "'..'"),
            ("/etc/passwd", "absolute"),
            ("models/x.safetensors", "inside weights/"),
            ("weights", "inside weights/"),
            ("./weights/x.safetensors", "plain relative"),
        ] {
            let err = err_of(&entry("a", &format!("path = \"{path}\"")));
            assert!(err.contains("entry 'a'") && err.contains(what), "{path}: {err}");
        }
    }

    #[test]
    fn hub_location_rules() {
        let err = err_of(&entry("h", "repo = \"org/name\"\nrevision = \"main\"\nfile = \"m.safetensors\""));
        assert!(err.contains("entry 'h': hub revision 'main'"), "{err}");
        let err = err_of(&entry("h", &format!("repo = \"noslash\"\nrevision = \"{REV}\"\nfile = \"m.safetensors\"")));
        assert!(err.contains("entry 'h': hub repo 'noslash'"), "{err}");
        let err = err_of(&entry("h", "repo = \"org/name\""));
        assert!(err.contains("entry 'h': hub location is missing revision, file"), "{err}");
        let err = err_of(&entry(
            "h",
            &format!("path = \"weights/x\"\nrepo = \"org/name\"\nrevision = \"{REV}\"\nfile = \"m\""),
        ));
        assert!(err.contains("entry 'h': location must have either"), "{err}");
    }

    #[test]
    fn unknown_id_lists_known_ids() {
        let m = Manifest::parse(&format!("{}{}", bundled("one"), bundled("two")), "t.toml").unwrap();
        let err = m.get("three").unwrap_err().to_string();
        assert!(err.contains("'three'") && err.contains("known ids: one, two"), "{err}");
        let empty = Manifest::parse("", "e.toml").unwrap();
        assert!(empty.get("x").unwrap_err().to_string().contains("no entries"));
    }

    #[test]
    fn malformed_toml_names_origin_and_line() {
        let text = "# header\n\n[[weights]]\nid = \"a\nfamily = 3\n";
        let err = err_of(text);
        assert!(err.contains("test.toml") && err.contains("line 4"), "{err}");
        let unknown = bundled("a").replace("dtype = \"f32\"", "dtype = \"f32\"\ncolour = \"red\"");
        let err = err_of(&unknown);
        assert!(err.contains("colour") && err.contains("line "), "{err}");
    }

    fn temp_root_with_file(content: &[u8]) -> (tempfile::TempDir, Manifest) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("weights")).unwrap();
        std::fs::write(dir.path().join("weights/a.safetensors"), content).unwrap();
        let sha = hex::encode(Sha256::digest(content));
        let text = bundled("a").replace(SHA, &sha).replace("size = 40", &format!("size = {}", content.len()));
        let path = dir.path().join(MANIFEST_FILE);
        std::fs::write(&path, text).unwrap();
        let m = Manifest::load(&path).unwrap();
        (dir, m)
    }

    #[test]
    fn verify_detects_size_and_hash_mismatch() {
        let (dir, m) = temp_root_with_file(b"0123456789");
        let reports = m.verify();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].status, VerifyStatus::Ok, "{}", reports[0]);

        let file = dir.path().join("weights/a.safetensors");
        std::fs::write(&file, b"0123456780").unwrap();
        let r = &m.verify()[0];
        assert!(matches!(r.status, VerifyStatus::HashMismatch { .. }), "{r}");
        assert!(r.is_failure());
        assert!(m.resolve("a", &HubClient::from_lookup(|_| None)).is_err());

        std::fs::write(&file, b"01234").unwrap();
        let r = &m.verify()[0];
        assert!(matches!(r.status, VerifyStatus::SizeMismatch { expected: 10, actual: 5, .. }), "{r}");

        std::fs::remove_file(&file).unwrap();
        assert_eq!(m.verify()[0].status, VerifyStatus::Missing);
        let err = format!("{:#}", m.resolve("a", &HubClient::from_lookup(|_| None)).unwrap_err());
        assert!(err.contains("'a'") && err.contains("missing"), "{err}");
    }

    #[test]
    fn hub_entry_not_cached_is_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let text = entry("h", &format!("repo = \"org/name\"\nrevision = \"{REV}\"\nfile = \"m.safetensors\""));
        let m = Manifest::parse(&text, "t.toml").unwrap();
        let reports = m.verify_with(&HubClient::new(dir.path()));
        assert_eq!(reports[0].status, VerifyStatus::NotCached);
        assert!(!reports[0].is_failure());
    }

    #[test]
    fn resolve_weights_path_id_or_garbage() {
        let (dir, m) = temp_root_with_file(b"weights!");
        let hub = HubClient::from_lookup(|_| None).offline(true);
        let file = dir.path().join("weights/a.safetensors");

        let (p, e) = m.resolve_weights(file.to_str().unwrap(), &hub).unwrap();
        assert_eq!(p, file);
        assert!(e.is_none());

        let (p, e) = m.resolve_weights("a", &hub).unwrap();
        assert_eq!(std::fs::read(p).unwrap(), b"weights!");
        assert_eq!(e.unwrap().id, "a");

        for garbage in ["nope", "no/such/file.safetensors", ""] {
            let err = m.resolve_weights(garbage, &hub).unwrap_err().to_string();
            assert!(err.contains("no such file and no manifest id") && err.contains("known ids: a"), "{err}");
        }
        let err = m.resolve_weights(dir.path().to_str().unwrap(), &hub).unwrap_err().to_string();
        assert!(err.contains("directory"), "{err}");

        // The free function: an existing path needs no manifest at all.
        let (p, e) = resolve_weights(file.to_str().unwrap()).unwrap();
        assert_eq!((p, e), (file, None));
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}

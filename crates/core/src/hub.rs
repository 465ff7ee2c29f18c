//! Verified downloads of pinned files from the Hugging Face hub.
//!
//! [`HubClient`] wraps the synchronous `hf-hub` API and adds what it lacks: content verification.
//! `hf-hub` stores whatever bytes arrived (a dropped connection can leave a truncated blob that
//! later looks like a valid cache entry), so every file is checked against its expected SHA-256
//! and size both when served from the cache and after a download; a bad copy is removed from the
//! cache (snapshot pointer and blob) so it is never handed out again.
//!
//! The cache layout is the one shared with the Python `huggingface_hub` library:
//! `<cache>/models--org--name/snapshots/<commit>/<file>`, pointing at `<cache>/models--org--name/blobs/<etag>`.
//!
//! Environment (read by [`HubClient::from_env`]):
//! - `HF_ENDPOINT`: the hub to talk to (default `https://huggingface.co`);
//! - `HF_HUB_CACHE`, else `HF_HOME` (cache at `$HF_HOME/hub`), else `$XDG_CACHE_HOME/huggingface/hub`,
//!   else `~/.cache/huggingface/hub`;
//! - `HF_HUB_OFFLINE=1`: never touch the network, serve only from the cache;
//! - `HF_TOKEN`: an access token for private or gated repositories (otherwise the token file
//!   beside the cache is used, as `hf-hub` does).

use anyhow::{anyhow, bail, Context, Result};
use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// The public Hugging Face hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// A client for pinned, verified downloads from a Hugging Face hub into the local cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubClient {
    endpoint: String,
    cache_dir: Option<PathBuf>,
    offline: bool,
    progress: bool,
    token: Option<String>,
}

impl HubClient {
    /// A client for [`DEFAULT_ENDPOINT`] caching into `cache_dir`, online, with a progress bar.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            cache_dir: Some(cache_dir.into()),
            offline: false,
            progress: true,
            token: None,
        }
    }

    /// A client configured from the process environment (see the [module docs](self)).
    pub fn from_env() -> Self {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// A client configured from the variables that `lookup` returns, with the same rules as
    /// [`HubClient::from_env`]; useful to configure a client without touching the process
    /// environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let var = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let cache_dir = if let Some(dir) = var("HF_HUB_CACHE") {
            Some(PathBuf::from(dir))
        } else if let Some(home) = var("HF_HOME") {
            Some(PathBuf::from(home).join("hub"))
        } else if let Some(xdg) = var("XDG_CACHE_HOME") {
            Some(PathBuf::from(xdg).join("huggingface").join("hub"))
        } else {
            var("HOME")
                .or_else(|| var("USERPROFILE"))
                .map(|home| PathBuf::from(home).join(".cache").join("huggingface").join("hub"))
        };
        let offline = var("HF_HUB_OFFLINE")
            .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
            .unwrap_or(false);
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            cache_dir,
            offline,
            progress: true,
            token: var("HF_TOKEN").map(|t| t.trim().to_string()),
        }
    }

    /// Uses `endpoint` (for example `http://127.0.0.1:8080`) instead of the configured hub.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into().trim_end_matches('/').to_string();
        self
    }

    /// Uses `dir` as the cache (the directory holding the `models--org--name` folders).
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Sends `token` as a bearer token (`None`: use the token file beside the cache, if any).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// In offline mode nothing is downloaded: files are served from the cache or not at all.
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Shows (or hides) a progress bar on stderr while downloading.
    pub fn progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// The hub endpoint, without a trailing slash.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether offline mode is on.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// The cache directory, or an error when none could be determined from the environment.
    pub fn cache_dir(&self) -> Result<&Path> {
        self.cache_dir.as_deref().ok_or_else(|| {
            anyhow!("no Hugging Face cache directory: set HF_HOME (or HOME) to choose where downloads go")
        })
    }

    /// The URL a file is downloaded from: `{endpoint}/{repo}/resolve/{revision}/{file}`.
    pub fn url(&self, repo: &str, revision: &str, file: &str) -> String {
        format!("{}/{repo}/resolve/{revision}/{file}", self.endpoint)
    }

    /// Where `file` of `repo` at `revision` lives once cached
    /// (`<cache>/models--org--name/snapshots/<revision>/<file>`), whether or not it is there.
    pub fn snapshot_path(&self, repo: &str, revision: &str, file: &str) -> Result<PathBuf> {
        check_hub_file(repo, revision, file)?;
        let cache = Cache::new(self.cache_dir()?.to_path_buf());
        let mut path = cache.model(repo.to_string()).pointer_path(revision);
        path.push(file);
        Ok(path)
    }

    /// The cached copy of `file`, if present (not verified).
    pub fn cached(&self, repo: &str, revision: &str, file: &str) -> Result<Option<PathBuf>> {
        let path = self.snapshot_path(repo, revision, file)?;
        Ok(path.is_file().then_some(path))
    }

    /// Returns a verified local copy of `file` from model repository `repo` (`org/name`) at the
    /// pinned `revision` (a 40-hex commit).
    ///
    /// A cached copy that matches `expected_sha256` and `expected_size` (each checked when given)
    /// is returned without any network access. Otherwise, unless offline, the file is downloaded
    /// into the cache and checked; a copy that does not match is removed from the cache (pointer
    /// and blob) and an error naming the file and both hashes is returned.
    pub fn fetch(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
        expected_sha256: Option<&str>,
        expected_size: Option<u64>,
    ) -> Result<PathBuf> {
        check_hub_file(repo, revision, file)?;
        if let Some(sha) = expected_sha256 {
            if !is_sha256_hex(sha) {
                bail!("expected sha256 for {repo}/{file} must be 64 lowercase hex digits, got '{sha}'");
            }
        }
        let cache_dir = self.cache_dir()?;
        let pointer = self.snapshot_path(repo, revision, file)?;
        let what = format!("{repo}/{file} at revision {revision}");

        if pointer.is_file() {
            match check_file(&pointer, expected_sha256, expected_size)? {
                None => return Ok(pointer),
                Some(problem) => {
                    let removed = remove_cached(cache_dir, &pointer);
                    let mut msg = format!(
                        "the cached copy of {what} at {} is corrupt: {problem}; it was removed",
                        pointer.display()
                    );
                    if let Err(e) = removed {
                        msg = format!("{msg} (removal failed: {e:#})");
                    }
                    if self.offline {
                        bail!("{msg}, and offline mode is on (HF_HUB_OFFLINE), so it cannot be downloaded again");
                    }
                    if self.progress {
                        eprintln!("warning: {msg}; downloading it again");
                    }
                }
            }
        } else if pointer.symlink_metadata().is_ok() {
            // A dangling pointer (its blob was removed): clear it so a download can relink it.
            std::fs::remove_file(&pointer)
                .with_context(|| format!("cannot remove the dangling cache pointer {}", pointer.display()))?;
        }

        if self.offline {
            bail!("{what} is not in the cache at {} and offline mode is on (HF_HUB_OFFLINE)", pointer.display());
        }
        self.download(repo, revision, file, expected_sha256, expected_size)
            .with_context(|| format!("cannot fetch {what} from {}", self.endpoint))
    }

    fn download(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
        expected_sha256: Option<&str>,
        expected_size: Option<u64>,
    ) -> Result<PathBuf> {
        let cache_dir = self.cache_dir()?.to_path_buf();
        let mut builder = ApiBuilder::from_cache(Cache::new(cache_dir.clone()))
            .with_endpoint(self.endpoint.clone())
            .with_progress(self.progress);
        if self.token.is_some() {
            builder = builder.with_token(self.token.clone());
        }
        let api = builder.build().map_err(|e| anyhow!("cannot set up the hub client for {}: {e}", self.endpoint))?;
        let hub_repo = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
        let api_repo = api.repo(hub_repo.clone());
        let url = api_repo.url(file);
        let describe = |e: ApiError| describe_api_error(e, &url, repo, revision, file);

        let metadata = api.metadata(&url).map_err(describe)?;
        if metadata.commit_hash() != revision {
            bail!(
                "the hub answered {url} with commit {} instead of the pinned revision {revision}",
                metadata.commit_hash()
            );
        }
        let announced = metadata.size() as u64;
        if let Some(expected) = expected_size {
            if announced != expected {
                bail!("the hub reports {announced} bytes for {url}, expected {expected} bytes");
            }
        }
        let blob = Cache::new(cache_dir.clone()).repo(hub_repo).blob_path(metadata.etag());
        let mut part = blob.clone();
        part.set_extension("part");

        let path = match api_repo.download(file) {
            Ok(path) => path,
            Err(e) => {
                // Never leave a partial transfer behind to be resumed or mistaken for content.
                let _ = std::fs::remove_file(&part);
                return Err(describe(e));
            }
        };

        let (actual_sha, actual_size) = sha256_file(&path)?;
        let mut problems = Vec::new();
        if actual_size != announced {
            problems.push(format!("received {actual_size} bytes, the server announced {announced}"));
        }
        if let Some(expected) = expected_sha256 {
            if actual_sha != expected {
                problems.push(format!("expected sha256 {expected}, got {actual_sha}"));
            }
        }
        if problems.is_empty() {
            return Ok(path);
        }
        let removed = remove_cached(&cache_dir, &path);
        let _ = std::fs::remove_file(&part);
        let mut msg = format!(
            "downloaded file {file} from {url} failed verification: {}; the bad copy was removed from the cache",
            problems.join("; ")
        );
        if let Err(e) = removed {
            msg = format!("{msg} (removal failed: {e:#})");
        }
        Err(anyhow!(msg))
    }
}

/// Turns an `hf-hub` error into a message that names the URL and what went wrong.
fn describe_api_error(err: ApiError, url: &str, repo: &str, revision: &str, file: &str) -> anyhow::Error {
    match err {
        ApiError::RequestError(inner) => match *inner {
            ureq::Error::StatusCode(404) => {
                anyhow!("not found on the hub: {repo}/{file} at revision {revision} (HTTP 404 from {url})")
            }
            ureq::Error::StatusCode(code @ (401 | 403)) => anyhow!(
                "access to {repo}/{file} was refused (HTTP {code} from {url}); the repository may be \
                 private or gated: set HF_TOKEN to a token that can read it"
            ),
            ureq::Error::StatusCode(code) => anyhow!("the hub answered HTTP {code} for {url}"),
            other => anyhow!("cannot download {url}: {other}"),
        },
        ApiError::MissingHeader(header) => {
            anyhow!("the server did not send the {header} header for {url}; is the endpoint a Hugging Face hub?")
        }
        ApiError::InvalidHeader(header) => {
            anyhow!("the server sent an invalid {header} header for {url}")
        }
        ApiError::ParseIntError(e) => {
            anyhow!("the server sent an unreadable file size for {url}: {e}")
        }
        ApiError::IoError(e) => anyhow!("I/O error while downloading {url}: {e}; the partial download was discarded"),
        ApiError::LockAcquisition(lock) => {
            anyhow!("another process is downloading {url} (lock {} is held); try again when it is done", lock.display())
        }
        ApiError::InvalidResume => {
            anyhow!("a partial download of {url} in the cache is larger than the file; it was removed, try again")
        }
        other => anyhow!("cannot download {url}: {other}"),
    }
}

/// Checks a file against an expected hash and size; `Ok(None)` when it matches, otherwise a
/// description of the difference.
fn check_file(path: &Path, expected_sha256: Option<&str>, expected_size: Option<u64>) -> Result<Option<String>> {
    if let Some(expected) = expected_size {
        let actual = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.len();
        if actual != expected {
            return Ok(Some(format!("expected {expected} bytes, found {actual}")));
        }
    }
    if let Some(expected) = expected_sha256 {
        let (actual, _) = sha256_file(path)?;
        if actual != expected {
            return Ok(Some(format!("expected sha256 {expected}, found {actual}")));
        }
    }
    Ok(None)
}

/// Removes a cached snapshot pointer and the blob it points to (only when the blob lies inside
/// `cache_dir`). Missing files are not an error.
fn remove_cached(cache_dir: &Path, pointer: &Path) -> Result<()> {
    let blob = std::fs::canonicalize(pointer).ok();
    let cache = std::fs::canonicalize(cache_dir).ok();
    remove_if_present(pointer)?;
    if let (Some(blob), Some(cache)) = (blob, cache) {
        if blob.starts_with(&cache) {
            remove_if_present(&blob)?;
        }
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// Streams `path` through SHA-256; returns the lowercase hex digest and the number of bytes read.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// Whether `s` is a SHA-256 digest written as 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `s` is a full git commit hash: 40 lowercase hex digits.
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `s` is a hub repository id of the form `org/name` (letters, digits, `-`, `_`, `.`;
/// neither part empty, starting with `.` or `-`, nor containing `..`).
pub fn is_repo_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let (Some(org), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    [org, name].iter().all(|part| {
        !part.is_empty()
            && !part.starts_with(['.', '-'])
            && !part.contains("..")
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    })
}

/// Whether `s` is a safe relative file path inside a repository: non-empty, `/`-separated plain
/// components only (no `..`, `.`, absolute paths, drive prefixes or backslashes).
pub fn is_repo_file(s: &str) -> bool {
    !s.is_empty()
        && !s.contains('\\')
        && !s.ends_with('/')
        && s.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && Path::new(s).components().all(|c| matches!(c, Component::Normal(_)))
}

/// Checks the repository id, revision and file name of a hub file, with a message naming the
/// offending value.
fn check_hub_file(repo: &str, revision: &str, file: &str) -> Result<()> {
    if !is_repo_id(repo) {
        bail!("invalid hub repository '{repo}': expected 'org/name'");
    }
    if !is_commit_hash(revision) {
        bail!(
            "invalid revision '{revision}' for {repo}: downloads are pinned to a full commit hash \
             (40 lowercase hex digits), not a branch or tag"
        );
    }
    if !is_repo_file(file) {
        bail!("invalid file name '{file}' in {repo}: expected a relative path without '..'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert!(is_repo_id("org/name"));
        assert!(is_repo_id("candle-zoo/judge_mnist.v1"));
        for bad in ["org", "org/", "/name", "a/b/c", "../name", "org/..", "o g/n", "org/.x"] {
            assert!(!is_repo_id(bad), "{bad}");
        }
    }

    #[test]
    fn repo_files() {
        assert!(is_repo_file("model.safetensors"));
        assert!(is_repo_file("sub/dir/model.safetensors"));
        for bad in ["", "/abs", "../x", "a/../b", "./a", "a\\b", "a//b", "dir/"] {
            assert!(!is_repo_file(bad), "{bad}");
        }
    }

    #[test]
    fn env_lookup() {
        let vars = [("HF_HOME", "/tmp/hfhome"), ("HF_ENDPOINT", "http://localhost:1/"), ("HF_HUB_OFFLINE", "1")];
        let client = HubClient::from_lookup(|k| vars.iter().find(|(key, _)| *key == k).map(|(_, v)| v.to_string()));
        assert_eq!(client.endpoint(), "http://localhost:1");
        assert!(client.is_offline());
        assert_eq!(client.cache_dir().unwrap(), Path::new("/tmp/hfhome/hub"));
        let none = HubClient::from_lookup(|_| None);
        assert!(!none.is_offline());
        assert_eq!(none.endpoint(), DEFAULT_ENDPOINT);
        assert!(none.cache_dir().is_err());
    }

    #[test]
    fn rejects_unpinned_revision() {
        let dir = tempfile::tempdir().unwrap();
        let client = HubClient::new(dir.path()).offline(true);
        let err = client.fetch("org/name", "main", "model.safetensors", None, None).unwrap_err();
        assert!(format!("{err:#}").contains("40 lowercase hex"), "{err:#}");
    }
}

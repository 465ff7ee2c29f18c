//! Downloads through `HubClient` against a local server that speaks the hub's resolve protocol:
//! a `Range: bytes=0-0` probe answered with ETag, X-Repo-Commit and Content-Range, then a ranged
//! GET for the content.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use zoo_core::hub::HubClient;

const REPO: &str = "candle-zoo/test-model";
const REV: &str = "4e2b1c0d9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c";
const FILE: &str = "model.safetensors";

/// How the server answers content requests for a file.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// The whole requested range.
    Full,
    /// Announces the whole range, sends half of it, then closes the connection.
    DropHalfway,
}

#[derive(Default)]
struct State {
    files: HashMap<String, (Vec<u8>, Mode)>,
}

/// A minimal HTTP/1.1 server on a random local port, one connection at a time.
struct Server {
    addr: String,
    state: Arc<Mutex<State>>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (state, requests, stop) = (state.clone(), requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    requests.fetch_add(1, Ordering::SeqCst);
                    let _ = handle_connection(stream, &state);
                }
            })
        };
        Server { addr, state, requests, stop, handle: Some(handle) }
    }

    fn serve(&self, repo: &str, revision: &str, file: &str, content: &[u8], mode: Mode) {
        self.state.lock().unwrap().files.insert(format!("/{repo}/resolve/{revision}/{file}"), (content.to_vec(), mode));
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Stops accepting connections; the port is closed once this returns.
    fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(&self.addr);
            let _ = handle.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn handle_connection(mut stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let range = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("range"))
        .map(|(_, v)| v.trim().to_string());

    let found = state.lock().unwrap().files.get(target).cloned();
    let Some((content, mode)) = found.filter(|_| method == "GET") else {
        let body = b"Entry not found";
        write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nX-Error-Code: EntryNotFound\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        stream.write_all(body)?;
        return stream.shutdown(Shutdown::Both);
    };
    let revision = target.split('/').nth(4).unwrap_or_default().to_string();
    let size = content.len();
    let (start, end) = parse_range(range.as_deref(), size);
    if start >= size || end < start {
        write!(
            stream,
            "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{size}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return stream.shutdown(Shutdown::Both);
    }
    let body = &content[start..=end];
    let etag = hex::encode(Sha256::digest(&content));
    write!(
        stream,
        "HTTP/1.1 206 Partial Content\r\nETag: \"{etag}\"\r\nX-Repo-Commit: {revision}\r\n\
         Content-Range: bytes {start}-{end}/{size}\r\nContent-Length: {}\r\n\
         Content-Type: application/octet-stream\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    let is_probe = start == 0 && end == 0;
    if mode == Mode::DropHalfway && !is_probe {
        stream.write_all(&body[..body.len() / 2])?;
        stream.flush()?;
    } else {
        stream.write_all(body)?;
    }
    stream.shutdown(Shutdown::Both)
}

/// `bytes=S-E` or `bytes=S-` (no header: the whole file), as an inclusive range.
fn parse_range(range: Option<&str>, size: usize) -> (usize, usize) {
    let last = size.saturating_sub(1);
    let Some(spec) = range.and_then(|r| r.strip_prefix("bytes=")) else {
        return (0, last);
    };
    let (s, e) = spec.split_once('-').unwrap_or((spec, ""));
    let start = s.trim().parse().unwrap_or(0);
    let end = if e.trim().is_empty() { last } else { e.trim().parse::<usize>().unwrap_or(last).min(last) };
    (start, end)
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn client(server: &Server, cache: &Path) -> HubClient {
    HubClient::new(cache).with_endpoint(server.endpoint()).progress(false)
}

/// Files stored as blobs in the cache (lock files aside).
fn blobs(cache: &Path) -> Vec<PathBuf> {
    let dir = cache.join("models--candle-zoo--test-model").join("blobs");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries.map(|e| e.unwrap().path()).filter(|p| p.extension().is_none_or(|ext| ext != "lock")).collect()
}

#[test]
fn good_download_is_verified() {
    let server = Server::start();
    let data = content(100_003);
    server.serve(REPO, REV, FILE, &data, Mode::Full);
    let cache = tempfile::tempdir().unwrap();
    let hub = client(&server, cache.path());

    let path = hub.fetch(REPO, REV, FILE, Some(&sha_hex(&data)), Some(data.len() as u64)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert_eq!(path, cache.path().join("models--candle-zoo--test-model/snapshots").join(REV).join(FILE));
    assert_eq!(hub.cached(REPO, REV, FILE).unwrap(), Some(path.clone()));

    // Without expectations the file is still checked against the announced size.
    let other = hub.fetch(REPO, REV, FILE, None, None).unwrap();
    assert_eq!(other, path);
}

#[test]
fn sha256_mismatch_is_rejected_and_not_cached() {
    let server = Server::start();
    let data = content(4096);
    server.serve(REPO, REV, FILE, &data, Mode::Full);
    let cache = tempfile::tempdir().unwrap();
    let hub = client(&server, cache.path());
    let wrong = sha_hex(b"something else");
    let actual = sha_hex(&data);

    let err = format!("{:#}", hub.fetch(REPO, REV, FILE, Some(&wrong), None).unwrap_err());
    assert!(err.contains(FILE), "{err}");
    assert!(err.contains(&wrong) && err.contains(&actual), "{err}");

    assert_eq!(hub.cached(REPO, REV, FILE).unwrap(), None);
    assert!(blobs(cache.path()).is_empty(), "{:?}", blobs(cache.path()));
    let offline = hub.clone().offline(true);
    let err = format!("{:#}", offline.fetch(REPO, REV, FILE, None, None).unwrap_err());
    assert!(err.contains("not in the cache") && err.contains("offline"), "{err}");

    // The right hash downloads it again.
    let path = hub.fetch(REPO, REV, FILE, Some(&actual), None).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
}

#[test]
fn missing_file_is_a_clear_404() {
    let server = Server::start();
    let cache = tempfile::tempdir().unwrap();
    let hub = client(&server, cache.path());
    let err = format!("{:#}", hub.fetch(REPO, REV, "nope.safetensors", None, None).unwrap_err());
    assert!(err.contains("not found on the hub"), "{err}");
    assert!(err.contains(&format!("{REPO}/nope.safetensors")) && err.contains(REV), "{err}");
    assert!(err.contains(&server.endpoint()), "{err}");
    assert!(blobs(cache.path()).is_empty());
}

#[test]
fn dropped_connection_keeps_nothing() {
    let server = Server::start();
    let data = content(200_000);
    server.serve(REPO, REV, FILE, &data, Mode::DropHalfway);
    let cache = tempfile::tempdir().unwrap();
    let hub = client(&server, cache.path());

    let err = hub.fetch(REPO, REV, FILE, Some(&sha_hex(&data)), None).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(FILE), "{msg}");
    assert_eq!(hub.cached(REPO, REV, FILE).unwrap(), None);
    assert!(blobs(cache.path()).is_empty(), "{:?}", blobs(cache.path()));
    let offline = hub.clone().offline(true);
    assert!(offline.fetch(REPO, REV, FILE, None, None).is_err());

    // Without an expected hash the announced size still catches the truncation.
    assert!(hub.fetch(REPO, REV, FILE, None, None).is_err());
    assert!(blobs(cache.path()).is_empty(), "{:?}", blobs(cache.path()));

    // Once the server behaves, a fresh download succeeds.
    server.serve(REPO, REV, FILE, &data, Mode::Full);
    let path = hub.fetch(REPO, REV, FILE, Some(&sha_hex(&data)), Some(data.len() as u64)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
}

#[test]
fn offline_run_is_served_from_a_warm_cache() {
    let mut server = Server::start();
    let data = content(12_345);
    let sha = sha_hex(&data);
    server.serve(REPO, REV, FILE, &data, Mode::Full);
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("hub");
    let hub = client(&server, &cache);
    let first = hub.fetch(REPO, REV, FILE, Some(&sha), Some(data.len() as u64)).unwrap();
    let endpoint = server.endpoint();
    server.stop();
    let requests = server.requests();

    let offline = hub.clone().offline(true);
    let again = offline.fetch(REPO, REV, FILE, Some(&sha), Some(data.len() as u64)).unwrap();
    assert_eq!(again, first);
    assert_eq!(std::fs::read(&again).unwrap(), data);

    // The same through the environment-style configuration.
    let home_dir = home.path().to_str().unwrap().to_string();
    let vars: HashMap<&str, String> =
        [("HF_HOME", home_dir), ("HF_ENDPOINT", endpoint), ("HF_HUB_OFFLINE", "1".to_string())].into_iter().collect();
    let from_env = HubClient::from_lookup(|k| vars.get(k).cloned()).progress(false);
    assert!(from_env.is_offline());
    let via_env = from_env.fetch(REPO, REV, FILE, Some(&sha), None).unwrap();
    assert_eq!(via_env, first);

    // Even online, a verified cached copy needs no network (the server is gone).
    let online = hub.fetch(REPO, REV, FILE, Some(&sha), None).unwrap();
    assert_eq!(online, first);
    assert_eq!(server.requests(), requests);

    // A file that was never downloaded is a clear offline error.
    let err = format!("{:#}", offline.fetch(REPO, REV, "other.bin", None, None).unwrap_err());
    assert!(err.contains("not in the cache at") && err.contains("offline mode is on"), "{err}");
}

#[test]
fn corrupted_cache_entry_is_removed() {
    let server = Server::start();
    let data = content(5000);
    let sha = sha_hex(&data);
    server.serve(REPO, REV, FILE, &data, Mode::Full);
    let cache = tempfile::tempdir().unwrap();
    let hub = client(&server, cache.path());
    let path = hub.fetch(REPO, REV, FILE, Some(&sha), None).unwrap();

    // Damage the blob behind the snapshot pointer.
    let blob = std::fs::canonicalize(&path).unwrap();
    let mut damaged = data.clone();
    damaged[10] ^= 0xff;
    std::fs::write(&blob, &damaged).unwrap();

    let offline = hub.clone().offline(true);
    let err = format!("{:#}", offline.fetch(REPO, REV, FILE, Some(&sha), None).unwrap_err());
    assert!(err.contains("corrupt") && err.contains(&sha), "{err}");
    assert_eq!(hub.cached(REPO, REV, FILE).unwrap(), None);

    // Online, it is downloaded again.
    let path = hub.fetch(REPO, REV, FILE, Some(&sha), None).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
}

#[test]
fn wrong_announced_size_fails_before_downloading() {
    let server = Server::start();
    let data = content(1000);
    server.serve(REPO, REV, FILE, &data, Mode::Full);
    let cache = tempfile::tempdir().unwrap();
    let hub = client(&server, cache.path());
    let err = format!("{:#}", hub.fetch(REPO, REV, FILE, None, Some(999)).unwrap_err());
    assert!(err.contains("1000 bytes") && err.contains("999"), "{err}");
    assert!(blobs(cache.path()).is_empty());
}

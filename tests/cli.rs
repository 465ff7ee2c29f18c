//! The `zoo` binary, run as a user would.

use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::{Command, Output};

/// Runs `zoo` with `args`; `manifest` (when given) is passed through `ZOO_MANIFEST`, otherwise
/// the workspace manifest is used. The Hugging Face cache is an empty directory and offline.
fn zoo(args: &[&str], manifest: Option<&Path>) -> Output {
    let hf_home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zoo"));
    cmd.args(args)
        .env_remove("ZOO_MANIFEST")
        .env("HF_HOME", hf_home.path())
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("RUST_BACKTRACE");
    if let Some(manifest) = manifest {
        cmd.env("ZOO_MANIFEST", manifest);
    }
    cmd.output().expect("run the zoo binary")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A manifest in a temporary directory with one bundled file `weights/tiny.safetensors`.
/// `sha_of` chooses the content the manifest's hash is computed from.
fn temp_manifest(content: &[u8], sha_of: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("weights")).unwrap();
    std::fs::write(dir.path().join("weights/tiny.safetensors"), content).unwrap();
    let sha = hex::encode(Sha256::digest(sha_of));
    let text = format!(
        r#"[[weights]]
id = "tiny"
family = "judge"
description = "a tiny test checkpoint"
dtype = "f32"
params = 2
size = {}
sha256 = "{sha}"
licence = "MIT OR Apache-2.0"
dataset = "none"
recipe = "cargo run --example judge -- train --tiny"
config = {{ hidden = 2 }}
[weights.location]
path = "weights/tiny.safetensors"
[weights.metrics]
command = "cargo run --example judge -- eval --weights tiny --json"
accuracy = 0.25
"#,
        content.len()
    );
    std::fs::write(dir.path().join("weights-manifest.toml"), text).unwrap();
    dir
}

#[test]
fn list_works_on_the_workspace_manifest() {
    let o = zoo(&["list"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).is_empty());
}

#[test]
fn verify_passes_on_the_workspace_manifest() {
    let o = zoo(&["verify"], None);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn info_of_an_unknown_id_fails_clearly() {
    let o = zoo(&["info", "no-such-checkpoint"], None);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("no-such-checkpoint"), "{err}");
    assert!(err.contains("known ids") || err.contains("no entries"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
}

#[test]
fn verify_and_info_on_a_good_temp_manifest() {
    let dir = temp_manifest(b"12345678", b"12345678");
    let manifest = dir.path().join("weights-manifest.toml");
    let o = zoo(&["verify"], Some(&manifest));
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("ok") && stdout(&o).contains("tiny"));

    let o = zoo(&["list"], Some(&manifest));
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(out.contains("tiny") && out.contains("accuracy=0.25"), "{out}");

    let o = zoo(&["info", "tiny"], Some(&manifest));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for needle in
        ["a tiny test checkpoint", "train --tiny", "eval --weights tiny --json", "accuracy = 0.25", "hidden = 2"]
    {
        assert!(out.contains(needle), "missing {needle}: {out}");
    }

    let o = zoo(&["fetch", "tiny"], Some(&manifest));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).trim().ends_with("weights/tiny.safetensors"));

    let o = zoo(&["info", "other"], Some(&manifest));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("known ids: tiny"), "{}", stderr(&o));
}

#[test]
fn verify_reports_a_wrong_hash() {
    let dir = temp_manifest(b"12345678", b"87654321");
    let manifest = dir.path().join("weights-manifest.toml");
    let o = zoo(&["verify"], Some(&manifest));
    assert_ne!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(out.contains("tiny") && out.contains("MISMATCH"), "{out}");

    let o = zoo(&["fetch", "tiny"], Some(&manifest));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("sha256 mismatch"), "{}", stderr(&o));
}

#[test]
fn verify_reports_a_missing_file() {
    let dir = temp_manifest(b"12345678", b"12345678");
    std::fs::remove_file(dir.path().join("weights/tiny.safetensors")).unwrap();
    let o = zoo(&["verify"], Some(&dir.path().join("weights-manifest.toml")));
    assert_ne!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("MISSING"), "{}", stdout(&o));
}

#[test]
fn malformed_manifest_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("broken.toml");
    std::fs::write(&manifest, "[[weights]]\nid = \"unterminated\n").unwrap();
    for command in ["list", "verify"] {
        let o = zoo(&[command], Some(&manifest));
        assert_eq!(o.status.code(), Some(1), "{command}");
        let err = stderr(&o);
        assert!(err.starts_with("error: "), "{err}");
        assert!(err.contains("broken.toml") && err.contains("line 2"), "{err}");
    }
    // The same through the global option.
    let o = zoo(&["--manifest", manifest.to_str().unwrap(), "list"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("broken.toml"));

    let o = zoo(&["list"], Some(&dir.path().join("absent.toml")));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("absent.toml"), "{}", stderr(&o));
}

#[test]
fn fetch_of_an_uncached_hub_file_offline_fails_clearly() {
    let o = zoo(
        &[
            "fetch",
            "--repo",
            "org/name",
            "--revision",
            "0123456789abcdef0123456789abcdef01234567",
            "--file",
            "model.safetensors",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("not in the cache") && err.contains("offline"), "{err}");

    let o = zoo(&["fetch", "--repo", "org/name", "--revision", "main", "--file", "m"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("40 lowercase hex"), "{}", stderr(&o));
}

#[test]
fn help_explains_the_commands() {
    let o = zoo(&["--help"], None);
    assert!(o.status.success());
    let out = stdout(&o);
    for command in ["list", "info", "verify", "fetch", "demo"] {
        assert!(out.contains(command), "{command} missing from --help: {out}");
    }
    let o = zoo(&["fetch", "--help"], None);
    assert!(o.status.success());
    assert!(stdout(&o).contains("--revision"));
}

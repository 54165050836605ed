//! Replays the committed cargo-fuzz corpus (`fuzz/corpus/<target>/`) through the same
//! `wsgate::fuzzing` entry points as the fuzz targets, so every seed and every past finding
//! is checked by plain `cargo test`.

use std::path::{Path, PathBuf};

/// Every file of `fuzz/corpus/<target>/`, sorted; panics if there is none.
fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read corpus {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("corpus directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
}

/// Feeds every corpus file of `target` to `entry`, naming the file that fails.
fn replay(target: &str, entry: fn(&[u8])) {
    for path in corpus_files(target) {
        let data =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let result = std::panic::catch_unwind(|| entry(&data));
        assert!(result.is_ok(), "corpus input {} fails", path.display());
    }
}

#[test]
fn http_request_corpus() {
    replay("http_request", wsgate::fuzzing::fuzz_http_request);
}

#[test]
fn frame_header_corpus() {
    replay("frame_header", wsgate::fuzzing::fuzz_frame_header);
}

#[test]
fn session_corpus() {
    replay("session", wsgate::fuzzing::fuzz_session);
}

#[test]
fn jws_corpus() {
    replay("jws", wsgate::fuzzing::fuzz_jws);
}

#[test]
fn config_corpus() {
    replay("config", wsgate::fuzzing::fuzz_config);
}

#[test]
fn revlog_corpus() {
    replay("revlog", wsgate::fuzzing::fuzz_revlog);
}

#[test]
fn upstream_response_corpus() {
    replay("upstream_response", wsgate::fuzzing::fuzz_upstream_response);
}

#[test]
fn session_deflate_corpus() {
    replay("session_deflate", wsgate::fuzzing::fuzz_session_deflate);
}

//! The crate's structure, checked from its own source (issue #20): the top-level modules of
//! `src/` form layers, and code (outside `#[cfg(test)]`) may only name a module of a lower
//! layer; there is no circle between top-level modules; and no source file holds more than
//! `MAX_CODE_LINES` lines outside its tests.
//!
//! The layers are written out here, on purpose: a new top-level module fails this test until
//! someone decides where it sits (and updates the layout map in the crate doc, `src/lib.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom first. A module may use modules of strictly lower layers only.
const LAYERS: &[(&str, &[&str])] = &[
    // The one clock reader (and `Tick`, its compact instants): no crate dependency.
    ("clock", &["clock"]),
    // Pure building blocks: the token bucket (on `Tick`), the counters.
    ("foundation", &["rate", "metrics"]),
    // Sans-IO wire formats: HTTP/1.1 upgrade, RFC 6455 framing and session.
    ("wire", &["proto"]),
    // Sans-IO tokens: JWS, keys, JWK Sets.
    ("tokens", &["auth"]),
    // The configuration (which checks key files and JWK Sets with auth's parsers), and log
    // lines (which redact with proto's query parser).
    ("sans-io services", &["config", "log"]),
    // The handshake decision and what serves an open connection.
    ("decisions", &["gate", "backend"]),
    // The only mio / rustls code: listener, workers, upstream leg, server lifecycle.
    ("data plane", &["net"]),
    // The tokio runtime that drives the data plane: signals, SIGHUP reload, the admin
    // listener and the revocation log; it reaches the workers through snapshots and
    // commands, and nothing in `net` knows it.
    ("control plane", &["control"]),
    // Entry points: the command line and the fuzz targets.
    ("entry points", &["cli", "fuzzing"]),
];

/// Most lines of a source file outside its `#[cfg(test)]` items.
const MAX_CODE_LINES: usize = 800;

/// Macros exported at the crate root, and the module that defines them.
const MACROS: &[(&str, &str)] = &[("info", "log"), ("warn", "log"), ("error", "log")];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/net/worker/mod.rs` -> `net`), or `None`
/// for the crate roots.
fn top_module(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    if rel.components().count() == 1 {
        let stem = first.trim_end_matches(".rs");
        return (stem != "lib" && stem != "main").then(|| stem.to_string());
    }
    Some(first)
}

/// The text with comments, string and char literals blanked (same length, newlines
/// kept), so that braces and paths are only seen in code.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                out.push(if b[i] == b'\n' { b'\n' } else { b' ' });
                i += 1;
            }
            out.extend_from_slice(b"  ");
            i += 2;
        } else if b[i] == b'r' && matches!(b.get(i + 1), Some(b'"' | b'#')) && !ident_before(b, i) {
            // Raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(b[i]);
                i += 1;
                continue;
            }
            j += 1;
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            while j < b.len() && !b[j..].starts_with(&close) {
                j += 1;
            }
            j = (j + close.len()).min(b.len());
            out.extend(
                b[i..j]
                    .iter()
                    .map(|&c| if c == b'\n' { b'\n' } else { b' ' }),
            );
            i = j;
        } else if b[i] == b'"' {
            out.push(b' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                let skip = if b[i] == b'\\' { 2 } else { 1 };
                for _ in 0..skip {
                    if i < b.len() {
                        out.push(if b[i] == b'\n' { b'\n' } else { b' ' });
                        i += 1;
                    }
                }
            }
            out.push(b' ');
            i += 1;
        } else if b[i] == b'\'' {
            // A char literal ('{', '\n', '\u{7f}') or a lifetime ('a).
            let end = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..]
                    .iter()
                    .position(|&c| c == b'\'')
                    .map(|p| i + 2 + p)
            } else if b.get(i + 2) == Some(&b'\'') {
                Some(i + 2)
            } else if b.get(i + 1).is_some_and(|&c| c >= 0x80) {
                // A multi-byte char: its quote is at most 4 bytes on.
                b[i + 2..(i + 6).min(b.len())]
                    .iter()
                    .position(|&c| c == b'\'')
                    .map(|p| i + 2 + p)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.extend(std::iter::repeat_n(b' ', end + 1 - i));
                    i = end + 1;
                }
                None => {
                    out.push(b'\'');
                    i += 1;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("ascii blanks keep utf-8")
}

fn ident_before(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// Code lines with every `#[cfg(test)]` item removed, and the names of out-of-line test
/// modules (`#[cfg(test)] mod tests;`) this file declares.
fn without_tests(code: &str) -> (Vec<&str>, Vec<String>) {
    let lines: Vec<&str> = code.lines().collect();
    let mut kept = Vec::new();
    let mut test_mods = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != "#[cfg(test)]" {
            kept.push(lines[i]);
            i += 1;
            continue;
        }
        // Skip further attributes, then the item: one line ending in `;`, or up to the
        // brace that closes the first one opened.
        i += 1;
        while i < lines.len() && lines[i].trim_start().starts_with("#[") {
            i += 1;
        }
        if let Some(line) = lines.get(i) {
            let t = line.trim();
            if let Some(name) = t
                .strip_prefix("mod ")
                .or_else(|| t.strip_prefix("pub mod "))
                .and_then(|rest| rest.strip_suffix(';'))
            {
                test_mods.push(name.trim().to_string());
            }
        }
        let mut depth = 0i64;
        let mut opened = false;
        while i < lines.len() {
            for c in lines[i].bytes() {
                match c {
                    b'{' => {
                        depth += 1;
                        opened = true;
                    }
                    b'}' => depth -= 1,
                    _ => {}
                }
            }
            let done = (opened && depth <= 0) || (!opened && lines[i].trim_end().ends_with(';'));
            i += 1;
            if done {
                break;
            }
        }
    }
    (kept, test_mods)
}

/// The top-level modules named by `crate::X`, `crate::{X, ..}` and `$crate::X` paths,
/// and by `super::X` where `super` is the crate root.
fn references(
    code: &str,
    file_depth: usize,
    is_mod_rs: bool,
    modules: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut push = |name: &str| {
        if modules.contains(name) {
            found.insert(name.to_string());
        } else if let Some((_, m)) = MACROS.iter().find(|(mac, _)| *mac == name) {
            found.insert((*m).to_string());
        }
    };
    let b = code.as_bytes();
    // How many `super::` from this file reach the crate root: src/x.rs and src/x/mod.rs
    // are one level below it, src/x/y.rs two, and so on.
    let levels_to_root = if is_mod_rs {
        file_depth - 1
    } else {
        file_depth
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &code[i..];
        let mut prefix_len = None;
        if rest.starts_with("crate::") && !ident_before(b, i) {
            prefix_len = Some("crate::".len());
        } else if rest.starts_with("super::") && !ident_before(b, i) {
            let mut n = 0;
            let mut j = i;
            while code[j..].starts_with("super::") {
                n += 1;
                j += "super::".len();
            }
            if n == levels_to_root {
                prefix_len = Some(j - i);
            } else {
                i = j;
                continue;
            }
        }
        let Some(len) = prefix_len else {
            i += 1;
            continue;
        };
        let after = &rest[len..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                push(&name);
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            push(&name);
        }
        i += len;
    }
    found
}

struct Crate {
    /// Top-level module -> the top-level modules its non-test code names.
    graph: BTreeMap<String, BTreeSet<String>>,
    /// (file, where) for each upward or sideways use, to name it in a failure.
    sites: BTreeMap<(String, String), Vec<String>>,
    /// (file, lines of code outside tests), test-module files excluded.
    sizes: Vec<(String, usize)>,
}

fn analyse(src: &Path) -> Crate {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| top_module(f.strip_prefix(src).expect("under src")))
        .collect();

    let mut texts = BTreeMap::new();
    let mut test_files = BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read source");
        let code = code_only(&text);
        let (_, test_mods) = without_tests(&code);
        // `#[cfg(test)] mod t;` in a/b.rs is a/b/t.rs; in a/mod.rs, lib.rs or main.rs, a/t.rs.
        let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let dir = f.parent().expect("parent");
        let base = if matches!(stem, "mod" | "lib" | "main") {
            dir.to_path_buf()
        } else {
            dir.join(stem)
        };
        for m in test_mods {
            test_files.insert(base.join(format!("{m}.rs")));
            test_files.insert(base.join(&m).join("mod.rs"));
        }
        texts.insert(f.clone(), code);
    }

    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut sites: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut sizes = Vec::new();
    for (f, code) in &texts {
        // A test module's file, or a file inside a test module's directory.
        if test_files
            .iter()
            .any(|t| f == t || f.starts_with(t.with_extension("")))
        {
            continue;
        }
        let rel = f.strip_prefix(src).expect("under src");
        let (kept, _) = without_tests(code);
        sizes.push((rel.display().to_string(), kept.len()));
        let Some(top) = top_module(rel) else {
            continue;
        };
        let depth = rel.components().count();
        let is_mod_rs = f.file_name().is_some_and(|n| n == "mod.rs");
        let kept_text = kept.join("\n");
        let refs = references(&kept_text, depth, is_mod_rs, &modules);
        for r in refs {
            if r != top {
                sites
                    .entry((top.clone(), r.clone()))
                    .or_default()
                    .push(rel.display().to_string());
                graph.entry(top.clone()).or_default().insert(r);
            }
        }
        graph.entry(top).or_default();
    }
    Crate {
        graph,
        sites,
        sizes,
    }
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, members)| members.contains(&module))
}

/// Every use that does not point strictly downward, as `"a -> b (files)"`.
fn upward_uses(c: &Crate) -> Vec<String> {
    let mut bad = Vec::new();
    for (from, tos) in &c.graph {
        for to in tos {
            let ok = matches!((layer_of(from), layer_of(to)), (Some(f), Some(t)) if t < f);
            if !ok {
                let files = &c.sites[&(from.clone(), to.clone())];
                bad.push(format!("{from} -> {to} (in {})", files.join(", ")));
            }
        }
    }
    bad
}

/// A circle between top-level modules, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn every_top_level_module_has_a_layer() {
    let c = analyse(&src_dir());
    let missing: Vec<&String> = c.graph.keys().filter(|m| layer_of(m).is_none()).collect();
    assert!(
        missing.is_empty(),
        "top-level modules with no layer in tests/layers.rs: {missing:?}"
    );
    let listed: Vec<&str> = LAYERS.iter().flat_map(|(_, m)| m.iter().copied()).collect();
    let stale: Vec<&&str> = listed
        .iter()
        .filter(|m| !c.graph.contains_key(**m))
        .collect();
    assert!(
        stale.is_empty(),
        "layers name modules that do not exist: {stale:?}"
    );
}

#[test]
fn no_use_points_up_or_sideways() {
    let c = analyse(&src_dir());
    let bad = upward_uses(&c);
    assert!(
        bad.is_empty(),
        "uses that do not point to a lower layer:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn no_circle_between_top_level_modules() {
    let c = analyse(&src_dir());
    assert_eq!(find_cycle(&c.graph), None);
}

#[test]
fn no_file_is_longer_than_the_limit_outside_its_tests() {
    let c = analyse(&src_dir());
    let long: Vec<String> = c
        .sizes
        .iter()
        .filter(|(_, n)| *n > MAX_CODE_LINES)
        .map(|(f, n)| format!("{f}: {n}"))
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_CODE_LINES} lines: {long:?}"
    );
}

// The checker itself, on small made-up crates, so that a broken scanner cannot pass
// vacuously.

fn fake_crate(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let root = std::env::temp_dir().join(format!("wsgate-layers-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for (path, text) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
    root
}

#[test]
fn an_upward_use_is_caught() {
    let root = fake_crate(
        "up",
        &[
            ("lib.rs", "pub mod proto;\npub mod gate;\n"),
            ("proto/mod.rs", "pub mod http;\n"),
            ("proto/http.rs", "use crate::gate::reject::Reject;\n"),
            ("gate/mod.rs", "use crate::proto::http;\n"),
        ],
    );
    let c = analyse(&root);
    assert_eq!(
        upward_uses(&c),
        vec!["proto -> gate (in proto/http.rs)".to_string()]
    );
    assert_eq!(
        find_cycle(&c.graph),
        Some(vec!["gate".into(), "proto".into(), "gate".into()])
    );
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn test_code_comments_strings_and_grouped_paths_are_read_right() {
    let root = fake_crate(
        "scan",
        &[
            (
                "proto/mod.rs",
                "// crate::net in a comment\nconst S: &str = \"crate::net\";\n\
                 const C: char = '{';\n\
                 #[cfg(test)]\nmod tests {\n    use crate::net::x;\n    fn f() { if true { } }\n}\n\
                 #[cfg(test)]\nmod more;\n\
                 fn g() { crate::warn!(\"x\"); }\n",
            ),
            ("proto/more.rs", "use crate::net::y;\n"),
            (
                "net/mod.rs",
                "use crate::{proto, rate::Bucket};\nuse super::clock;\n",
            ),
            ("net/deep/mod.rs", "use super::super::log::line;\n"),
            ("net/deep/leaf.rs", "use super::super::super::clock::now;\n"),
            ("log.rs", ""),
            ("rate.rs", ""),
            ("clock.rs", ""),
        ],
    );
    let c = analyse(&root);
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(c.graph["proto"], set(&["log"]));
    assert_eq!(c.graph["net"], set(&["clock", "log", "proto", "rate"]));
    assert!(c.sizes.iter().all(|(f, _)| f != "proto/more.rs"));
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn line_count_leaves_out_test_items_wherever_they_are() {
    let code = "fn a() {}\n#[cfg(test)]\nmod t {\n    fn x() {}\n}\nfn b() {}\n";
    let (kept, mods) = without_tests(code);
    assert_eq!(kept, vec!["fn a() {}", "fn b() {}"]);
    assert!(mods.is_empty());
}

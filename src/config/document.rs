//! From TOML text to the serde layer, collecting every problem, and line numbers for
//! error messages (a tree of spans looked up by key path).

use std::fmt;
use std::ops::Range;

use serde::de::{DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::auth::AuthSection;
use super::{ConfigError, Problems, RawConfig, TOP_LEVEL_KEYS};

/// Parses the text into [`RawConfig`]; `None` only for a TOML syntax error.
pub(super) fn raw_from_str(text: &str, problems: &mut Problems) -> Option<RawConfig> {
    let root: toml::Table = match toml::from_str(text) {
        Ok(root) => root,
        Err(error) => {
            problems.errors.push(ConfigError {
                path: String::new(),
                message: format!("TOML syntax: {}", error.message().trim_end()),
                line: error.span().map(|span| line_of(text, span.start)),
            });
            return None;
        }
    };
    let mut raw = RawConfig::default();
    for (key, value) in &root {
        match key.as_str() {
            "server" => raw.server = section(value, "server", problems),
            "tls" => raw.tls = Some(section(value, "tls", problems)),
            "auth" => raw.auth = auth_section(value, problems),
            "origin" => raw.origin = section(value, "origin", problems),
            "limits" => raw.limits = section(value, "limits", problems),
            "session" => raw.session = section(value, "session", problems),
            "admin" => raw.admin = Some(section(value, "admin", problems)),
            "cluster" => raw.cluster = Some(section(value, "cluster", problems)),
            "compression" => raw.compression = section(value, "compression", problems),
            "route" => raw.route = array_of_tables(value, "route", problems),
            "login" => raw.login = Some(section(value, "login", problems)),
            _ => problems.unparsed(key.clone(), unknown_key_message(key, &TOP_LEVEL_KEYS)),
        }
    }
    Some(raw)
}

/// `[auth]`: its `[[auth.key]]` array is taken apart so that each key gets its index.
fn auth_section(value: &toml::Value, problems: &mut Problems) -> AuthSection {
    let Some(table) = value.as_table() else {
        return section(value, "auth", problems);
    };
    let mut rest = table.clone();
    let keys = rest.remove("key");
    let providers = rest.remove("provider");
    let mut auth: AuthSection = section(&toml::Value::Table(rest), "auth", problems);
    if let Some(keys) = keys {
        auth.key = array_of_tables(&keys, "auth.key", problems);
    }
    if let Some(providers) = providers {
        auth.provider = array_of_tables(&providers, "auth.provider", problems);
    }
    auth
}

/// An array of tables (`[[route]]`), each element deserialized on its own as `path[i]`.
fn array_of_tables<T: DeserializeOwned + Default>(
    value: &toml::Value,
    path: &str,
    problems: &mut Problems,
) -> Vec<T> {
    let Some(items) = value.as_array() else {
        problems.unparsed(
            path.to_owned(),
            format!(
                "expected an array of tables ([[{path}]]), found {}",
                value.type_str()
            ),
        );
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| section(item, &format!("{path}[{index}]"), problems))
        .collect()
}

/// Deserializes one table. When that fails, each key is deserialized alone so that every
/// bad key is reported at its own path; the keys that parsed are kept.
fn section<T: DeserializeOwned + Default>(
    value: &toml::Value,
    path: &str,
    problems: &mut Problems,
) -> T {
    let Some(table) = value.as_table() else {
        problems.unparsed(
            path.to_owned(),
            format!("expected a table, found {}", value.type_str()),
        );
        return T::default();
    };
    let whole_error = match T::deserialize(value.clone()) {
        Ok(parsed) => return parsed,
        Err(error) => error,
    };
    let mut good = table.clone();
    for (key, item) in table {
        let mut alone = toml::Table::new();
        alone.insert(key.clone(), item.clone());
        if let Err(error) = T::deserialize(toml::Value::Table(alone)) {
            problems.unparsed(format!("{path}.{key}"), tidy(error.message()));
            good.remove(key);
        }
    }
    if good.len() == table.len() {
        // No key fails alone (every field has a default, so this is not expected).
        problems.unparsed(path.to_owned(), tidy(whole_error.message()));
        return T::default();
    }
    T::deserialize(toml::Value::Table(good)).unwrap_or_default()
}

/// Rewrites serde's wording into the config's: "key", "array", "integer".
fn tidy(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((name, expected)) = rest.split_once("`, ") {
            let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            return unknown_key_message(name, &candidates);
        }
    }
    message
        .trim_end()
        .replace("expected a sequence", "expected an array")
        .replace("expected usize", "expected a non-negative integer")
        .replace(
            "expected u32",
            "expected a non-negative integer (at most 4294967295)",
        )
}

/// "unknown key (did you mean `listen`?); expected one of `listen`, `workers`".
pub(super) fn unknown_key_message(name: &str, candidates: &[&str]) -> String {
    let mut message = String::from("unknown key");
    if let Some(best) = closest(name, candidates) {
        message.push_str(&format!(" (did you mean `{best}`?)"));
    }
    if candidates.is_empty() {
        message.push_str("; this table takes no keys");
    } else {
        let list: Vec<String> = candidates.iter().map(|c| format!("`{c}`")).collect();
        message.push_str("; expected one of ");
        message.push_str(&list.join(", "));
    }
    message
}

/// The candidate within a small edit distance of `name`, if any.
pub(super) fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|candidate| (edit_distance(name, candidate), *candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Edit distance counting insertions, deletions, substitutions and swaps of two
/// neighbours (optimal string alignment), so `scpoe` is one edit from `scope`.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut table = vec![0usize; (a.len() + 1) * width];
    let cell = |i: usize, j: usize| i * width + j;
    for i in 0..=a.len() {
        table[cell(i, 0)] = i;
    }
    for j in 0..=b.len() {
        table[cell(0, j)] = j;
    }
    // Indexing is in bounds: i <= a.len() and j <= b.len() by the loop ranges.
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (table[cell(i - 1, j)] + 1)
                .min(table[cell(i, j - 1)] + 1)
                .min(table[cell(i - 1, j - 1)] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(table[cell(i - 2, j - 2)] + 1);
            }
            table[cell(i, j)] = best;
        }
    }
    table[cell(a.len(), b.len())]
}

// toml 0.8 (through serde_spanned 0.6) hands a span to a `deserialize_struct` call with
// these names. `toml::Spanned` itself cannot be used: it fails on a table that has no
// span (an implicit `auth` created by `[[auth.key]]`). If a later toml stops answering to
// these names, values simply come back without spans and errors without line numbers.

const SPANNED: &str = "$__serde_spanned_private_Spanned";

const SPAN_START: &str = "$__serde_spanned_private_start";

const SPAN_END: &str = "$__serde_spanned_private_end";

const SPAN_VALUE: &str = "$__serde_spanned_private_value";

/// A value of the document with its byte span, when toml knows it.
pub(super) struct Located {
    span: Option<Range<usize>>,
    node: Node,
}

/// The shape of the document.
enum Node {
    Table(Vec<(String, Located)>),
    Array(Vec<Located>),
    Scalar,
}

/// Builds a [`Node`] from any value.
struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Node::Table(entries))
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

/// Builds a [`Located`]: the span form when toml offers it, a plain value otherwise.
struct LocatedVisitor;

impl LocatedVisitor {
    fn plain(node: Node) -> Located {
        Located { span: None, node }
    }
}

impl<'de> Visitor<'de> for LocatedVisitor {
    type Value = Located;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Located, E> {
        Ok(Self::plain(Node::Scalar))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Located, E> {
        Ok(Self::plain(Node::Scalar))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Located, E> {
        Ok(Self::plain(Node::Scalar))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Located, E> {
        Ok(Self::plain(Node::Scalar))
    }

    fn visit_str<E>(self, _: &str) -> Result<Located, E> {
        Ok(Self::plain(Node::Scalar))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Located, A::Error> {
        NodeVisitor.visit_seq(seq).map(Self::plain)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Located, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Ok(Self::plain(Node::Table(Vec::new())));
        };
        if first != SPAN_START {
            let mut entries = vec![(first, map.next_value()?)];
            while let Some(key) = map.next_key::<String>()? {
                entries.push((key, map.next_value()?));
            }
            return Ok(Self::plain(Node::Table(entries)));
        }
        let start: usize = map.next_value()?;
        let mut end = start;
        let mut node = Node::Scalar;
        while let Some(key) = map.next_key::<String>()? {
            if key == SPAN_END {
                end = map.next_value()?;
            } else if key == SPAN_VALUE {
                node = map.next_value()?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(Located {
            span: Some(start..end),
            node,
        })
    }
}

impl<'de> Deserialize<'de> for Located {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct(
            SPANNED,
            &[SPAN_START, SPAN_END, SPAN_VALUE],
            LocatedVisitor,
        )
    }
}

/// The span of the deepest value on `path` (`route[1].scope[0]`) that has one.
pub(super) fn locate(root: &Located, path: &str) -> Option<Range<usize>> {
    if path.is_empty() {
        return None;
    }
    let mut node = root;
    let mut found = None;
    for segment in path.split('.') {
        let mut parts = segment.split('[');
        let key = parts.next().unwrap_or_default();
        let Node::Table(entries) = &node.node else {
            return found;
        };
        let Some((_, child)) = entries.iter().find(|(name, _)| name == key) else {
            return found;
        };
        node = child;
        found = node.span.clone().or(found);
        for index in parts {
            let Some(index) = index
                .strip_suffix(']')
                .and_then(|i| i.parse::<usize>().ok())
            else {
                return found;
            };
            let Node::Array(items) = &node.node else {
                return found;
            };
            let Some(item) = items.get(index) else {
                return found;
            };
            node = item;
            found = node.span.clone().or(found);
        }
    }
    found
}

/// Joins a multi-line message (toml's syntax errors have two lines) into one line.
pub(super) fn one_line(text: &str) -> String {
    escape_controls(
        &text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// Escapes control characters (a quoted TOML key may contain a newline).
pub(super) fn escape_controls(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// 1-based line number of a byte offset.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
    before.iter().filter(|&&byte| byte == b'\n').count() + 1
}

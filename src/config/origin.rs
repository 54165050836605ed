//! `[origin]`: the Origin allow-list, each entry normalized to `scheme://host[:port]`.

use serde::Deserialize;

use super::Problems;

/// `[origin]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OriginSection {
    /// Allowed `Origin` values, `https://*.example.com` wildcards included.
    pub allow: Vec<String>,
    /// Whether a request without `Origin` (a non-browser client) is allowed.
    pub allow_missing: bool,
}

impl Default for OriginSection {
    fn default() -> Self {
        OriginSection {
            allow: Vec::new(),
            allow_missing: true,
        }
    }
}

/// `[origin]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Allowed origins, normalized: lower case, no default port (`https://x:443` ->
    /// `https://x`). An entry may start its host with `*.`.
    pub allow: Vec<String>,
    /// Whether a request without `Origin` is allowed.
    pub allow_missing: bool,
}

pub(super) fn origin(raw: &OriginSection, problems: &mut Problems) -> Origin {
    let mut allow: Vec<String> = Vec::new();
    for (index, entry) in raw.allow.iter().enumerate() {
        let at = format!("origin.allow[{index}]");
        match normalize_origin(entry) {
            Ok(origin) => {
                if let Some(first) = allow.iter().position(|seen| *seen == origin) {
                    problems.error(
                        at,
                        format!("duplicate origin {entry:?} (also origin.allow[{first}])"),
                    );
                } else {
                    allow.push(origin);
                }
            }
            Err(reason) => problems.error(
                at,
                format!(
                    "{reason}; expected \"https://host[:port]\" (the host may start with \"*.\"), \
                     got {entry:?}"
                ),
            ),
        }
    }
    Origin {
        allow,
        allow_missing: raw.allow_missing,
    }
}

/// RFC 6454 §6.1 serialization: `scheme://host[:port]`, lower case, default port left
/// out. A host may start with the label `*.` followed by at least two labels. The gate's
/// parser, so that a pattern is read exactly as a request's `Origin` is (SPEC §4).
pub(super) fn normalize_origin(entry: &str) -> Result<String, String> {
    crate::proto::http::origin::parse_origin(entry, true).map(|origin| origin.serialize())
}

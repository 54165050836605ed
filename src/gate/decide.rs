//! The handshake decision: every check of SPEC §4, cheapest first, before any 101.
//!
//! Order: (parse, size, method, version: done by `proto::http`) → route (404) →
//! capacity (503) → per-IP limits (429) → Origin (403) → token (400/401) → scope (403)
//! → per-subject limit (429). Nothing expensive runs for a request that a cheap check
//! already rejected: no signature is checked for a request that a table lookup refuses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::auth::error::{MalformedKind, TokenError};
use crate::auth::revocation::{token_lifetime, RevocationSet};
use crate::auth::verify::{Claims, Scratch, Verifier};

/// The verifier of one configuration generation: a snapshot that the control plane
/// replaces whole when a provider's key set changes (SPEC §9), loaded once per handshake.
pub type VerifierCell = Arc<arc_swap::ArcSwap<Verifier>>;

/// The `Reject::InvalidToken` reason that asks the worker to park the handshake until its
/// provider's fetch ends (SPEC §9); rendered, it is an ordinary 401.
pub const KEY_PENDING: &str = "key_pending";
use crate::config::{Backend, Route, Source};
use crate::gate::limits::{IpRefusal, IpTable, SubjectTable};
use crate::gate::origin::{OriginPolicy, OriginVerdict};
use crate::gate::reject::Reject;
use crate::proto::error::ProtocolError;
use crate::proto::http::fields;
use crate::proto::http::request::{RequestHead, Upgrade};

/// What a connection keeps of its verified token for its lifetime (SPEC §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`.
    pub sub: Box<str>,
    /// The union of `scope` and `scp`.
    pub scopes: Box<[Box<str>]>,
    /// The `kid` of the key that verified it (or the key's configured kid).
    pub kid: Option<Box<str>>,
    /// The token's `exp`, unix seconds.
    pub exp: u64,
    /// The token's `iat`, if any.
    pub iat: Option<u64>,
    /// The token's `jti`, if any.
    pub jti: Option<Box<str>>,
    /// Fingerprint of the key that verified it (SIGHUP: "key retired" when it is gone).
    pub key: u64,
}

impl Identity {
    fn from_claims(c: &Claims<'_>) -> Identity {
        Identity {
            key: c.key_fingerprint(),
            sub: c.sub.as_ref().into(),
            scopes: c.scopes().map(Into::into).collect(),
            kid: c.kid.map(Into::into),
            exp: c.exp,
            iat: c.iat,
            jti: c.jti.as_deref().map(Into::into),
        }
    }
}

/// A request that passed every check.
#[derive(Debug)]
pub struct Accept<'b> {
    /// Index into [`Gate::routes`].
    pub route: usize,
    /// The subprotocol to select in the 101, if any.
    pub protocol: Option<&'b str>,
    /// The verified identity (None on public routes).
    pub identity: Option<Identity>,
    /// `auth.explain_to_browsers`: upgrade, then close at once with this code and reason.
    pub explain: Option<ProtocolError>,
    /// The token's payload segment as received, for `X-Auth-Claims` (only on routes
    /// with `forward_claims = true`).
    pub claims_b64: Option<String>,
}

/// The per-request inputs that are not in the request itself.
pub struct Ctx<'a> {
    /// The peer's address.
    pub peer: IpAddr,
    /// Monotonic now.
    pub now: Instant,
    /// Wall-clock now, unix seconds.
    pub now_unix: u64,
    /// Connections open in the whole process, this one included.
    pub open_connections: usize,
    /// True once shutdown began.
    pub draining: bool,
    /// Shared per-IP budgets.
    pub ips: &'a IpTable,
    /// Shared per-subject counts.
    pub subjects: &'a SubjectTable,
    /// Revoked tokens (SPEC §6): a match is 401 "token revoked".
    pub revocations: &'a RevocationSet,
    /// The longest token lifetime seen (kept for `sub` revocation retention).
    pub longest_lifetime: &'a AtomicU64,
    /// Set when the token step refused: the `auth failures by reason` metric label.
    pub auth_failure: Option<&'static str>,
    /// The worker's reusable token decode buffer.
    pub scratch: &'a mut Scratch,
    /// The worker's reusable buffer for percent-decoded query tokens.
    pub token_buf: &'a mut Vec<u8>,
}

/// The compiled handshake policy for one configuration generation.
pub struct Gate {
    /// The routes, in configuration order.
    pub routes: Vec<Route>,
    by_path: HashMap<String, usize>,
    origin: OriginPolicy,
    verifier: Option<VerifierCell>,
    sources: Vec<Source>,
    explain_to_browsers: bool,
    max_connections: usize,
}

/// A token as found in the request, before percent-decoding.
#[derive(Clone, Copy)]
enum Found<'b> {
    Raw(&'b [u8]),
    Query(&'b str),
}

impl Gate {
    /// Compiles the policy.
    pub fn new(
        routes: Vec<Route>,
        origin: OriginPolicy,
        verifier: Option<Verifier>,
        sources: Vec<Source>,
        explain_to_browsers: bool,
        max_connections: usize,
    ) -> Gate {
        let by_path = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.path.clone(), i))
            .collect();
        Gate {
            routes,
            by_path,
            origin,
            verifier: verifier.map(|v| Arc::new(arc_swap::ArcSwap::from_pointee(v))),
            sources,
            explain_to_browsers,
            max_connections,
        }
    }

    /// The verifier in force (None when no keys are configured).
    pub fn verifier(&self) -> Option<Arc<Verifier>> {
        self.verifier.as_ref().map(|cell| cell.load_full())
    }

    /// The verifier's snapshot cell, for the control plane to publish provider key sets.
    pub fn verifier_cell(&self) -> Option<&VerifierCell> {
        self.verifier.as_ref()
    }

    /// The fingerprint of every key in force: what identifies "the same key" across
    /// reloads and key set changes (a session whose key is not among them is retired).
    pub fn key_fingerprints(&self) -> Vec<u64> {
        self.verifier
            .as_ref()
            .map(|cell| cell.load().keys.fingerprints())
            .unwrap_or_default()
    }

    /// Decides a complete, syntactically valid upgrade request.
    pub fn decide<'b>(
        &self,
        head: &RequestHead<'_, 'b>,
        upgrade: &Upgrade<'b>,
        ctx: &mut Ctx<'_>,
    ) -> Result<Accept<'b>, Reject> {
        // Route: exact path match; the query string is not part of it.
        let route_index = *self.by_path.get(head.path).ok_or(Reject::NoRoute)?;
        let route = &self.routes[route_index];

        // Capacity.
        if ctx.draining {
            return Err(Reject::Draining);
        }
        if ctx.open_connections > self.max_connections {
            return Err(Reject::OverCapacity);
        }
        // SPEC §8: with `on_unavailable = "refuse"`, no new handshake while the fleet's
        // Redis is away (live connections stay).
        if !ctx.subjects.fleet().admits() {
            return Err(Reject::ClusterUnavailable);
        }

        // Per-IP budgets, before anything that costs more than a lookup.
        ctx.ips
            .admit_handshake(ctx.peer, ctx.now)
            .map_err(|r| match r {
                IpRefusal::Connections => Reject::RateLimited {
                    retry_after_secs: 1,
                },
                IpRefusal::Handshakes(s) | IpRefusal::AuthFailures(s) => Reject::RateLimited {
                    retry_after_secs: s,
                },
            })?;

        // Origin (cross-site WebSocket hijacking).
        match self.origin.check(upgrade.origin) {
            OriginVerdict::Allowed => {}
            OriginVerdict::NotAllowed => return Err(Reject::OriginNotAllowed),
            OriginVerdict::Missing => return Err(Reject::OriginMissing),
        }

        let protocol = select_protocol(head, &route.protocols);

        if route.public {
            return Ok(Accept {
                route: route_index,
                protocol,
                identity: None,
                explain: None,
                claims_b64: None,
            });
        }

        // Token.
        let explain = self.explain_to_browsers && upgrade.origin.is_some();
        let want_claims = matches!(
            route.backend,
            Backend::Upstream {
                forward_claims: true,
                ..
            }
        );
        let result = self.verify_token(head, ctx, explain, want_claims);
        let claims = match result {
            Ok(c) => c,
            Err(reject) => {
                ctx.ips.auth_failed(ctx.peer, ctx.now);
                ctx.auth_failure.get_or_insert(match &reject {
                    Reject::MissingToken => "missing_token",
                    Reject::MultipleTokens => "multiple_tokens",
                    _ => "malformed",
                });
                return Err(reject);
            }
        };
        let (identity, claims_b64) = match claims {
            TokenOutcome::Valid(id, claims) => (id, claims),
            TokenOutcome::Explain(why) => {
                // Still a refused token: it counts against the failed-token budget.
                ctx.ips.auth_failed(ctx.peer, ctx.now);
                return Ok(Accept {
                    route: route_index,
                    protocol,
                    identity: None,
                    explain: Some(why),
                    claims_b64: None,
                });
            }
        };

        // Scope: every scope the route lists, matched whole.
        if !route
            .scope
            .iter()
            .all(|need| identity.scopes.iter().any(|have| **have == **need))
        {
            if explain {
                return Ok(Accept {
                    route: route_index,
                    protocol,
                    identity: None,
                    explain: Some(ProtocolError::InsufficientScope),
                    claims_b64: None,
                });
            }
            ctx.auth_failure = Some("insufficient_scope");
            return Err(Reject::InsufficientScope {
                scope: route.scope.join(" "),
            });
        }

        // Per-subject limit, counted across workers; the caller releases it on close.
        if !ctx.subjects.try_acquire(&identity.sub) {
            return Err(Reject::RateLimited {
                retry_after_secs: 1,
            });
        }

        Ok(Accept {
            route: route_index,
            protocol,
            identity: Some(identity),
            explain: None,
            claims_b64,
        })
    }

    /// Finds exactly one token in the configured sources and verifies it.
    fn verify_token<'b>(
        &self,
        head: &RequestHead<'_, 'b>,
        ctx: &mut Ctx<'_>,
        explain: bool,
        want_claims: bool,
    ) -> Result<TokenOutcome, Reject> {
        let mut first: Option<Found<'b>> = None;
        let mut count = 0usize;
        let mut note = |f: Found<'b>| {
            count += 1;
            first.get_or_insert(f);
        };
        for source in &self.sources {
            match source {
                Source::Query(name) => {
                    if let Some(q) = head.query {
                        for (k, v) in fields::query_params(q) {
                            if k == name {
                                note(Found::Query(v));
                            }
                        }
                    }
                }
                Source::Protocol => {
                    for value in head.headers_named("sec-websocket-protocol") {
                        for p in fields::list_tokens(value) {
                            if let Some(t) = p.strip_prefix(b"bearer.") {
                                note(Found::Raw(t));
                            }
                        }
                    }
                }
                Source::Header => {
                    for value in head.headers_named("authorization") {
                        if let Some(t) = bearer(value) {
                            note(Found::Raw(t));
                        }
                    }
                }
                Source::Cookie(name) => {
                    for value in head.headers_named("cookie") {
                        for (k, v) in fields::cookies(value) {
                            if k == name.as_bytes() {
                                note(Found::Raw(v));
                            }
                        }
                    }
                }
            }
        }
        // More than one token (two sources, or one source twice, even the same
        // token) is ambiguous: SPEC §4 answers 400 invalid_request.
        if count > 1 {
            return Err(Reject::MultipleTokens);
        }
        let Some(found) = first else {
            return Err(Reject::MissingToken);
        };
        let Some(cell) = &self.verifier else {
            // `wsgate check` refuses a token route without keys; stay closed anyway.
            return Err(Reject::InvalidToken {
                description: TokenError::NoKeyForAlg.description(),
                reason: "no_keys",
            });
        };
        let verifier = cell.load();
        let max = verifier.rules.max_token_bytes;
        let token: &[u8] = match found {
            Found::Raw(t) => t,
            Found::Query(q) => {
                // Cap before decoding: a percent-encoded token is at most 3x its size.
                if q.len() > max.saturating_mul(3) {
                    return Err(invalid(&TokenError::TooLarge));
                }
                fields::percent_decode(q, ctx.token_buf).map_err(|()| Reject::InvalidToken {
                    description: TokenError::Malformed(MalformedKind::Json).description(),
                    reason: "malformed",
                })?
            }
        };
        // The worker's cache of verified tokens: time, route rules and revocation are
        // still checked on every handshake (`auth::cache`).
        match Verifier::verify_cached(&verifier, token, ctx.now_unix, ctx.scratch) {
            Ok(claims) => {
                let identity = Identity::from_claims(&claims);
                let revoked = ctx.revocations.is_revoked(
                    identity.jti.as_deref(),
                    &identity.sub,
                    identity.iat,
                );
                if revoked {
                    ctx.auth_failure = Some(TokenError::Revoked.reason_label());
                    // SPEC §4: a correctly signed, revoked token is explained too (4403),
                    // so that a page stops its reconnect loop.
                    if explain {
                        return Ok(TokenOutcome::Explain(ProtocolError::TokenRevoked));
                    }
                    return Err(invalid(&TokenError::Revoked));
                }
                ctx.longest_lifetime.fetch_max(
                    token_lifetime(identity.exp, identity.iat, ctx.now_unix),
                    Ordering::Relaxed,
                );
                let claims_b64 = want_claims.then(|| claims.payload_b64.to_owned());
                Ok(TokenOutcome::Valid(identity, claims_b64))
            }
            // SPEC §9: the token's kid is unknown and its provider's fetch is under way: the
            // worker parks the handshake (not a failure yet).
            Err(TokenError::KeyPending) => Err(Reject::InvalidToken {
                description: TokenError::KeyPending.description(),
                reason: KEY_PENDING,
            }),
            Err(TokenError::KeysUnavailable { retry_at_unix }) => {
                // SPEC §9: the provider's keys cannot be had; a server problem, so it
                // counts against no client budget.
                Err(Reject::ProviderUnavailable {
                    retry_after_secs: retry_at_unix.saturating_sub(ctx.now_unix).max(1),
                })
            }
            Err(e) => {
                ctx.auth_failure = Some(e.reason_label());
                // explain_to_browsers: only for correctly signed tokens whose time
                // is wrong; every other failure stays an HTTP status (SPEC §4).
                if explain {
                    match e {
                        TokenError::Expired => {
                            return Ok(TokenOutcome::Explain(ProtocolError::TokenExpired))
                        }
                        TokenError::NotYetValid => {
                            return Ok(TokenOutcome::Explain(ProtocolError::TokenNotYetValid))
                        }
                        _ => {}
                    }
                }
                Err(invalid(&e))
            }
        }
    }
}

enum TokenOutcome {
    Valid(Identity, Option<String>),
    Explain(ProtocolError),
}

fn invalid(e: &TokenError) -> Reject {
    Reject::InvalidToken {
        description: e.description(),
        reason: e.reason_label(),
    }
}

/// `Authorization: Bearer <token>` (RFC 6750 §2.1; the scheme is case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let t = rest.trim_ascii();
    (!t.is_empty()).then_some(t)
}

/// SPEC §4: the 101 never echoes the `bearer.` entry; it selects the first offered
/// protocol that the route lists, or, when the route lists none, the first offered.
fn select_protocol<'b>(head: &RequestHead<'_, 'b>, allowed: &[String]) -> Option<&'b str> {
    for value in head.headers_named("sec-websocket-protocol") {
        for p in fields::list_tokens(value) {
            if p.starts_with(b"bearer.") {
                continue;
            }
            let Ok(p) = std::str::from_utf8(p) else {
                continue;
            };
            if allowed.is_empty() || allowed.iter().any(|a| a == p) {
                return Some(p);
            }
        }
    }
    None
}

/// `{"type":"wsgate.refresh","token":"<jwt>"}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshMessage<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    token: std::borrow::Cow<'a, str>,
}

impl Gate {
    /// An in-band refresh (SPEC §6): the new token passes every rule of §4, carries the
    /// same `sub` and the route's scopes. Returns the new identity, or the reason sent in
    /// `wsgate.refresh_failed` (the old deadline then stands).
    pub fn refresh(
        &self,
        route: usize,
        current: &Identity,
        message: &[u8],
        now_unix: u64,
        scratch: &mut Scratch,
    ) -> Result<Identity, &'static str> {
        // SPEC §6: the reasons are §4's uniform descriptions (plus "insufficient scope",
        // which the handshake's 403 names too); nothing tells the key setup apart.
        let malformed = TokenError::Malformed(MalformedKind::Json).description();
        let msg: RefreshMessage<'_> = serde_json::from_slice(message).map_err(|_| malformed)?;
        if msg.kind != "wsgate.refresh" {
            return Err(malformed);
        }
        let verifier = self
            .verifier
            .as_ref()
            .ok_or(TokenError::NoKeyForAlg.description())?
            .load();
        let claims = verifier
            .verify(msg.token.as_bytes(), now_unix, scratch)
            .map_err(|e| e.description())?;
        let identity = Identity::from_claims(&claims);
        if identity.sub != current.sub {
            return Err(TokenError::MissingSub.description());
        }
        let route = self
            .routes
            .get(route)
            .ok_or(TokenError::MissingSub.description())?;
        if !route
            .scope
            .iter()
            .all(|need| identity.scopes.iter().any(|have| **have == **need))
        {
            return Err("insufficient scope");
        }
        Ok(identity)
    }
}

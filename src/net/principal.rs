//! A worker's verified identities, one record per distinct token (issue #15: an idle
//! authenticated connection in a few bytes more than a public one). Connections that
//! presented the same token (same `sub`, `jti`, `iat`, `exp` and verifying key) share one
//! [`Principal`]; a connection holds a pointer to it and appears once, in its record's
//! list. The revocation indexes (SPEC §6) map a `sub` or a `jti` to the records that carry
//! it, so a revocation finds its connections without a scan, and they grow with distinct
//! tokens, not with connections.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use super::token::ConnId;
use crate::auth::revocation::Revocation;
use crate::clock::Tick;
use crate::gate::decide::Identity;

/// One token as the connections that presented it keep it.
#[derive(Debug)]
pub struct Principal {
    /// Its identity, without what only the handshake needed: the scopes were checked (a
    /// refresh checks the new token's) and carried upstream by then, and the `kid` is not
    /// read again.
    identity: Identity,
    /// SPEC §6: when the token's `exp` (+ leeway) passes; its connections close 4401.
    pub token_deadline: Option<Tick>,
    /// SPEC §6: when `wsgate.expiring` is due (refresh on).
    pub notice_at: Option<Tick>,
    /// What the deadlines were computed with (`auth.leeway` and, with refresh on,
    /// `session.expiry_notice`): after a reload that changes them, a connection with the
    /// same token gets a record of its own, with deadlines by the new rules.
    terms: Terms,
}

/// `auth.leeway` in whole seconds, and `session.expiry_notice` when refresh is on.
pub type Terms = (u64, Option<Duration>);

impl Deref for Principal {
    type Target = Identity;

    fn deref(&self) -> &Identity {
        &self.identity
    }
}

/// A record as the table's key: equal when the token's claims are.
struct Key(Arc<Principal>);

impl Key {
    #[allow(clippy::type_complexity)]
    fn fields(&self) -> (&str, Option<&str>, Option<u64>, u64, u64, Terms) {
        Key::fields_of(&self.0.identity, self.0.terms)
    }

    /// What makes two tokens the same record (module text).
    #[allow(clippy::type_complexity)]
    fn fields_of(i: &Identity, terms: Terms) -> (&str, Option<&str>, Option<u64>, u64, u64, Terms) {
        (&i.sub, i.jti.as_deref(), i.iat, i.exp, i.key, terms)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.fields() == other.fields()
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.fields().hash(state);
    }
}

/// A worker's records, with the connections of each, and the revocation indexes.
#[derive(Default)]
pub struct Principals {
    /// Each record and the connections holding it.
    tokens: HashMap<Key, Vec<ConnId>>,
    /// The records of each `sub`, and of each `jti`.
    by_sub: HashMap<Box<str>, Vec<Arc<Principal>>>,
    by_jti: HashMap<Box<str>, Vec<Arc<Principal>>>,
}

impl Principals {
    /// Connection `id` verified `identity`: the record it shares with the worker's other
    /// connections of the same token, made (with `times`, its deadlines by `terms`) if it
    /// is the first.
    pub fn adopt(
        &mut self,
        id: ConnId,
        mut identity: Identity,
        times: (Option<Tick>, Option<Tick>),
        terms: Terms,
    ) -> Arc<Principal> {
        // A token this worker already holds joins its record without a new allocation: the
        // `jti` index (or the `sub` one) lists the few records it could be.
        let same = |p: &&Arc<Principal>| {
            Key::fields_of(&p.identity, p.terms) == Key::fields_of(&identity, terms)
        };
        let known = match &identity.jti {
            Some(jti) => self.by_jti.get(&**jti),
            None => self.by_sub.get(&*identity.sub),
        }
        .and_then(|records| records.iter().find(same).cloned());
        if let Some(principal) = known {
            if let Some(conns) = self.tokens.get_mut(&Key(Arc::clone(&principal))) {
                conns.push(id);
                return principal;
            }
        }
        identity.scopes = Box::default();
        identity.kid = None;
        let candidate = Key(Arc::new(Principal {
            identity,
            token_deadline: times.0,
            notice_at: times.1,
            terms,
        }));
        match self.tokens.entry(candidate) {
            Entry::Occupied(mut entry) => {
                entry.get_mut().push(id);
                Arc::clone(&entry.key().0)
            }
            Entry::Vacant(entry) => {
                let principal = Arc::clone(&entry.key().0);
                entry.insert(vec![id]);
                push(&mut self.by_sub, &principal.sub, &principal);
                if let Some(jti) = &principal.jti {
                    push(&mut self.by_jti, jti, &principal);
                }
                principal
            }
        }
    }

    /// Connection `id` no longer holds `principal`; the record goes with its last one.
    pub fn release(&mut self, id: ConnId, principal: &Arc<Principal>) {
        let key = Key(Arc::clone(principal));
        let Some(conns) = self.tokens.get_mut(&key) else {
            return;
        };
        if let Some(at) = conns.iter().position(|c| *c == id) {
            conns.swap_remove(at);
        }
        if !conns.is_empty() {
            return;
        }
        self.tokens.remove(&key);
        remove(&mut self.by_sub, &principal.sub, principal);
        if let Some(jti) = &principal.jti {
            remove(&mut self.by_jti, jti, principal);
        }
    }

    /// The connections whose token carries the `jti` or `sub` that `r` names (the caller
    /// checks each against the whole rule).
    pub fn candidates(&self, r: &Revocation) -> Vec<ConnId> {
        let records = match r {
            Revocation::Jti { jti, .. } => self.by_jti.get(jti.as_str()),
            Revocation::Sub { sub, .. } => self.by_sub.get(sub.as_str()),
        };
        records
            .into_iter()
            .flatten()
            .filter_map(|p| self.tokens.get(&Key(Arc::clone(p))))
            .flatten()
            .copied()
            .collect()
    }

    /// Distinct tokens held (for tests).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when no connection holds a token.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

fn push(index: &mut HashMap<Box<str>, Vec<Arc<Principal>>>, key: &str, p: &Arc<Principal>) {
    match index.get_mut(key) {
        Some(records) => records.push(Arc::clone(p)),
        None => {
            index.insert(key.into(), vec![Arc::clone(p)]);
        }
    }
}

fn remove(index: &mut HashMap<Box<str>, Vec<Arc<Principal>>>, key: &str, p: &Arc<Principal>) {
    if let Some(records) = index.get_mut(key) {
        records.retain(|r| !Arc::ptr_eq(r, p));
        if records.is_empty() {
            index.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(sub: &str, jti: Option<&str>, iat: u64) -> Identity {
        Identity {
            sub: sub.into(),
            scopes: vec!["echo".into()].into(),
            kid: Some("k".into()),
            exp: 2_000_000_000,
            iat: Some(iat),
            jti: jti.map(Into::into),
            key: 7,
        }
    }

    fn conn(index: u32) -> ConnId {
        ConnId {
            index,
            generation: 1,
        }
    }

    #[test]
    fn one_record_per_token_found_by_sub_and_jti_until_its_last_connection_goes() {
        let mut table = Principals::default();
        let a = table.adopt(
            conn(1),
            identity("alice", Some("j1"), 10),
            (None, None),
            (0, None),
        );
        let b = table.adopt(
            conn(2),
            identity("alice", Some("j1"), 10),
            (None, None),
            (0, None),
        );
        assert!(Arc::ptr_eq(&a, &b), "the same token shares one record");
        assert!(a.scopes.is_empty() && a.kid.is_none());
        // Another token of the same subject: a record of its own.
        let c = table.adopt(
            conn(3),
            identity("alice", Some("j2"), 20),
            (None, None),
            (0, None),
        );
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(table.len(), 2);
        // The same token under other deadline rules (a reload changed the leeway).
        let d = table.adopt(
            conn(4),
            identity("alice", Some("j2"), 20),
            (None, None),
            (30, None),
        );
        assert!(!Arc::ptr_eq(&c, &d));
        table.release(conn(4), &d);
        let jti = Revocation::Jti {
            jti: "j1".into(),
            exp: None,
        };
        let mut found = table.candidates(&jti);
        found.sort();
        assert_eq!(found, vec![conn(1), conn(2)]);
        let sub = Revocation::Sub {
            sub: "alice".into(),
            before: 100,
        };
        let mut found = table.candidates(&sub);
        found.sort();
        assert_eq!(found, vec![conn(1), conn(2), conn(3)]);
        table.release(conn(1), &a);
        assert_eq!(table.candidates(&jti), vec![conn(2)]);
        table.release(conn(2), &b);
        assert!(table.candidates(&jti).is_empty());
        assert_eq!(table.candidates(&sub), vec![conn(3)]);
        table.release(conn(3), &c);
        assert!(table.is_empty());
        assert!(table.by_sub.is_empty() && table.by_jti.is_empty());
    }
}

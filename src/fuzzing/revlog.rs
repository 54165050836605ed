//! Fuzz entry for the revocation-log replay (SPEC §6: revocations survive a restart): the
//! parser that reads `admin.revocation_log` at start, and the set it rebuilds.

use crate::auth::revocation::{replay, RetentionPolicy, Revocation, RevocationSet};

const POLICY: RetentionPolicy = RetentionPolicy {
    leeway_secs: 30,
    retention_secs: 7 * 86_400,
};

/// Replays `data` as a log file. Invariants: no panic; on success every complete line is
/// one entry, and a torn tail is exactly the bytes after the last `'\n'`; every replayed
/// entry is in force once restored; writing the rebuilt set back out (what compaction
/// does) and replaying that gives the same set; on failure the named line exists.
pub fn fuzz_revlog(data: &[u8]) {
    let newlines = data.iter().filter(|&&b| b == b'\n').count();
    let report = match replay(data) {
        Ok(report) => report,
        Err(error) => {
            assert!(
                (1..=newlines).contains(&error.line),
                "error names line {} of {newlines}",
                error.line
            );
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    assert_eq!(report.lines, newlines, "one entry per complete line");
    assert_eq!(report.entries.len(), newlines);
    let tail = match data.iter().rposition(|&b| b == b'\n') {
        Some(last) if last + 1 < data.len() => Some(last + 1),
        Some(_) => None,
        None if data.is_empty() => None,
        None => Some(0),
    };
    assert_eq!(
        report.torn_tail, tail,
        "torn tail starts after the last newline"
    );

    let mut set = RevocationSet::new(POLICY);
    for (revocation, keep_until) in report.entries.iter().cloned() {
        // Each line reads back from its own serialization.
        let line = revocation.to_log_line(keep_until);
        let again = replay(line.as_bytes()).expect("a written line replays");
        assert_eq!(again.entries, [(revocation.clone(), keep_until)]);
        set.restore(revocation, keep_until);
    }
    for (revocation, _) in &report.entries {
        let in_force = match revocation {
            Revocation::Jti { jti, .. } => set.is_revoked(Some(jti), "", None),
            Revocation::Sub { sub, before } => {
                *before == 0 || set.is_revoked(None, sub, Some(before - 1))
            }
        };
        assert!(in_force, "replayed entry not in force: {revocation:?}");
    }

    // Compaction writes the set's entries; replaying them rebuilds the same set.
    let compacted: String = set.entries().map(|(r, k)| r.to_log_line(k)).collect();
    let rebuilt = replay(compacted.as_bytes()).expect("a compacted log replays");
    assert_eq!(rebuilt.entries.len(), set.len());
    let mut again = RevocationSet::new(POLICY);
    for (revocation, keep_until) in rebuilt.entries {
        again.restore(revocation, keep_until);
    }
    let mut before: Vec<(Revocation, u64)> = set.entries().collect();
    let mut after: Vec<(Revocation, u64)> = again.entries().collect();
    before.sort_by_key(|(r, k)| (format!("{r:?}"), *k));
    after.sort_by_key(|(r, k)| (format!("{r:?}"), *k));
    assert_eq!(before, after, "compaction changed the set");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds() {
        fuzz_revlog(b"");
        fuzz_revlog(b"\n");
        fuzz_revlog(b"{\"v\":1,\"jti\":\"a\",\"keep_until\":5}\n");
        fuzz_revlog(b"{\"v\":1,\"jti\":\"a\",\"keep_until\":5}\n{\"v\":1,\"jti\":\"a\",\"exp\":9,\"keep_until\":7}\n{\"v\":1,\"sub\":\"b\",\"before\":3,\"keep_until\":9}\n{\"v\":1,\"sub\":\"b\",\"before\":0,\"keep_un");
        fuzz_revlog(b"{\"v\":2}\n");
        fuzz_revlog(b"{\"v\":1,\"jti\":\"a\",\"sub\":\"b\",\"keep_until\":1}\n");
        fuzz_revlog(b"{\"v\":1,\"sub\":\"\\u2028\\\"x\",\"before\":18446744073709551615,\"keep_until\":18446744073709551615}\n");
        fuzz_revlog(&[0xff, b'\n', 0]);
    }
}

//! The token never leaks into logs or responses.

use super::*;

#[test]
fn token_never_in_logs_or_responses() {
    let (gw, k) = start("", LIMITS_OFF);
    let t = now();
    let good_ed = k.ed_token(&claims("alice", "echo"));
    let good_hs = k.hs_token(&claims("alice", "echo"));
    let expired = k.ed_token(&with(claims("alice", "echo"), "exp", json!(t - 999)));
    let no_scope = k.hs_token(&claims("alice", "chat"));
    let forged = {
        let other_dir = TempDir::new();
        make_keys(&other_dir).ed_token(&claims("alice", "echo"))
    };
    let tokens = [&good_ed, &good_hs, &expired, &no_scope, &forged];
    let mut responses = Vec::new();
    let mut go = |path: String, headers: Vec<String>| {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let (r, _s) = attempt(&gw, &path, &headers);
        responses.push(r);
    };
    go(format!("/echo?room=1&access_token={good_ed}&x=2"), vec![]);
    go(format!("/echo?token={good_hs}"), vec![]);
    go(
        "/echo".into(),
        vec![format!("Authorization: Bearer {good_ed}")],
    );
    go(
        "/chat".into(),
        vec![format!("Sec-WebSocket-Protocol: bearer.{good_hs}, chat.v1")],
    );
    go(format!("/echo?access_token={expired}"), vec![]);
    go(
        format!("/echo?token={}", percent_encode_all(&forged)),
        vec![],
    );
    go(
        "/echo".into(),
        vec![format!("Authorization: Bearer {no_scope}")],
    );
    go(
        format!("/echo?access_token={good_ed}&token={good_hs}"),
        vec![],
    );
    go(format!("/nope?access_token={good_ed}"), vec![]);
    go(
        format!("/chat?access_token={forged}"),
        vec![format!("Sec-WebSocket-Protocol: bearer.{forged}")],
    );
    // A sub that would forge a log line (validly signed) is refused, not logged.
    let forging = k.ed_token(&claims("alice\nwsgate warn: conn=9.9 forged", "echo"));
    go(
        "/echo".into(),
        vec![format!("Authorization: Bearer {forging}")],
    );
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [101, 101, 101, 101, 401, 401, 403, 400, 404, 400, 401]
    );
    for r in &responses {
        for token in tokens {
            assert_no_token(r, token);
        }
    }
    // Wait (bounded) until every handshake has its log line.
    let deadline = std::time::Instant::now() + WAIT;
    while gw.logs().matches("target=").count() < responses.len() {
        assert!(std::time::Instant::now() < deadline, "log:\n{}", gw.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let logs = gw.logs();
    for token in tokens {
        for part in token.split('.') {
            assert!(
                !logs.contains(part),
                "token segment {part} in the log:\n{logs}"
            );
        }
        assert!(!logs.contains(&percent_encode_all(token)[..60]), "{logs}");
    }
    assert!(logs.contains("access_token=REDACTED"), "{logs}");
    assert!(logs.contains("room=1&access_token=REDACTED&x=2"), "{logs}");
    assert!(logs.contains("token=REDACTED"), "{logs}");
    assert!(!logs.contains("forged"), "{logs}");
}

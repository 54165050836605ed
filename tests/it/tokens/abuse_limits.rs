//! Abuse limits on the token path: failure budget, handshake rate, per-subject cap.

use super::*;

#[test]
fn failed_token_budget_gives_429_before_any_signature_check() {
    let (gw, k) = start(
        "",
        "[limits]\nper_ip_auth_failures = \"2/s\"\nper_ip_handshakes = \"1000/s\"\n",
    );
    let good_token = k.ed_token(&claims("alice", "echo"));
    let forged = k.ed_token(&claims("alice", "echo")).replace(".ey", ".ex");
    invalid_token(
        &gw,
        "/echo",
        &["Authorization: Bearer garbage.garbage.garbage"],
    );
    invalid_token(&gw, "/echo", &[&format!("Authorization: Bearer {forged}")]);
    // Third attempt within the same second, even with a valid token.
    let (r, _s) = attempt(
        &gw,
        "/echo",
        &[&format!("Authorization: Bearer {good_token}")],
    );
    assert_429(&r);
    let (r, _s) = attempt(&gw, "/echo", &["Authorization: Bearer garbage"]);
    assert_429(&r);
    // Public routes are limited by the same per-IP step.
    let (r, _s) = attempt(&gw, "/public", &[]);
    assert_429(&r);
    // The budget refills: a valid token passes again (bounded wait).
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (r, _s) = attempt(
            &gw,
            "/echo",
            &[&format!("Authorization: Bearer {good_token}")],
        );
        if r.status == 101 {
            break;
        }
        assert_429(&r);
        assert!(
            std::time::Instant::now() < deadline,
            "budget never refilled"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn handshake_rate_gives_429() {
    let (gw, k) = start(
        "",
        "[limits]\nper_ip_handshakes = \"3/s\"\nper_ip_auth_failures = \"1000/s\"\n",
    );
    let auth = format!(
        "Authorization: Bearer {}",
        k.ed_token(&claims("alice", "echo"))
    );
    let _a = open(&gw, "/echo", &[&auth]);
    let _b = open(&gw, "/echo", &[&auth]);
    let _c = open(&gw, "/public", &[]);
    let (r, _s) = attempt(&gw, "/echo", &[&auth]);
    assert_429(&r);
    assert_no_token(&r, &auth[22..]);
}

#[test]
fn per_subject_connections() {
    let (gw, k) = start("", &format!("{LIMITS_OFF}per_subject_connections = 1\n"));
    let alice = format!(
        "Authorization: Bearer {}",
        k.ed_token(&claims("alice", "echo"))
    );
    let alice_hs = format!("Authorization: Bearer {}", k.hs_token(&claims("alice", "")));
    let bob = format!(
        "Authorization: Bearer {}",
        k.ed_token(&claims("bob", "echo"))
    );
    let (_, first) = accepted(&gw, "/echo", &[&alice]);
    // The same subject again, on any route, with any key: 429.
    let (r, _s) = attempt(&gw, "/echo", &[&alice]);
    assert_429(&r);
    let (r, _s) = attempt(&gw, "/open", &[&alice_hs]);
    assert_429(&r);
    // Another subject is unaffected.
    let (_, bob_conn) = accepted(&gw, "/echo", &[&bob]);
    // A refused handshake did not count: after the first closes, one more fits.
    close(first);
    let deadline = std::time::Instant::now() + WAIT;
    let again = loop {
        let (r, s) = attempt(&gw, "/echo", &[&alice]);
        if r.status == 101 {
            break s;
        }
        assert_429(&r);
        assert!(
            std::time::Instant::now() < deadline,
            "the subject's slot was never released"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (r, _s) = attempt(&gw, "/echo", &[&alice]);
    assert_429(&r);
    drop(again);
    drop(bob_conn);
    // An abrupt disconnect (no close handshake) releases the slot too.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (r, s) = attempt(&gw, "/echo", &[&alice]);
        if r.status == 101 {
            drop(s);
            break;
        }
        assert_429(&r);
        assert!(
            std::time::Instant::now() < deadline,
            "slot not released after a reset"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

//! Abuse limits on the token path: failure budget, handshake rate, per-subject cap.

use std::time::Instant;

use super::*;

#[test]
fn failed_token_budget_gives_429_before_any_signature_check() {
    let (gw, k) = start(
        "",
        "[limits]\nper_ip_auth_failures = \"2/s\"\nper_ip_handshakes = \"1000/s\"\n",
    );
    let good_token = k.ed_token(&claims("alice", "echo"));
    let forged = k.ed_token(&claims("alice", "echo")).replace(".ey", ".ex");
    let first = Instant::now();
    invalid_token(
        &gw,
        "/echo",
        &["Authorization: Bearer garbage.garbage.garbage"],
    );
    invalid_token(&gw, "/echo", &[&format!("Authorization: Bearer {forged}")]);
    // After two failures the "2/s" budget holds 2 x (seconds since the first failure was
    // checked) tokens, under one for half a second from then (and the check came after
    // `first`): an answer back within that half second must be the 429. One that came
    // later, on a machine too loaded to send five requests in half a second, may have
    // met a refilled budget and proves nothing.
    let spent = |r: &Response, otherwise: u16| {
        if first.elapsed() < Duration::from_millis(500) {
            assert_429(r);
        } else {
            assert!(r.status == 429 || r.status == otherwise, "{r:?}");
        }
    };
    // Third attempt within the same second, even with a valid token.
    let (r, _s) = attempt(
        &gw,
        "/echo",
        &[&format!("Authorization: Bearer {good_token}")],
    );
    spent(&r, 101);
    let (r, _s) = attempt(&gw, "/echo", &["Authorization: Bearer garbage"]);
    spent(&r, 401);
    // Public routes are limited by the same per-IP step.
    let (r, _s) = attempt(&gw, "/public", &[]);
    spent(&r, 101);
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
    let first = Instant::now();
    let _a = open(&gw, "/echo", &[&auth]);
    let _b = open(&gw, "/echo", &[&auth]);
    let _c = open(&gw, "/public", &[]);
    let (r, _s) = attempt(&gw, "/echo", &[&auth]);
    // Three handshakes spend the "3/s" budget, which holds a whole token again a third
    // of a second after the first was checked (after `first`): an answer back within
    // that third must be the 429; a later one, on a very loaded machine, proves nothing.
    if first.elapsed() < Duration::from_millis(333) {
        assert_429(&r);
    } else {
        assert!(r.status == 429 || r.status == 101, "{r:?}");
    }
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

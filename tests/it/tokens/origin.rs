//! The Origin allowlist, and explain_to_browsers.

use super::*;

#[test]
fn origin_allowlist() {
    let (gw, k) = start(
        "",
        &format!(
            "[origin]\nallow = [\"https://app.example.com\", \"https://*.example.com\"]\nallow_missing = false\n{LIMITS_OFF}"
        ),
    );
    let auth = format!(
        "Authorization: Bearer {}",
        k.ed_token(&claims("alice", "echo"))
    );
    for origin in [
        "https://app.example.com",
        "https://a.example.com",
        "https://deep.sub.example.com",
        "https://app.example.com:443",
        "HTTPS://APP.EXAMPLE.COM",
    ] {
        accepted(&gw, "/echo", &[&format!("Origin: {origin}"), &auth]);
    }
    for origin in [
        "https://example.com",
        "https://evil.com",
        "https://app.example.com.evil.com",
        "https://evilexample.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "null",
        "https://app.example.com/path",
        "",
    ] {
        refused(&gw, "/echo", &[&format!("Origin: {origin}"), &auth], 403);
    }
    // Missing Origin with allow_missing = false.
    refused(&gw, "/echo", &[&auth], 403);
    // Two Origin headers (RFC 6454 §7.3: never sent by a user agent) are not a way around it.
    let (r, _s) = attempt(
        &gw,
        "/echo",
        &[
            "Origin: https://evil.com",
            "Origin: https://app.example.com",
            &auth,
        ],
    );
    assert!(matches!(r.status, 400 | 403), "{r:?}");
    // Origin applies to public routes too, and comes before the token check.
    refused(&gw, "/public", &["Origin: https://evil.com"], 403);
    refused(&gw, "/echo", &["Origin: https://evil.com"], 403);
    accepted(&gw, "/public", &["Origin: https://x.example.com"]);
}

// ---------------------------------------------------------------------------------------
// explain_to_browsers
// ---------------------------------------------------------------------------------------

#[test]
fn explain_to_browsers_closes_with_4401_and_4403() {
    let (gw, k) = start(
        "explain_to_browsers = true",
        &format!("[origin]\nallow = [\"https://app.example.com\"]\n{LIMITS_OFF}"),
    );
    let origin = "Origin: https://app.example.com";
    let t = now();
    let expired = k.ed_token(&with(claims("alice", "echo"), "exp", json!(t - 120)));
    let early = k.hs_token(&with(claims("alice", "echo"), "nbf", json!(t + 300)));
    let no_scope = k.ed_token(&claims("alice", "chat"));
    let explained = |path: &str, token: &str, code: u16, reason: &str| {
        let (r, mut s) = attempt(
            &gw,
            path,
            &[origin, &format!("Authorization: Bearer {token}")],
        );
        assert_eq!(r.status, 101, "{r:?}");
        assert_no_token(&r, token);
        assert_eq!(read_close(&mut s), (Some(code), reason.to_owned()));
    };
    explained("/echo", &expired, 4401, "token expired");
    explained("/echo", &early, 4401, "token not yet valid");
    explained("/echo", &no_scope, 4403, "insufficient scope");
    // Through the protocol source too (what a browser can actually send): the 101 then
    // selects the real protocol only.
    let (r, mut s) = attempt(
        &gw,
        "/chat",
        &[
            origin,
            &format!("Sec-WebSocket-Protocol: bearer.{expired}, chat.v1"),
        ],
    );
    assert_eq!(r.status, 101);
    assert_eq!(r.header("sec-websocket-protocol"), Some("chat.v1"));
    assert_eq!(read_close(&mut s), (Some(4401), "token expired".to_owned()));

    // Without Origin: the HTTP statuses.
    assert_eq!(
        invalid_token(&gw, "/echo", &[&format!("Authorization: Bearer {expired}")]),
        "token expired"
    );
    let r = refused(
        &gw,
        "/echo",
        &[&format!("Authorization: Bearer {no_scope}")],
        403,
    );
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer error=\"insufficient_scope\", scope=\"echo\"")
    );
    // With Origin, every other failure stays an HTTP status.
    let other_dir = TempDir::new();
    let other = make_keys(&other_dir);
    let forged_expired = other.ed_token(&with(claims("alice", "echo"), "exp", json!(t - 120)));
    assert_eq!(
        invalid_token(
            &gw,
            "/echo",
            &[origin, &format!("Authorization: Bearer {forged_expired}")]
        ),
        "invalid signature"
    );
    let unknown_kid = k.ed_raw(
        r#"{"alg":"EdDSA","kid":"gone"}"#,
        &with(claims("alice", "echo"), "exp", json!(t - 120)).to_string(),
    );
    invalid_token(
        &gw,
        "/echo",
        &[origin, &format!("Authorization: Bearer {unknown_kid}")],
    );
    let r = refused(&gw, "/echo", &[origin], 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    // A disallowed Origin is 403, never an explained 101.
    refused(
        &gw,
        "/echo",
        &[
            "Origin: https://evil.com",
            &format!("Authorization: Bearer {expired}"),
        ],
        403,
    );
    // A good token with Origin is served normally.
    accepted(
        &gw,
        "/echo",
        &[
            origin,
            &format!(
                "Authorization: Bearer {}",
                k.ed_token(&claims("alice", "echo"))
            ),
        ],
    );
}

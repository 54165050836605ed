//! Where a token comes from: every source, none, or more than one.

use super::*;

#[test]
fn valid_tokens_from_query_and_header_sources_then_echo() {
    let (gw, k) = start("", LIMITS_OFF);
    let c = claims("alice", "echo");
    for token in [k.ed_token(&c), k.hs_token(&c)] {
        for (path, headers) in [
            (format!("/echo?access_token={token}"), vec![]),
            (format!("/echo?room=7&token={token}&x=y"), vec![]),
            (
                "/echo".to_owned(),
                vec![format!("Authorization: Bearer {token}")],
            ),
            // RFC 6750 §2.1 / RFC 9110: the scheme is case-insensitive.
            (
                "/echo".to_owned(),
                vec![format!("authorization: bearer {token}")],
            ),
        ] {
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            let (r, s) = accepted(&gw, &path, &headers);
            assert_eq!(r.header("sec-websocket-protocol"), None);
            assert_no_token(&r, &token);
            close(s);
        }
    }
}

#[test]
fn protocol_source_selects_a_real_protocol_and_never_echoes_the_bearer_entry() {
    let (gw, k) = start("", LIMITS_OFF);
    let c = claims("alice", "");
    for token in [k.ed_token(&c), k.hs_token(&c)] {
        // The bearer entry first or last: chat.v1 is selected, the bearer entry never.
        for offer in [
            format!("Sec-WebSocket-Protocol: bearer.{token}, chat.v1"),
            format!("Sec-WebSocket-Protocol: chat.v1, bearer.{token}"),
            format!("Sec-WebSocket-Protocol: other.v9, bearer.{token}, chat.v1"),
        ] {
            let (r, s) = accepted(&gw, "/chat", &[&offer]);
            assert_eq!(r.header("sec-websocket-protocol"), Some("chat.v1"), "{r:?}");
            assert_no_token(&r, &token);
            close(s);
        }
        // Two header lines: the same.
        let (r, _s) = accepted(
            &gw,
            "/chat",
            &[
                &format!("Sec-WebSocket-Protocol: bearer.{token}"),
                "Sec-WebSocket-Protocol: chat.v1",
            ],
        );
        assert_eq!(r.header("sec-websocket-protocol"), Some("chat.v1"));
        // Only the bearer entry: no Sec-WebSocket-Protocol in the 101 at all.
        let (r, _s) = accepted(
            &gw,
            "/chat",
            &[&format!("Sec-WebSocket-Protocol: bearer.{token}")],
        );
        assert_eq!(r.header("sec-websocket-protocol"), None, "{r:?}");
        assert_no_token(&r, &token);
        // A route listing no protocols selects the first offered non-bearer entry.
        let (r, _s) = accepted(
            &gw,
            "/open",
            &[&format!(
                "Sec-WebSocket-Protocol: bearer.{token}, foo.v2, bar"
            )],
        );
        assert_eq!(r.header("sec-websocket-protocol"), Some("foo.v2"), "{r:?}");
        assert_no_token(&r, &token);
    }
}

#[test]
fn cookie_source_with_a_closed_origin_policy() {
    let (gw, k) = start(
        "sources = [\"cookie:sess\"]",
        &format!(
            "[origin]\nallow = [\"https://app.example.com\"]\nallow_missing = false\n{LIMITS_OFF}"
        ),
    );
    let c = claims("alice", "echo");
    for token in [k.ed_token(&c), k.hs_token(&c)] {
        let cookie = format!("Cookie: theme=dark; sess={token}; lang=en");
        let (r, s) = accepted(&gw, "/echo", &["Origin: https://app.example.com", &cookie]);
        assert_no_token(&r, &token);
        close(s);
        // A quoted cookie value (RFC 6265 §4.1.1) is the same token.
        let quoted = format!("Cookie: sess=\"{token}\"");
        accepted(&gw, "/echo", &["Origin: https://app.example.com", &quoted]);
        // Without Origin: 403 before the token is looked at.
        refused(&gw, "/echo", &[&cookie], 403);
        // The other sources are not configured here: a query or header token is no token.
        let r = refused(
            &gw,
            &format!("/echo?access_token={token}"),
            &["Origin: https://app.example.com"],
            401,
        );
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let r = refused(
            &gw,
            "/echo",
            &[
                "Origin: https://app.example.com",
                "Cookie: other=1",
                &format!("Authorization: Bearer {token}"),
            ],
            401,
        );
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        // Two cookies of that name: 400.
        let two = format!("Cookie: sess={token}; sess={token}");
        let r = refused(
            &gw,
            "/echo",
            &["Origin: https://app.example.com", &two],
            400,
        );
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer error=\"invalid_request\"")
        );
    }
}

#[test]
fn public_route_needs_no_token() {
    let (gw, _k) = start("", LIMITS_OFF);
    accepted(&gw, "/public", &[]);
    // Token rows are skipped entirely on a public route.
    accepted(&gw, "/public?access_token=garbage", &[]);
}

// ---------------------------------------------------------------------------------------
// No token, several tokens
// ---------------------------------------------------------------------------------------

#[test]
fn no_token_is_401_bearer() {
    let (gw, _k) = start("", LIMITS_OFF);
    for headers in [
        vec![],
        vec!["Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l"],
        vec!["Authorization: Bearer "],
        vec!["Sec-WebSocket-Protocol: chat.v1"],
        vec!["Cookie: access_token=x"],
    ] {
        let r = refused(&gw, "/echo", &headers, 401);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{headers:?}");
    }
    // A query parameter that is not a configured source is no token.
    let r = refused(&gw, "/echo?jwt=abc.def.ghi", &[], 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
}

#[test]
fn more_than_one_token_is_400_invalid_request() {
    let (gw, k) = start("", LIMITS_OFF);
    let t = k.ed_token(&claims("alice", "echo"));
    let u = k.hs_token(&claims("alice", "echo"));
    let auth_t = format!("Authorization: Bearer {t}");
    let auth_u = format!("Authorization: Bearer {u}");
    let proto_t = format!("Sec-WebSocket-Protocol: bearer.{t}, chat.v1");
    let cases: Vec<(String, Vec<&str>)> = vec![
        // query + header
        (format!("/echo?access_token={t}"), vec![&auth_t]),
        // the same query parameter twice, the same token
        (format!("/echo?access_token={t}&access_token={t}"), vec![]),
        // two query sources
        (format!("/echo?access_token={t}&token={u}"), vec![]),
        // query + protocol
        (format!("/echo?token={t}"), vec![&proto_t]),
        // header + protocol
        ("/echo".to_owned(), vec![&auth_t, &proto_t]),
        // two Authorization headers
        ("/echo".to_owned(), vec![&auth_t, &auth_u]),
    ];
    for (path, headers) in &cases {
        let r = refused(&gw, path, headers, 400);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer error=\"invalid_request\""),
            "{path} {headers:?}"
        );
        assert_no_token(&r, &t);
        assert_no_token(&r, &u);
    }
    // Two bearer entries in Sec-WebSocket-Protocol.
    let r = refused(
        &gw,
        "/chat",
        &[&format!(
            "Sec-WebSocket-Protocol: bearer.{t}, bearer.{u}, chat.v1"
        )],
        400,
    );
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer error=\"invalid_request\"")
    );
    // One valid token plus garbage in another source is still two tokens.
    let r = refused(&gw, "/echo?access_token=garbage", &[&auth_t], 400);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer error=\"invalid_request\"")
    );
}

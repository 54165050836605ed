//! Claims: time, issuer, audience, scope.

use super::*;

#[test]
fn time_claims_with_default_leeway() {
    let (gw, k) = start("", LIMITS_OFF);
    let t = now();
    let base = json!({"sub": "alice", "iat": t - 3600, "exp": t + 600});
    // exp beyond the 30s leeway.
    bad_because(
        &gw,
        &k.ed_token(&with(base.clone(), "exp", json!(t - 120))),
        "token expired",
    );
    bad_because(
        &gw,
        &k.hs_token(&with(base.clone(), "exp", json!(t - 120))),
        "token expired",
    );
    // exp within the leeway: still accepted.
    good(&gw, &k.ed_token(&with(base.clone(), "exp", json!(t - 5))));
    // nbf in the future beyond leeway / within it.
    bad_because(
        &gw,
        &k.ed_token(&with(base.clone(), "nbf", json!(t + 300))),
        "token not yet valid",
    );
    good(&gw, &k.ed_token(&with(base.clone(), "nbf", json!(t + 5))));
    // iat in the future beyond leeway / within it.
    bad_because(
        &gw,
        &k.ed_token(&with(base.clone(), "iat", json!(t + 300))),
        "token issued in the future",
    );
    good(&gw, &k.ed_token(&with(base.clone(), "iat", json!(t + 5))));
    // exp and sub are required; types are checked.
    bad_because(
        &gw,
        &k.ed_token(&with(base.clone(), "exp", Value::Null)),
        "token has no exp",
    );
    bad_because(
        &gw,
        &k.ed_token(&with(base.clone(), "sub", Value::Null)),
        "token has no sub",
    );
    bad(&gw, &k.ed_token(&with(base.clone(), "sub", json!(""))));
    bad(
        &gw,
        &k.ed_token(&with(base.clone(), "exp", json!((t + 600).to_string()))),
    );
    bad(&gw, &k.ed_token(&with(base.clone(), "sub", json!(42))));
    bad(&gw, &k.ed_token(&with(base.clone(), "nbf", json!("soon"))));
    bad(&gw, &k.ed_token(&with(base.clone(), "exp", json!(-1))));
    bad(
        &gw,
        &k.ed_token(&with(base.clone(), "nbf", json!(u64::MAX))),
    );
    bad(
        &gw,
        &k.ed_token(&with(base.clone(), "iat", json!(u64::MAX))),
    );
    // RFC 7519 §2: a NumericDate may be non-integer.
    good(
        &gw,
        &k.ed_token(&with(base.clone(), "exp", json!(t as f64 + 600.5))),
    );
    good(&gw, &k.ed_token(&base));
}

#[test]
fn huge_exp_is_refused_by_max_lifetime_not_crashed() {
    // SPEC §3 auth.max_lifetime (default 24h): exp - iat (exp - now without iat) above it
    // is 401 invalid_token. An exp far in the future (year 33658) and one at the very top
    // of the u64 range are refused, with or without iat.
    let (gw, k) = start("", LIMITS_OFF);
    let t = now();
    for exp in [999_999_999_999u64, u64::MAX] {
        for token in [
            k.ed_token(&json!({"sub": "alice", "iat": t, "exp": exp})),
            k.ed_token(&json!({"sub": "alice", "exp": exp})),
        ] {
            bad_because(&gw, &token, "invalid claims");
        }
    }
    // Just inside the bound is served; one second over, from iat or from now, is not.
    let day = 24 * 3600;
    good(
        &gw,
        &k.ed_token(&json!({"sub": "alice", "iat": t, "exp": t + day})),
    );
    bad_because(
        &gw,
        &k.ed_token(&json!({"sub": "alice", "iat": t - 10, "exp": t + day})),
        "invalid claims",
    );
    bad_because(
        &gw,
        &k.ed_token(&json!({"sub": "alice", "exp": t + day + 120})),
        "invalid claims",
    );
    // The longest bound the config accepts: the deadline arithmetic must not overflow.
    let (gw, k) = start("max_lifetime = \"36500d\"", LIMITS_OFF);
    let token = k.ed_token(&json!({"sub": "alice", "iat": t, "exp": t + 36_500 * day}));
    let (r, mut s) = attempt(&gw, "/open", &[&format!("Authorization: Bearer {token}")]);
    assert_eq!(r.status, 101, "{r:?}\nlog:\n{}", gw.logs());
    echo(&mut s, "still here");
    bad_because(
        &gw,
        &k.ed_token(&json!({"sub": "alice", "iat": t, "exp": u64::MAX})),
        "invalid claims",
    );
    // The gateway is still up.
    good(&gw, &k.ed_token(&claims("alice", "")));
}

#[test]
fn configured_leeway_is_honoured() {
    let (gw, k) = start("leeway = \"0s\"", LIMITS_OFF);
    let t = now();
    let base = json!({"sub": "alice", "exp": t + 600});
    bad_because(
        &gw,
        &k.ed_token(&with(base.clone(), "exp", json!(t - 5))),
        "token expired",
    );
    bad_because(
        &gw,
        &k.ed_token(&with(base.clone(), "nbf", json!(t + 10))),
        "token not yet valid",
    );
    good(&gw, &k.ed_token(&base));
}

#[test]
fn issuer_and_audience() {
    let (gw, k) = start(
        "issuer = \"https://id.example.com\"\naudience = \"wsgate\"",
        LIMITS_OFF,
    );
    let base = with(
        with(claims("alice", ""), "iss", json!("https://id.example.com")),
        "aud",
        json!("wsgate"),
    );
    good(&gw, &k.ed_token(&base));
    good(&gw, &k.hs_token(&base));
    // aud as an array containing the audience.
    good(
        &gw,
        &k.ed_token(&with(base.clone(), "aud", json!(["other", "wsgate"]))),
    );
    good(
        &gw,
        &k.ed_token(&with(base.clone(), "aud", json!(["wsgate"]))),
    );
    // Wrong / missing issuer.
    for iss in [
        json!("https://evil.example.com"),
        json!("https://id.example.com/"),
        Value::Null,
        json!(7),
    ] {
        let d = bad(&gw, &k.ed_token(&with(base.clone(), "iss", iss.clone())));
        assert_eq!(d, "invalid claims", "{iss}");
    }
    // Wrong / missing audience; substrings and case never match.
    for aud in [
        json!("other"),
        json!(["other", "x"]),
        json!([]),
        json!("wsgate2"),
        json!("WSGATE"),
        json!("wsgat"),
        Value::Null,
    ] {
        let d = bad(&gw, &k.ed_token(&with(base.clone(), "aud", aud.clone())));
        assert_eq!(d, "invalid claims", "{aud}");
    }
    // The log keeps the precise reasons.
    gw.wait_log("reason=wrong_issuer");
    gw.wait_log("reason=wrong_audience");
}

// ---------------------------------------------------------------------------------------
// Scope
// ---------------------------------------------------------------------------------------

#[test]
fn scopes_are_matched_whole() {
    let (gw, k) = start("", LIMITS_OFF);
    let insufficient = |c: Value| {
        for token in [k.ed_token(&c), k.hs_token(&c)] {
            let r = refused(
                &gw,
                "/echo",
                &[&format!("Authorization: Bearer {token}")],
                403,
            );
            assert_eq!(
                r.header("www-authenticate"),
                Some("Bearer error=\"insufficient_scope\", scope=\"echo\""),
                "{c}"
            );
            assert_no_token(&r, &token);
        }
    };
    let base = claims("alice", "");
    for scope in [
        "",
        "chat",
        "echoes",
        "echo.read",
        "xecho",
        "ECHO",
        "ech",
        "echo,chat",
    ] {
        insufficient(with(base.clone(), "scope", json!(scope)));
    }
    insufficient(with(base.clone(), "scp", json!(["echoes", "chat"])));
    // A space inside one scp entry is not two scopes: refused either way, never 101.
    let odd = k.ed_token(&with(base.clone(), "scp", json!(["echo chat"])));
    let (r, _s) = attempt(&gw, "/echo", &[&format!("Authorization: Bearer {odd}")]);
    assert!(matches!(r.status, 401 | 403), "{r:?}");
    insufficient(with(base.clone(), "scope", Value::Null));
    let ok = |c: Value| {
        accepted(
            &gw,
            "/echo",
            &[&format!("Authorization: Bearer {}", k.ed_token(&c))],
        );
    };
    ok(with(base.clone(), "scope", json!("echo")));
    ok(with(base.clone(), "scope", json!("chat echo admin")));
    ok(with(
        with(base.clone(), "scope", Value::Null),
        "scp",
        json!(["chat", "echo"]),
    ));
    // The union of scope and scp.
    ok(with(
        with(base.clone(), "scope", json!("chat")),
        "scp",
        json!(["echo"]),
    ));
    // A route without scope takes any valid token.
    accepted(
        &gw,
        "/open",
        &[&format!("Authorization: Bearer {}", k.ed_token(&base))],
    );
}

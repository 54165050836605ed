//! [[route]]: paths, backends, upstream URLs, and the key a token route needs.

use super::*;
use crate::config::route::parse_upstream;

#[test]
fn route_rules() {
    let dir = key_dir("routes");
    assert!(dir
        .parse(&with_route("path = \"/a\"\nbackend = \"echo\""))
        .is_ok());
    assert_error(
        dir.parse(&with_route("path = \"a\"\nbackend = \"echo\"")),
        "wsgate.toml: route[0].path: must start with '/' (line 7)",
    );
    assert_error(
        dir.parse(&with_route("path = \"/a?x=1\"\nbackend = \"echo\"")),
        "route[0].path: must not contain '?'",
    );
    assert_error(
        dir.parse(&with_route("path = \"/a b\"\nbackend = \"echo\"")),
        "route[0].path: must not contain spaces",
    );
    assert_error(
        dir.parse(&with_route("backend = \"echo\"")),
        "route[0].path: required",
    );
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nbackend = \"echo\"\n[[route]]\npath = \"/a\"\nbackend = \"echo\"",
        )),
        "route[1].path: duplicate path \"/a\" (also route[0].path)",
    );
    assert_error(
        dir.parse(&with_route("path = \"/a\"\nbackend = \"redis\"")),
        "route[0].backend: unknown backend \"redis\"",
    );
    assert_error(
        dir.parse(&with_route("path = \"/a\"")),
        "route[0]: needs backend = \"echo\" or upstream",
    );
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nbackend = \"echo\"\nupstream = [\"ws://h:1/\"]",
        )),
        "route[0]: set either backend or upstream, not both",
    );
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nbackend = \"echo\"\nforward_claims = true",
        )),
        "route[0].forward_claims: only applies to routes with upstream",
    );
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nbackend = \"echo\"\npublic = true\nscope = [\"x\"]",
        )),
        "route[0].scope: a public route takes no token",
    );
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nbackend = \"echo\"\nscope = [\"a b\"]",
        )),
        "route[0].scope[0]: \"a b\" is not a valid scope",
    );
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nbackend = \"echo\"\nscope = [\"a\", \"a\"]",
        )),
        "route[0].scope[1]: duplicate scope",
    );
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nbackend = \"echo\"\nprotocols = [\"chat v1\"]",
        )),
        "route[0].protocols[0]: \"chat v1\" is not a valid protocol",
    );
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nbackend = \"echo\"\nprotocols = [\"Bearer.x\"]",
        )),
        "route[0].protocols[0]: the \"bearer.\" prefix",
    );
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nbackend = \"echo\"\nscope = \"echo\"",
        )),
        "route[0].scope: invalid type: string \"echo\", expected an array",
    );
    assert_error(
        dir.parse("[server]\nlisten = \"127.0.0.1:8080\"\n[[auth.key]]\nalg = \"EdDSA\"\npublic_key = \"ed.pem\"\n"),
        "wsgate.toml: route: at least one [[route]] is required",
    );
}

#[test]
fn upstream_urls() {
    let good = parse_upstream("wss://[::1]/feed").unwrap();
    assert_eq!(
        (
            good.secure,
            good.host.as_str(),
            good.port,
            good.path.as_str()
        ),
        (true, "::1", 443, "/feed")
    );
    assert_eq!(good.host_header, "[::1]");
    let good = parse_upstream("ws://backend.internal").unwrap();
    assert_eq!(
        (good.port, good.path.as_str(), good.host.as_str()),
        (80, "/", "backend.internal")
    );
    for bad in [
        "http://h/",
        "ws:/h",
        "ws://",
        "ws://:80/",
        "ws://h:0/",
        "ws://h:99999/",
        "ws://h:x/",
        "ws://user@h/",
        "ws://h/a?b",
        "ws://h/a#b",
        "ws://h/a b",
        "ws://h_1/",
        "ws://[::1/",
        "ws://[nope]:1/",
    ] {
        assert!(parse_upstream(bad).is_err(), "{bad} should be refused");
    }
    let dir = key_dir("upstream");
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nupstream = [\"ws://h:1/\", \"http://h/\"]",
        )),
        "route[0].upstream[1]: the scheme must be ws:// or wss://",
    );
    assert_error(
        dir.parse(&with_route("path = \"/a\"\nupstream = []")),
        "route[0].upstream: must list at least one",
    );
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nupstream = [\"ws://h:1/\"]\nupstream_timeout = \"0s\"",
        )),
        "route[0].upstream_timeout: must be more than 0s",
    );
    let config = dir
        .parse(&with_route("path = \"/a\"\nupstream = [\"ws://h:1/\"]\nupstream_backoff = \"1m\"\nupstream_timeout = \"3s\""))
        .unwrap();
    assert_eq!(
        config.routes[0].backend,
        Backend::Upstream {
            urls: vec![parse_upstream("ws://h:1/").unwrap()],
            forward_claims: false,
            backoff: Duration::from_secs(60),
            timeout: Duration::from_secs(3),
            ca: None,
            sign_identity: false,
        }
    );
}

#[test]
fn a_token_route_needs_a_key() {
    let dir = TempDir::new("nokeys");
    assert_error(
        dir.parse("[server]\nlisten = \"127.0.0.1:8080\"\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n[[route]]\npath = \"/q\"\nbackend = \"echo\"\n"),
        "wsgate.toml: auth.key: no keys configured but route[1] needs a token",
    );
}

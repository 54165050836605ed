//! [limits].

use super::*;

#[test]
fn limits_rules() {
    let dir = TempDir::new("limits");
    let parse = |limits: &str| dir.parse(&format!("{MINIMAL}[limits]\n{limits}\n"));
    assert_error(
        parse("max_frame = \"0B\""),
        "limits.max_frame: must be at least 1B, got 0B",
    );
    assert_error(
        parse("max_message = \"0B\""),
        "limits.max_message: must be at least 1B",
    );
    assert_error(
        parse("max_request_bytes = \"1023B\""),
        "limits.max_request_bytes: must be at least 1KiB, got 1023B",
    );
    assert_error(
        parse("write_buffer = \"2KiB\""),
        "limits.write_buffer: must be at least 4KiB",
    );
    assert_error(
        parse("handshake_timeout = \"0s\""),
        "limits.handshake_timeout: must be more than 0s",
    );
    assert_error(
        parse("idle_timeout = \"0ms\""),
        "limits.idle_timeout: must be more than 0s",
    );
    assert_error(
        parse("per_ip_connections = 0"),
        "limits.per_ip_connections: must be at least 1",
    );
    assert_error(
        parse("per_subject_connections = 0"),
        "limits.per_subject_connections: must be at least 1",
    );
    assert_error(
        parse("messages = \"0/s\""),
        "limits.messages: expected a rate like \"50/s\"",
    );
    assert_error(
        parse("bytes = \"8MB/s\""),
        "limits.bytes: expected a byte rate like \"8MiB/s\"",
    );
    assert_error(
        parse("max_frame = 1048576"),
        "limits.max_frame: invalid type: integer `1048576`, expected a size like \"64KiB\"",
    );
    // max_frame may exceed max_message: not required to be ordered.
    let config = parse("max_frame = \"2MiB\"\nmax_message = \"1MiB\"\nmax_request_bytes = \"1KiB\"\nwrite_buffer = \"4KiB\"").unwrap();
    assert_eq!(
        (config.limits.max_frame, config.limits.max_message),
        (2 << 20, 1 << 20)
    );
    assert_error(
        dir.parse(&format!("{MINIMAL}[auth]\nmax_token_bytes = \"65KiB\"\n")),
        "auth.max_token_bytes: must be between 1B and 64KiB, got 65KiB",
    );
    assert!(dir
        .parse(&format!("{MINIMAL}[auth]\nmax_token_bytes = \"64KiB\"\n"))
        .is_ok());
}

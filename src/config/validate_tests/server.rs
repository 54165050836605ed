//! [server]: listen addresses and bounded numbers.

use super::*;

#[test]
fn listen_takes_one_address_or_several() {
    let dir = TempDir::new("listen");
    let config = dir
        .parse("[server]\nlisten = [\"127.0.0.1:1\", \"[::1]:2\"]\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n")
        .unwrap();
    assert_eq!(config.server.listen.len(), 2);
    assert_error(
        dir.parse(
            "[server]\nlisten = []\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n",
        ),
        "wsgate.toml: server.listen: required",
    );
    assert_error(
        dir.parse("[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n"),
        "wsgate.toml: server.listen: required",
    );
    assert_error(
        dir.parse("[server]\nlisten = [\"127.0.0.1:1\", \"localhost:2\"]\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n"),
        "server.listen[1]: expected an IP address and port",
    );
    assert_error(
        dir.parse("[server]\nlisten = [\"0.0.0.0:8080\", \"127.0.0.1:8080\"]\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n"),
        "server.listen[1]: 127.0.0.1:8080 overlaps server.listen[0]",
    );
    // Port 0 (ephemeral, for tests) may repeat.
    assert!(dir
        .parse("[server]\nlisten = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n")
        .is_ok());
    assert_error(
        dir.parse("[server]\nlisten = 8080\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n"),
        "server.listen: invalid type: integer `8080`, expected a socket address like \"0.0.0.0:8080\" or an array of them",
    );
}

#[test]
fn server_numbers_are_bounded() {
    let dir = TempDir::new("server");
    assert_error(
        dir.parse(&MINIMAL.replace(
            "[server]\n",
            "[server]\nworkers = 5000\nmax_connections = 0\n",
        )),
        "server.workers: at most 1024",
    );
    assert_error(
        dir.parse(&MINIMAL.replace("[server]\n", "[server]\nmax_connections = 0\n")),
        "server.max_connections: must be at least 1",
    );
    assert_error(
        dir.parse(&MINIMAL.replace("[server]\n", "[server]\nworkers = -1\n")),
        "server.workers: invalid value: integer `-1`, expected a non-negative integer",
    );
}

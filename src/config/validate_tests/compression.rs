//! [compression] and the per-route opt-out.

use super::*;

#[test]
fn compression_section_and_route_opt_out() {
    let dir = key_dir("compression");
    let route = "path = \"/a\"\nbackend = \"echo\"";
    // Absent: off, with SPEC §10's values.
    let config = dir.parse(&with_route(route)).unwrap();
    assert!(!config.compression.permessage_deflate);
    assert_eq!(config.compression.deflate.server_max_window_bits, 15);
    assert!(!config.compression.deflate.context_takeover);
    assert_eq!(config.compression.deflate.min_size, 256);
    assert_eq!(config.compression.memory, 256 << 20);
    assert!(config.routes[0].compression);
    let text = format!(
        "{}[compression]\npermessage_deflate = true\nserver_max_window_bits = 10\ncontext_takeover = true\nmin_size = \"1KiB\"\nmemory = \"1MiB\"\n",
        with_route("path = \"/a\"\nbackend = \"echo\"\ncompression = false")
    );
    let config = dir.parse(&text).unwrap();
    assert!(config.compression.permessage_deflate);
    assert_eq!(config.compression.deflate.server_max_window_bits, 10);
    assert!(config.compression.deflate.context_takeover);
    assert_eq!(config.compression.deflate.min_size, 1024);
    assert_eq!(config.compression.memory, 1 << 20);
    assert!(!config.routes[0].compression);
    for bits in [0, 8, 16] {
        assert_error(
            dir.parse(&format!(
                "{}[compression]\nserver_max_window_bits = {bits}\n",
                with_route(route)
            )),
            "compression.server_max_window_bits: must be 9..15",
        );
    }
    assert_error(
        dir.parse(&format!("{}[compression]\nlevel = 9\n", with_route(route))),
        "compression.level",
    );
}

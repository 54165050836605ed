//! [tls]: certificate and key files read and checked.

use super::*;

#[test]
fn tls_files_are_read_and_checked() {
    let dir = spec_example_dir();
    let tls_only = |cert: &str, key: &str| {
        dir.parse(&format!(
            "{MINIMAL}[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n"
        ))
    };
    assert!(tls_only("certs/fullchain.pem", "certs/privkey.pem").is_ok());
    let missing = dir.0.join("certs/missing.pem").display().to_string();
    assert_error(
        tls_only("certs/missing.pem", "certs/privkey.pem"),
        &format!("wsgate.toml: tls.cert: {missing}: cannot read: "),
    );
    assert_error(
        tls_only("certs/fullchain.pem", "certs/missing.pem"),
        &format!("wsgate.toml: tls.key: {missing}: cannot read: "),
    );
    assert_error(
        dir.parse(&format!("{MINIMAL}[tls]\ncert = \"certs/fullchain.pem\"\n")),
        "tls.key: required",
    );

    dir.write(
        "certs/garbage.pem",
        pem("CERTIFICATE", b"definitely not DER"),
    );
    assert_error(
        tls_only("certs/garbage.pem", "certs/privkey.pem"),
        "tls.cert: ",
    );
    assert_error(
        tls_only("certs/garbage.pem", "certs/privkey.pem"),
        "the first certificate is not a valid X.509 certificate",
    );
    dir.write("certs/none.pem", "no pem here\n");
    assert_error(
        tls_only("certs/none.pem", "certs/privkey.pem"),
        "no PEM \"CERTIFICATE\" block found",
    );
    dir.write("certs/badkey.pem", pem("PRIVATE KEY", b"not a key"));
    assert_error(
        tls_only("certs/fullchain.pem", "certs/badkey.pem"),
        "tls.key: ",
    );
    assert_error(
        tls_only("certs/fullchain.pem", "certs/none.pem"),
        "tls.key: ",
    );
    let other = rcgen::generate_simple_self_signed(vec!["other".to_owned()]).unwrap();
    dir.write("certs/other.key.pem", other.key_pair.serialize_pem());
    assert_error(
        tls_only("certs/fullchain.pem", "certs/other.key.pem"),
        "does not match the certificate",
    );
    dir.write("certs/truncated.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
    assert_error(
        tls_only("certs/truncated.pem", "certs/privkey.pem"),
        "a PEM block has no END line",
    );
}

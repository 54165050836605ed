//! `wsgate revoke` (SPEC §2, §6): post a revocation to the admin listener that the config
//! names, authenticated with a 60-second admin token minted from a signing key the
//! gateway accepts (or a ready token), and print the answer.
//!
//! The client is a small blocking HTTP/1.1 client: it talks to one loopback or private
//! address, sends one request with `Connection: close`, and reads at most
//! [`MAX_RESPONSE`] bytes with timeouts. It is not the data plane.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use super::run::Failure;
use super::token::{mint, MintOptions};
use super::{AdminAuth, RevokeTarget};
use crate::clock;
use crate::config::Config;

/// The admin token's lifetime.
const ADMIN_TOKEN_TTL: u64 = 60;
/// The largest answer read.
const MAX_RESPONSE: u64 = 64 * 1024;
/// Connect, write and read timeout.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The JSON body of `POST /revoke` (SPEC §6).
pub fn body(target: &RevokeTarget) -> String {
    match target {
        RevokeTarget::Jti { jti, exp: None } => serde_json::json!({ "jti": jti }),
        RevokeTarget::Jti { jti, exp: Some(e) } => serde_json::json!({ "jti": jti, "exp": e }),
        RevokeTarget::Sub { sub, before: None } => serde_json::json!({ "sub": sub }),
        RevokeTarget::Sub {
            sub,
            before: Some(b),
        } => serde_json::json!({ "sub": sub, "before": b }),
    }
    .to_string()
}

/// Where to reach an admin listener bound at `listen` (a wildcard address is reached on
/// loopback).
pub fn reach(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// The admin token: given, from the environment, or minted from `--key`.
fn admin_token(config: &Config, auth: AdminAuth, scope: &str) -> Result<String, Failure> {
    match auth {
        AdminAuth::Token(t) => Ok(t.trim().to_owned()),
        AdminAuth::Env => match std::env::var("WSGATE_ADMIN_TOKEN") {
            Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_owned()),
            _ => Err(Failure {
                message: "revoke: give --key FILE (a signing key the gateway accepts) or --token T, or set WSGATE_ADMIN_TOKEN".into(),
                code: 2,
            }),
        },
        AdminAuth::Key { key, kid } => {
            let opts = MintOptions {
                key_file: key,
                alg: None,
                kid,
                sub: "wsgate-revoke".into(),
                ttl_secs: ADMIN_TOKEN_TTL,
                scope: Some(scope.to_owned()),
                aud: config.auth.audience.clone(),
                iss: config.auth.issuer.clone(),
                jti: None,
                claims: Vec::new(),
            };
            mint(&opts, clock::unix_now()).map_err(|m| Failure { message: m, code: 1 })
        }
    }
}

/// An HTTP answer: status and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Body, lossily decoded.
    pub body: String,
}

/// Sends one `POST path` with a bearer token and a JSON body; reads the answer.
pub fn post(addr: SocketAddr, path: &str, token: &str, body: &str) -> Result<Answer, String> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE + 1)
        .read_to_end(&mut raw)
        .map_err(|e| e.to_string())?;
    if raw.len() as u64 > MAX_RESPONSE {
        return Err(format!("answer larger than {MAX_RESPONSE} bytes"));
    }
    parse_answer(&raw)
}

/// Parses a complete `Connection: close` response (Content-Length, chunked, or to EOF).
pub fn parse_answer(raw: &[u8]) -> Result<Answer, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("incomplete answer".into()),
        Err(e) => return Err(format!("malformed answer: {e}")),
    };
    let status = response.code.ok_or("malformed answer: no status")?;
    let rest = &raw[head_len..];
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let body: Vec<u8> = if header("transfer-encoding").is_some_and(|t| t.ends_with("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(|_| "malformed Content-Length")?;
        rest.get(..len)
            .ok_or("answer shorter than its Content-Length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).trim_end().to_owned(),
    })
}

/// RFC 9112 §7.1 chunked transfer coding (extensions and trailers ignored).
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("truncated chunk")?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("truncated chunk")?;
    }
}

/// `wsgate revoke`.
pub fn run(
    config_path: &Path,
    config: &Config,
    target: &RevokeTarget,
    auth: AdminAuth,
) -> Result<(), Failure> {
    let Some(admin) = &config.admin else {
        return Err(Failure {
            message: format!(
                "{}: no [admin] section: revocation goes through the admin listener",
                config_path.display()
            ),
            code: 1,
        });
    };
    let token = admin_token(config, auth, &admin.token_scope)?;
    let addr = reach(admin.listen);
    let answer = post(addr, "/revoke", &token, &body(target)).map_err(|e| Failure {
        message: format!("revoke: admin listener {addr} (admin.listen): {e}"),
        code: 1,
    })?;
    if answer.status == 200 {
        println!("{}", answer.body);
        Ok(())
    } else {
        Err(Failure {
            message: format!(
                "revoke: admin listener {addr} answered {}: {}",
                answer.status,
                answer.body.lines().next().unwrap_or("")
            ),
            code: 1,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bodies_follow_the_admin_api() {
        let jti = |exp| RevokeTarget::Jti {
            jti: "j\"1".into(),
            exp,
        };
        assert_eq!(body(&jti(None)), r#"{"jti":"j\"1"}"#);
        assert_eq!(body(&jti(Some(5))), r#"{"exp":5,"jti":"j\"1"}"#);
        let sub = |before| RevokeTarget::Sub {
            sub: "alice".into(),
            before,
        };
        assert_eq!(body(&sub(None)), r#"{"sub":"alice"}"#);
        assert_eq!(body(&sub(Some(9))), r#"{"before":9,"sub":"alice"}"#);
    }

    #[test]
    fn wildcard_admin_addresses_are_reached_on_loopback() {
        assert_eq!(
            reach("0.0.0.0:9090".parse().unwrap()),
            "127.0.0.1:9090".parse().unwrap()
        );
        assert_eq!(
            reach("[::]:9090".parse().unwrap()),
            "[::1]:9090".parse().unwrap()
        );
        assert_eq!(
            reach("10.0.0.2:9090".parse().unwrap()),
            "10.0.0.2:9090".parse().unwrap()
        );
    }

    #[test]
    fn answers_with_length_chunks_or_eof() {
        let a = parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap();
        assert_eq!((a.status, a.body.as_str()), (200, "hello"));
        let a = parse_answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(a.body, "abcde");
        let a = parse_answer(b"HTTP/1.1 401 Unauthorized\r\n\r\nno token\n").unwrap();
        assert_eq!((a.status, a.body.as_str()), (401, "no token"));
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab").is_err());
        assert!(
            parse_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
        assert!(parse_answer(b"garbage").is_err());
    }
}

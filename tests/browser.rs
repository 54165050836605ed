//! A real browser against `wsgate serve --demo` (SPEC §2, §4, §6, §11): headless Chromium
//! opens the demo page and the test drives the page's own form and buttons, reading its
//! log. A wrong password is refused; the printed password logs in through the token service
//! (another origin: CORS); the page connects with the access token in
//! `Sec-WebSocket-Protocol` beside a real protocol, and `ws.protocol` is that protocol; a
//! message echoes; an in-band refresh with a token rotated at `POST /token` is answered
//! `wsgate.refreshed`; `POST /logout` closes the live socket 4403 "token revoked" as the
//! page's close event sees it; and a correctly signed but expired demo token is closed 4401
//! "token expired" (explain_to_browsers). Then a tab of the same page opens a socket to a
//! second gateway whose only token source is a cookie and whose allowlist is the page's
//! origin (`allow_missing = false`): with the cookie it echoes, without it the upgrade is
//! refused.
//!
//! Chromium is driven over the DevTools protocol (a WebSocket; tungstenite is a
//! dev-dependency). The test FAILS when no Chromium is found: `scripts/test` installs
//! Debian's `chromium` package when it is missing. Set `WSGATE_CHROMIUM` to use another
//! binary.

// The test bounds its own duration with the real clock; the product code may not read it.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// A bound for each wait (Chromium's start on a loaded 2-core machine included).
const WAIT: Duration = Duration::from_secs(60);

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("WSGATE_CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "no Chromium found (chromium, chromium-browser or google-chrome on PATH, or WSGATE_CHROMIUM): run scripts/test, which installs it, or apt-get install -y chromium"
    );
}

/// A line picker: the value wanted from a line, if it is there.
type Pick = fn(&str) -> Option<String>;

/// Reads lines of `reader` on a thread; returns, for each of `picks` in order, the first
/// value it gives (a picker may use the line before: it sees "previous\ncurrent").
fn lines<R: std::io::Read + Send + 'static>(
    reader: R,
    picks: &'static [Pick],
    what: &str,
) -> Vec<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        let mut found: Vec<Option<String>> = vec![None; picks.len()];
        let mut previous = String::new();
        let mut sent = false;
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            let both = format!("{previous}\n{line}");
            for (slot, pick) in found.iter_mut().zip(picks) {
                if slot.is_none() {
                    *slot = pick(&both);
                }
            }
            if !sent && found.iter().all(Option::is_some) {
                let _ = tx.send(Ok(found.iter().flatten().cloned().collect()));
                sent = true;
            }
            seen.push_str(&line);
            seen.push('\n');
            previous = line;
        }
        let _ = tx.send(Err(seen));
    });
    match rx.recv_timeout(WAIT) {
        Ok(Ok(v)) => v,
        Ok(Err(seen)) => panic!("{what}: not found; output was:\n{seen}"),
        Err(_) => panic!("{what}: not seen within {WAIT:?}"),
    }
}

/// The value after `marker` on the current line ("previous\ncurrent").
fn after(both: &str, marker: &str) -> Option<String> {
    let current = both.rsplit('\n').next()?;
    current.split(marker).nth(1).map(|v| v.trim().to_owned())
}

/// A DevTools connection: numbered commands, answers matched by id.
struct Cdp {
    ws: WebSocket<TcpStream>,
    next: u64,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let rest = url.strip_prefix("ws://").expect("ws:// DevTools URL");
        let host = rest.split('/').next().expect("host");
        let stream = TcpStream::connect(host).expect("connect to DevTools");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let (ws, _) = tungstenite::client(url, stream).expect("DevTools handshake");
        Cdp { ws, next: 0 }
    }

    fn read(&mut self) -> Value {
        loop {
            match self.ws.read().expect("DevTools read") {
                Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON"),
                Message::Close(_) => panic!("DevTools closed"),
                _ => {}
            }
        }
    }

    /// Sends `method` (to `session` when given) and returns its result.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .expect("DevTools send");
        loop {
            let v = self.read();
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// A new tab showing `url`; returns its session id once the page has loaded.
    fn open(&mut self, url: &str) -> String {
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        let session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        self.call(Some(&session), "Page.enable", json!({}));
        self.call(Some(&session), "Page.navigate", json!({ "url": url }));
        self.event(&session, "Page.loadEventFired");
        // The load event of the target's first document (about:blank) can arrive after
        // Page.enable and stand in for the page's: wait until the page itself has loaded
        // (a condition with a deadline, not a pause).
        let deadline = Instant::now() + WAIT;
        loop {
            let state = self.call(
                Some(&session),
                "Runtime.evaluate",
                json!({ "expression": "location.href + ' ' + document.readyState", "returnByValue": true }),
            );
            let state = state["result"]["value"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if state.starts_with(url) && state.ends_with(" complete") {
                break;
            }
            assert!(Instant::now() < deadline, "{url} did not load: {state}");
            std::thread::sleep(Duration::from_millis(10));
        }
        session
    }

    /// Runs `script` (an async expression that returns a JSON string) in the page.
    fn evaluate(&mut self, session: &str, script: &str) -> Value {
        let evaluated = self.call(
            Some(session),
            "Runtime.evaluate",
            json!({ "expression": script, "awaitPromise": true, "returnByValue": true }),
        );
        if let Some(e) = evaluated.get("exceptionDetails") {
            panic!("the page's scenario failed: {e}");
        }
        serde_json::from_str(
            evaluated["result"]["value"]
                .as_str()
                .expect("string result"),
        )
        .expect("JSON result")
    }

    /// Waits for the event `method` on `session`.
    fn event(&mut self, session: &str, method: &str) -> Value {
        loop {
            let v = self.read();
            if v["method"] == json!(method) && v["sessionId"] == json!(session) {
                return v["params"].clone();
            }
        }
    }
}

/// Runs in the page: drives its form and buttons and waits (bounded) for what its log
/// shows. `PASSWORD` is replaced by the printed password as a JSON string.
const SCENARIO: &str = r##"
(async () => {
  const $ = (id) => document.getElementById(id);
  const logText = () => [...document.querySelectorAll("#log li")].map((li) => li.className + ": " + li.textContent).join("\n");
  const until = (what, probe) => new Promise((resolve, reject) => {
    const started = Date.now();
    const check = () => {
      const value = probe();
      if (value) { observer.disconnect(); resolve(value); return true; }
      if (Date.now() - started > 20000) { observer.disconnect(); reject(new Error(what + " not seen; log:\n" + logText())); return true; }
      return false;
    };
    const observer = new MutationObserver(check);
    observer.observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
    if (!check()) { setTimeout(function again() { if (!check()) { setTimeout(again, 500); } }, 500); }
  });
  const result = {};
  const count = (kind) => document.querySelectorAll("#log li." + kind).length;
  // A wrong password: 401 from the token service, read through CORS; no socket.
  $("password").value = "not-the-password";
  $("login").click();
  result.refused = await until("login refused", () => document.querySelector("#log li.error")?.textContent);
  $("password").value = PASSWORD;
  $("login").click();
  await until("open", () => $("status").dataset.state === "open");
  result.opened = [...document.querySelectorAll("#log li.open")].map((li) => li.textContent).join(" ");
  result.protocol = ws.protocol;
  result.sub = $("sub").textContent;
  result.firstExp = Number($("exp").dataset.exp);
  $("msg").value = "hello from chromium";
  $("send").click();
  result.echo = await until("echo", () => [...document.querySelectorAll("#log li.echo")].map((li) => li.textContent).find((t) => t.includes("hello from chromium")));
  $("refresh").click();
  result.refreshed = await until("refreshed", () => document.querySelector("#log li.refreshed")?.textContent);
  result.refreshedExp = Number($("exp").dataset.exp);
  // The connection goes on under the new token.
  $("msg").value = "after the refresh";
  $("send").click();
  await until("echo after refresh", () => [...document.querySelectorAll("#log li.echo")].find((li) => li.textContent.includes("after the refresh")));
  result.echoesBeforeLogout = count("echo");
  $("logout").click();
  const revoked = await until("close 4403", () => [...document.querySelectorAll("#log li.close")].find((li) => li.dataset.code === "4403"));
  result.logoutCode = Number(revoked.dataset.code);
  result.logoutReason = revoked.dataset.reason;
  // The socket may close before the logout's answer arrives: wait for both.
  result.loggedOut = await until("logged out", () => [...document.querySelectorAll("#log li.notice")].map((li) => li.textContent).find((t) => t.includes("logged out")));
  result.errorsBeforeExpired = [...document.querySelectorAll("#log li.error")].map((li) => li.textContent);
  $("expired").click();
  const closed = await until("close 4401", () => [...document.querySelectorAll("#log li.close")].find((li) => li.dataset.code === "4401"));
  result.closeCode = Number(closed.dataset.code);
  result.closeReason = closed.dataset.reason;
  result.echoes = count("echo");
  return JSON.stringify(result);
})()
"##;

/// Runs in a tab of a plain page (`plain_page`): a WebSocket to another gateway
/// (`GATEWAY`, whose only token source is the cookie `wsgate_token` and whose allowlist is
/// that page's origin), first with the token `TOKEN` in that cookie, then without it.
const COOKIE_SCENARIO: &str = r##"
(async () => {
  // A connection the page's Content-Security-Policy blocked fails like a refused one
  // (1006): name the directive, so that such a failure says so.
  const violations = [];
  document.addEventListener("securitypolicyviolation", (e) => violations.push(e.violatedDirective));
  const open = () => new Promise((resolve, reject) => {
    const result = {};
    const timer = setTimeout(() => reject(new Error("no close within 20 s: " + JSON.stringify(result))), 20000);
    const ws = new WebSocket(GATEWAY);
    ws.onopen = () => { result.protocol = ws.protocol; ws.send("hello through a cookie"); };
    ws.onmessage = (e) => { result.echo = e.data; ws.close(1000, "done"); };
    ws.onclose = (e) => {
      clearTimeout(timer);
      result.code = e.code;
      const blocked = violations.splice(0);
      if (blocked.length) result.blockedBy = blocked.join(", ");
      resolve(result);
    };
  });
  document.cookie = "wsgate_token=" + TOKEN + "; path=/echo; SameSite=Strict";
  const withCookie = await open();
  document.cookie = "wsgate_token=; path=/echo; max-age=0";
  const without = await open();
  return JSON.stringify({ withCookie, without });
})()
"##;

/// A page of its own on 127.0.0.1 for the cookie tab: an empty HTML document without a
/// Content-Security-Policy, served to every request; returns its URL. The demo page's
/// policy allows connections to the demo's own gateway only, and lifting it through
/// DevTools (`Page.setBypassCSP` before the navigation) did not always take: seen under
/// load as 1006 for both cookie connections, which a connection the policy blocks gets.
fn plain_page() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the plain page");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(WAIT));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match s.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let body = "<!doctype html><title>cookie tab</title>";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://127.0.0.1:{port}/")
}

/// A gateway whose only token source is the cookie `wsgate_token`, for pages of `origin`
/// only (SPEC §4: a cookie source needs a non-empty allowlist and `allow_missing = false`);
/// returns it, its `ws://` URL for /echo and a token it accepts.
fn cookie_gateway(dir: &std::path::Path, origin: &str) -> (Proc, String, String) {
    std::fs::create_dir_all(dir).expect("gateway dir");
    let wsgate = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .args(args)
            .output()
            .expect("run wsgate");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let key = dir.join("cookie");
    wsgate(&[
        "keygen",
        "--alg",
        "HS256",
        "--out",
        key.to_str().expect("utf-8"),
    ]);
    let secret = dir.join("cookie.secret");
    let token = wsgate(&[
        "token",
        "mint",
        "--key",
        secret.to_str().expect("utf-8"),
        "--sub",
        "cookie-user",
        "--ttl",
        "5m",
    ]);
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n[auth]\nsources = [\"cookie:wsgate_token\"]\n\n\
         [[auth.key]]\nalg = \"HS256\"\nsecret_file = \"cookie.secret\"\n\n\
         [origin]\nallow = [\"{origin}\"]\nallow_missing = false\n\n\
         [[route]]\npath = \"/echo\"\nbackend = \"echo\"\n"
    );
    let path = dir.join("wsgate.toml");
    std::fs::write(&path, config).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .args(["serve", "-c"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsgate");
    let stderr = child.stderr.take().expect("stderr");
    let child = Proc(child);
    let addr = lines(
        stderr,
        &[|l| {
            after(l, "listening on ").and_then(|a| a.split_whitespace().next().map(str::to_owned))
        }],
        "the cookie gateway's address",
    )
    .remove(0);
    (child, format!("ws://{addr}/echo"), token.trim().to_owned())
}

#[test]
fn chromium_logs_in_echoes_refreshes_in_band_logs_out_4403_sees_4401_and_sends_a_cookie_token() {
    let started = Instant::now();
    let chromium = chromium();
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn wsgate");
    let stdout = gateway.stdout.take().expect("stdout");
    let _gateway = Proc(gateway);
    let printed = lines(
        stdout,
        &[
            |l| after(l, "Open in a browser:"),
            // The password is on the line after the one that announces it.
            |l| {
                let (previous, current) = l.rsplit_once('\n')?;
                previous
                    .contains("with the password printed here once")
                    .then(|| current.trim().to_owned())
            },
        ],
        "the demo's page URL and password",
    );
    let (page, password) = (printed[0].clone(), printed[1].clone());
    assert!(page.starts_with("http://127.0.0.1:"), "{page}");
    assert!(password.len() >= 20, "a generated password: {password:?}");

    let profile = std::env::temp_dir().join(format!("wsgate-chromium-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let mut browser = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
    let stderr = browser.stderr.take().expect("stderr");
    let _browser = Proc(browser);
    let devtools = lines(
        stderr,
        &[|l| after(l, "DevTools listening on ")],
        "Chromium's DevTools URL",
    )
    .remove(0);

    let mut cdp = Cdp::connect(&devtools);
    let session = cdp.open(&page);
    let result = cdp.evaluate(
        &session,
        &SCENARIO.replace("PASSWORD", &json!(password).to_string()),
    );
    // 401 from the token service, readable by the page (CORS), and no socket opened.
    assert!(
        result["refused"]
            .as_str()
            .expect("refused")
            .contains("login answered 401: wrong username or password"),
        "{result}"
    );
    // The gateway selected the real protocol, never the token entry (SPEC §4).
    assert_eq!(result["protocol"], json!("demo"), "{result}");
    assert!(
        result["opened"]
            .as_str()
            .expect("opened")
            .contains(r#"protocol "demo""#),
        "{result}"
    );
    assert_eq!(result["sub"], json!("demo"), "{result}");
    assert!(
        result["echo"]
            .as_str()
            .expect("echo")
            .ends_with("echo: hello from chromium"),
        "{result}"
    );
    // wsgate.refreshed carries the new token's exp, never earlier than the first one.
    assert!(
        result["refreshed"]
            .as_str()
            .expect("refreshed")
            .contains("refreshed: the connection now lives until exp"),
        "{result}"
    );
    assert!(
        result["refreshedExp"].as_u64() >= result["firstExp"].as_u64(),
        "{result}"
    );
    // The refresh message itself was never echoed (SPEC §6).
    assert_eq!(result["echoesBeforeLogout"], json!(2), "{result}");
    // Logout revokes the session: the live socket closes 4403 (SPEC §11).
    assert_eq!(result["logoutCode"], json!(4403), "{result}");
    assert_eq!(result["logoutReason"], json!("token revoked"), "{result}");
    assert!(result["loggedOut"].is_string(), "{result}");
    // Only the wrong password's error so far.
    assert_eq!(
        result["errorsBeforeExpired"].as_array().map(Vec::len),
        Some(1),
        "{result}"
    );
    // explain_to_browsers: the page sees why (SPEC §4), not a bare 1006.
    assert_eq!(result["closeCode"], json!(4401), "{result}");
    assert_eq!(result["closeReason"], json!("token expired"), "{result}");
    assert_eq!(result["echoes"], json!(2), "{result}");

    // A cookie token with Origin: the page's origin is the only one the cookie gateway
    // allows (the demo cannot carry a cookie source: it keeps origin-less clients).
    let cookie_page = plain_page();
    let origin = cookie_page.trim_end_matches('/');
    let (_cookie_gateway, url, token) = cookie_gateway(&profile.join("cookie-gateway"), origin);
    let cookie_session = cdp.open(&cookie_page);
    let cookie = cdp.evaluate(
        &cookie_session,
        &COOKIE_SCENARIO
            .replace("GATEWAY", &json!(url).to_string())
            .replace("TOKEN", &json!(token).to_string()),
    );
    // With the cookie: upgraded (no subprotocol asked, none selected), echoed, closed 1000.
    assert_eq!(
        cookie["withCookie"],
        json!({ "protocol": "", "echo": "hello through a cookie", "code": 1000 }),
        "{cookie}"
    );
    // Without it: 401 at the upgrade, which a browser sees as 1006.
    assert_eq!(cookie["without"], json!({ "code": 1006 }), "{cookie}");

    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}

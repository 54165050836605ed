//! A real browser against `wsgate serve --demo` (SPEC §2, §4, §6): headless Chromium opens
//! the demo page, which connects with its token in `Sec-WebSocket-Protocol` beside a real
//! protocol; the test then drives the page's own buttons and reads its log. It sees an
//! echo, an in-band refresh answered with `wsgate.refreshed`, and a correctly signed but
//! expired token closed 4401 "token expired" (explain_to_browsers).
//!
//! Chromium is driven over the DevTools protocol (a WebSocket; tungstenite is a
//! dev-dependency). The test FAILS when no Chromium is found: `scripts/test` installs
//! Debian's `chromium` package when it is missing. Set `WSGATE_CHROMIUM` to use another
//! binary.

// The test bounds its own duration with the real clock; the product code may not read it.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
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

/// Reads lines of `reader` on a thread; returns the first for which `pick` gives a value.
fn first_line<R: std::io::Read + Send + 'static>(
    reader: R,
    pick: fn(&str) -> Option<String>,
    what: &str,
) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if let Some(v) = pick(&line) {
                let _ = tx.send(Ok(v));
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        let _ = tx.send(Err(seen));
    });
    match rx.recv_timeout(WAIT) {
        Ok(Ok(v)) => v,
        Ok(Err(seen)) => panic!("{what}: not found; output was:\n{seen}"),
        Err(_) => panic!("{what}: not seen within {WAIT:?}"),
    }
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

/// Runs in the page: drives its buttons and waits (bounded) for what its log shows.
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
  await until("open", () => $("status").dataset.state === "open");
  result.opened = [...document.querySelectorAll("#log li.open")].map((li) => li.textContent).join(" ");
  result.firstExp = Number($("exp").dataset.exp);
  $("msg").value = "hello from chromium";
  $("send").click();
  result.echo = await until("echo", () => [...document.querySelectorAll("#log li.echo")].map((li) => li.textContent).find((t) => t.includes("hello from chromium")));
  $("refresh").click();
  result.refreshed = await until("refreshed", () => document.querySelector("#log li.refreshed")?.textContent);
  result.refreshedExp = Number($("exp").dataset.exp);
  result.echoesBeforeExpired = document.querySelectorAll("#log li.echo").length;
  $("expired").click();
  const closed = await until("close 4401", () => [...document.querySelectorAll("#log li.close")].find((li) => li.dataset.code === "4401"));
  result.closeCode = Number(closed.dataset.code);
  result.closeReason = closed.dataset.reason;
  result.errors = [...document.querySelectorAll("#log li.error")].map((li) => li.textContent);
  result.echoes = document.querySelectorAll("#log li.echo").length;
  return JSON.stringify(result);
})()
"##;

#[test]
fn chromium_sees_an_echo_an_in_band_refresh_and_an_expired_token_closed_4401() {
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
    let page = first_line(
        stdout,
        |l| {
            l.split("Open in a browser:")
                .nth(1)
                .map(|u| u.trim().to_owned())
        },
        "the demo's page URL",
    );
    assert!(page.starts_with("http://127.0.0.1:"), "{page}");

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
    let devtools = first_line(
        stderr,
        |l| {
            l.split("DevTools listening on ")
                .nth(1)
                .map(|u| u.trim().to_owned())
        },
        "Chromium's DevTools URL",
    );

    let mut cdp = Cdp::connect(&devtools);
    let target = cdp.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
    let attached = cdp.call(
        None,
        "Target.attachToTarget",
        json!({ "targetId": target["targetId"], "flatten": true }),
    );
    let session = attached["sessionId"]
        .as_str()
        .expect("sessionId")
        .to_owned();
    cdp.call(Some(&session), "Page.enable", json!({}));
    cdp.call(Some(&session), "Page.navigate", json!({ "url": page }));
    cdp.event(&session, "Page.loadEventFired");
    let evaluated = cdp.call(
        Some(&session),
        "Runtime.evaluate",
        json!({ "expression": SCENARIO, "awaitPromise": true, "returnByValue": true }),
    );
    if let Some(e) = evaluated.get("exceptionDetails") {
        panic!("the page's scenario failed: {e}");
    }
    let result: Value = serde_json::from_str(
        evaluated["result"]["value"]
            .as_str()
            .expect("string result"),
    )
    .expect("JSON result");

    // The gateway selected the real protocol, never the token entry (SPEC §4).
    assert!(
        result["opened"]
            .as_str()
            .expect("opened")
            .contains(r#"protocol "demo""#),
        "{result}"
    );
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
    assert_eq!(result["echoesBeforeExpired"], json!(1), "{result}");
    // explain_to_browsers: the page sees why (SPEC §4), not a bare 1006.
    assert_eq!(result["closeCode"], json!(4401), "{result}");
    assert_eq!(result["closeReason"], json!("token expired"), "{result}");
    assert_eq!(result["errors"], json!([]), "{result}");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}

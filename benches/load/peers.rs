//! The peer servers, each run as a child process of this executable (`WSGATE_BENCH_ROLE`)
//! with one thread serving connections: tokio-tungstenite's echo server example (also
//! behind tokio-rustls, for the wss rows) and fastwebsockets' echo server example. uWebSockets, the other peer of issue #15, is a C++
//! library that no package registry carries: it is an optional external binary named by
//! `WSGATE_BENCH_UWS` (see [`uws_exe`]).
//!
//! How that binary (BenchEcho) was built: `git clone` uNetworking/uWebSockets and, inside
//! it, uNetworking/uSockets; `make -C uSockets`; then
//! `g++ -O3 -march=native -flto=auto -std=c++2b -Isrc -IuSockets/src BenchEcho.cpp
//! uSockets/*.o -lz`, where BenchEcho.cpp is `examples/EchoServer.cpp` taking its port
//! from argv[1] and with compression disabled (one thread, every message echoed;
//! `BenchEcho PORT` listens on 127.0.0.1:PORT and prints "Listening on port N"). Nothing
//! of uWebSockets is in this repository.

use std::io::{self, Write};
use std::time::Duration;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The role value for the tokio-tungstenite server.
pub(crate) const ROLE_TT: &str = "tt-server";
/// The role value for the tokio-tungstenite server behind tokio-rustls.
pub(crate) const ROLE_TT_TLS: &str = "tt-tls-server";
/// The role value for the fastwebsockets server.
pub(crate) const ROLE_FWS: &str = "fws-server";

/// Env var naming the uWebSockets echo binary (`BenchEcho PORT`).
pub(crate) const UWS_VAR: &str = "WSGATE_BENCH_UWS";

/// The uWebSockets echo binary, when `WSGATE_BENCH_UWS` names one.
pub(crate) fn uws_exe() -> Option<std::path::PathBuf> {
    std::env::var_os(UWS_VAR)
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
}

/// `WSGATE_BENCH_TT_READ_BUFFER`: a read buffer size for the reference server (tungstenite
/// zeroes the whole free part of its read buffer before every read, 128 KiB by default).
pub(crate) fn tt_read_buffer() -> Option<usize> {
    std::env::var("WSGATE_BENCH_TT_READ_BUFFER")
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

/// tokio-tungstenite's echo server example, on a one-worker multi-thread runtime, with
/// TCP_NODELAY like wsgate's accepted sockets.
pub(crate) fn tt_server() {
    exit_with_parent();
    // tungstenite's default read buffer (128 KiB) unless WSGATE_BENCH_TT_READ_BUFFER says.
    let config = tt_read_buffer().map(|n| WebSocketConfig::default().read_buffer_size(n));
    let runtime = runtime_or_exit(
        "tt-server",
        tokio::runtime::Builder::new_multi_thread().worker_threads(1),
    );
    runtime.block_on(async {
        let listener = listen(ROLE_TT).await;
        loop {
            let stream = accept_next(&listener).await;
            tokio::spawn(tt_echo(stream, config));
        }
    });
}

/// [`tt_server`] behind tokio-rustls (`TlsAcceptor`, ring provider), with the rustls
/// `ServerConfig` wsgate's `[tls]` builds, from the PEM files `crate::tls` names in the
/// environment: the wss peer of the `tls` rows.
pub(crate) fn tt_tls_server() {
    exit_with_parent();
    let tls = match crate::tls::server_config_from_env() {
        Ok(c) => tokio_rustls::TlsAcceptor::from(c),
        Err(e) => {
            eprintln!("{ROLE_TT_TLS}: {e}");
            std::process::exit(1);
        }
    };
    let config = tt_read_buffer().map(|n| WebSocketConfig::default().read_buffer_size(n));
    let runtime = runtime_or_exit(
        ROLE_TT_TLS,
        tokio::runtime::Builder::new_multi_thread().worker_threads(1),
    );
    runtime.block_on(async {
        let listener = listen(ROLE_TT_TLS).await;
        loop {
            let stream = accept_next(&listener).await;
            let tls = tls.clone();
            tokio::spawn(async move {
                if let Ok(stream) = tls.accept(stream).await {
                    tt_echo(stream, config).await;
                }
            });
        }
    });
}

/// One connection of tokio-tungstenite's echo example: upgrade, then forward every text
/// and binary message back.
async fn tt_echo<S>(stream: S, config: Option<WebSocketConfig>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{future, StreamExt, TryStreamExt};
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, config).await else {
        return;
    };
    let (write, read) = ws.split();
    let _ = read
        .try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
        .forward(write)
        .await;
}

/// The parent holds our stdin; when it goes away, so do we.
fn exit_with_parent() {
    std::thread::spawn(|| {
        let _ = io::copy(&mut io::stdin(), &mut io::sink());
        std::process::exit(0);
    });
}

/// Binds 127.0.0.1:0 and prints "listening on ADDR" (what `Server::peer` reads).
async fn listen(role: &str) -> tokio::net::TcpListener {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{role}: bind: {e}");
            std::process::exit(1);
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(e) => {
            eprintln!("{role}: {e}");
            std::process::exit(1);
        }
    }
    let _ = io::stdout().flush();
    listener
}

/// fastwebsockets' `examples/echo_server.rs` (0.10): hyper's HTTP/1.1 server with
/// upgrades, `upgrade::upgrade`, a `FragmentCollector` echoing text and binary frames
/// (close frames are answered by the library, `auto_close`), each connection in an
/// `unconstrained` task on a current-thread runtime (one thread, as in the example),
/// plus TCP_NODELAY like the other servers.
pub(crate) fn fws_server() {
    use fastwebsockets::{upgrade, OpCode, WebSocketError};
    use http_body_util::Empty;
    use hyper::body::{Bytes, Incoming};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};

    async fn handle_client(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
        let mut ws = fastwebsockets::FragmentCollector::new(fut.await?);
        loop {
            let frame = ws.read_frame().await?;
            match frame.opcode {
                OpCode::Close => break,
                OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
                _ => {}
            }
        }
        Ok(())
    }

    async fn server_upgrade(
        mut req: Request<Incoming>,
    ) -> Result<Response<Empty<Bytes>>, WebSocketError> {
        let (response, fut) = upgrade::upgrade(&mut req)?;
        tokio::task::spawn(async move {
            let _ = tokio::task::unconstrained(handle_client(fut)).await;
        });
        Ok(response)
    }

    exit_with_parent();
    // The example enables I/O only; the timer is for the accept back-off below.
    let runtime = runtime_or_exit(
        "fws-server",
        &mut tokio::runtime::Builder::new_current_thread(),
    );
    runtime.block_on(async {
        let listener = listen(ROLE_FWS).await;
        loop {
            let stream = accept_next(&listener).await;
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = http1::Builder::new()
                    .serve_connection(io, service_fn(server_upgrade))
                    .with_upgrades()
                    .await;
            });
        }
    });
}

/// The peer's runtime (all drivers on: the timer is for the accept back-off), or exit 1
/// with the reason.
fn runtime_or_exit(role: &str, builder: &mut tokio::runtime::Builder) -> tokio::runtime::Runtime {
    match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{role}: runtime: {e}");
            std::process::exit(1);
        }
    }
}

/// The next accepted connection, with TCP_NODELAY like wsgate's; EMFILE and friends back
/// off instead of spinning.
async fn accept_next(listener: &tokio::net::TcpListener) -> tokio::net::TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return stream;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

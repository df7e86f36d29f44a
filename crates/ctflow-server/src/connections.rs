//! The accept loop: HTTP/1.1 connections within `max_connections`, each with a deadline
//! for its request heads, and a graceful shutdown that lets in-flight requests finish.
//!
//! NB: axum's own `serve` has no header timeout, so one client trickling a request head
//! byte by byte (or many opening sockets and sending nothing) would hold connections
//! forever.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::limits::Limits;

/// A raw HTTP/1.1 error response in MLflow's JSON, for the moments no handler runs.
fn raw_response(status: &str, code: &str, message: &str) -> Vec<u8> {
    let body = serde_json::json!({ "error_code": code, "message": message }).to_string();
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A connection over the limit: answered 503 (the mlflow client retries that with
/// backoff) and closed.
async fn refuse(mut stream: TcpStream, limit: usize) {
    let response = raw_response(
        "503 Service Unavailable",
        "TEMPORARILY_UNAVAILABLE",
        &format!(
            "The server has {limit} connections open, its limit (ctflow server --max-http-connections); try again shortly"
        ),
    );
    // NB: the request is not read; the client may see the answer or a reset, both say no.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await;
}

/// A TCP stream whose writing half outlives the HTTP connection, so that a request head
/// cut off by the header timeout can still be answered, and which knows whether a
/// request has started since the last response (an idle keep-alive connection that
/// times out is closed without a word).
struct WatchedStream {
    read: OwnedReadHalf,
    write: Arc<Mutex<Option<OwnedWriteHalf>>>,
    request_started: Arc<AtomicBool>,
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.read).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.request_started.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl WatchedStream {
    fn with_writer<T>(
        &self,
        act: impl FnOnce(Pin<&mut OwnedWriteHalf>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let mut guard = match self.write.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match guard.as_mut() {
            Some(writer) => act(Pin::new(writer)),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.request_started.store(false, Ordering::Relaxed);
        self.with_writer(|writer| writer.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.request_started.store(false, Ordering::Relaxed);
        self.with_writer(|writer| writer.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with_writer(|writer| writer.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with_writer(|writer| writer.poll_shutdown(cx))
    }
}

/// Serves one connection; a request head that does not arrive in time is answered 408.
fn serve_connection(
    stream: TcpStream,
    app: Router,
    builder: &http1::Builder,
    graceful: &GracefulShutdown,
    limits: &Limits,
) -> impl Future<Output = ()> + Send + 'static {
    let peer = stream.peer_addr().ok();
    let (read, write) = stream.into_split();
    let writer = Arc::new(Mutex::new(Some(write)));
    let request_started = Arc::new(AtomicBool::new(false));
    let io = WatchedStream {
        read,
        write: writer.clone(),
        request_started: request_started.clone(),
    };
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    let connection = graceful.watch(connection);
    let timeout = limits.header_read_timeout;
    async move {
        let Err(error) = connection.await else {
            return;
        };
        if !error.is_timeout() {
            tracing::debug!(?peer, %error, "connection ended with an error");
            return;
        }
        if !request_started.load(Ordering::Relaxed) {
            return;
        }
        tracing::warn!(
            ?peer,
            ?timeout,
            "a client took too long to send a request head"
        );
        let taken = match writer.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(mut write) = taken else {
            return;
        };
        let response = raw_response(
            "408 Request Timeout",
            "BAD_REQUEST",
            &format!(
                "The request head did not arrive within {}s (ctflow server --header-read-timeout)",
                timeout.as_secs_f64()
            ),
        );
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            write.write_all(&response).await?;
            write.shutdown().await
        })
        .await;
    }
}

/// Accepts connections until `shutdown` resolves, then waits for those in flight.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // NB: EMFILE and friends: back off instead of spinning on the error.
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // NB: without TCP_NODELAY every keep-alive response waits for the client's delayed
        // ACK (about 40 ms), the stall that dominates MLflow's own per-request latency.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::warn!(
                limit = limits.max_connections,
                "refusing a connection: too many open"
            );
            tokio::spawn(refuse(stream, limits.max_connections));
            continue;
        };
        let connection = serve_connection(stream, app.clone(), &builder, &graceful, limits);
        tokio::spawn(async move {
            connection.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

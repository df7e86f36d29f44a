//! The accept loop: HTTP/1.1 connections within `max_connections` (and within one
//! address's share of them), each closed when idle for `idle_connection_timeout` and
//! given a deadline for its request heads, health and readiness probes answered even at
//! the limit, and a graceful shutdown that lets in-flight requests finish.
//!
//! NB: axum's own `serve` has no header timeout, so one client trickling a request head
//! byte by byte (or many opening sockets and sending nothing) would hold connections
//! forever; and a probe refused at the limit would have an orchestrator restart a server
//! that is merely busy.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

use crate::limits::Limits;

/// The address a request came from (a request extension on every served request).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub std::net::SocketAddr);

/// A raw HTTP/1.1 error response in MLflow's JSON, for the moments no handler runs.
fn raw_response(status: &str, code: &str, message: &str) -> Vec<u8> {
    let body = serde_json::json!({ "error_code": code, "message": message }).to_string();
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Connections over the limit that may still be probed for health: each gets one
/// request, read within `AT_LIMIT_HEAD_TIMEOUT`; one address holds at most
/// `AT_LIMIT_PER_ADDRESS` of them, so a flood from a few addresses cannot take the room
/// the probes need.
const AT_LIMIT_CONNECTIONS: usize = 64;
const AT_LIMIT_PER_ADDRESS: usize = 2;
const AT_LIMIT_HEAD_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a connection is over the limit, in the words of its 503.
fn over_limit_message(limits: &Limits, per_address: bool) -> String {
    if per_address {
        format!(
            "This address has {} connections open, its share (ctflow server --max-connections-per-address); try again shortly",
            limits.max_connections_per_address
        )
    } else {
        format!(
            "The server has {} connections open, its limit (ctflow server --max-http-connections); try again shortly",
            limits.max_connections
        )
    }
}

/// A connection over the limit with no room left even for probes: answered 503 (the
/// mlflow client retries that with backoff) and closed.
async fn refuse(mut stream: TcpStream, message: String) {
    let response = raw_response(
        "503 Service Unavailable",
        "TEMPORARILY_UNAVAILABLE",
        &message,
    );
    // NB: the request is not read; the client may see the answer or a reset, both say no.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await;
}

/// A connection over the limit: its one request is answered by the server if it is a
/// health or readiness probe, else 503.
fn serve_at_limit(
    stream: TcpStream,
    app: Router,
    graceful: &GracefulShutdown,
    message: String,
) -> impl Future<Output = ()> + Send + 'static {
    let service = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
        let app = app.clone();
        let message = message.clone();
        async move {
            let probe = matches!(request.uri().path(), "/health" | "/ready");
            if probe {
                return tower::ServiceExt::oneshot(app, request.map(Body::new)).await;
            }
            let error = ctflow_core::MlflowError::new(
                ctflow_core::ErrorCode::TemporarilyUnavailable,
                message,
            );
            Ok::<Response, std::convert::Infallible>(
                crate::error::ApiError::from(error).into_response(),
            )
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(false)
        .header_read_timeout(AT_LIMIT_HEAD_TIMEOUT);
    let connection = builder.serve_connection(
        TokioIo::new(stream),
        hyper_util::service::TowerToHyperService::new(service),
    );
    let connection = graceful.watch(connection);
    async move {
        let _ = tokio::time::timeout(AT_LIMIT_HEAD_TIMEOUT * 5, connection).await;
    }
}

/// What a connection is doing, shared by its stream and its service: requests under way
/// and when the last one ended. NB: hyper gives an idle keep-alive connection no
/// deadline of its own short of the header timeout.
struct Activity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    fn idle_since(&self) -> Instant {
        *crate::lock(&self.idle_since)
    }
}

/// Counts a request as under way until its response body is dropped (sent or abandoned).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *crate::lock(&self.0.idle_since) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as under way while it is sent.
struct CountedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A TCP stream whose writing half outlives the HTTP connection, so that a request head
/// cut off by the header timeout can still be answered, and which knows whether a
/// request has started since the last response (an idle keep-alive connection that
/// times out is closed without a word). It ends the connection (as if the client had
/// closed it) once no request has been under way for `idle_timeout`.
struct WatchedStream {
    read: OwnedReadHalf,
    write: Arc<Mutex<Option<OwnedWriteHalf>>>,
    request_started: Arc<AtomicBool>,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    idle_timer: Pin<Box<Sleep>>,
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
        let idle = polled.is_pending()
            && !self.request_started.load(Ordering::Relaxed)
            && self.activity.in_flight.load(Ordering::Acquire) == 0;
        if idle {
            let deadline = self.activity.idle_since() + self.idle_timeout;
            if self.idle_timer.deadline() != deadline {
                self.idle_timer.as_mut().reset(deadline);
            }
            if self.idle_timer.as_mut().poll(cx).is_ready() {
                // NB: an end of stream on an idle connection makes hyper close it quietly.
                return Poll::Ready(Ok(()));
            }
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
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        idle_since: Mutex::new(Instant::now()),
    });
    let io = WatchedStream {
        read,
        write: writer.clone(),
        request_started: request_started.clone(),
        activity: activity.clone(),
        idle_timeout: limits.idle_connection_timeout,
        idle_timer: Box::pin(tokio::time::sleep(limits.idle_connection_timeout)),
    };
    let service = tower::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        let in_flight = InFlight::start(&activity);
        if let Some(peer) = peer {
            request.extensions_mut().insert(ClientAddress(peer));
        }
        let answer = tower::ServiceExt::oneshot(app.clone(), request.map(Body::new));
        async move {
            let response = answer.await?;
            Ok::<_, std::convert::Infallible>(response.map(|inner| {
                Body::new(CountedBody {
                    inner,
                    _in_flight: in_flight,
                })
            }))
        }
    });
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
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
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            write.write_all(&response).await?;
            write.shutdown().await
        })
        .await;
    }
}

/// Open connections per client address.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One open connection of an address; its count goes down when dropped.
struct AddressSlot {
    counts: Arc<PerAddress>,
    address: IpAddr,
}

impl PerAddress {
    /// A slot for one more connection of `address`, if its share has room.
    fn take(counts: &Arc<PerAddress>, address: IpAddr, share: usize) -> Option<AddressSlot> {
        let mut open = crate::lock(&counts.0);
        let count = open.entry(address).or_insert(0);
        if *count >= share {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            counts: counts.clone(),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = crate::lock(&self.counts.0);
        if let Some(count) = open.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.address);
            }
        }
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
    let at_limit = Arc::new(Semaphore::new(AT_LIMIT_CONNECTIONS));
    let per_address = Arc::new(PerAddress::default());
    let at_limit_per_address = Arc::new(PerAddress::default());
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
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // NB: EMFILE and friends: back off instead of spinning on the error.
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // NB: without TCP_NODELAY every keep-alive response waits for the client's delayed
        // ACK (about 40 ms), the stall that dominates MLflow's own per-request latency.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let slot = PerAddress::take(&per_address, peer.ip(), limits.max_connections_per_address);
        let share_used_up = slot.is_none();
        let permit = match slot {
            Some(_) => open.clone().try_acquire_owned().ok(),
            None => None,
        };
        let (Some(slot), Some(permit)) = (slot, permit) else {
            let message = over_limit_message(limits, share_used_up);
            tracing::warn!(%peer, "over the connection limit: {message}");
            let probe_slot =
                PerAddress::take(&at_limit_per_address, peer.ip(), AT_LIMIT_PER_ADDRESS);
            let probe_permit = match probe_slot {
                Some(_) => at_limit.clone().try_acquire_owned().ok(),
                None => None,
            };
            match (probe_slot, probe_permit) {
                (Some(probe_slot), Some(probe_permit)) => {
                    let connection = serve_at_limit(stream, app.clone(), &graceful, message);
                    tokio::spawn(async move {
                        connection.await;
                        drop(probe_permit);
                        drop(probe_slot);
                    });
                }
                _ => {
                    tokio::spawn(refuse(stream, message));
                }
            }
            continue;
        };
        let connection = serve_connection(stream, app.clone(), &builder, &graceful, limits);
        tokio::spawn(async move {
            connection.await;
            drop(permit);
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

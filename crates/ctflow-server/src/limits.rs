//! What one client may ask of the server: how large a request body or an artifact upload
//! may be, how many rows a page holds, how many connections are open at once and how
//! long a client may take to send its request. Each limit refuses with MLflow's error JSON
//! and a message naming the setting that raises it.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use ctflow_core::byte_size::format_byte_size;
use ctflow_core::{ErrorCode, MlflowError};
use futures::{Stream, StreamExt};
use http_body::{Frame, SizeHint};
use std::sync::Arc;

use crate::error::ApiError;

#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest JSON request body (every API call but artifact uploads).
    pub max_request_body: usize,
    /// Largest single artifact upload through the proxy.
    pub max_artifact_upload: u64,
    /// Most rows one page of a search or a metric history holds; a larger
    /// `max_results` gets this many and a `next_page_token`.
    pub max_page_size: i64,
    /// Open client connections; one more is answered 503 and closed (but for health
    /// and readiness probes, which are answered even then).
    pub max_connections: usize,
    /// Open connections from one client address (its share of `max_connections`).
    pub max_connections_per_address: usize,
    /// How long a connection may stay open without a request under way (a new one that
    /// has sent nothing, a keep-alive one between requests) before it is closed.
    pub idle_connection_timeout: Duration,
    /// How long a client may take to send a request's head once it has begun.
    pub header_read_timeout: Duration,
    /// How long a request body may go without a byte arriving.
    pub body_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_body: 64 << 20,
            max_artifact_upload: 10 << 30,
            max_page_size: 25_000,
            max_connections: 1024,
            max_connections_per_address: 512,
            idle_connection_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
        }
    }
}

impl Limits {
    /// The rows one page holds for a request asking `requested`.
    pub fn page(&self, requested: i64) -> i64 {
        requested.min(self.max_page_size)
    }
}

/// A request body that went `body_read_timeout` without a byte.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled: no data for {0:?}")]
pub struct BodyStalled(Duration);

/// An artifact upload past `max_artifact_upload`.
#[derive(Debug, thiserror::Error)]
#[error("the upload is larger than the limit")]
struct UploadTooLarge;

/// A request body that fails with `BodyStalled` once it has waited `timeout` for a
/// byte. NB: the timer exists only while the body waits, so a body already in the
/// socket's buffer costs nothing, and the size hint passes through.
struct StallGuard {
    inner: Body,
    timeout: Duration,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl HttpBody for StallGuard {
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = None;
                Poll::Ready(frame.map(|result| result.map_err(|error| error.into_inner())))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let waiting = this
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if waiting.as_mut().poll(cx).is_ready() {
                    this.waiting = None;
                    return Poll::Ready(Some(Err(Box::new(BodyStalled(timeout)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Gives every request body an idle timeout: a client that stops sending mid-body is
/// refused instead of holding its connection and a handler.
pub(crate) async fn stalled_bodies(
    State(limits): State<Arc<Limits>>,
    request: Request,
    next: Next,
) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let timeout = limits.body_read_timeout;
    next.run(request.map(|inner| {
        Body::new(StallGuard {
            inner,
            timeout,
            waiting: None,
        })
    }))
    .await
}

fn caused_by<'a, E: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<E>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}

fn stalled(stall: &BodyStalled) -> ApiError {
    ApiError::with_status(
        StatusCode::REQUEST_TIMEOUT,
        MlflowError::new(
            ErrorCode::BadRequest,
            format!(
                "The request body stalled: no data arrived for {}s (ctflow server --body-read-timeout)",
                stall.0.as_secs_f64()
            ),
        ),
    )
}

fn too_large(what: &str, limit: u64, setting: &str) -> ApiError {
    ApiError::with_status(
        StatusCode::PAYLOAD_TOO_LARGE,
        MlflowError::invalid(format!(
            "{what} is larger than this server's limit of {} (ctflow server {setting})",
            format_byte_size(limit)
        )),
    )
}

fn request_too_large(limits: &Limits) -> ApiError {
    too_large(
        "The request body",
        limits.max_request_body as u64,
        "--max-request-body",
    )
}

fn upload_too_large(limits: &Limits) -> ApiError {
    too_large(
        "The artifact",
        limits.max_artifact_upload,
        "--max-artifact-upload",
    )
}

/// The length a request declares in its Content-Length header.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads a JSON request body whole, within `max_request_body`.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limits: &Limits,
) -> Result<Bytes, ApiError> {
    let limit = limits.max_request_body;
    if declared_length(headers).is_some_and(|length| length > limit as u64) {
        return Err(request_too_large(limits));
    }
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        if let Some(stall) = caused_by::<BodyStalled>(&error) {
            return stalled(stall);
        }
        if caused_by::<http_body_util::LengthLimitError>(&error).is_some() {
            return request_too_large(limits);
        }
        ApiError::from(MlflowError::new(
            ErrorCode::BadRequest,
            format!("Could not read the request body: {error}"),
        ))
    })
}

/// An upload's bytes, cut off with an error once they pass `limit`.
pub(crate) fn limit_upload(
    body: Body,
    limit: u64,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let mut seen = 0u64;
    body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(|error| std::io::Error::other(error.into_inner()))?;
        seen += chunk.len() as u64;
        if seen > limit {
            return Err(std::io::Error::other(UploadTooLarge));
        }
        Ok(chunk)
    })
}

/// What an upload that failed while reading its body tells the client, if the body was
/// the cause.
pub(crate) fn upload_failure(error: &ctflow_store::Error, limits: &Limits) -> Option<ApiError> {
    let ctflow_store::Error::Io(io) = error else {
        return None;
    };
    let cause = io.get_ref()?;
    if let Some(stall) = caused_by::<BodyStalled>(cause) {
        return Some(stalled(stall));
    }
    caused_by::<UploadTooLarge>(cause).map(|_| upload_too_large(limits))
}

/// Refuses an upload up front when its declared length is over the limit.
pub(crate) fn check_upload_length(headers: &HeaderMap, limits: &Limits) -> Result<(), ApiError> {
    if declared_length(headers).is_some_and(|length| length > limits.max_artifact_upload) {
        return Err(upload_too_large(limits));
    }
    Ok(())
}

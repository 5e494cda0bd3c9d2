//! Request bodies are read here, before the handler, within a deadline and a
//! bound:
//!
//! - The whole body must arrive within `server.request_body_timeout` of the
//!   request head: a client that stops sending, or trickles a byte now and
//!   then, gets its body refused (a `400` from the extractor reading it)
//!   instead of holding the request's task and socket for as long as it likes.
//! - A body past `server.body_limit_bytes` is read to its end and dropped
//!   before the handler answers (its `413`, in the route's own shape). A
//!   server that answers while the body is still coming and closes leaves
//!   unread data behind; its kernel then resets the connection, the client's
//!   next write fails, and a proxy in front (Envoy) drops the connection
//!   without reading the answer and tells its client `503`. Only the first
//!   `limit + 1` bytes are kept; past [`DRAIN_MAX_BYTES`] the body is given up.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body as _, Frame};

use crate::state::AppState;

/// How much of an oversized body is read and dropped so that its `413`
/// reaches the client. Past it (or past the body deadline) the connection
/// is left to close with the rest unread: a client sending that much to an
/// API whose bodies are a few kilobytes gets no more of the service's time.
pub const DRAIN_MAX_BYTES: u64 = 64 << 20;

/// The middleware: reads the body (see the module's notes) and hands the
/// handler what was read.
pub async fn read_first(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let limit = state.config.server.body_limit_bytes;
    let declared = declared_length(request.headers());
    let deadline = tokio::time::Instant::now() + state.config.server.request_body_timeout;
    let refuse_unread = declared.is_some_and(|n| {
        n > limit as u64 && (n > DRAIN_MAX_BYTES || expects_continue(request.headers()))
    });
    let (parts, body) = request.into_parts();
    let read = if refuse_unread {
        // Refused from its head: a client waiting for `100 Continue` need
        // not send the body, and one past the drain bound is not waited for.
        ReadBody::past_limit(limit)
    } else {
        read_bounded(body, limit, deadline).await
    };
    next.run(Request::from_parts(parts, Body::new(read))).await
}

/// `content-length`, when the request has exactly one that is a number.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()?.trim().parse().ok()
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
}

/// What was read of a body: its first `limit + 1` bytes at most, and how it
/// ended. As a body it yields those bytes, then the error if there was one.
#[derive(Debug)]
pub struct ReadBody {
    kept: Option<Bytes>,
    error: Option<axum::Error>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTooSlow;

#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than this service reads")]
struct BodyPastDrainBound;

impl ReadBody {
    /// A stand-in for a body left unread: one byte past `limit`, so that
    /// the route's extractor answers its own `413`.
    fn past_limit(limit: usize) -> ReadBody {
        ReadBody {
            kept: Some(Bytes::from(vec![0u8; limit.saturating_add(1)])),
            error: None,
        }
    }
}

/// Reads `body` to its end by `deadline`, keeping the first `limit + 1`
/// bytes (enough for the extractor's limit to refuse it) and dropping the
/// rest, up to [`DRAIN_MAX_BYTES`] in all.
pub async fn read_bounded(
    mut body: Body,
    limit: usize,
    deadline: tokio::time::Instant,
) -> ReadBody {
    let keep = limit.saturating_add(1);
    let mut kept: Vec<u8> = Vec::new();
    let mut total: u64 = 0;
    let error = loop {
        let frame = match tokio::time::timeout_at(
            deadline,
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)),
        )
        .await
        {
            Err(_elapsed) => break Some(axum::Error::new(BodyTooSlow)),
            Ok(None) => break None,
            Ok(Some(Err(e))) => break Some(e),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry nothing this service reads.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len() as u64);
        if kept.len() < keep {
            let room = keep - kept.len();
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
        if total > DRAIN_MAX_BYTES {
            break Some(axum::Error::new(BodyPastDrainBound));
        }
    };
    ReadBody {
        kept: (!kept.is_empty()).then(|| Bytes::from(kept)),
        error,
    }
}

impl http_body::Body for ReadBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        std::task::Poll::Ready(match (this.kept.take(), this.error.take()) {
            (Some(data), error) => {
                this.error = error;
                Some(Ok(Frame::data(data)))
            }
            (None, Some(error)) => Some(Err(error)),
            (None, None) => None,
        })
    }

    fn is_end_stream(&self) -> bool {
        self.kept.is_none() && self.error.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let len = self.kept.as_ref().map_or(0, |b| b.len() as u64);
        if self.error.is_some() {
            let mut hint = http_body::SizeHint::new();
            hint.set_lower(len);
            hint
        } else {
            http_body::SizeHint::with_exact(len)
        }
    }
}

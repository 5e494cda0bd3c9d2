//! `GET /v1/revocations?since=CURSOR[&wait=SECONDS]`: the contract's feed. A
//! current cursor is answered from memory (304, no database), so polling stays
//! cheap; with `wait`, a current cursor is held until something newer is
//! committed (answered at once) or the wait is over (304): a long poll.

use std::sync::Arc;
use std::time::Duration;

use authflow_contract::revocation::COMPACT_FEED_TYPE;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::clock::forget_now;
use crate::error::{ApiError, ApiResult};
use crate::feed::{Encoding, FeedAnswer};
use crate::metrics::inc;
use crate::state::AppState;

/// Longest query string looked at (a cursor is ~50 bytes).
const MAX_QUERY: usize = 512;
/// Longest `wait` accepted, in seconds: a client's callout timeout must exceed
/// its wait, and proxies in between commonly cut idle requests at 60 s.
pub const MAX_WAIT_SECS: u64 = 60;

fn param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    let query = query.filter(|q| q.len() <= MAX_QUERY)?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

fn since(query: Option<&str>) -> Option<&str> {
    param(query, "since").filter(|v| !v.is_empty())
}

/// `wait` in whole seconds, 0 ..= [`MAX_WAIT_SECS`]; absent is 0 (a plain poll).
fn wait(query: Option<&str>) -> Result<Duration, ApiError> {
    let Some(raw) = param(query, "wait") else {
        return Ok(Duration::ZERO);
    };
    let secs = Some(raw)
        .filter(|v| !v.is_empty() && v.len() <= 2 && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s <= MAX_WAIT_SECS);
    secs.map(Duration::from_secs).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "`wait` must be whole seconds from 0 to {MAX_WAIT_SECS}"
        ))
    })
}

/// Whether the client listed the compact encoding in `Accept` (without
/// `q=0`); anything else gets JSON, the default older filters read.
fn wants_compact(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            // A weight of 0 refuses the type (RFC 9110 §12.4.2: `q` in any case).
            let refused = |p: &str| {
                p.split_once('=').is_some_and(|(name, q)| {
                    name.trim().eq_ignore_ascii_case("q")
                        && q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
                })
            };
            parts
                .next()
                .is_some_and(|m| m.eq_ignore_ascii_case(COMPACT_FEED_TYPE))
                && !parts.any(refused)
        })
}

#[utoipa::path(get, path = "/v1/revocations", tag = "discovery",
    params(("since" = Option<String>, Query, description = "cursor from the previous answer"),
           ("wait" = Option<u64>, Query, description = "seconds (0..=60) to hold a current cursor until something newer is committed")),
    responses((status = 200, description = "delta (snapshot=false) or snapshot (snapshot=true); JSON, or the compact binary layout (README, \"Compact revocation feed\") when `Accept` lists application/vnd.authflow.revocations.v1"),
              (status = 304, description = "nothing changed since the cursor (within the wait)"),
              (status = 400, description = "`wait` is not whole seconds from 0 to 60"),
              (status = 503, body = crate::error::ErrorBody, description = "`temporarily_unavailable`: a revoking write was acknowledged but this instance could not load it (the database cannot be reached, or another poll's sync just failed): never a `304` over it; retry after `Retry-After`, or on another instance")))]
pub async fn feed(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (since, wait) = (since(query.as_deref()), wait(query.as_deref())?);
    let answer = state
        .feed
        .answer_within(
            state.store.as_ref(),
            &state.config.tokens.issuer,
            since,
            wait,
            forget_now,
        )
        .await?;
    let no_cache = HeaderValue::from_static("no-cache");
    // On the 304 too (RFC 9110 §15.4.5): the two encodings of one cursor
    // are two stored responses to a cache.
    let vary = (header::VARY, HeaderValue::from_static("accept"));
    Ok(match answer {
        FeedAnswer::NotModified => {
            inc(&state.metrics.feed_not_modified);
            (
                StatusCode::NOT_MODIFIED,
                [(header::CACHE_CONTROL, no_cache), vary],
            )
                .into_response()
        }
        FeedAnswer::Body(feed) => {
            inc(if feed.snapshot {
                &state.metrics.feed_snapshots
            } else {
                &state.metrics.feed_deltas
            });
            // Encoded once per shared answer (see `FeedBody`).
            if wants_compact(&headers) {
                let content_type = (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(COMPACT_FEED_TYPE),
                );
                let body = feed
                    .encoded(Encoding::Compact)
                    .await
                    .map_err(ApiError::internal)?;
                (
                    [(header::CACHE_CONTROL, no_cache), content_type, vary],
                    body,
                )
                    .into_response()
            } else {
                let content_type = (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                let body = feed
                    .encoded(Encoding::Json)
                    .await
                    .map_err(ApiError::internal)?;
                (
                    [(header::CACHE_CONTROL, no_cache), content_type, vary],
                    body,
                )
                    .into_response()
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
            wants_compact(&h)
        };
        assert!(with(
            "application/vnd.authflow.revocations.v1, application/json;q=0.5"
        ));
        assert!(with(
            "application/json, Application/Vnd.Authflow.Revocations.V1;q=0.9"
        ));
        assert!(!with("application/json"));
        assert!(!with("*/*"), "JSON stays the default");
        assert!(!with("application/vnd.authflow.revocations.v1;q=0"));
        // RFC 9110 §12.4.2: the weight's name is case-insensitive, spaces around `=` allowed.
        assert!(!with("application/vnd.authflow.revocations.v1;Q=0"));
        assert!(!with("application/vnd.authflow.revocations.v1; q = 0.000"));
        assert!(!wants_compact(&HeaderMap::new()));
    }

    #[test]
    fn since_parameter() {
        assert_eq!(since(Some("since=ab.3")), Some("ab.3"));
        assert_eq!(since(Some("x=1&since=ab.3")), Some("ab.3"));
        assert_eq!(since(Some("sinceX=ab.3")), None);
        assert_eq!(since(Some("since=")), None);
        assert_eq!(since(None), None);
    }

    #[test]
    fn wait_parameter() {
        assert_eq!(wait(None).ok(), Some(Duration::ZERO));
        assert_eq!(
            wait(Some("since=a.1&wait=30")).ok(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(wait(Some("wait=60")).ok(), Some(Duration::from_secs(60)));
        for bad in [
            "wait=61",
            "wait=",
            "wait=-1",
            "wait=+5",
            "wait=1.5",
            "wait=0030",
        ] {
            assert!(wait(Some(bad)).is_err(), "{bad}");
        }
    }
}

//! `GET /v1/revocations?since=CURSOR`: the contract's feed. A current cursor
//! is answered from memory (304, no database), so polling stays cheap.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::ApiResult;
use crate::feed::FeedAnswer;
use crate::metrics::inc;
use crate::{now, AppState};

/// Longest query string looked at (a cursor is ~50 bytes).
const MAX_QUERY: usize = 512;

fn since(query: Option<&str>) -> Option<&str> {
    let query = query.filter(|q| q.len() <= MAX_QUERY)?;
    query.split('&').find_map(|pair| pair.strip_prefix("since=")).filter(|v| !v.is_empty())
}

#[utoipa::path(get, path = "/v1/revocations", tag = "discovery",
    params(("since" = Option<String>, Query, description = "cursor from the previous answer")),
    responses((status = 200, description = "delta (snapshot=false) or snapshot (snapshot=true)"),
              (status = 304, description = "nothing changed since the cursor")))]
pub async fn feed(State(state): State<Arc<AppState>>, RawQuery(query): RawQuery) -> ApiResult<Response> {
    let answer = state.feed.answer(state.store.as_ref(), &state.config.issuer, since(query.as_deref()), now()).await?;
    let no_cache = HeaderValue::from_static("no-cache");
    Ok(match answer {
        FeedAnswer::NotModified => {
            inc(&state.metrics.feed_not_modified);
            (StatusCode::NOT_MODIFIED, [(header::CACHE_CONTROL, no_cache)]).into_response()
        }
        FeedAnswer::Body(feed) => {
            inc(if feed.snapshot { &state.metrics.feed_snapshots } else { &state.metrics.feed_deltas });
            ([(header::CACHE_CONTROL, no_cache)], axum::Json(feed)).into_response()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::since;

    #[test]
    fn since_parameter() {
        assert_eq!(since(Some("since=ab.3")), Some("ab.3"));
        assert_eq!(since(Some("x=1&since=ab.3")), Some("ab.3"));
        assert_eq!(since(Some("since=")), None);
        assert_eq!(since(None), None);
    }
}

//! Keeping each provider's revocation list current in one VM, as the
//! background side does it: a fetched feed applied, the list another worker
//! VM shared adopted, and the time the list was last known current (what
//! staleness is measured from). The glue only moves bytes between the host
//! and these.

use authflow_contract::revocation::RevocationFeed;

use crate::engine::Engine;
use crate::fetch::FetchEnd;
use crate::provider_id::ProviderId;
use crate::revocation::{ApplyError, RevocationSet};

impl Engine {
    /// Applies a feed fetched for `id` and marks the list current. How the
    /// fetch ended: news (`Fresh`) only when the cursor moved, since a long
    /// poll goes on at once only after news. A refused feed leaves the list
    /// as it was.
    pub fn apply_feed(&mut self, id: ProviderId, feed: RevocationFeed, now_ms: u64) -> Result<FetchEnd, ApplyError> {
        let (max, skew) = (self.config.revocation.max_entries, self.config.clock_skew_secs);
        let Some(issuer) = self.config.provider(id).map(|p| p.issuer.clone()) else { return Err(ApplyError::WrongIssuer) };
        let Some(state) = self.provider_mut(id) else { return Err(ApplyError::WrongIssuer) };
        let sent_cursor = state.revocations.cursor().map(str::to_owned);
        state.revocations.apply(feed, &issuer, max, skew, now_ms / 1000)?;
        state.revocations_fresh_at_ms = state.revocations_fresh_at_ms.max(now_ms);
        let moved = state.revocations.cursor() != sent_cursor.as_deref();
        Ok(if moved { FetchEnd::Fresh { etag: None } } else { FetchEnd::NotModified })
    }

    /// The list of `id` was known current at `at_ms` (a `304` here, or
    /// another VM's fetch). Never moves back.
    pub fn revocations_current_at(&mut self, id: ProviderId, at_ms: u64) {
        if let Some(state) = self.provider_mut(id) {
            state.revocations_fresh_at_ms = state.revocations_fresh_at_ms.max(at_ms);
        }
    }

    /// Replaces the list of `id` with the merged list another VM shared
    /// ([`revocation_snapshot`](Self::revocation_snapshot)). False, and the
    /// list stays as it was, when the bytes are not such a list or it does
    /// not apply (another issuer, over the bound).
    pub fn adopt_revocations(&mut self, id: ProviderId, snapshot: &[u8], now_ms: u64) -> bool {
        let (max, skew) = (self.config.revocation.max_entries, self.config.clock_skew_secs);
        let Some(issuer) = self.config.provider(id).map(|p| p.issuer.clone()) else { return false };
        let Ok(feed) = serde_json::from_slice::<RevocationFeed>(snapshot) else { return false };
        let mut next = RevocationSet::default();
        if next.apply(feed, &issuer, max, skew, now_ms / 1000).is_err() {
            return false;
        }
        match self.provider_mut(id) {
            Some(state) => {
                state.revocations = next;
                true
            }
            None => false,
        }
    }

    /// The whole list of `id`, for the other VMs: a delta means nothing without its base.
    pub fn revocation_snapshot(&self, id: ProviderId) -> Option<Vec<u8>> {
        let issuer = &self.config.provider(id)?.issuer;
        serde_json::to_vec(&self.provider(id)?.revocations.to_snapshot(issuer)).ok()
    }

    /// How many entries the list of `id` holds.
    pub fn revocation_entries(&self, id: ProviderId) -> usize {
        self.provider(id).map_or(0, |p| p.revocations.len())
    }
}

#[cfg(test)]
mod tests {
    use authflow_contract::revocation::{BannedSubject, RevokedSession, RevokedToken};

    use super::*;
    use crate::FilterConfig;

    const ISS: &str = "https://auth.test";
    const NOW_MS: u64 = 1_900_000_000_000;

    fn engine() -> Engine {
        let config = serde_json::json!({"providers": [{"name": "p", "issuer": ISS, "algorithms": ["EdDSA"],
            "jwks": {"remote": {"cluster": "auth", "path": "/jwks"}},
            "revocations": {"cluster": "auth", "path": "/v1/revocations"}}]});
        Engine::new(FilterConfig::from_json(config.to_string().as_bytes()).unwrap(), NOW_MS)
    }

    fn feed(cursor: &str, snapshot: bool, jti: &str) -> RevocationFeed {
        let expires_at = NOW_MS / 1000 + 900;
        RevocationFeed {
            issuer: ISS.into(),
            cursor: cursor.into(),
            snapshot,
            revoked_tokens: vec![RevokedToken { jti: jti.into(), expires_at }],
            revoked_sessions: vec![RevokedSession { sid: format!("s-{jti}"), expires_at }],
            banned_subjects: vec![BannedSubject { sub: format!("u-{jti}"), not_before: NOW_MS / 1000, expires_at }],
        }
    }

    fn fresh_at(e: &Engine) -> u64 {
        e.provider(ProviderId::FIRST).unwrap().revocations_fresh_at_ms
    }

    #[test]
    fn a_feed_is_news_only_when_its_cursor_moved() {
        let mut e = engine();
        let id = ProviderId::FIRST;
        assert_eq!(e.apply_feed(id, feed("1", true, "a"), NOW_MS + 10), Ok(FetchEnd::Fresh { etag: None }));
        assert_eq!(e.revocation_entries(id), 3);
        assert_eq!(fresh_at(&e), NOW_MS + 10, "current as of the answer");
        assert_eq!(e.apply_feed(id, feed("1", false, "a"), NOW_MS + 20), Ok(FetchEnd::NotModified), "same cursor: nothing new");
        assert_eq!(e.apply_feed(id, feed("2", false, "b"), NOW_MS + 30), Ok(FetchEnd::Fresh { etag: None }));
        assert_eq!(e.revocation_entries(id), 6, "a delta keeps what came before");

        let foreign = RevocationFeed { issuer: "https://other".into(), ..feed("3", true, "c") };
        assert_eq!(e.apply_feed(id, foreign, NOW_MS + 40), Err(ApplyError::WrongIssuer));
        assert_eq!((e.revocation_entries(id), fresh_at(&e)), (6, NOW_MS + 30), "a refused feed changes nothing");
    }

    #[test]
    fn another_vms_list_is_adopted_whole_or_not_at_all() {
        let (mut fetcher, mut adopter) = (engine(), engine());
        let id = ProviderId::FIRST;
        fetcher.apply_feed(id, feed("1", true, "a"), NOW_MS).unwrap();
        fetcher.apply_feed(id, feed("2", false, "b"), NOW_MS).unwrap();
        let shared = fetcher.revocation_snapshot(id).unwrap();
        assert!(adopter.adopt_revocations(id, &shared, NOW_MS));
        assert_eq!(adopter.revocation_entries(id), 6, "the merged list, not the last delta");
        assert_eq!(adopter.provider(id).unwrap().revocations.cursor(), Some("2"));

        assert!(!adopter.adopt_revocations(id, b"{not a list", NOW_MS));
        let foreign = serde_json::to_vec(&RevocationFeed { issuer: "https://other".into(), ..feed("9", true, "x") }).unwrap();
        assert!(!adopter.adopt_revocations(id, &foreign, NOW_MS));
        assert_eq!(adopter.revocation_entries(id), 6, "what did not apply changes nothing");
    }

    #[test]
    fn known_current_never_moves_back() {
        let mut e = engine();
        e.revocations_current_at(ProviderId::FIRST, NOW_MS + 5_000);
        e.revocations_current_at(ProviderId::FIRST, NOW_MS + 1_000);
        assert_eq!(fresh_at(&e), NOW_MS + 5_000);
    }
}

//! The per-request decision, start to finish, with no proxy in sight: the
//! proxy-wasm glue copies the request in, calls [`Engine::evaluate`], and
//! carries out the [`Outcome`]. Everything here runs in host unit tests.

use std::rc::Rc;

use authflow_contract::dpop::{DpopError, NonceKey, NONCE_HEADER};
use authflow_contract::KeySet;

use crate::cache::TokenCache;
use crate::config::{
    DeviceMode, DpopMode, FailureMode, FilterConfig, JwksSource, Policy, StalePolicy,
};
use crate::deny::{DenyReason, DenyResponse};
use crate::device::{self, DeviceCheck};
use crate::dpop::{self as dpop_check, ProofUse};
use crate::extract::{extract, ExtractError, Extracted};
use crate::fetch::KeyNeed;
use crate::policy::{authorize, policy_for, Requirement};
use crate::provider_id::{PerProvider, ProviderId};
use crate::request::Request;
use crate::revocation::RevocationList;
use crate::signature::SignatureChecker;
use crate::timing::{self, Piece};
use crate::verify::{self, check_times, VerifiedToken, VerifyError};

/// Per-provider state this VM decides with: keys and revocation list.
#[derive(Default)]
pub struct ProviderState {
    /// `None` until a key set was loaded once.
    pub keys: Option<KeySet>,
    pub revocations: RevocationList,
    /// When the revocation list was last known current (ms); staleness is
    /// measured from here once the list is loaded. A list never loaded is
    /// stale whatever this says.
    pub revocations_fresh_at_ms: u64,
}

pub struct Engine {
    pub config: FilterConfig,
    providers: PerProvider<ProviderState>,
    /// Checks signatures; the glue gives it the host's verifier ([`Engine::with_signatures`]).
    pub signatures: SignatureChecker,
    cache: TokenCache,
    /// The DPoP nonce key of this Envoy process (or of every replica), set by
    /// the glue when a provider requires nonces ([`crate::nonce`]).
    nonce_key: Option<NonceKey>,
    /// Until when a request may wait for a provider's first revocation list
    /// (the VM's start plus `key_wait_ms`): a list that has not come by then
    /// is not about to, and a request is answered by the staleness policy at
    /// once rather than held.
    first_list_wait_until_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allow(Allowed),
    Deny(Denied),
    /// The token's provider has no keys yet, or the token's `kid` is unknown:
    /// pause the request, fetch keys, and evaluate again (with `may_wait = false`).
    AwaitKeys {
        provider: ProviderId,
        unknown_kid: bool,
    },
    /// The token verified, but its provider's revocation list has not landed
    /// in this VM yet, so whether it was revoked is unknown: pause the
    /// request until the list comes, and evaluate again (with `may_wait =
    /// false` once the wait ended: the staleness policy then decides).
    AwaitRevocations {
        provider: ProviderId,
    },
}

/// What is done with a request for good: an [`Outcome`] that is not a
/// wait. The glue carries out only these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Allowed),
    Deny(Denied),
}

/// What a request that may wait would wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaited {
    Keys { provider: ProviderId, need: KeyNeed },
    RevocationList { provider: ProviderId },
}

impl Awaited {
    pub fn provider(&self) -> ProviderId {
        match *self {
            Awaited::Keys { provider, .. } | Awaited::RevocationList { provider } => provider,
        }
    }
}

impl Outcome {
    /// The decision, or what the request would wait for.
    pub fn settled(self) -> Result<Decision, Awaited> {
        match self {
            Outcome::Allow(a) => Ok(Decision::Allow(a)),
            Outcome::Deny(d) => Ok(Decision::Deny(d)),
            Outcome::AwaitKeys {
                provider,
                unknown_kid,
            } => {
                let need = if unknown_kid {
                    KeyNeed::UnknownKid
                } else {
                    KeyNeed::NotLoaded
                };
                Err(Awaited::Keys { provider, need })
            }
            Outcome::AwaitRevocations { provider } => Err(Awaited::RevocationList { provider }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Allowed {
    /// Identity headers to forward; `None` when there are none (most often:
    /// none configured), so a cache hit need not touch their allocation.
    pub headers: Option<Rc<[(String, String)]>>,
    pub notes: Notes,
    /// The provider whose token verified and is vouched for, if one did:
    /// its `forward_token` decides whether the token goes upstream.
    pub verified_by: Option<ProviderId>,
    /// On a public route (the request goes on anonymously): a token naming
    /// a configured issuer was refused, or several tokens came at once and
    /// none was read. The request's tokens go no further
    /// (`forward::credential_edits`).
    pub refused_token: bool,
    /// The DPoP proof this request was allowed with: the glue records it
    /// once across workers, and refuses the request if it was seen before
    /// ([`Engine::dpop_denied`]).
    pub proof: Option<ProofUse>,
    /// A fresh DPoP nonce for the response's `DPoP-Nonce`, when the proof's
    /// was past half its window ([`crate::nonce::renewal_due`]).
    pub dpop_nonce: Option<String>,
    /// The token that verified, if one did: the glue watches the stream
    /// while it is open, and closes it once the token is revoked or expires
    /// ([`crate::streams`], [`Engine::no_longer_admits`]).
    pub token: Option<Rc<VerifiedToken>>,
}

impl Allowed {
    pub fn identity_headers(&self) -> &[(String, String)] {
        self.headers.as_deref().unwrap_or(&[])
    }
}

/// Things worth counting about an allowed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notes {
    pub cache_hit: bool,
    pub authenticated: bool,
    /// Device mismatch let through because binding is in `report` mode.
    pub device_reported: Option<DeviceCheck>,
    /// Allowed on a revocation list older than the bound (`on_stale: allow`).
    pub stale_revocations: bool,
    /// Allowed unverified, no provider having ever loaded keys
    /// (`failure_mode: fail_open`).
    pub failed_open: bool,
    /// A public route received a token that did not verify; forwarded anonymously.
    pub public_invalid_token: Option<DenyReason>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub reason: DenyReason,
    pub response: DenyResponse,
    /// Device check detail for logs (which failure), when the reason is device related.
    pub device: Option<DeviceCheck>,
    /// The answer is a browser's `302` to sign in rather than the refusal
    /// `reason` describes (see [`crate::browser`]).
    pub browser_redirect: bool,
}

impl Engine {
    pub fn new(config: FilterConfig, now_ms: u64) -> Self {
        let providers = config.providers.map(|_, p| ProviderState {
            keys: match &p.jwks {
                JwksSource::Inline(set) => Some(set.clone()),
                JwksSource::Remote(_) => None,
            },
            revocations: RevocationList::default(),
            // Nothing vouches for a list yet: not the VM's start. A list
            // adopted from another VM is as fresh as the stamp shared with it.
            revocations_fresh_at_ms: 0,
        });
        let cache = TokenCache::new(config.cache_max_entries, [0, 0]);
        let first_list_wait_until_ms = now_ms.saturating_add(config.key_wait_ms);
        Engine {
            config,
            providers,
            signatures: SignatureChecker::own_only(),
            cache,
            nonce_key: None,
            first_list_wait_until_ms,
        }
    }

    /// The same engine issuing and checking DPoP nonces with `key`.
    pub fn with_nonce_key(mut self, key: NonceKey) -> Self {
        self.set_nonce_key(key);
        self
    }

    /// Issues and checks DPoP nonces with `key` from now on.
    pub fn set_nonce_key(&mut self, key: NonceKey) {
        self.nonce_key = Some(key);
    }

    /// The same engine checking signatures with `signatures`.
    pub fn with_signatures(self, signatures: SignatureChecker) -> Self {
        Engine { signatures, ..self }
    }

    /// The same engine, its token cache keyed with `hash_key` (random per VM;
    /// a new engine's cache is empty, so nothing is hashed with the old key).
    pub fn with_cache_key(self, hash_key: [u64; 2]) -> Self {
        let cache = TokenCache::new(self.config.cache_max_entries, hash_key);
        Engine { cache, ..self }
    }

    /// Installs a new key set for a provider. Cached verifications are dropped
    /// unless the set holds the same keys: a key that left the set (or was
    /// replaced under its `kid`) must not keep its tokens alive.
    pub fn set_keys(&mut self, provider: ProviderId, keys: KeySet) {
        if let Some(p) = self.providers.get_mut(provider) {
            // The same keys again (another worker's copy, an unconditional
            // refresh): the keys held stay, prepared as they are, and so do
            // the tokens they verified. Any other set drops every cached token.
            if p.keys.as_ref().is_some_and(|held| held.same_keys(&keys)) {
                return;
            }
            p.keys = Some(keys);
            self.cache.clear();
        }
    }

    /// What this VM decides with for one provider.
    pub fn provider(&self, id: ProviderId) -> Option<&ProviderState> {
        self.providers.get(id)
    }

    /// For the glue's background side: its revocation list and freshness.
    /// Keys go through [`set_keys`](Self::set_keys), which also drops the cache.
    pub fn provider_mut(&mut self, id: ProviderId) -> Option<&mut ProviderState> {
        self.providers.get_mut(id)
    }

    /// Every provider's state, in configuration order.
    pub fn providers(&self) -> impl Iterator<Item = &ProviderState> {
        self.providers.iter()
    }

    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// Decides a request; `may_wait`: it may be paused for its provider's
    /// keys or first revocation list.
    pub fn evaluate(&mut self, req: &Request, now_ms: u64, may_wait: bool) -> Outcome {
        let _span = timing::span(Piece::Evaluate);
        match self.evaluate_token(req, now_ms, may_wait) {
            Outcome::Deny(denied) => {
                let denied = self.in_route_scheme(req, denied);
                Outcome::Deny(self.for_browser(req, denied))
            }
            other => other,
        }
    }

    /// A refusal on a route whose every provider requires DPoP challenges in
    /// the `DPoP` scheme only, whatever was refused, and so does one of a
    /// token the client presented as `DPoP` where every provider takes DPoP
    /// (RFC 9449 §7.1: told in the scheme it used); elsewhere as it is (DPoP
    /// failures and a missing token carry their own challenges already).
    fn in_route_scheme(&self, req: &Request, denied: Denied) -> Denied {
        if matches!(
            denied.reason,
            DenyReason::Dpop(_) | DenyReason::MissingToken
        ) {
            return denied;
        }
        let Ok(required) = policy_for(&self.config, req) else {
            return denied;
        };
        let as_dpop = dpop_check::presented_as_dpop(req);
        let mut algorithms = Vec::new();
        for (_, p) in self
            .config
            .providers
            .with_ids()
            .filter(|(id, _)| required.admits(*id))
        {
            if p.dpop.mode == DpopMode::Off || (p.dpop.mode != DpopMode::Required && !as_dpop) {
                return denied;
            }
            for a in &p.dpop.algorithms {
                if !algorithms.contains(a) {
                    algorithms.push(*a);
                }
            }
        }
        if algorithms.is_empty() {
            return denied;
        }
        Denied {
            response: DenyReason::in_dpop_scheme(denied.response, &algorithms),
            ..denied
        }
    }

    /// A refusal a browser navigating on a `browser_redirect` route gets as
    /// a `302` to sign in; any other stays as it is.
    fn for_browser(&self, req: &Request, denied: Denied) -> Denied {
        match crate::browser::redirect(&self.config, req, denied.reason, &denied.response) {
            Some(response) => Denied {
                response,
                browser_redirect: true,
                ..denied
            },
            None => denied,
        }
    }

    fn evaluate_token(&mut self, req: &Request, now_ms: u64, may_wait: bool) -> Outcome {
        let Ok(required) = policy_for(&self.config, req) else {
            return self.deny(DenyReason::AmbiguousPath);
        };
        let public = *required.policy == Policy::Public;
        let token = match extract(req, &self.config.token_sources, self.config.max_token_bytes) {
            Ok(Extracted::Token(t)) => t,
            Ok(Extracted::None) if public => return Outcome::Allow(Allowed::default()),
            Ok(Extracted::None) => return self.deny_missing_token(&required),
            // Several tokens, or none readable: whose they are is unknown,
            // so none of them goes on (`Refused`'s effect, on a public route).
            Err(ExtractError::Malformed) => {
                return self.deny_or_public(public, true, DenyReason::InvalidRequest)
            }
            Err(ExtractError::TooLarge) => {
                return self.deny_or_public(public, false, DenyReason::TokenTooLarge)
            }
        };
        let now = now_ms / 1000;
        let (verified, cache_hit) = match self.cache.get(token) {
            Some(t) => (t, true),
            None => match self.verify_fresh(token, required, now, may_wait && !public) {
                Ok(t) => {
                    let t = Rc::new(t);
                    timing::timed(Piece::CacheInsert, || {
                        self.cache.insert(token, Rc::clone(&t), now)
                    });
                    (t, false)
                }
                Err(Fresh::Wait(o)) => return o,
                Err(Fresh::NoKeys(provider)) => {
                    return self.without_keys(required, provider, public, may_wait)
                }
                Err(Fresh::Deny(r)) => return self.deny_or_public(public, false, r),
                Err(Fresh::Refused(r)) => return self.deny_or_public(public, true, r),
            },
        };
        let mut notes = Notes {
            cache_hit,
            authenticated: true,
            ..Notes::default()
        };
        if let Err(r) = check_times(&verified, self.config.clock_skew_secs, now) {
            return self.deny_or_public(public, true, r);
        }
        // Another provider's token passes nothing here: refused before its
        // provider's revocation list is waited for or judged stale (a 503
        // the client would retry), as `authorize` would refuse it after.
        if !required.admits(verified.provider) {
            return self.deny_or_public(public, true, DenyReason::ProviderNotAllowed);
        }
        // Possession first (the proof, the device), then the revocation
        // list: a stolen bound token alone learns nothing from its answers,
        // not even whether its session was revoked.
        // The proof is new on every request: checked even when the token came from the cache.
        let proof = match self.config.provider(verified.provider) {
            Some(p) => match dpop_check::judge(
                &p.dpop,
                &verified,
                dpop_check::presented_as_dpop(req),
                req,
                now,
                &self.signatures,
                self.nonce_key.as_ref(),
            ) {
                Ok(proof) => proof.map(|p| ProofUse {
                    public_route: public,
                    ..p
                }),
                Err(DenyReason::Dpop(e)) if !public => {
                    return Outcome::Deny(self.dpop_denied(verified.provider, e, now))
                }
                Err(reason) => return self.deny_or_public(public, true, reason),
            },
            None => None,
        };
        match device::check(&self.config.device, &verified, req) {
            DeviceCheck::NotChecked | DeviceCheck::Match => {}
            failed if self.config.device.mode == DeviceMode::Report => {
                notes.device_reported = Some(failed)
            }
            failed => {
                let reason = match failed {
                    DeviceCheck::FingerprintMissing => DenyReason::DeviceFingerprintMissing,
                    _ => DenyReason::DeviceMismatch,
                };
                if public {
                    return self.deny_or_public(true, true, reason);
                }
                let mut denied = self.denied(reason, None);
                denied.device = Some(failed);
                return Outcome::Deny(denied);
            }
        }
        if let Some(state) = self.providers.get(verified.provider) {
            if self
                .config
                .provider(verified.provider)
                .is_some_and(|p| p.revocations.is_some())
            {
                // No list yet (a VM just started, or one emptied to take
                // another VM's copy): every revocation is unknown, so a VM
                // that just started waits for it as for keys; then (or later)
                // the staleness policy decides.
                let loaded = state.revocations.is_loaded();
                // (A wait "until" further away than any wait: the clock stepped back; over.)
                let first_wait = now_ms < self.first_list_wait_until_ms
                    && self.first_list_wait_until_ms - now_ms <= self.config.key_wait_ms;
                if !loaded && may_wait && !public && first_wait {
                    return Outcome::AwaitRevocations {
                        provider: verified.provider,
                    };
                }
                // Both ways: a last good poll that reads as later than now was
                // read before the wall clock stepped back, and how long ago
                // it really was is unknown; it vouches for nothing until the
                // next poll (or another VM's stamp) marks the list again.
                // A list never loaded is stale whatever the bound.
                let stale = !loaded
                    || now_ms.abs_diff(state.revocations_fresh_at_ms)
                        > self.config.revocation.max_staleness_ms;
                if stale {
                    match self.config.revocation.on_stale {
                        // A public route stays open, but a token that may have been
                        // revoked vouches for no one: anonymous, no identity headers.
                        StalePolicy::Deny => {
                            return self.deny_or_public(public, true, DenyReason::RevocationStale)
                        }
                        StalePolicy::Allow => notes.stale_revocations = true,
                    }
                }
            }
            if let Some(r) = state
                .revocations
                .check(&verified, self.config.clock_skew_secs, now)
            {
                return self.deny_or_public(public, true, r);
            }
        }
        if let Err((reason, scope)) = authorize(required, &verified) {
            // Public: another provider's token is no one's here (anonymous).
            if public {
                return self.deny_or_public(true, true, reason);
            }
            return Outcome::Deny(self.denied(reason, scope.as_deref()));
        }
        let headers =
            (!verified.identity_headers.is_empty()).then(|| Rc::clone(&verified.identity_headers));
        let dpop_nonce = match (proof, &self.nonce_key) {
            (
                Some(ProofUse {
                    renew_nonce: true, ..
                }),
                Some(key),
            ) => Some(crate::nonce::fresh(key, now)),
            _ => None,
        };
        Outcome::Allow(Allowed {
            headers,
            notes,
            verified_by: Some(verified.provider),
            refused_token: false,
            proof,
            dpop_nonce,
            token: Some(verified),
        })
    }

    /// Whether a token that let a stream through no longer does at
    /// `now_ms`: expired past the clock skew, signed with a key its provider
    /// no longer publishes (`UnknownKey`), or revoked in its provider's
    /// list (its route, device and proof were judged when the stream began,
    /// and do not change). A list gone stale ends nothing: it still holds
    /// every revocation it learnt.
    pub fn no_longer_admits(&self, token: &VerifiedToken, now_ms: u64) -> Option<DenyReason> {
        let now = now_ms / 1000;
        let skew = self.config.clock_skew_secs;
        if now > token.expires_at.saturating_add(skew) {
            return Some(DenyReason::Expired);
        }
        let p = self.providers.get(token.provider)?;
        // A key withdrawn (leaked: whatever else it signed may be forged),
        // matched by its material, not by the `kid` a forger may leave out;
        // another key added or dropped ends nothing.
        if p.keys
            .as_ref()
            .is_some_and(|k| !k.keys.iter().any(|e| e.spki == token.key))
        {
            return Some(DenyReason::UnknownKey);
        }
        p.revocations.check(token, skew, now)
    }

    /// What becomes of a request allowed with `proof` when the replay store
    /// refuses that proof (seen before, or the store full): refused, or on a
    /// public route forwarded anonymously, its identity dropped.
    pub fn proof_refused(&self, proof: &ProofUse, error: DpopError, now: u64) -> Decision {
        if proof.public_route {
            return Decision::Allow(Allowed {
                notes: Notes {
                    public_invalid_token: Some(DenyReason::Dpop(error)),
                    ..Notes::default()
                },
                refused_token: true,
                ..Allowed::default()
            });
        }
        Decision::Deny(self.dpop_denied(proof.provider, error, now))
    }

    /// The refusal of a DPoP failure, with the challenge of the token's
    /// provider (RFC 9449 §7.1); a missing or stale nonce comes with a fresh
    /// one in `DPoP-Nonce` (§9). `now` in seconds.
    pub fn dpop_denied(&self, provider: ProviderId, error: DpopError, now: u64) -> Denied {
        let reason = DenyReason::Dpop(error);
        let mut response = match self.config.provider(provider) {
            Some(p) => DenyReason::dpop_response(error, &p.dpop),
            None => reason.response(self.config.retry_after_secs, None),
        };
        if let (true, Some(key)) = (
            matches!(error, DpopError::NonceMissing | DpopError::NonceInvalid),
            &self.nonce_key,
        ) {
            response
                .headers
                .push((NONCE_HEADER.to_owned(), crate::nonce::fresh(key, now)));
        }
        Denied {
            reason,
            response,
            device: None,
            browser_redirect: false,
        }
    }

    /// Decides a request for good: no waiting for keys, it is decided with
    /// the keys there are.
    pub fn decide_now(&mut self, req: &Request, now_ms: u64) -> Decision {
        // `evaluate` asks for no wait when told it may not; were it ever to,
        // the request is answered as one without keys, never let through.
        self.evaluate(req, now_ms, false)
            .settled()
            .unwrap_or_else(|_| Decision::Deny(self.denied(DenyReason::KeysUnavailable, None)))
    }

    /// [`Engine::decide_now`] for a request that could not wait because the
    /// paused list is full, or whose wait ran out while the fetch is still
    /// out: never failed open. Either is a flood or a slow fetch (at every
    /// start, the first), not an auth system found down: failing open
    /// there let junk tokens through unchecked.
    pub fn decide_now_without_failing_open(&mut self, req: &Request, now_ms: u64) -> Decision {
        match self.decide_now(req, now_ms) {
            Decision::Allow(allowed) if allowed.notes.failed_open => {
                Decision::Deny(self.denied(DenyReason::KeysUnavailable, None))
            }
            decision => decision,
        }
    }

    fn verify_fresh(
        &self,
        token: &str,
        required: Requirement,
        now: u64,
        may_wait: bool,
    ) -> Result<VerifiedToken, Fresh> {
        let mut payload = Vec::new();
        let screened =
            verify::screen(token, &self.config, &mut payload).map_err(|e| match e.provider {
                Some(_) => Fresh::Refused(e.reason),
                None => Fresh::Deny(e.reason),
            })?;
        // A token naming a provider the route does not admit passes nothing
        // here, whatever its keys: refused before any key is looked for (no
        // wait and no refetch for its `kid`), as `without_keys` does.
        if !required.admits(screened.provider) {
            return Err(Fresh::Refused(DenyReason::ProviderNotAllowed));
        }
        let Some(keys) = self
            .providers
            .get(screened.provider)
            .and_then(|p| p.keys.as_ref())
        else {
            return Err(Fresh::NoKeys(screened.provider));
        };
        match verify::verify(token, &screened, keys, &self.signatures, &self.config, now) {
            Ok(t) => Ok(t),
            // Only a remote key set can learn a new kid; an inline one never will.
            Err(VerifyError::UnknownKid) if may_wait && self.remote_keys(screened.provider) => {
                Err(Fresh::Wait(Outcome::AwaitKeys {
                    provider: screened.provider,
                    unknown_kid: true,
                }))
            }
            Err(VerifyError::UnknownKid) => Err(Fresh::Refused(DenyReason::UnknownKey)),
            Err(VerifyError::Deny(r)) => Err(Fresh::Refused(r)),
        }
    }

    /// A token naming `provider` (unverified: anyone can write any `iss`),
    /// which has no keys in this VM. Kept out of line: inlined, it was copied
    /// into each caller of `evaluate` (187 bytes more in the module).
    #[inline(never)]
    fn without_keys(
        &self,
        required: Requirement,
        provider: ProviderId,
        public: bool,
        may_wait: bool,
    ) -> Outcome {
        // No key would let this token pass here: no wait, and no failing open.
        if !required.admits(provider) {
            return self.deny_or_public(public, true, DenyReason::ProviderNotAllowed);
        }
        if may_wait && !public {
            return Outcome::AwaitKeys {
                provider,
                unknown_kid: false,
            };
        }
        // Failing open is for the auth system being down, not for a token
        // naming the one provider without keys while the others hold theirs.
        // Nothing the token claims is believed: only a route asking for no
        // more than a caller passes, with no identity.
        let down = self.providers.iter().all(|p| p.keys.is_none());
        if self.config.failure_mode == FailureMode::FailOpen
            && down
            && required.policy.opens_without_keys()
        {
            return Outcome::Allow(Allowed {
                notes: Notes {
                    failed_open: true,
                    ..Notes::default()
                },
                ..Allowed::default()
            });
        }
        self.deny_or_public(public, true, DenyReason::KeysUnavailable)
    }

    fn remote_keys(&self, provider: ProviderId) -> bool {
        matches!(
            self.config.provider(provider).map(|p| &p.jwks),
            Some(JwksSource::Remote(_))
        )
    }

    /// On a public route a failed token only means "anonymous"; elsewhere it
    /// is a refusal. `ours`: the token names a configured issuer, or the
    /// tokens were several (then they go no further: `Allowed::refused_token`).
    fn deny_or_public(&self, public: bool, ours: bool, reason: DenyReason) -> Outcome {
        if public {
            Outcome::Allow(Allowed {
                notes: Notes {
                    public_invalid_token: Some(reason),
                    ..Notes::default()
                },
                refused_token: ours,
                ..Allowed::default()
            })
        } else {
            self.deny(reason)
        }
    }

    fn deny(&self, reason: DenyReason) -> Outcome {
        Outcome::Deny(self.denied(reason, None))
    }

    /// No token: the challenges name what the route's providers accept (DPoP or not).
    fn deny_missing_token(&self, required: &Requirement) -> Outcome {
        let dpop = self
            .config
            .providers
            .with_ids()
            .filter(|(id, _)| required.admits(*id))
            .map(|(_, p)| &p.dpop);
        Outcome::Deny(Denied {
            response: DenyReason::missing_token_response(dpop),
            ..self.denied(DenyReason::MissingToken, None)
        })
    }

    fn denied(&self, reason: DenyReason, scope: Option<&str>) -> Denied {
        Denied {
            reason,
            response: reason.response(self.config.retry_after_secs, scope),
            device: None,
            browser_redirect: false,
        }
    }
}

enum Fresh {
    Wait(Outcome),
    /// Refused before a provider was found for the token (no configured
    /// issuer, or not a token at all).
    Deny(DenyReason),
    /// Refused, the token naming a configured issuer.
    Refused(DenyReason),
    /// The token's provider has no keys yet: see [`Engine::without_keys`].
    NoKeys(ProviderId),
}

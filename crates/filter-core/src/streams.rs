//! Streams let through with a token, watched while they stay open. A token
//! is judged when a request starts, but a WebSocket, a server-sent event
//! stream, a gRPC stream or a long poll can go on for hours: revoked (a
//! logout, a ban), expired, or signed with a key its issuer withdrew, its
//! token must not keep it flowing. The glue
//! registers each allowed request with its verified token and forgets it
//! when Envoy deletes the stream; every [`SWEEP_EVERY_MS`] it asks which
//! ones ended ([`OpenStreams::sweep`]) and closes them.
//!
//! Only streams open for [`MIN_AGE_MS`] are judged: an ordinary request
//! still in flight when its token is revoked was let through before the
//! revocation arrived and is over within milliseconds; resetting it would
//! only hide an answer the backend already gave. The logout request itself
//! is one: the service publishes the revocation before it answers. A
//! stream's age counts from the first sweep that sees it, not from the
//! glue's clock when it was let through: between ticks that clock is the
//! last tick's reading, and on a starved worker a tick comes a second late.
//!
//! A `Vec`, not a map: a worker holds few requests at once (most last
//! milliseconds), and another hash map's code would cost the module more
//! than the scan costs a request.

use std::rc::Rc;

use crate::deny::DenyReason;
use crate::engine::Engine;
use crate::verify::VerifiedToken;

/// How often the open streams are judged again: a revocation reaches an
/// open stream at most this long after it reached the worker's list.
pub const SWEEP_EVERY_MS: u64 = 500;

/// How long a stream has been open before it is judged again.
pub const MIN_AGE_MS: u64 = 1_000;

/// A stream no sweep has seen yet: the first one takes it as opened then.
const NOT_SEEN: u64 = u64::MAX;

#[derive(Default)]
pub struct OpenStreams {
    /// Context id, the token it was let through with, when a sweep first
    /// saw it (`NOT_SEEN` until then).
    open: Vec<(u32, Rc<VerifiedToken>, u64)>,
    next_sweep_ms: u64,
}

impl OpenStreams {
    /// Watches stream `context_id`, let through with `token`. Every one: no
    /// bound of its own, for a stream left unwatched past one would outlive
    /// its token (a user filling the list with his own streams before the
    /// one he means to keep through a ban). Envoy's limits on open streams
    /// bound the list, at 24 bytes an entry beside Envoy's kilobytes.
    pub fn opened(&mut self, context_id: u32, token: Rc<VerifiedToken>) {
        self.open.push((context_id, token, NOT_SEEN));
    }

    /// Forgets stream `context_id` (Envoy deleted it). Looked for from the
    /// end: a request of milliseconds, pushed last, is found at once behind
    /// however many long streams were opened before it.
    pub fn closed(&mut self, context_id: u32) {
        if let Some(at) = self.open.iter().rposition(|(id, ..)| *id == context_id) {
            self.open.swap_remove(at);
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// The streams open for [`MIN_AGE_MS`] whose token the engine no longer
    /// admits at `now_ms` (revoked, expired past the clock skew, or its key
    /// withdrawn: [`Engine::no_longer_admits`]), each
    /// with why; they are forgotten here, for the caller to close. Nothing
    /// before the next sweep is due, or while the clock reads before the
    /// last one (stepped back: the next sweep is due at once, and a stream
    /// first seen "later" is taken as first seen now).
    pub fn sweep(&mut self, engine: &Engine, now_ms: u64) -> Vec<(u32, DenyReason)> {
        let due = now_ms >= self.next_sweep_ms || self.next_sweep_ms - now_ms > SWEEP_EVERY_MS;
        if !due || self.open.is_empty() {
            return Vec::new();
        }
        self.next_sweep_ms = now_ms.saturating_add(SWEEP_EVERY_MS);
        let mut ended = Vec::new();
        self.open.retain_mut(|(id, token, since_ms)| {
            *since_ms = (*since_ms).min(now_ms);
            if now_ms - *since_ms < MIN_AGE_MS {
                return true;
            }
            match engine.no_longer_admits(token, now_ms) {
                Some(reason) => {
                    ended.push((*id, reason));
                    false
                }
                None => true,
            }
        });
        ended
    }
}

//! Requests paused until their provider's keys arrive: a bounded list, and
//! when each is decided for good.

use crate::config::MAX_KEY_WAIT_MS;
use crate::engine::Awaited;
use crate::provider_id::ProviderId;
use crate::request::Request;

/// At most this many requests wait for keys in one VM; more are answered at
/// once with the keys there are. Waiting only ever makes sense while one
/// fetch is in flight, so a full list means a flood, not a slow upstream.
///
/// Small, too, because they are settled together when that fetch ends, and
/// Envoy runs the local replies and resumptions a VM call asked for after
/// it returns, each reply entering the VM again (its response headers) and
/// running the ones queued after it inside that entry: they nest, and about
/// 300 exhaust V8's stack and kill the VM for good, every later request of
/// the worker refused (`tests/glue_e2e.rs`,
/// `forged_kids_waiting_on_one_refetch_do_not_kill_the_vm`).
pub const MAX_PAUSED_REQUESTS: usize = 128;

/// And at most this many bytes of their headers (4 KiB each on average): a
/// paused request keeps its header map, up to Envoy's header limit (60 KiB
/// by default), in a VM whose memory never shrinks.
pub const MAX_PAUSED_HEADER_BYTES: usize = 4 << 20;

/// One request waiting for keys.
pub struct PausedRequest {
    pub context_id: u32,
    pub request: Request,
    pub provider: ProviderId,
    /// The provider's fetch generation when it paused: once that moves, the
    /// fetch it waited for has ended and it is decided with what there is.
    pub generation: u64,
    pub deadline_ms: u64,
}

impl PausedRequest {
    /// Whether a request still `awaited` after its latest evaluation is
    /// decided for good now: its wait ran out, or the key fetch it waited
    /// for ended without its key. A wait for the revocation list goes on
    /// after keys came (they often come first at startup).
    /// A deadline further away than any wait sets (`key_wait_ms` is at most
    /// [`MAX_KEY_WAIT_MS`]) means the wall clock stepped back since: the
    /// wait has run out, not restarted for the size of the step.
    pub fn final_round(&self, awaited: &Awaited, current_generation: u64, now_ms: u64) -> bool {
        now_ms >= self.deadline_ms
            || self.deadline_ms - now_ms > MAX_KEY_WAIT_MS
            || (matches!(awaited, Awaited::Keys { .. }) && current_generation != self.generation)
    }
}

#[derive(Default)]
pub struct PausedRequests {
    list: Vec<PausedRequest>,
    /// The header bytes the list holds.
    bytes: usize,
}

impl PausedRequests {
    /// Adds a request, or hands it back when the list is full.
    pub fn push(&mut self, paused: PausedRequest) -> Result<(), Box<PausedRequest>> {
        let bytes = self
            .bytes
            .saturating_add(paused.request.headers().held_bytes());
        if self.list.len() >= MAX_PAUSED_REQUESTS || bytes > MAX_PAUSED_HEADER_BYTES {
            return Err(Box::new(paused));
        }
        self.bytes = bytes;
        self.list.push(paused);
        Ok(())
    }

    /// Forgets a request whose stream went away.
    pub fn remove(&mut self, context_id: u32) {
        if !self.list.is_empty() {
            self.list.retain(|p| p.context_id != context_id);
            self.bytes = self
                .list
                .iter()
                .map(|p| p.request.headers().held_bytes())
                .sum();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Takes every request out; the caller puts back those still waiting.
    pub fn take_all(&mut self) -> Vec<PausedRequest> {
        self.bytes = 0;
        std::mem::take(&mut self.list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::KeyNeed;

    fn paused(context_id: u32) -> PausedRequest {
        PausedRequest {
            context_id,
            request: Request::from_headers(vec![], None),
            provider: ProviderId::FIRST,
            generation: 3,
            deadline_ms: 1_000,
        }
    }

    #[test]
    fn the_list_is_bounded_and_overflow_is_handed_back() {
        let mut list = PausedRequests::default();
        for id in 0..MAX_PAUSED_REQUESTS {
            assert!(list.push(paused(id as u32)).is_ok());
        }
        let over = list.push(paused(99_999)).err().map(|p| p.context_id);
        assert_eq!(
            over,
            Some(99_999),
            "the one over the bound comes back to be answered at once"
        );
        assert_eq!(list.len(), MAX_PAUSED_REQUESTS);
        list.remove(5);
        assert_eq!(list.len(), MAX_PAUSED_REQUESTS - 1);
        assert!(list.push(paused(99_999)).is_ok(), "room again");
    }

    #[test]
    fn decided_for_good_when_the_fetch_ended_or_the_wait_ran_out() {
        let p = paused(1);
        let keys = Awaited::Keys {
            provider: ProviderId::FIRST,
            need: KeyNeed::NotLoaded,
        };
        let list = Awaited::RevocationList {
            provider: ProviderId::FIRST,
        };
        assert!(!p.final_round(&keys, 3, 999));
        assert!(p.final_round(&keys, 4, 999), "its fetch ended");
        assert!(p.final_round(&keys, 3, 1_000), "deadline");
        assert!(
            !p.final_round(&list, 4, 999),
            "keys came: the list is still awaited"
        );
        assert!(p.final_round(&list, 4, 1_000), "deadline");
    }

    /// The wall clock steps back an hour while a request waits for its
    /// provider's first revocation list (which a down feed never brings):
    /// it is decided once no wait this list sets can still be running, not
    /// an hour later when the clock reads its old deadline again.
    #[test]
    fn a_clock_step_back_does_not_stretch_a_wait() {
        let now = 1_900_000_000_000;
        let p = PausedRequest {
            deadline_ms: now + 3_000,
            ..paused(1)
        };
        let list = Awaited::RevocationList {
            provider: ProviderId::FIRST,
        };
        let keys = Awaited::Keys {
            provider: ProviderId::FIRST,
            need: KeyNeed::NotLoaded,
        };
        let stepped = now - 3_600_000;
        assert!(!p.final_round(&list, 3, now + 1), "still within its wait");
        assert!(p.final_round(&list, 3, stepped), "the clock stepped back");
        assert!(p.final_round(&keys, 3, stepped), "the clock stepped back");
    }

    /// Paused requests keep their whole header map, and the count bound
    /// alone lets 128 requests of Envoy's 60 KiB header limit (cheap to
    /// send over HTTP/2: HPACK repeats a header for a byte or two) hold
    /// 7.5 MiB in a VM whose memory never shrinks; a forged token with an
    /// unknown `kid` is enough to make them wait. They are bounded in bytes too.
    #[test]
    fn the_list_is_bounded_in_header_bytes() {
        let big = "a".repeat(60 * 1024);
        let mut list = PausedRequests::default();
        let mut held = 0;
        for id in 0..MAX_PAUSED_REQUESTS {
            let request = Request::from_headers(vec![("cookie".into(), big.clone())], None);
            if list
                .push(PausedRequest {
                    request,
                    ..paused(id as u32)
                })
                .is_ok()
            {
                held += 1;
            }
        }
        assert!(
            held * 60 * 1024 <= MAX_PAUSED_HEADER_BYTES,
            "{held} requests of 60 KiB held"
        );
        list.remove(0);
        let small = Request::from_headers(vec![("authorization".into(), "Bearer x".into())], None);
        assert!(
            list.push(PausedRequest {
                request: small,
                ..paused(7)
            })
            .is_ok(),
            "room again"
        );
    }
}

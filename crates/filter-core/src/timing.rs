//! Where a request's time goes inside Envoy. `make bench` measures Envoy's
//! CPU per request as a whole; a module built with the `timing` feature
//! (`make wasm-timing`) also times the pieces below with the host's clock and
//! logs their means every [`REPORT_EVERY`] requests, so the filter's own work
//! can be told from Envoy's (docs/bench.md, "Inside Envoy").
//!
//! Without the feature a [`Span`] is empty and every call here compiles to
//! nothing: the shipped module is unchanged.

/// The timed pieces, in report order (`PIECES`; `piece as usize` is its
/// slot). Nested ones are included in their parents' times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// The whole request-headers callback.
    Callback,
    /// Reading the request headers the configuration needs.
    HeaderRead,
    /// `Engine::evaluate`: the decision.
    Evaluate,
    /// A fresh token's split, base64 and JSON (`verify::screen`).
    Screen,
    /// One signature check, whoever makes it (a token's or a proof's).
    Signature,
    /// A fresh token's claims made into a `VerifiedToken`.
    Claims,
    /// A verified token into the cache.
    CacheInsert,
    /// A DPoP proof judged, signature included.
    Proof,
    /// A DPoP proof's parse.
    ProofParse,
    /// Carrying the decision out: header edits, the replay store, responses.
    CarryOut,
    /// A DPoP proof recorded in the shared replay store.
    ReplayStore,
}

#[cfg(feature = "timing")]
const PIECES: [Piece; 11] = [
    Piece::Callback,
    Piece::HeaderRead,
    Piece::Evaluate,
    Piece::Screen,
    Piece::Signature,
    Piece::Claims,
    Piece::CacheInsert,
    Piece::Proof,
    Piece::ProofParse,
    Piece::CarryOut,
    Piece::ReplayStore,
];

/// Requests (request-headers callbacks) per report.
pub const REPORT_EVERY: u64 = 20_000;

/// Times its piece from creation to drop.
#[must_use = "a span times until it is dropped"]
pub struct Span {
    #[cfg(feature = "timing")]
    piece: Piece,
    #[cfg(feature = "timing")]
    start_ns: u64,
}

/// Starts timing `piece`.
#[inline(always)]
pub fn span(piece: Piece) -> Span {
    #[cfg(feature = "timing")]
    {
        Span {
            piece,
            start_ns: clock::now_ns(),
        }
    }
    #[cfg(not(feature = "timing"))]
    {
        let _ = piece;
        Span {}
    }
}

/// Runs `work`, timed as `piece`.
#[inline(always)]
pub fn timed<T>(piece: Piece, work: impl FnOnce() -> T) -> T {
    let _span = span(piece);
    work()
}

/// The host's clock, in nanoseconds; set once per VM by the glue.
#[inline(always)]
pub fn set_clock(now_ns: fn() -> u64) {
    #[cfg(feature = "timing")]
    clock::set(now_ns);
    #[cfg(not(feature = "timing"))]
    let _ = now_ns;
}

/// The means (µs) of the last [`REPORT_EVERY`] requests, once that many
/// have been timed; then counting starts again.
#[inline(always)]
pub fn report() -> Option<String> {
    #[cfg(feature = "timing")]
    {
        clock::report()
    }
    #[cfg(not(feature = "timing"))]
    {
        None
    }
}

#[cfg(feature = "timing")]
impl Drop for Span {
    fn drop(&mut self) {
        clock::record(self.piece, clock::now_ns().saturating_sub(self.start_ns));
    }
}

#[cfg(feature = "timing")]
mod clock {
    use std::cell::{Cell, RefCell};
    use std::fmt::Write as _;

    use super::{Piece, PIECES, REPORT_EVERY};

    thread_local! {
        static CLOCK: Cell<Option<fn() -> u64>> = const { Cell::new(None) };
        /// (total ns, count) per piece, as `PIECES`.
        static TOTALS: RefCell<[(u64, u64); PIECES.len()]> = const { RefCell::new([(0, 0); PIECES.len()]) };
    }

    pub fn set(now_ns: fn() -> u64) {
        CLOCK.with(|c| c.set(Some(now_ns)));
    }

    pub fn now_ns() -> u64 {
        CLOCK.with(|c| c.get().map_or(0, |f| f()))
    }

    pub fn record(piece: Piece, ns: u64) {
        TOTALS.with(|t| {
            if let Ok(mut t) = t.try_borrow_mut() {
                if let Some((total, count)) = t.get_mut(piece as usize) {
                    *total = total.saturating_add(ns);
                    *count += 1;
                }
            }
        });
    }

    pub fn report() -> Option<String> {
        TOTALS.with(|t| {
            let mut t = t.try_borrow_mut().ok()?;
            let requests = t.first().map_or(0, |(_, count)| *count);
            if requests < REPORT_EVERY {
                return None;
            }
            let mut line =
                format!("authflow timing, µs (mean, times per request) over {requests} requests:");
            for (piece, (total, count)) in PIECES.iter().zip(t.iter()) {
                if *count > 0 {
                    let _ = write!(
                        line,
                        " {piece:?} {:.2} ({:.2})",
                        *total as f64 / *count as f64 / 1000.0,
                        *count as f64 / requests as f64
                    );
                }
            }
            *t = [(0, 0); PIECES.len()];
            Some(line)
        })
    }
}

#[cfg(all(test, feature = "timing"))]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! { static NOW: Cell<u64> = const { Cell::new(0) }; }

    fn fake_now() -> u64 {
        NOW.with(Cell::get)
    }

    #[test]
    fn each_piece_has_its_own_slot_in_report_order() {
        for (slot, piece) in PIECES.iter().enumerate() {
            assert_eq!(*piece as usize, slot, "{piece:?}");
        }
    }

    #[test]
    fn spans_are_summed_per_piece_and_reported_once_enough_requests_were_timed() {
        set_clock(fake_now);
        for _ in 0..REPORT_EVERY {
            assert!(report().is_none());
            let _callback = span(Piece::Callback);
            let signature = span(Piece::Signature);
            NOW.with(|n| n.set(n.get() + 2_000));
            drop(signature);
            NOW.with(|n| n.set(n.get() + 1_000));
        }
        let line = report().unwrap_or_default();
        assert!(line.contains("over 20000 requests"), "{line}");
        assert!(line.contains("Callback 3.00 (1.00)"), "{line}");
        assert!(line.contains("Signature 2.00 (1.00)"), "{line}");
        assert!(!line.contains("Screen"), "{line}");
        assert!(report().is_none(), "counting starts again");
    }
}

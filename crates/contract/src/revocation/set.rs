//! The revocation list of one issuer, for the filter and the service alike.
//!
//! Two sorted runs in the compact layout ([`Blob`]): a large `base` and a
//! small `overlay` holding what deltas added since the base was built. A
//! lookup searches both in place. A delta rewrites only the overlay (a few
//! kB); once the overlay passes [`COMPACT_AT`] entries both are merged into a
//! new base. A snapshot replaces both. Deltas only ever add entries, so a
//! value found in either run is revoked, whatever the other one says.

use super::blob::{sort_entries, Blob, BlobError, Entry, Header};
use super::digest::{Kind, SetKey};
use super::{still_needed, RevocationFeed};

/// Overlay size that triggers a merge into the base. Small enough that a
/// delta rewrites ~100 kB at most; large enough that a 1M-entry base is
/// rewritten once per thousands of revocations.
pub const COMPACT_AT: usize = 4096;

/// How far the clock may step back below the latest time the list forgot
/// entries at before the list stops vouching for itself. An entry forgotten
/// at a time the clock later steps back from is gone for good (deltas never
/// resend it), so a revoked token it covered passes again, for at most the
/// step. Steps up to this are within what a time daemon corrects; a larger
/// one needs the whole list again (a snapshot).
pub const CLOCK_STEP_BACK_TOLERANCE_SECS: u64 = 5;

/// Why a token is revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoked {
    SubjectBanned,
    SessionRevoked,
    TokenRevoked,
}

/// Which runs a lookup searches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runs {
    Both,
    /// The overlay alone: enough for a token already found clean in the base
    /// held. Deltas only add entries, so what the base said still stands
    /// (time only forgets entries), and a delta costs a lookup in its few kB,
    /// not in a base of a million entries.
    Overlay,
}

/// The claims of a token a lookup needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Probe<'a> {
    pub jti: Option<&'a str>,
    pub sid: Option<&'a str>,
    pub sub: Option<&'a str>,
    pub issued_at: Option<u64>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ApplyError {
    WrongIssuer,
    TooManyEntries(usize),
    /// A delta computed with another key than the list it extends.
    KeyMismatch,
    /// A delta for a list that does not hold what it extends: none loaded
    /// (a delta only says what changed since a cursor; it is no list on its
    /// own), or, in a filter, another list than the poll it answers was
    /// sent from. Only a snapshot loads a list.
    DeltaWithoutBase,
    /// In a filter: a snapshot answering a poll sent before the list held
    /// now was taken (another VM's newer copy): it may be older, and would
    /// bring back what the newer list revokes.
    Superseded,
    /// A delta for a list that forgot entries at a later time than now (the
    /// clock stepped back, see [`RevocationSet::clock_stepped_back`]): what
    /// it forgot may still be needed, and only a snapshot brings it back.
    ClockSteppedBack,
    Malformed(BlobError),
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::WrongIssuer => write!(f, "feed is for another issuer"),
            Self::TooManyEntries(n) => write!(
                f,
                "feed would hold {n} live entries, over the configured maximum"
            ),
            Self::KeyMismatch => write!(
                f,
                "delta does not extend the list held (another digest key)"
            ),
            Self::DeltaWithoutBase => write!(f, "delta for another list than the one held"),
            Self::Superseded => {
                write!(f, "snapshot for a poll sent before the list held was taken")
            }
            Self::ClockSteppedBack => write!(
                f,
                "delta after the clock stepped back below the list's forget time"
            ),
            Self::Malformed(e) => write!(f, "{e}"),
        }
    }
}

/// What an accepted feed changed (what a filter must share again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new base (and an empty overlay): a snapshot or a compaction.
    Base,
    /// Only the overlay.
    Overlay,
}

#[derive(Clone, Debug, Default)]
pub struct RevocationSet {
    base: Blob,
    overlay: Blob,
    /// False until a feed was applied (or a shared copy adopted).
    loaded: bool,
    /// The latest time (Unix seconds) the list forgot entries at: a feed
    /// applied then, or, for a copy taken from another VM, what the VMs
    /// that hold it say of it ([`learn_forgot_at`](Self::learn_forgot_at);
    /// 0: not known yet, or never).
    forgot_at: u64,
}

impl RevocationSet {
    /// The cursor of the newest feed applied.
    pub fn cursor(&self) -> Option<&str> {
        self.loaded.then(|| self.overlay.cursor())
    }

    /// Whether a feed (or another VM's base) was ever taken in: an empty
    /// list that was never loaded says nothing about what is revoked.
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    /// Entries held (a value revoked again since the base was built counts twice until the next compaction).
    pub fn len(&self) -> usize {
        self.base.len() + self.overlay.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the clock stepped back more than
    /// [`CLOCK_STEP_BACK_TOLERANCE_SECS`] below a time the list forgot
    /// entries at. Those entries may cover tokens that pass again now, and
    /// no delta brings them back: until a snapshot replaces it, the list
    /// lacks revocations it cannot name.
    pub fn clock_stepped_back(&self, now: u64) -> bool {
        now.saturating_add(CLOCK_STEP_BACK_TOLERANCE_SECS) < self.forgot_at
    }

    /// The latest time the list forgot entries at, for the VMs that take a
    /// copy of it (see [`learn_forgot_at`](Self::learn_forgot_at)).
    pub fn forgot_at(&self) -> u64 {
        self.forgot_at
    }

    /// A VM holding this list (at this cursor) says it forgot entries at
    /// `at`. A copy's forget time is its builder's, not the time it was
    /// taken: a VM that took the list after it was built forgot nothing
    /// then, and one that took it after the clock stepped back below that
    /// time must notice. The latest time heard (or this VM's own, when it
    /// applied feeds to the list) stands: a VM that took a copy and has not
    /// heard of its builder says 0, and two VMs that applied the same feed
    /// may have forgotten at different times.
    pub fn learn_forgot_at(&mut self, at: u64) {
        self.forgot_at = self.forgot_at.max(at);
    }

    pub fn key(&self) -> SetKey {
        self.base.key()
    }

    /// Memory the list holds.
    pub fn bytes_held(&self) -> usize {
        self.base.bytes_held() + self.overlay.bytes_held()
    }

    pub fn base(&self) -> &Blob {
        &self.base
    }

    pub fn overlay(&self) -> &Blob {
        &self.overlay
    }

    /// Applies a feed in the compact layout: a snapshot replaces the list, a
    /// delta extends it (and is refused by a list not loaded). Forgets what
    /// no token could outlive any more. A feed that would push the list's
    /// live entries past `max_entries` is refused whole.
    pub fn apply(
        &mut self,
        feed: Blob,
        issuer: &str,
        max_entries: usize,
        skew_secs: u64,
        now: u64,
    ) -> Result<Change, ApplyError> {
        if feed.issuer() != issuer {
            return Err(ApplyError::WrongIssuer);
        }
        // The next poll would send no cursor (a request for a snapshot), and
        // a `304` or a delta answering it would speak of no list.
        if feed.cursor().is_empty() {
            return Err(ApplyError::Malformed(super::blob::BlobError("no cursor")));
        }
        if feed.is_snapshot() {
            let mut base = feed;
            base.retain_needed(skew_secs, now);
            if base.len() > max_entries {
                return Err(ApplyError::TooManyEntries(base.len()));
            }
            self.install_base(base);
            // The whole list, forgotten at `now` alone.
            self.forgot_at = now;
            return Ok(Change::Base);
        }
        if !self.loaded {
            return Err(ApplyError::DeltaWithoutBase);
        }
        if self.clock_stepped_back(now) {
            return Err(ApplyError::ClockSteppedBack);
        }
        if feed.key() != self.key() {
            return Err(ApplyError::KeyMismatch);
        }
        let header = Header {
            snapshot: false,
            base_id: self.base.base_id(),
            ..feed.header()
        };
        // A copy of the small overlay: a refused feed leaves the list as it was.
        let overlay = Blob::merge_into(self.overlay.clone(), &feed, &header, skew_secs, now);
        let total = self.base.len() + overlay.len();
        // The base forgets its dead entries only when it is rebuilt: until
        // then they count here, and a list that was once full would refuse
        // every delta after they died (and go stale, revocations unheard).
        // The bound is on live entries: counted, then the base is rebuilt
        // without the dead ones (the merge below drops them).
        let over = total > max_entries;
        if over {
            // The overlay was just merged at `now`: every entry of it is live.
            let live = self.base.count_needed(skew_secs, now) + overlay.len();
            if live > max_entries {
                return Err(ApplyError::TooManyEntries(live));
            }
        }
        self.forgot_at = self.forgot_at.max(now);
        if overlay.len() <= COMPACT_AT && !over {
            self.overlay = overlay;
            return Ok(Change::Overlay);
        }
        let base = Blob::merge_into(
            std::mem::take(&mut self.base),
            &overlay,
            &Header {
                snapshot: true,
                ..header
            },
            skew_secs,
            now,
        );
        self.install_base(base);
        Ok(Change::Base)
    }

    /// Applies a feed as JSON carries it: its values are digested with the
    /// list's key (for a snapshot, the key of its issuer and cursor).
    pub fn apply_values(
        &mut self,
        feed: &RevocationFeed,
        issuer: &str,
        max_entries: usize,
        skew_secs: u64,
        now: u64,
    ) -> Result<Change, ApplyError> {
        // The compact layout holds no longer ones; cut short, a cursor would
        // name no position the feed knows (and every poll ask for a snapshot).
        if feed.cursor.len() > super::blob::MAX_CURSOR_LEN
            || feed.issuer.len() > super::blob::MAX_ISSUER_LEN
        {
            return Err(ApplyError::Malformed(super::blob::BlobError(
                "cursor or issuer longer than the compact layout holds",
            )));
        }
        let key = if feed.snapshot {
            SetKey::derive(&feed.issuer, &feed.cursor)
        } else {
            self.key()
        };
        self.apply(encode(feed, key), issuer, max_entries, skew_secs, now)
    }

    fn install_base(&mut self, mut base: Blob) {
        let id = content_id(&base);
        base.set_base_id(id);
        self.overlay = Blob::build(
            &Header {
                snapshot: false,
                base_id: id,
                ..base.header()
            },
            [&[], &[], &[]],
        );
        self.base = base;
        self.loaded = true;
    }

    /// Drops the base (before adopting a new one, so a VM never holds two).
    pub fn clear(&mut self) {
        *self = RevocationSet::default();
    }

    /// Takes over a base another VM shared (as [`base`](Self::base) gave
    /// it). When it forgot entries is that VM's to say
    /// ([`learn_forgot_at`](Self::learn_forgot_at)): not known until then.
    pub fn adopt_base(&mut self, base: Blob) {
        self.forgot_at = 0;
        self.overlay = Blob::build(
            &Header {
                snapshot: false,
                ..base.header()
            },
            [&[], &[], &[]],
        );
        self.base = base;
        self.loaded = true;
    }

    /// Takes over an overlay another VM shared, if it extends the base held;
    /// false: it belongs to a base this VM has not adopted yet.
    pub fn adopt_overlay(&mut self, overlay: Blob) -> bool {
        if !self.loaded || overlay.base_id() != self.base.base_id() || overlay.key() != self.key() {
            return false;
        }
        self.overlay = overlay;
        true
    }

    /// Why a token is revoked, if it is. Entries past `expires_at` plus the
    /// skew are ignored (the forget rule), whether or not pruned yet.
    pub fn check(&self, probe: &Probe, skew_secs: u64, now: u64) -> Option<Revoked> {
        self.check_in(Runs::Both, probe, skew_secs, now)
    }

    /// [`check`](Self::check) in the runs given: [`Runs::Overlay`] for a
    /// token already found clean in the base held.
    pub fn check_in(&self, runs: Runs, probe: &Probe, skew_secs: u64, now: u64) -> Option<Revoked> {
        let runs: &[&Blob] = match runs {
            Runs::Both => &[&self.overlay, &self.base],
            Runs::Overlay => &[&self.overlay],
        };
        let key = self.key();
        // The latest `not_before` of a live entry for `value`, if a run holds
        // one. A kind no run holds costs no digest.
        let latest = |kind: Kind, value: Option<&str>| {
            let (value, mut digest, mut latest) = (value?, None, None);
            for run in runs.iter().filter(|run| run.count(kind) > 0) {
                let digest = digest.get_or_insert_with(|| key.digest(kind, value));
                if let Some(e) = run
                    .find(kind, digest)
                    .filter(|e| still_needed(e.expires_at, skew_secs, now))
                {
                    latest = latest.max(Some(e.not_before));
                }
            }
            latest
        };
        if let Some(ban) = latest(Kind::Subject, probe.sub) {
            // Tokens issued before the ban die; a token without `iat` cannot prove it is newer.
            if probe.issued_at.is_none_or(|iat| iat < ban) {
                return Some(Revoked::SubjectBanned);
            }
        }
        // After the ban check: "account disabled" tells the client most.
        if latest(Kind::Session, probe.sid).is_some() {
            return Some(Revoked::SessionRevoked);
        }
        if latest(Kind::Token, probe.jti).is_some() {
            return Some(Revoked::TokenRevoked);
        }
        None
    }
}

/// A JSON feed in the compact layout, its values digested with `key`.
pub fn encode(feed: &RevocationFeed, key: SetKey) -> Blob {
    let digest = |kind, value: &str, not_before, expires_at| Entry {
        digest: key.digest(kind, value),
        not_before,
        expires_at,
    };
    let mut tokens: Vec<Entry> = feed
        .revoked_tokens
        .iter()
        .map(|t| digest(Kind::Token, &t.jti, 0, t.expires_at))
        .collect();
    let mut sessions: Vec<Entry> = feed
        .revoked_sessions
        .iter()
        .map(|s| digest(Kind::Session, &s.sid, 0, s.expires_at))
        .collect();
    let mut bans: Vec<Entry> = feed
        .banned_subjects
        .iter()
        .map(|b| digest(Kind::Subject, &b.sub, b.not_before, b.expires_at))
        .collect();
    for run in [&mut tokens, &mut sessions, &mut bans] {
        sort_entries(run);
    }
    let header = Header {
        snapshot: feed.snapshot,
        key,
        base_id: 0,
        issuer: feed.issuer.clone(),
        cursor: feed.cursor.clone(),
    };
    Blob::build(&header, [&tokens, &sessions, &bans])
}

/// Names a base so an overlay can say which one it extends: a digest of its
/// header and boundary entries (cheap, and different for any two bases a
/// feed can produce in practice).
fn content_id(base: &Blob) -> u64 {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    h.update(base.key().0);
    h.update(base.cursor().as_bytes());
    for kind in Kind::ALL {
        h.update((base.count(kind) as u64).to_le_bytes());
        for e in base
            .entries(kind)
            .take(1)
            .chain(base.entries(kind).next_back())
        {
            h.update(e.digest);
            h.update(e.expires_at.to_le_bytes());
        }
    }
    let d = h.finalize();
    let mut id = [0u8; 8];
    for (o, b) in id.iter_mut().zip(d.iter()) {
        *o = *b;
    }
    // 0 is the wire's "no base".
    u64::from_le_bytes(id).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::RevokedToken;

    fn feed(snapshot: bool, cursor: &str, range: std::ops::Range<usize>) -> RevocationFeed {
        let revoked_tokens = range
            .map(|i| RevokedToken {
                jti: format!("j{i}"),
                expires_at: 500,
            })
            .collect();
        RevocationFeed {
            issuer: "iss".into(),
            cursor: cursor.into(),
            snapshot,
            revoked_tokens,
            ..Default::default()
        }
    }

    fn revoked(set: &RevocationSet, i: usize) -> bool {
        let jti = format!("j{i}");
        set.check(
            &Probe {
                jti: Some(&jti),
                ..Probe::default()
            },
            0,
            100,
        )
        .is_some()
    }

    /// Deltas extend the overlay until it passes `COMPACT_AT`, then fold into
    /// a new base; every entry stays found throughout.
    #[test]
    fn compact_deltas_extend_the_overlay_then_compact() {
        let key = SetKey::derive("iss", "epoch");
        let mut set = RevocationSet::default();
        assert_eq!(
            set.apply(
                encode(&feed(true, "e.1", 0..100), key),
                "iss",
                100_000,
                0,
                100
            ),
            Ok(Change::Base)
        );
        let base_id = set.base().base_id();
        assert_eq!(
            set.apply(
                encode(&feed(false, "e.2", 100..110), key),
                "iss",
                100_000,
                0,
                100
            ),
            Ok(Change::Overlay)
        );
        assert_eq!(
            (set.base().len(), set.overlay().len(), set.cursor()),
            (100, 10, Some("e.2"))
        );
        assert_eq!(
            set.overlay().base_id(),
            base_id,
            "the overlay names its base"
        );
        assert!(revoked(&set, 0) && revoked(&set, 109) && !revoked(&set, 110));
        let in_overlay = |i: usize| {
            let jti = format!("j{i}");
            set.check_in(
                Runs::Overlay,
                &Probe {
                    jti: Some(&jti),
                    ..Probe::default()
                },
                0,
                100,
            )
            .is_some()
        };
        assert!(
            !in_overlay(0) && in_overlay(100) && in_overlay(109),
            "the overlay-only lookup skips the base"
        );
        let big = encode(&feed(false, "e.3", 110..110 + COMPACT_AT), key);
        assert_eq!(set.apply(big, "iss", 100_000, 0, 100), Ok(Change::Base));
        assert_eq!(
            (set.base().len(), set.overlay().len(), set.cursor()),
            (110 + COMPACT_AT, 0, Some("e.3"))
        );
        assert_ne!(set.base().base_id(), base_id);
        assert!((0..110 + COMPACT_AT).all(|i| revoked(&set, i)));
        let other_key = encode(&feed(false, "e.4", 0..1), SetKey::derive("iss", "other"));
        assert_eq!(
            set.apply(other_key, "iss", 100_000, 0, 100),
            Err(ApplyError::KeyMismatch)
        );
    }

    /// Dead entries of the base do not count against `max_entries`: a list
    /// once full still takes new revocations after its entries expired.
    #[test]
    fn a_delta_fits_once_the_entries_filling_the_bound_have_expired() {
        let key = SetKey::derive("iss", "e");
        let mut set = RevocationSet::default();
        // 100 entries expiring at 500, the bound 100.
        assert_eq!(
            set.apply(encode(&feed(true, "e.1", 0..100), key), "iss", 100, 0, 100),
            Ok(Change::Base)
        );
        let one_more = |cursor: &str, i: usize| {
            let revoked_tokens = vec![RevokedToken {
                jti: format!("j{i}"),
                expires_at: 9_000,
            }];
            encode(
                &RevocationFeed {
                    issuer: "iss".into(),
                    cursor: cursor.into(),
                    revoked_tokens,
                    ..Default::default()
                },
                key,
            )
        };
        // While they live, one more is refused, and the list stays as it was.
        assert_eq!(
            set.apply(one_more("e.2", 100), "iss", 100, 0, 400),
            Err(ApplyError::TooManyEntries(101))
        );
        assert!(revoked(&set, 0) && !revoked(&set, 100));
        // Once they expired it is taken, and the base is rebuilt without them.
        assert_eq!(
            set.apply(one_more("e.2", 100), "iss", 100, 0, 600),
            Ok(Change::Base)
        );
        assert_eq!(
            (set.base().len(), set.overlay().len(), set.cursor()),
            (1, 0, Some("e.2"))
        );
        assert!(revoked(&set, 100));
        // Live entries past the bound are still refused.
        let many = encode(
            &RevocationFeed {
                issuer: "iss".into(),
                cursor: "e.3".into(),
                revoked_tokens: (200..300)
                    .map(|i| RevokedToken {
                        jti: format!("j{i}"),
                        expires_at: 9_000,
                    })
                    .collect(),
                ..Default::default()
            },
            key,
        );
        assert_eq!(
            set.apply(many, "iss", 100, 0, 600),
            Err(ApplyError::TooManyEntries(101))
        );
        assert!(revoked(&set, 100) && !revoked(&set, 200));
    }

    /// A JSON feed's cursor or issuer too long for the compact layout is
    /// refused, not cut short (a cut cursor names no position of the feed).
    #[test]
    fn an_overlong_json_cursor_is_refused_not_cut() {
        let mut set = RevocationSet::default();
        let mut long = feed(
            true,
            &"c".repeat(super::super::blob::MAX_CURSOR_LEN + 1),
            0..1,
        );
        assert!(matches!(
            set.apply_values(&long, "iss", 100, 0, 100),
            Err(ApplyError::Malformed(_))
        ));
        long.cursor = "c".repeat(super::super::blob::MAX_CURSOR_LEN);
        assert_eq!(
            set.apply_values(&long, "iss", 100, 0, 100),
            Ok(Change::Base)
        );
        assert_eq!(
            set.cursor().map(str::len),
            Some(super::super::blob::MAX_CURSOR_LEN)
        );
    }

    /// A delta says what changed since a cursor: without the list it extends
    /// it is no list at all. One reaching an empty (never loaded, or cleared)
    /// list is refused, and the list stays unloaded, asking for a snapshot.
    #[test]
    fn a_delta_never_becomes_the_whole_list() {
        let key = SetKey::derive("iss", "e");
        let mut set = RevocationSet::default();
        set.apply(encode(&feed(true, "e.1", 0..1), key), "iss", 100, 0, 100)
            .unwrap();
        assert!(revoked(&set, 0));
        set.clear();
        let delta = encode(&feed(false, "e.2", 1..2), key);
        assert_eq!(
            set.apply(delta, "iss", 100, 0, 100),
            Err(ApplyError::DeltaWithoutBase),
            "a delta on a cleared list"
        );
        assert_eq!((set.is_loaded(), set.cursor(), set.len()), (false, None, 0));
        let json = feed(false, "e.2", 1..2);
        let never = RevocationSet::default().apply_values(&json, "iss", 100, 0, 100);
        assert_eq!(
            never,
            Err(ApplyError::DeltaWithoutBase),
            "a JSON delta on a list never loaded"
        );
        // A snapshot is what such a list takes.
        set.apply(encode(&feed(true, "e.2", 0..2), key), "iss", 100, 0, 100)
            .unwrap();
        assert!(revoked(&set, 0) && revoked(&set, 1));
    }

    /// The clock runs an hour ahead while a snapshot and a compaction land:
    /// they forget an entry whose token (`exp` 500, no skew) expired by that
    /// clock. Once the clock is corrected the token is live again, and no
    /// delta resends its entry. The list says it lacks it: a delta is
    /// refused until a snapshot is taken at the corrected time.
    #[test]
    fn a_clock_jump_forward_does_not_forget_entries_for_good() {
        let key = SetKey::derive("iss", "e");
        let (real_now, ahead) = (100, 100 + 3600);
        let mut set = RevocationSet::default();
        set.apply(
            encode(&feed(true, "e.1", 0..1), key),
            "iss",
            100,
            0,
            real_now,
        )
        .unwrap();
        assert!(!set.clock_stepped_back(real_now));
        // A delta merged an hour ahead drops its own entry (and, past the
        // bound, the base's): that is what the clock said was dead.
        set.apply(encode(&feed(false, "e.2", 1..2), key), "iss", 100, 0, ahead)
            .unwrap();
        assert!(!revoked(&set, 1), "forgotten at the jumped time");
        assert!(!set.clock_stepped_back(ahead));
        // Steps within the tolerance are a time daemon's: nothing changes.
        assert!(!set.clock_stepped_back(ahead - CLOCK_STEP_BACK_TOLERANCE_SECS));
        // Back at the right time the list knows it lacks what it forgot.
        assert!(set.clock_stepped_back(real_now + 1));
        assert_eq!(
            set.apply(
                encode(&feed(false, "e.3", 2..3), key),
                "iss",
                100,
                0,
                real_now + 1
            ),
            Err(ApplyError::ClockSteppedBack)
        );
        assert_eq!(set.cursor(), Some("e.2"), "a refused delta changes nothing");
        // A snapshot brings the forgotten entry back and ends it.
        set.apply(
            encode(&feed(true, "e.3", 0..3), key),
            "iss",
            100,
            0,
            real_now + 1,
        )
        .unwrap();
        assert!(!set.clock_stepped_back(real_now + 1));
        assert!(revoked(&set, 1) && revoked(&set, 2));
        // A copy another VM shared forgot entries when its builder says,
        // whenever it was taken.
        let mut other = RevocationSet::default();
        other.adopt_base(set.base().clone());
        other.learn_forgot_at(ahead);
        assert!(other.clock_stepped_back(real_now));
        other.adopt_base(set.base().clone());
        assert!(!other.clock_stepped_back(real_now), "not known yet");
        other.learn_forgot_at(real_now - 60);
        assert!(other.adopt_overlay(set.overlay().clone()));
        assert!(
            !other.clock_stepped_back(real_now),
            "taken late, built early"
        );
        other.learn_forgot_at(ahead);
        assert!(
            other.clock_stepped_back(real_now),
            "the builder's later word"
        );
        other.learn_forgot_at(0);
        assert!(
            other.clock_stepped_back(real_now),
            "a VM that has not heard either says nothing"
        );
        other.learn_forgot_at(real_now - 60);
        assert!(
            other.clock_stepped_back(real_now),
            "nor does another VM that forgot earlier at the same cursor"
        );
        // A list this VM applies feeds to keeps its own time if later.
        assert!(!set.clock_stepped_back(real_now + 1));
        set.learn_forgot_at(real_now - 60);
        set.learn_forgot_at(0);
        assert_eq!(set.forgot_at(), real_now + 1);
    }
}

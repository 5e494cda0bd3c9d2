//! The compact revocation list: one byte layout used as the feed's binary
//! encoding, as the copy the filter's worker VMs share, and as the list each
//! of them searches in place (binary search over the bytes, nothing parsed
//! into maps). All integers little-endian.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "AFRV"
//!      4     1  format version (1)
//!      5     1  flags: bit 0 = snapshot (replaces everything known before)
//!      6     2  issuer length I (≤ 1024)
//!      8     2  cursor length C (≤ 256)
//!     10     2  reserved, 0
//!     12     4  revoked tokens   T
//!     16     4  revoked sessions S
//!     20     4  banned subjects  B
//!     24    16  digest key (see `digest`)
//!     40     8  base id (shared copies only: which base an overlay extends; 0 on the wire)
//!     48     I  issuer, UTF-8
//!   48+I     C  cursor, UTF-8
//!          24T  tokens:   digest[16] expires_at u64
//!          24S  sessions: digest[16] expires_at u64
//!          32B  subjects: digest[16] not_before u64 expires_at u64
//! ```
//! Each section is sorted by digest (bytewise), strictly ascending: one
//! entry per digest. `expires_at` is the forget-after time of the contract.

use super::digest::{Digest, Kind, SetKey};
use super::still_needed;

pub const MAGIC: &[u8; 4] = b"AFRV";
pub const FORMAT_VERSION: u8 = 1;
pub const HEADER_LEN: usize = 48;
pub const MAX_ISSUER_LEN: usize = 1024;
pub const MAX_CURSOR_LEN: usize = 256;
/// Spare room a merged list keeps for the merges after it (a few overlays'
/// worth; an eighth of the list for a small one, such as an overlay). Growing a large buffer can move it — Wasm's allocator extends a
/// block in place only into a free neighbour — and a move holds two copies
/// for a moment; with the room, most merges never grow the buffer at all.
pub const MERGE_HEADROOM: usize = 256 * 1024;

/// The spare room a list of `len` bytes keeps (see [`MERGE_HEADROOM`]); a
/// reader that fills a buffer for a list (the filter's feed body) gives it this.
pub fn spare_room(len: usize) -> usize {
    MERGE_HEADROOM.min(len / 8)
}
const FLAG_SNAPSHOT: u8 = 1;
const BASE_ID_AT: usize = 40;

fn record_len(kind: Kind) -> usize {
    match kind {
        Kind::Token | Kind::Session => 24,
        Kind::Subject => 32,
    }
}

/// One number per kind (entry counts, section offsets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct PerKind([usize; 3]);

impl PerKind {
    fn from_header(bytes: &[u8]) -> PerKind {
        PerKind([u32_at(bytes, 12), u32_at(bytes, 16), u32_at(bytes, 20)])
    }

    fn at(&mut self, kind: Kind) -> &mut usize {
        let [token, session, subject] = &mut self.0;
        match kind {
            Kind::Token => token,
            Kind::Session => session,
            Kind::Subject => subject,
        }
    }

    fn of(mut self, kind: Kind) -> usize {
        *self.at(kind)
    }

    fn sum(self) -> usize {
        self.0.iter().sum()
    }
}

/// One entry of a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub digest: Digest,
    /// Subjects only: tokens issued before it die (0 for the other kinds).
    pub not_before: u64,
    pub expires_at: u64,
}

impl Entry {
    /// One entry per digest: the widest wins (a value may be revoked twice).
    fn widest(self, other: Entry) -> Entry {
        Entry {
            digest: self.digest,
            not_before: self.not_before.max(other.not_before),
            expires_at: self.expires_at.max(other.expires_at),
        }
    }
}

/// The fields of a list besides its entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub snapshot: bool,
    pub key: SetKey,
    pub base_id: u64,
    pub issuer: String,
    pub cursor: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobError(pub &'static str);

impl std::fmt::Display for BlobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "compact revocation list: {}", self.0)
    }
}

/// A validated list in its byte layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    bytes: Vec<u8>,
    counts: PerKind,
    /// Where each section starts.
    starts: PerKind,
}

impl Default for Blob {
    fn default() -> Self {
        Blob::build(&Header::default(), [&[], &[], &[]])
    }
}

fn u16_at(b: &[u8], at: usize) -> usize {
    b.get(at..at + 2)
        .and_then(|s| <[u8; 2]>::try_from(s).ok())
        .map_or(0, |a| usize::from(u16::from_le_bytes(a)))
}

fn u32_at(b: &[u8], at: usize) -> usize {
    b.get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map_or(0, |a| u32::from_le_bytes(a) as usize)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_le_bytes)
}

fn digest_of(record: &[u8]) -> Digest {
    record
        .get(..16)
        .and_then(|s| <[u8; 16]>::try_from(s).ok())
        .unwrap_or_default()
}

/// A digest as a number in the lists' order (bytewise is big-endian): one
/// integer comparison instead of a byte-by-byte one per probe.
fn order_of(digest: Digest) -> u128 {
    u128::from_be_bytes(digest)
}

/// How many of a section's first `n` records (its `start`, record `len`)
/// have a digest at or below `digest` (in [`order_of`]'s order): binary
/// search over the bytes.
fn rank(bytes: &[u8], (start, len): (usize, usize), n: usize, digest: u128) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if bytes
            .get(start + mid * len..)
            .map_or(0, |r| order_of(digest_of(r)))
            <= digest
        {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Where a record of `kind` keeps its `expires_at`.
fn expiry_offset(kind: Kind) -> usize {
    record_len(kind) - 8
}

fn entry_of(kind: Kind, record: &[u8]) -> Entry {
    match kind {
        Kind::Subject => Entry {
            digest: digest_of(record),
            not_before: u64_at(record, 16),
            expires_at: u64_at(record, 24),
        },
        _ => Entry {
            digest: digest_of(record),
            not_before: 0,
            expires_at: u64_at(record, 16),
        },
    }
}

fn push_entry(out: &mut Vec<u8>, kind: Kind, e: &Entry) {
    out.extend_from_slice(&e.digest);
    if kind == Kind::Subject {
        out.extend_from_slice(&e.not_before.to_le_bytes());
    }
    out.extend_from_slice(&e.expires_at.to_le_bytes());
}

/// Moves records `run` of a section (its `start` and record `len`) down to
/// end at `write` (lowering it) in one copy; how many records that was.
fn move_run(
    bytes: &mut [u8],
    (start, len): (usize, usize),
    run: std::ops::Range<usize>,
    write: &mut usize,
) -> usize {
    let n = run.len();
    *write -= n * len;
    // Records that stay where they are (nothing dropped or added above them) are not copied.
    if start + run.start * len != *write {
        bytes.copy_within(start + run.start * len..start + run.end * len, *write);
    }
    n
}

/// [`move_run`] for the records of `run` that some token could still
/// outlive at `now` (runs of them in one copy each); how many were kept.
/// Only their `expires_at` is read.
fn move_needed(
    bytes: &mut [u8],
    (start, len, expiry_at): (usize, usize, usize),
    run: std::ops::Range<usize>,
    write: &mut usize,
    skew_secs: u64,
    now: u64,
) -> usize {
    let (mut kept, mut end) = (0, run.end);
    for i in run.clone().rev() {
        if !still_needed(u64_at(bytes, start + i * len + expiry_at), skew_secs, now) {
            kept += move_run(bytes, (start, len), i + 1..end, write);
            end = i;
        }
    }
    kept + move_run(bytes, (start, len), run.start..end, write)
}

/// The entry counts in a written header.
fn write_counts(bytes: &mut [u8], counts: PerKind) {
    for (i, c) in counts.0.iter().enumerate() {
        if let Some(slot) = bytes.get_mut(12 + 4 * i..16 + 4 * i) {
            slot.copy_from_slice(&u32::try_from(*c).unwrap_or(u32::MAX).to_le_bytes());
        }
    }
}

fn push_header(out: &mut Vec<u8>, h: &Header, counts: PerKind) {
    // Cut on a character boundary: a cut inside one would leave no text.
    let issuer = &h.issuer[..h.issuer.floor_char_boundary(MAX_ISSUER_LEN)];
    let cursor = &h.cursor[..h.cursor.floor_char_boundary(MAX_CURSOR_LEN)];
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.push(if h.snapshot { FLAG_SNAPSHOT } else { 0 });
    out.extend_from_slice(&(issuer.len() as u16).to_le_bytes());
    out.extend_from_slice(&(cursor.len() as u16).to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    for c in counts.0 {
        out.extend_from_slice(&u32::try_from(c).unwrap_or(u32::MAX).to_le_bytes());
    }
    out.extend_from_slice(&h.key.0);
    out.extend_from_slice(&h.base_id.to_le_bytes());
    out.extend_from_slice(issuer.as_bytes());
    out.extend_from_slice(cursor.as_bytes());
}

impl Blob {
    /// Checks `bytes` (the feed's body, or a copy another VM shared) and
    /// takes them as they are: no entry is copied.
    pub fn parse(bytes: Vec<u8>) -> Result<Blob, BlobError> {
        if bytes.len() < HEADER_LEN || bytes.get(..4) != Some(MAGIC.as_slice()) {
            return Err(BlobError("not this format"));
        }
        if bytes.get(4) != Some(&FORMAT_VERSION) || u16_at(&bytes, 10) != 0 {
            return Err(BlobError("unknown format version"));
        }
        let (issuer_len, cursor_len) = (u16_at(&bytes, 6), u16_at(&bytes, 8));
        if issuer_len > MAX_ISSUER_LEN || cursor_len > MAX_CURSOR_LEN {
            return Err(BlobError("issuer or cursor too long"));
        }
        let text = |from: usize, len: usize| {
            bytes
                .get(from..from + len)
                .is_some_and(|s| std::str::from_utf8(s).is_ok())
        };
        if !text(HEADER_LEN, issuer_len) || !text(HEADER_LEN + issuer_len, cursor_len) {
            return Err(BlobError("issuer or cursor is not UTF-8"));
        }
        let counts = PerKind::from_header(&bytes);
        let mut starts = PerKind::default();
        let mut at = HEADER_LEN + issuer_len + cursor_len;
        for kind in Kind::ALL {
            *starts.at(kind) = at;
            let n = counts.of(kind);
            let size = n
                .checked_mul(record_len(kind))
                .ok_or(BlobError("too many entries"))?;
            at = at.checked_add(size).ok_or(BlobError("too many entries"))?;
        }
        if at != bytes.len() {
            return Err(BlobError("length does not match the entry counts"));
        }
        let blob = Blob {
            bytes,
            counts,
            starts,
        };
        for kind in Kind::ALL {
            let section = blob.section(kind);
            let mut records = section
                .chunks_exact(record_len(kind))
                .map(|r| order_of(digest_of(r)));
            let mut previous = records.next();
            for d in records {
                if previous.is_some_and(|p| p >= d) {
                    return Err(BlobError("entries not sorted by digest"));
                }
                previous = Some(d);
            }
        }
        Ok(blob)
    }

    /// Lays out `sections` (tokens, sessions, subjects), each sorted by
    /// digest with one entry per digest (see [`sort_entries`]).
    pub fn build(header: &Header, sections: [&[Entry]; 3]) -> Blob {
        let [tokens, sessions, subjects] = sections.map(<[Entry]>::len);
        let counts = PerKind([tokens, sessions, subjects]);
        let size = HEADER_LEN
            + header.issuer.len()
            + header.cursor.len()
            + Kind::ALL
                .iter()
                .map(|k| counts.of(*k) * record_len(*k))
                .sum::<usize>();
        let mut bytes = Vec::with_capacity(size);
        push_header(&mut bytes, header, counts);
        for (kind, entries) in Kind::ALL.into_iter().zip(sections) {
            for e in entries {
                push_entry(&mut bytes, kind, e);
            }
        }
        Blob::from_written(bytes)
    }

    /// A blob this module just wrote: the layout is known to be right.
    fn from_written(bytes: Vec<u8>) -> Blob {
        let counts = PerKind::from_header(&bytes);
        let mut at = HEADER_LEN + u16_at(&bytes, 6) + u16_at(&bytes, 8);
        let mut starts = PerKind::default();
        for kind in Kind::ALL {
            *starts.at(kind) = at;
            at += counts.of(kind) * record_len(kind);
        }
        Blob {
            bytes,
            counts,
            starts,
        }
    }

    /// Merges two sorted lists into a new one with `header`, one entry per
    /// digest (the widest), dropping what no token could outlive at `now`.
    /// The reference [`merge_into`](Self::merge_into) is tested against.
    #[cfg(test)]
    pub fn merge(a: &Blob, b: &Blob, header: &Header, skew_secs: u64, now: u64) -> Blob {
        let mut bytes = Vec::with_capacity(
            HEADER_LEN
                + header.issuer.len()
                + header.cursor.len()
                + a.section_bytes()
                + b.section_bytes(),
        );
        push_header(&mut bytes, header, PerKind::default());
        let mut counts = PerKind::default();
        for kind in Kind::ALL {
            let mut left = a.entries(kind).peekable();
            let mut right = b.entries(kind).peekable();
            loop {
                let next = match (left.peek(), right.peek()) {
                    (Some(l), Some(r)) if l.digest == r.digest => {
                        let e = l.widest(*r);
                        left.next();
                        right.next();
                        e
                    }
                    (Some(l), Some(r)) if l.digest < r.digest => {
                        let e = *l;
                        left.next();
                        e
                    }
                    (_, Some(r)) => {
                        let e = *r;
                        right.next();
                        e
                    }
                    (Some(l), None) => {
                        let e = *l;
                        left.next();
                        e
                    }
                    (None, None) => break,
                };
                if still_needed(next.expires_at, skew_secs, now) {
                    push_entry(&mut bytes, kind, &next);
                    *counts.at(kind) += 1;
                }
            }
        }
        write_counts(&mut bytes, counts);
        Blob::from_written(bytes)
    }

    /// Merges two sorted lists into one with `header`, one entry per digest
    /// (the widest), dropping what no token could outlive at `now` — written
    /// into `base`'s own buffer, which keeps [`MERGE_HEADROOM`] spare: a
    /// compaction of a 1M-entry list does not build a second copy of it.
    ///
    /// The merge runs backwards, largest digest first, from the end of the
    /// grown buffer: every record is written at or past the end of the base
    /// records not read yet (the room in between is the overlay's records
    /// not taken yet, plus any growth of the header), so nothing is
    /// overwritten before it is read. The result is then moved down behind
    /// the new header.
    pub fn merge_into(
        base: Blob,
        overlay: &Blob,
        header: &Header,
        skew_secs: u64,
        now: u64,
    ) -> Blob {
        let Blob {
            mut bytes,
            counts: base_counts,
            starts: base_starts,
        } = base;
        let mut new_header = Vec::with_capacity(HEADER_LEN + MAX_ISSUER_LEN + MAX_CURSOR_LEN);
        push_header(&mut new_header, header, PerKind::default());
        let old_start = base_starts.of(Kind::Token);
        let base_data = bytes.len().saturating_sub(old_start);
        let end = old_start.max(new_header.len()) + base_data + overlay.section_bytes();
        // Room for this merge and the next few: the buffer is grown rarely,
        // and not by doubling (that would ask for a second list's worth).
        if bytes.capacity() < end {
            bytes.reserve_exact(
                end.saturating_sub(bytes.len())
                    .saturating_add(spare_room(end)),
            );
        }
        bytes.resize(end, 0);
        let mut write = end;
        let mut counts = PerKind::default();
        let mut record = Vec::with_capacity(32);
        for kind in Kind::ALL.into_iter().rev() {
            let (start, len) = (base_starts.of(kind), record_len(kind));
            let section = (start, len, expiry_offset(kind));
            // Base records `..left_n` are not read yet. For each overlay
            // entry, largest first, the base records above it are found by
            // binary search and moved in runs (only their expiry is read):
            // a merge costs about one copy of the list, not a decoding of
            // every record.
            let mut left_n = base_counts.of(kind);
            for r in overlay.entries(kind).rev() {
                let below = rank(&bytes, (start, len), left_n, order_of(r.digest));
                *counts.at(kind) += move_needed(
                    &mut bytes,
                    section,
                    below..left_n,
                    &mut write,
                    skew_secs,
                    now,
                );
                left_n = below;
                let same = left_n
                    .checked_sub(1)
                    .and_then(|i| bytes.get(start + i * len..start + (i + 1) * len))
                    .filter(|l| digest_of(l) == r.digest);
                let e = match same {
                    Some(l) => {
                        left_n -= 1;
                        entry_of(kind, l).widest(r)
                    }
                    None => r,
                };
                if still_needed(e.expires_at, skew_secs, now) {
                    write -= len;
                    record.clear();
                    push_entry(&mut record, kind, &e);
                    if let Some(slot) = bytes.get_mut(write..write + len) {
                        slot.copy_from_slice(&record);
                    }
                    *counts.at(kind) += 1;
                }
            }
            *counts.at(kind) +=
                move_needed(&mut bytes, section, 0..left_n, &mut write, skew_secs, now);
        }
        let header_len = new_header.len();
        if write != header_len {
            bytes.copy_within(write..end, header_len);
        }
        bytes.truncate(header_len + (end - write));
        if let Some(slot) = bytes.get_mut(..header_len) {
            slot.copy_from_slice(&new_header);
        }
        write_counts(&mut bytes, counts);
        // Capacity beyond the list stays: room for the next merge to grow into.
        Blob::from_written(bytes)
    }

    /// How many entries some token could still outlive at `now`: what a
    /// merge would keep of this list alone. Reads only their expiry.
    pub fn count_needed(&self, skew_secs: u64, now: u64) -> usize {
        Kind::ALL
            .into_iter()
            .map(|kind| {
                let at = expiry_offset(kind);
                self.section(kind)
                    .chunks_exact(record_len(kind))
                    .filter(|r| still_needed(u64_at(r, at), skew_secs, now))
                    .count()
            })
            .sum()
    }

    /// Forgets, in place, the entries no token could outlive at `now`.
    pub fn retain_needed(&mut self, skew_secs: u64, now: u64) {
        let header = self.header();
        *self = Blob::merge_into(
            std::mem::take(self),
            &Blob::default(),
            &header,
            skew_secs,
            now,
        );
    }

    fn section(&self, kind: Kind) -> &[u8] {
        let start = self.starts.of(kind);
        self.bytes
            .get(start..start + self.counts.of(kind) * record_len(kind))
            .unwrap_or_default()
    }

    fn section_bytes(&self) -> usize {
        self.bytes.len().saturating_sub(self.starts.of(Kind::Token))
    }

    /// The entry for `digest`, by binary search over the bytes.
    pub fn find(&self, kind: Kind, digest: &Digest) -> Option<Entry> {
        let (start, len) = (self.starts.of(kind), record_len(kind));
        let i = rank(
            &self.bytes,
            (start, len),
            self.counts.of(kind),
            order_of(*digest),
        )
        .checked_sub(1)?;
        let record = self.bytes.get(start + i * len..start + (i + 1) * len)?;
        (digest_of(record) == *digest).then(|| entry_of(kind, record))
    }

    pub fn entries(
        &self,
        kind: Kind,
    ) -> impl DoubleEndedIterator<Item = Entry> + ExactSizeIterator + '_ {
        self.section(kind)
            .chunks_exact(record_len(kind))
            .map(move |r| entry_of(kind, r))
    }

    pub fn len(&self) -> usize {
        self.counts.sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn count(&self, kind: Kind) -> usize {
        self.counts.of(kind)
    }

    pub fn is_snapshot(&self) -> bool {
        self.bytes.get(5).is_some_and(|f| f & FLAG_SNAPSHOT != 0)
    }

    pub fn key(&self) -> SetKey {
        SetKey(
            self.bytes
                .get(24..40)
                .and_then(|s| <[u8; 16]>::try_from(s).ok())
                .unwrap_or_default(),
        )
    }

    pub fn base_id(&self) -> u64 {
        u64_at(&self.bytes, BASE_ID_AT)
    }

    pub fn set_base_id(&mut self, id: u64) {
        if let Some(slot) = self.bytes.get_mut(BASE_ID_AT..BASE_ID_AT + 8) {
            slot.copy_from_slice(&id.to_le_bytes());
        }
    }

    pub fn issuer(&self) -> &str {
        let len = u16_at(&self.bytes, 6);
        self.bytes
            .get(HEADER_LEN..HEADER_LEN + len)
            .and_then(|s| std::str::from_utf8(s).ok())
            .unwrap_or_default()
    }

    pub fn cursor(&self) -> &str {
        let from = HEADER_LEN + u16_at(&self.bytes, 6);
        let len = u16_at(&self.bytes, 8);
        self.bytes
            .get(from..from + len)
            .and_then(|s| std::str::from_utf8(s).ok())
            .unwrap_or_default()
    }

    pub fn header(&self) -> Header {
        Header {
            snapshot: self.is_snapshot(),
            key: self.key(),
            base_id: self.base_id(),
            issuer: self.issuer().to_owned(),
            cursor: self.cursor().to_owned(),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Memory this list holds (what the allocator gave it, not just what is used).
    pub fn bytes_held(&self) -> usize {
        self.bytes.capacity()
    }
}

/// Sorts entries by digest and keeps one per digest (the widest).
pub fn sort_entries(entries: &mut Vec<Entry>) {
    entries.sort_unstable_by_key(|e| e.digest);
    entries.dedup_by(|later, kept| {
        let same = later.digest == kept.digest;
        if same {
            *kept = kept.widest(*later);
        }
        same
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;

    fn e(d: u8, exp: u64) -> Entry {
        Entry {
            digest: [d; 16],
            not_before: 0,
            expires_at: exp,
        }
    }

    fn header(cursor: &str) -> Header {
        Header {
            snapshot: true,
            key: SetKey([7; 16]),
            base_id: 0,
            issuer: "iss".into(),
            cursor: cursor.into(),
        }
    }

    #[test]
    fn layout_round_trips_and_is_searched_in_place() {
        let ban = Entry {
            digest: [5; 16],
            not_before: 40,
            expires_at: 90,
        };
        let blob = Blob::build(&header("c1"), [&[e(1, 10), e(3, 30)], &[e(2, 20)], &[ban]]);
        assert_eq!(blob.bytes().len(), HEADER_LEN + 3 + 2 + 24 * 3 + 32);
        let back = Blob::parse(blob.bytes().to_vec()).unwrap();
        assert_eq!(back, blob);
        assert_eq!(
            (back.issuer(), back.cursor(), back.is_snapshot(), back.key()),
            ("iss", "c1", true, SetKey([7; 16]))
        );
        assert_eq!(back.find(Kind::Token, &[3; 16]), Some(e(3, 30)));
        assert_eq!(back.find(Kind::Token, &[2; 16]), None, "kinds are separate");
        assert_eq!(back.find(Kind::Session, &[2; 16]), Some(e(2, 20)));
        assert_eq!(back.find(Kind::Subject, &[5; 16]), Some(ban));
    }

    /// An issuer longer than the header holds keeps its longest whole-character
    /// prefix: a cut inside a character would have written no issuer at all.
    #[test]
    fn a_long_issuer_is_cut_between_characters() {
        let mut h = header("c");
        h.issuer = format!("https://a{}", "é".repeat(MAX_ISSUER_LEN));
        let back = Blob::parse(Blob::build(&h, [&[], &[], &[]]).bytes().to_vec()).unwrap();
        assert!(h.issuer.starts_with(back.issuer()));
        assert_eq!(
            back.issuer().len(),
            MAX_ISSUER_LEN - 1,
            "9 ASCII bytes, then 2 per é"
        );
    }

    #[test]
    fn parse_refuses_what_is_not_a_valid_list() {
        let blob = Blob::build(&header("c"), [&[e(1, 10), e(3, 30)], &[], &[]]);
        let good = blob.bytes().to_vec();
        assert!(
            Blob::parse(good[..good.len() - 1].to_vec()).is_err(),
            "truncated"
        );
        let mut unsorted = good.clone();
        let first = HEADER_LEN + 3 + 1;
        unsorted[first..first + 16].copy_from_slice(&[9; 16]);
        assert_eq!(
            Blob::parse(unsorted),
            Err(BlobError("entries not sorted by digest"))
        );
        let mut huge = good.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Blob::parse(huge).is_err());
        assert!(Blob::parse(b"{\"issuer\":\"x\"}".to_vec()).is_err());
    }

    #[test]
    fn merge_keeps_one_widest_entry_per_digest_and_drops_the_forgotten() {
        let a = Blob::build(
            &header("1"),
            [
                &[e(1, 100), e(4, 100)],
                &[],
                &[Entry {
                    digest: [9; 16],
                    not_before: 10,
                    expires_at: 100,
                }],
            ],
        );
        let b = Blob::build(
            &header("2"),
            [
                &[e(1, 300), e(2, 5), e(3, 200)],
                &[e(8, 100)],
                &[Entry {
                    digest: [9; 16],
                    not_before: 50,
                    expires_at: 80,
                }],
            ],
        );
        let m = Blob::merge(&a, &b, &header("2"), 10, 50);
        assert_eq!(
            m.entries(Kind::Token).collect::<Vec<_>>(),
            vec![e(1, 300), e(3, 200), e(4, 100)],
            "5 + 10 < 50: forgotten"
        );
        assert_eq!(
            m.find(Kind::Subject, &[9; 16]),
            Some(Entry {
                digest: [9; 16],
                not_before: 50,
                expires_at: 100
            })
        );
        assert_eq!(m.cursor(), "2");
        assert_eq!(Blob::parse(m.bytes().to_vec()).unwrap(), m);

        let mut pruned = m.clone();
        pruned.retain_needed(10, 150);
        assert_eq!(
            pruned.entries(Kind::Token).collect::<Vec<_>>(),
            vec![e(1, 300), e(3, 200)]
        );
        assert_eq!(pruned.count(Kind::Session), 0);
        assert_eq!(pruned.count(Kind::Subject), 0);
        assert_eq!(Blob::parse(pruned.bytes().to_vec()).unwrap(), pruned);
    }

    /// `merge_into` writes exactly the list `merge` builds — for lists of
    /// every shape: empty sides, every kind, shared digests (the widest wins),
    /// entries forgotten on either side, a cursor that grows, shrinks or stays.
    #[test]
    fn merge_into_builds_byte_for_byte_what_merge_builds() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut cases = 0;
        for round in 0..400 {
            let mut side = |n: u64| -> [Vec<Entry>; 3] {
                [0, 1, 2].map(|kind| {
                    let mut v: Vec<Entry> = (0..next() % (n + 1))
                        .map(|_| {
                            let r = next();
                            let mut digest = [0u8; 16];
                            // Few distinct digests, so the two sides share some.
                            digest[0] = (r % 40) as u8;
                            digest[15] = (r >> 8) as u8 % 3;
                            let not_before = if kind == 2 { r >> 16 & 0xff } else { 0 };
                            Entry {
                                digest,
                                not_before,
                                expires_at: 40 + (r >> 24) % 40,
                            }
                        })
                        .collect();
                    v.sort_by_key(|e| e.digest);
                    v.dedup_by_key(|e| e.digest);
                    v
                })
            };
            let (a, b) = (
                side(if round % 7 == 0 { 0 } else { 30 }),
                side(if round % 5 == 0 { 0 } else { 12 }),
            );
            let cursors = [
                "",
                "7",
                "cursor-12345",
                "a-much-longer-cursor-than-the-others-000000000000",
            ];
            let base = Blob::build(&header(cursors[round % 4]), [&a[0], &a[1], &a[2]]);
            let overlay = Blob::build(&header("o"), [&b[0], &b[1], &b[2]]);
            let to = header(cursors[(round / 4) % 4]);
            let now = 40 + next() % 50;
            let expected = Blob::merge(&base, &overlay, &to, 5, now);
            let mut retained = base.clone();
            retained.retain_needed(5, now);
            assert_eq!(
                retained.bytes(),
                Blob::merge(&base, &Blob::default(), &base.header(), 5, now).bytes(),
                "round {round}: retain_needed"
            );
            assert_eq!(Blob::parse(retained.bytes().to_vec()).unwrap(), retained);
            let got = Blob::merge_into(base, &overlay, &to, 5, now);
            assert_eq!(got.bytes(), expected.bytes(), "round {round}");
            assert_eq!(Blob::parse(got.bytes().to_vec()).unwrap(), got);
            cases += usize::from(!expected.is_empty());
        }
        assert!(cases > 300, "most cases kept entries ({cases})");
    }
}

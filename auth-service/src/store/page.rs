//! Listings in pages: keyset pagination over `(created_at, id)` (or over an
//! integer id in insertion order), so a page costs the same at any depth and
//! a row added meanwhile is neither skipped nor repeated (an offset would do
//! both).

use std::fmt;

/// Where a listing resumes, as the `after` of its `next` link: written with
/// [`fmt::Display`], read back with [`Cursor::parse`].
pub trait Cursor: fmt::Display + Clone + Sized {
    /// The cursor as `Display` writes it; `None` for anything else.
    fn parse(s: &str) -> Option<Self>;
}

/// Where a listing resumes: the sort key of the last row of the page before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageCursor {
    pub created_at: i64,
    pub id: String,
}

impl Cursor for PageCursor {
    /// `CREATED_AT.ID` as [`fmt::Display`] writes it; `None` for anything else.
    fn parse(s: &str) -> Option<Self> {
        let (at, id) = s.split_once('.')?;
        if at.is_empty() || at.len() > 18 || !at.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        Some(Self {
            created_at: at.parse().ok()?,
            id: id.to_owned(),
        })
    }
}

impl fmt::Display for PageCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.created_at, self.id)
    }
}

/// Where a listing of an integer id in insertion order (the audit log,
/// newest first) resumes: the id of the last row of the page before, as
/// its decimal digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdCursor(pub i64);

impl Cursor for IdCursor {
    /// Digits only: no sign, no space, nothing past an `i64`.
    fn parse(s: &str) -> Option<Self> {
        if s.is_empty() || s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok().map(Self)
    }
}

impl fmt::Display for IdCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// At most `limit` rows, after `after` in the listing's order (from the start without it).
#[derive(Clone, Debug)]
pub struct PageRequest<C = PageCursor> {
    pub after: Option<C>,
    pub limit: u32,
}

impl<C: Clone> PageRequest<C> {
    pub fn first(limit: u32) -> Self {
        Self { after: None, limit }
    }

    /// This page with one row more: a row past the limit tells the caller another page follows.
    pub fn one_more(&self) -> Self {
        Self {
            after: self.after.clone(),
            limit: self.limit.saturating_add(1),
        }
    }
}

impl PageRequest {
    /// The bound for a listing oldest first: every row is after `(i64::MIN, "")`.
    pub(super) fn after_ascending(&self) -> (i64, &str) {
        self.after
            .as_ref()
            .map_or((i64::MIN, ""), |c| (c.created_at, c.id.as_str()))
    }

    /// The bound for a listing newest first: every row is before `(i64::MAX, "")`.
    pub(super) fn before_descending(&self) -> (i64, &str) {
        self.after
            .as_ref()
            .map_or((i64::MAX, ""), |c| (c.created_at, c.id.as_str()))
    }
}

impl PageRequest<IdCursor> {
    /// The bound for a listing newest first by id: every row is below `i64::MAX`.
    pub(super) fn below(&self) -> i64 {
        self.after.map_or(i64::MAX, |c| c.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_what_it_writes_and_nothing_else() {
        let c = PageCursor {
            created_at: 1_764_640_000,
            id: "0f3a".into(),
        };
        assert_eq!(PageCursor::parse(&c.to_string()), Some(c));
        for bad in [
            "",
            ".",
            "1.",
            ".ab",
            "-1.ab",
            "+1.ab",
            "1.a b",
            "1.a.b",
            "99999999999999999999.ab",
            "1.a%2F",
            &format!("1.{}", "a".repeat(65)),
        ] {
            assert_eq!(PageCursor::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_id_cursor_reads_back_what_it_writes_and_nothing_else() {
        for id in [0, 7, 1_764_640_000_123] {
            assert_eq!(
                IdCursor::parse(&IdCursor(id).to_string()),
                Some(IdCursor(id))
            );
        }
        for bad in [
            "",
            " 1",
            "1 ",
            "-1",
            "+1",
            "1.5",
            "1.ab",
            "0x10",
            "1e3",
            "9999999999999999999",
        ] {
            assert_eq!(IdCursor::parse(bad), None, "{bad:?}");
        }
    }
}

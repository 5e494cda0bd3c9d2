//! Reading cookies the same way on both sides.
//!
//! A request may carry several `Cookie` headers (HTTP/1.1 clients may send
//! more than one; HTTP/2 splits them into crumbs) and a name may appear more
//! than once: every occurrence is returned, so a caller can refuse values
//! that disagree rather than silently pick one.

/// Every value of cookie `name` across all `cookie` header values, in order;
/// surrounding whitespace and one pair of double quotes (RFC 6265) removed.
pub fn values<'a>(cookie_headers: impl IntoIterator<Item = &'a str>, name: &'a str) -> impl Iterator<Item = &'a str> {
    cookie_headers
        .into_iter()
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(k, _)| k.trim_end() == name)
        .map(|(_, v)| {
            let v = v.trim();
            v.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(v)
        })
}

/// The one non-empty value of cookie `name`: `Err(())` when two occurrences disagree.
#[allow(clippy::result_unit_err)]
pub fn single_value<'a>(cookie_headers: impl IntoIterator<Item = &'a str>, name: &'a str) -> Result<Option<&'a str>, ()> {
    let mut found: Option<&str> = None;
    for v in values(cookie_headers, name).filter(|v| !v.is_empty()) {
        match found {
            Some(f) if f != v => return Err(()),
            _ => found = Some(v),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_occurrence_in_every_header() {
        let headers = ["a=1; tok=\"x\"", "tok=y", " b = 2 ;tok=x"];
        assert_eq!(values(headers, "tok").collect::<Vec<_>>(), ["x", "y", "x"]);
        assert_eq!(values(headers, "b").collect::<Vec<_>>(), ["2"]);
        assert_eq!(values(headers, "c").count(), 0);
        assert_eq!(single_value(headers, "tok"), Err(()));
        assert_eq!(single_value(["tok=x", "tok=x; tok="], "tok"), Ok(Some("x")));
        assert_eq!(single_value(["a=1"], "tok"), Ok(None));
    }
}

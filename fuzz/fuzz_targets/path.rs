//! Arbitrary `:path` values into path normalization (`path::readings`), the
//! basis of every route decision. Besides never panicking: the normalized
//! path is a fixed point (normalizing it again changes nothing, so Envoy's
//! normalization and a backend's second pass agree), holds no dot segment,
//! no doubled slash and no escaped unreserved character, and no reading is
//! longer than the path it came from.
#![no_main]

use authflow_filter_core::path::{readings, without_query};
use libfuzzer_sys::fuzz_target;

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// `%XX` escapes of unreserved characters left in `s`.
fn escaped_unreserved(s: &str) -> bool {
    let hex = |b: u8| (b as char).to_digit(16);
    s.as_bytes().windows(3).any(|w| {
        w[0] == b'%' && matches!((hex(w[1]), hex(w[2])), (Some(h), Some(l)) if is_unreserved((h * 16 + l) as u8))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let path = without_query(raw);
    assert!(!path.contains(['?', '#']));
    let Ok(r) = readings(path) else { return };
    let n = r.normalized.as_ref();
    assert!(n.len() <= path.len(), "normalized {n:?} is longer than {path:?}");
    for other in &r.others {
        assert!(other.len() <= 3 * path.len(), "reading {other:?} of {path:?}");
    }
    if path.starts_with('/') && r.others.iter().all(|o| o != path) && n != path {
        unreachable!("the raw path {path:?} differs from its normalized form {n:?} but is not among its readings");
    }
    if path.starts_with('/') {
        assert!(!n.contains("//"), "{path:?} → {n:?}");
        assert!(!n.split('/').any(|s| s == "." || s == ".."), "{path:?} → {n:?}");
        assert!(!escaped_unreserved(n), "{path:?} → {n:?}");
        match readings(n) {
            Ok(again) => assert_eq!(again.normalized.as_ref(), n, "normalizing {path:?} twice moves it again"),
            Err(e) => panic!("{path:?} normalizes to {n:?}, which is refused: {e:?}"),
        }
    }
});

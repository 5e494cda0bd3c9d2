//! Arbitrary strings as a `return_to` target and as the query string a
//! sign-in page reads it from (`authflow_contract::return_to`). Besides never
//! panicking: every target `is_safe` accepts — and the same target decoded
//! once more, as a careless hop might — resolves on the page's own origin
//! under the WHATWG URL parser (the `url` crate, independent of the code under
//! test) to a path that does not start with `//`; `or_root` and `from_query`
//! only ever give such targets; the `Location` built by `location` stays on
//! the origin and carries its target back unchanged; `decode` undoes `encode`.
#![no_main]

use authflow_contract::return_to::{decode, encode, from_query, is_safe, location, or_root};
use libfuzzer_sys::fuzz_target;
use url::Url;

const ORIGIN: &str = "https://app.example";

fn assert_same_origin(base: &Url, target: &str) {
    let Ok(resolved) = base.join(target) else { panic!("{target:?} does not resolve") };
    assert_eq!(resolved.origin(), base.origin(), "{target:?} leaves the origin: {resolved}");
    assert!(!resolved.path().starts_with("//"), "{target:?} resolves to the path {:?}", resolved.path());
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let Ok(base) = Url::parse(&format!("{ORIGIN}/auth/signin/code")) else { return };

    if is_safe(input) {
        assert!(input.len() <= authflow_contract::return_to::MAX_LEN);
        assert_same_origin(&base, input);
        if let Some(once_more) = decode(&input.replace('+', "%2B")) {
            assert_same_origin(&base, &once_more);
        }
    }
    let safe = or_root(input);
    assert!(is_safe(safe), "or_root gave {safe:?}");

    assert_eq!(decode(&encode(input)).as_deref(), Some(input), "encode/decode of {input:?}");

    let from_page = from_query(input);
    assert!(is_safe(&from_page), "from_query({input:?}) gave {from_page:?}");

    let redirect = location("/auth/refresh", input);
    assert_same_origin(&base, &redirect);
    let Some((_, query)) = redirect.split_once('?') else { panic!("{redirect:?} has no query") };
    assert_eq!(from_query(query), safe, "the target of {redirect:?}");
});

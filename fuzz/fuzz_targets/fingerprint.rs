//! Arbitrary request attributes into the device fingerprint (the `dfp`
//! claim's input and hash, shared by filter and service). The canonical
//! string must be unambiguous: it parses back into exactly the (bounded,
//! trimmed) secret and attributes it was built from, so no two different
//! inputs can share a fingerprint by crafting a value that looks like
//! another field. Attribute names are those configuration accepts. A
//! repeated header fingerprints as its copies combined, and the device
//! secret is read from header copies and cookies without ambiguity.
#![no_main]

use arbitrary::Arbitrary;
use authflow_contract::fingerprint::{
    client_ip_prefix, combined_header_value, device_secret, matches, DeviceAttribute, FingerprintInput, CANONICAL_VERSION,
    MAX_ATTRIBUTE_LEN, MAX_SECRET_LEN,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    secret: &'a str,
    attributes: Vec<(&'a str, &'a str)>,
    client_address: &'a str,
    /// Copies of one header (a repeated `user-agent`), combined into one value.
    copies: Vec<&'a str>,
    /// Copies of the device header and the request's `cookie` headers.
    device_headers: Vec<&'a str>,
    cookie_headers: Vec<&'a str>,
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Reads one `name:len:value\n` field.
fn field<'a>(rest: &mut &'a str) -> Option<(&'a str, &'a str)> {
    let (name, tail) = rest.split_once(':')?;
    let (len, tail) = tail.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let value = tail.get(..len)?;
    *rest = tail.get(len..)?.strip_prefix('\n')?;
    Some((name, value))
}

fuzz_target!(|input: Input| {
    let prefix = client_ip_prefix(input.client_address);
    assert!(prefix.is_empty() || prefix.ends_with("/24") || prefix.ends_with("/48"), "{prefix:?}");
    let named: Vec<(DeviceAttribute, &str)> =
        input.attributes.iter().filter_map(|(n, v)| Some((DeviceAttribute::parse(n).ok()?, *v))).collect();
    for (n, _) in &named {
        assert_eq!(DeviceAttribute::parse(n.name()).as_ref(), Ok(n), "an attribute name does not round-trip");
    }
    // As the filter builds it: headers by value, the client address by its prefix.
    let attributes: Vec<(&str, &str)> = named
        .iter()
        .map(|(n, v)| (n.name(), if *n == DeviceAttribute::ClientIpPrefix { prefix.as_str() } else { *v }))
        .collect();
    let fp = FingerprintInput { secret: input.secret, attributes: attributes.clone() };
    let canonical = fp.canonical_string();

    let mut rest = canonical.strip_prefix(CANONICAL_VERSION).and_then(|r| r.strip_prefix('\n')).expect("version line");
    assert_eq!(field(&mut rest), Some(("secret", cut(input.secret, MAX_SECRET_LEN))));
    for (name, value) in &attributes {
        assert_eq!(field(&mut rest), Some((*name, cut(value.trim(), MAX_ATTRIBUTE_LEN))), "attribute {name}");
    }
    assert!(rest.is_empty(), "trailing bytes in the canonical string");

    let hash = fp.hash();
    assert_eq!(hash, URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())));
    assert!(matches(&hash, &fp.hash()));
    assert!(!matches(&hash, &hash[1..]));

    // A repeated header fingerprints as its copies joined (trimmed, empty ones
    // skipped, `,` between), however early the combination stops growing.
    let joined = input.copies.iter().map(|c| c.trim()).filter(|c| !c.is_empty()).collect::<Vec<_>>().join(",");
    let combined = combined_header_value(input.copies.iter().copied());
    let with = |v: &str| FingerprintInput { secret: "s", attributes: vec![("user-agent", v)] }.hash();
    assert_eq!(with(&combined), with(&joined), "copies {:?}", input.copies);

    // The device secret: the header when any copy has one (all copies must
    // agree), else the cookie; bounded, never blank.
    let header_values: Vec<&str> = input.device_headers.iter().map(|c| c.trim()).filter(|c| !c.is_empty()).collect();
    let secret = device_secret(input.device_headers.iter().copied(), input.cookie_headers.iter().map(|c| c.as_bytes()));
    if let Some(s) = secret {
        assert!(!s.trim_ascii().is_empty() && s.len() <= MAX_SECRET_LEN, "secret {s:?}");
    }
    match header_values.first() {
        Some(first) if header_values.iter().all(|v| v == first) && first.len() <= MAX_SECRET_LEN => {
            assert_eq!(secret, Some(*first), "the device header's value");
        }
        Some(_) => assert_eq!(secret, None, "disagreeing or oversized device headers"),
        None => {}
    }
});

//! The credential edits made to a request before it goes upstream
//! (`forward::credential_edits`) over arbitrary header blocks: several
//! `cookie` headers, any bytes in names and values, duplicates, `;`, `,`
//! and whitespace between pairs, quotes, other spellings of the token
//! cookie (case, `%XX`, `.`/`+`/space for `_`).
//!
//! The edits are applied as Envoy applies them (a removal takes every copy
//! of a header, whatever its case; a set replaces every copy with one), and
//! the headers sent upstream are checked for what a backend relies on,
//! against readings written here, independent of the filter's:
//! - (a) once a token verified, no cookie any backend reads as the token
//!   cookie remains — read by RFC 6265 (`;`), RFC 2109 (`;` and `,`) and
//!   Python's `http.cookies` (`;` and whitespace) parsers, any spelling a
//!   backend folds to the name — except, with `forward_token` and the token
//!   from the cookie, exactly one copy, the name itself, holding exactly the
//!   verified token;
//! - (b) every cookie that no such reading takes for a credential is kept,
//!   in order, byte for byte (a line that is not UTF-8 reaches the upstream
//!   with U+FFFD for its bad bytes: the host call takes a `&str`);
//! - (c) the `Authorization` header that carried the verified token is gone
//!   (every copy) unless `forward_token`; so is every token header and its
//!   `_` spelling; with `forward_token` the `_` spellings still go (and
//!   with no token verified too);
//! - (d) no panic, and what goes upstream is bounded by what came in;
//! - (e) a token cookie goes upstream only as the verified token forwarded,
//!   and a token of the configured issuer the engine refused (on a public
//!   route) from no source at all.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use authflow_filter_core::extract::{find_token, ExtractError, Source};
use authflow_filter_core::forward::{credential_edits, HeaderEdit};
use authflow_filter_core::request::HeaderBlock;
use authflow_filter_core::{FilterConfig, ProviderId, Request};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

const TOKEN_COOKIE: &str = "access_token";
const TOKEN_HEADER: &str = "x-token";
const DEVICE_COOKIE: &str = "__Host-authflow-device";
/// The auth service's pages' cookies and the refresh token: its alone.
const SIGN_IN_COOKIES: [&str; 3] = [
    "__Host-authflow-challenge",
    "__Host-authflow-csrf",
    "__Secure-authflow-refresh",
];

/// Four configurations: forward the token or not, the device secret or not.
fn configs() -> &'static [FilterConfig; 4] {
    static CONFIGS: OnceLock<[FilterConfig; 4]> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        [(false, false), (false, true), (true, false), (true, true)].map(|(token, device)| {
            let c = json!({
                "providers": [{
                    "name": "a", "issuer": "https://a", "audiences": ["api"], "algorithms": ["EdDSA"],
                    "jwks": {"remote": {"cluster": "auth", "path": "/jwks"}},
                    "forward_token": token
                }],
                "token_sources": {"cookies": [TOKEN_COOKIE], "headers": [TOKEN_HEADER]},
                "forward_device_secret": device,
                "routes": [{"match": {"prefix": "/v1/auth/"}, "policy": "public", "forward_credentials": true}]
            });
            FilterConfig::from_json(c.to_string().as_bytes()).expect("the fuzzing config is valid")
        })
    })
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    config: u8,
    /// Whether a token found is taken as verified (the engine's answer).
    verified: bool,
    method: Method,
    headers: Vec<(Name<'a>, Value<'a>)>,
}

#[derive(Arbitrary, Debug)]
enum Method {
    Get,
    Post,
}

#[derive(Arbitrary, Debug)]
enum Name<'a> {
    Cookie,
    Authorization,
    XToken,
    XTokenUnderscore,
    Device,
    DpopProof,
    Raw(&'a [u8]),
}

#[derive(Arbitrary, Debug)]
enum Value<'a> {
    Raw(&'a [u8]),
    Bearer(Tok<'a>),
    Token(Tok<'a>),
    Cookies(Vec<Crumb<'a>>),
}

#[derive(Arbitrary, Debug)]
enum Tok<'a> {
    Valid,
    Other,
    Raw(&'a [u8]),
}

#[derive(Arbitrary, Debug)]
struct Crumb<'a> {
    name: CookieName<'a>,
    value: CookieValue<'a>,
    quoted: bool,
    /// Written before the pair.
    sep: Sep<'a>,
}

#[derive(Arbitrary, Debug)]
enum CookieName<'a> {
    Token,
    /// The token cookie's name with each byte spelled per the mask bits.
    Spelling(u64, u64),
    Device,
    SignIn(u8),
    Raw(&'a [u8]),
}

#[derive(Arbitrary, Debug)]
enum CookieValue<'a> {
    Token(Tok<'a>),
    Raw(&'a [u8]),
    None,
}

#[derive(Arbitrary, Debug)]
enum Sep<'a> {
    Semi,
    SemiSpace,
    Comma,
    CommaSpace,
    Space,
    Tab,
    Raw(&'a [u8]),
}

fn token<'a>(t: &Tok<'a>) -> &'a [u8] {
    match t {
        Tok::Valid => b"eyJ.valid.sig",
        Tok::Other => b"eyJ.forged.sig",
        Tok::Raw(r) => r,
    }
}

/// Another spelling of the token cookie's name: per byte, by two mask bits,
/// as is, in the other case, `%XX`, or (for `_`) `.`, `+`, ` `, `%5f`, `[`.
fn spelling(mask: u64, hi: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, b) in TOKEN_COOKIE.bytes().enumerate() {
        let pick = ((mask >> (2 * i)) & 3) | (((hi >> i) & 1) << 2);
        match (b, pick) {
            (_, 0) => out.push(b),
            (b'_', 1) => out.push(b'.'),
            (b'_', 2) => out.push(b'+'),
            (b'_', 3) => out.push(b' '),
            (b'_', 4) => out.extend_from_slice(b"%5f"),
            (b'_', 5) => out.push(b'['),
            (_, 1 | 4) => out.push(b.to_ascii_uppercase()),
            (_, 2) => out.extend_from_slice(format!("%{b:02X}").as_bytes()),
            (_, _) => out.extend_from_slice(format!("%{b:02x}").as_bytes()),
        }
    }
    out
}

fn cookie_line(crumbs: &[Crumb]) -> Vec<u8> {
    let mut line = Vec::new();
    for (i, c) in crumbs.iter().enumerate() {
        if i > 0 {
            line.extend_from_slice(match &c.sep {
                Sep::Semi => b";",
                Sep::SemiSpace => b"; ",
                Sep::Comma => b",",
                Sep::CommaSpace => b", ",
                Sep::Space => b" ",
                Sep::Tab => b"\t",
                Sep::Raw(r) => r,
            });
        }
        match &c.name {
            CookieName::Token => line.extend_from_slice(TOKEN_COOKIE.as_bytes()),
            CookieName::Spelling(m, h) => line.extend(spelling(*m, *h)),
            CookieName::Device => line.extend_from_slice(DEVICE_COOKIE.as_bytes()),
            CookieName::SignIn(i) => line.extend_from_slice(
                SIGN_IN_COOKIES[usize::from(*i) % SIGN_IN_COOKIES.len()].as_bytes(),
            ),
            CookieName::Raw(r) => line.extend_from_slice(r),
        }
        let value = match &c.value {
            CookieValue::Token(t) => Some(token(t)),
            CookieValue::Raw(r) => Some(*r),
            CookieValue::None => None,
        };
        if let Some(v) = value {
            line.push(b'=');
            if c.quoted {
                line.push(b'"');
            }
            line.extend_from_slice(v);
            if c.quoted {
                line.push(b'"');
            }
        }
    }
    line
}

// ---- Independent readings of a cookie header -------------------------------

/// The name a backend may read a cookie name as, folded: percent-decoded
/// once (PHP), ASCII case ignored (ASP.NET Core), ` `/`+`/`.`/`[` read as
/// `_` (PHP; a `[` closed later makes an array, whose `]` the name lacks).
fn folded(name: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        let b = name[i];
        if b == b'%' && i + 2 < name.len() {
            if let (Some(h), Some(l)) = (hex(name[i + 1]), hex(name[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out.iter()
        .map(|b| match b {
            b' ' | b'+' | b'.' | b'[' => b'_',
            b => b.to_ascii_lowercase(),
        })
        .collect()
}

fn is_token_spelling(name: &[u8]) -> bool {
    folded(name) == TOKEN_COOKIE.as_bytes()
}

fn trim(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// (name, value) of one pair as a parser reads it: split at the first `=`, trimmed.
fn name_value(pair: &[u8]) -> (&[u8], &[u8]) {
    match pair.iter().position(|b| *b == b'=') {
        Some(at) => (trim(&pair[..at]), trim(&pair[at + 1..])),
        None => (trim(pair), b""),
    }
}

/// The pairs of a line, each reading splitting at the bytes `split` accepts.
fn pairs(line: &[u8], split: fn(u8) -> bool) -> Vec<&[u8]> {
    line.split(|b| split(*b)).map(trim).filter(|p| !p.is_empty()).collect()
}

const READINGS: [(&str, fn(u8) -> bool); 3] = [
    ("RFC 6265", |b| b == b';'),
    ("RFC 2109", |b| b == b';' || b == b','),
    ("http.cookies", |b| b == b';' || b.is_ascii_whitespace()),
];

/// The cookies of a line as reading `i` finds them. A part without `=`
/// that another reading splits off carries no value (and Python's
/// `http.cookies` stops at it): not a cookie.
fn read(line: &[u8], i: usize) -> Vec<&[u8]> {
    let ps = pairs(line, READINGS[i].1);
    if i == 0 {
        return ps;
    }
    ps.into_iter().filter(|p| p.contains(&b'=')).collect()
}

/// Whether a `;` pair is a credential under some reading: a token cookie
/// spelling (when `spellings`) or one of `names`, as the pair itself or a
/// cookie some other reading finds inside it.
fn credential_inside(pair: &[u8], spellings: bool, names: &[&str]) -> bool {
    // Every part, valued or not: the filter may drop a pair for a bare name
    // of ours inside it (a pair nobody reads as anything useful).
    let every: fn(u8) -> bool = |b| b == b';' || b == b',' || b.is_ascii_whitespace();
    READINGS.iter().map(|(_, split)| *split).chain([every]).any(|split| {
        pairs(pair, split).iter().any(|p| {
            let n = name_value(p).0;
            (spellings && is_token_spelling(n)) || names.iter().any(|c| c.as_bytes() == n)
        })
    })
}

fn sent_pairs(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<&[u8]> {
    headers.iter().filter(|(n, _)| n == b"cookie").flat_map(|(_, v)| pairs(v, READINGS[0].1)).collect()
}

fn apply(headers: &mut Vec<(Vec<u8>, Vec<u8>)>, edits: &[HeaderEdit]) {
    for e in edits {
        match e {
            HeaderEdit::Remove(name) => headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name.as_bytes())),
            HeaderEdit::Set(name, value) => {
                headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name.as_bytes()));
                headers.push((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
            }
        }
    }
}

fn lossy(b: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(b).into_owned().into_bytes()
}

fn show(headers: &[(Vec<u8>, Vec<u8>)]) -> String {
    headers.iter().map(|(n, v)| format!("{}: {}\n", String::from_utf8_lossy(n).escape_debug(), String::from_utf8_lossy(v).escape_debug())).collect()
}

fn size(headers: &[(Vec<u8>, Vec<u8>)]) -> usize {
    headers.iter().map(|(n, v)| n.len() + v.len()).sum()
}

const MAX_HEADERS: usize = 24;

fuzz_target!(|input: Input| {
    let index = usize::from(input.config % 4);
    let config = &configs()[index];
    let forward_token = index >= 2;
    let forward_device = index % 2 == 1;

    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b":method".to_vec(), match input.method {
            Method::Get => b"GET".to_vec(),
            Method::Post => b"POST".to_vec(),
        }),
        (b":path".to_vec(), b"/api".to_vec()),
        (b":authority".to_vec(), b"app.example".to_vec()),
    ];
    for (name, value) in input.headers.iter().take(MAX_HEADERS) {
        // Envoy hands the filter lower-case names (HTTP/2 requires them; it
        // lower-cases HTTP/1's).
        let name = match name {
            Name::Cookie => b"cookie".to_vec(),
            Name::Authorization => b"authorization".to_vec(),
            Name::XToken => TOKEN_HEADER.as_bytes().to_vec(),
            Name::XTokenUnderscore => b"x_token".to_vec(),
            Name::Device => b"x-authflow-device".to_vec(),
            Name::DpopProof => b"dpop".to_vec(),
            Name::Raw(r) if !r.is_empty() && !r.starts_with(b":") => r.to_ascii_lowercase(),
            Name::Raw(_) => continue,
        };
        let value = match value {
            Value::Raw(r) => r.to_vec(),
            Value::Bearer(t) => [b"Bearer ".as_slice(), token(t)].concat(),
            Value::Token(t) => token(t).to_vec(),
            Value::Cookies(c) => cookie_line(c),
        };
        headers.push((name, value));
    }
    let block = HeaderBlock::from_pairs(&headers);
    let req = Request::new(block, None);

    // The token the engine would have checked, and where from. Only a
    // token of JWT characters can have verified.
    let found = find_token(&req, &config.token_sources, config.max_token_bytes);
    let verified = match found {
        Ok(Some((t, source)))
            if input.verified && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) =>
        {
            Some((t.to_owned(), source))
        }
        _ => None,
    };
    // A token found and not verified is, by the third bit of `config`, one
    // the engine refused naming the configured issuer (a public route's).
    // Extraction refusing the request as Malformed (several tokens, one that
    // is no `b64token`, a value not UTF-8) marks it refused too, as the engine does.
    let refused = verified.is_none()
        && (matches!(found, Ok(Some(_))) && input.config & 4 != 0
            || matches!(found, Err(ExtractError::Malformed)));
    let edits = credential_edits(
        config,
        &req,
        verified.as_ref().map(|_| ProviderId::FIRST),
        refused,
    );

    let mut out = headers.clone();
    apply(&mut out, &edits);

    // (d) bounded: `; ` for `;` between pairs, U+FFFD (3 bytes) for a bad byte.
    assert!(size(&out) <= 3 * size(&headers), "{} bytes became {}", size(&headers), size(&out));

    // Which cookies are credentials the filter must not let through.
    let mut names: Vec<&str> = SIGN_IN_COOKIES.to_vec();
    if !forward_device {
        names.push(DEVICE_COOKIE);
    }
    let cookies_in = |hs: &[(Vec<u8>, Vec<u8>)]| -> Vec<Vec<u8>> {
        hs.iter()
            .filter(|(n, _)| n == b"cookie")
            .flat_map(|(_, v)| pairs(v, READINGS[0].1).into_iter().map(<[u8]>::to_vec))
            .collect()
    };
    let sent = cookies_in(&headers);
    let upstream = cookies_in(&out);

    if let Some((tok, source)) = &verified {
        let keep_cookie = forward_token && *source == Source::Cookie;
        // (a) No reading finds a token cookie but the forwarded one.
        for (i, (reading, _)) in READINGS.iter().enumerate() {
            let mut copies = 0;
            for (_, line) in out.iter().filter(|(n, _)| n == b"cookie") {
                for p in read(line, i) {
                    let (n, v) = name_value(p);
                    // A reading that splits at whitespace may leave the
                    // forwarded copy's value behind (`access_token= t`):
                    // an empty value carries nothing.
                    if !is_token_spelling(n) || (i > 0 && v.is_empty()) {
                        continue;
                    }
                    assert!(
                        keep_cookie && n == TOKEN_COOKIE.as_bytes() && v == tok.as_bytes(),
                        "{reading}: a token cookie {:?} goes upstream (token {tok:?} from {source:?}, forward_token {forward_token})\nsent {}\nedits {edits:?}",
                        String::from_utf8_lossy(p), show(&headers)
                    );
                    copies += 1;
                }
            }
            // One copy: none when the token was sent only quoted (`"t"`,
            // which a backend may read with its quotes) and so is not sent on.
            // (A pair with whitespace or `,` inside may go for what hides behind it.)
            let unquoted = sent_pairs(&headers).iter().any(|p| *p == format!("{TOKEN_COOKIE}={tok}").as_bytes());
            if keep_cookie && i == 0 {
                assert!(copies <= 1 && (copies == 1 || !unquoted), "{reading}: {copies} copies of the forwarded token cookie\nsent {}\nedits {edits:?}", show(&headers));
            }
        }
        // (c) The explicit sources.
        let from_authorization = *source == Source::Explicit
            && headers.iter().any(|(n, v)| {
                n == b"authorization"
                    && std::str::from_utf8(v).is_ok_and(|v| {
                        let (scheme, t) = authflow_filter_core::extract::split_authorization(v);
                        authflow_filter_core::extract::is_token_scheme(scheme) && t == tok
                    })
            });
        if from_authorization && !forward_token {
            assert!(
                !out.iter().any(|(n, _)| n.eq_ignore_ascii_case(b"authorization")),
                "authorization survives\nsent {}\nedits {edits:?}", show(&headers)
            );
        }
        if !forward_token {
            assert!(!out.iter().any(|(n, v)| n == b"x-token" && !trim(v).is_empty()), "a token header survives: {out:?}");
        }
        assert!(!out.iter().any(|(n, _)| n == b"x_token"), "x_token survives: {out:?}");
    }

    // (e) No token cookie goes upstream by its own name unless it is the
    // verified one forwarded (checked above); a token of ours that was
    // refused goes nowhere, from any explicit source; nor does a `_`
    // spelling of the token header, never read, whatever was verified.
    assert!(!out.iter().any(|(n, _)| n == b"x_token"), "x_token survives: {out:?}");
    if verified.is_none() {
        for (_, line) in out.iter().filter(|(n, _)| n == b"cookie") {
            for p in read(line, 0) {
                assert!(
                    name_value(p).0 != TOKEN_COOKIE.as_bytes(),
                    "an unverified token cookie goes upstream\nsent {}\nedits {edits:?}",
                    show(&headers)
                );
            }
        }
    }
    if refused {
        // Not UTF-8 too: a Latin-1 reader splits `Bearer<0xA0>t` into a token.
        let token_authorization = |(n, v): &(Vec<u8>, Vec<u8>)| {
            n == b"authorization"
                && std::str::from_utf8(v).map_or(true, |v| {
                    let (scheme, t) = authflow_filter_core::extract::split_authorization(v);
                    authflow_filter_core::extract::is_token_scheme(scheme) && !t.is_empty()
                })
        };
        assert!(!out.iter().any(token_authorization), "a refused token's authorization survives\nsent {}\nedits {edits:?}", show(&headers));
        assert!(!out.iter().any(|(n, v)| n == b"x-token" && !trim(v).is_empty()), "a refused token header survives: {out:?}");
        assert!(!out.iter().any(|(n, _)| n == b"x_token"), "x_token survives: {out:?}");
    }

    // Credential cookies that are not the token go whatever was verified.
    for (i, (reading, _)) in READINGS.iter().enumerate() {
        for (_, line) in out.iter().filter(|(n, _)| n == b"cookie") {
            for p in read(line, i) {
                let n = name_value(p).0;
                assert!(
                    !names.iter().any(|c| c.as_bytes() == n),
                    "{reading}: credential cookie {:?} goes upstream\nsent {}\nedits {edits:?}",
                    String::from_utf8_lossy(p), show(&headers)
                );
            }
        }
    }

    // (b) Every other cookie is kept, in order, byte for byte (after U+FFFD
    // for bad bytes, once the line is rewritten).
    let rewritten = edits.iter().any(|e| matches!(e, HeaderEdit::Set(n, _) | HeaderEdit::Remove(n) if n == "cookie"));
    let mut next = upstream.iter().peekable();
    for pair in &sent {
        let as_sent = if rewritten { lossy(pair) } else { pair.clone() };
        if next.peek().is_some_and(|o| **o == as_sent) {
            next.next();
            continue;
        }
        // (Other spellings of the token cookie go whatever was verified.)
        let spellings = true;
        let exact: &[&str] = &[TOKEN_COOKIE];
        let credential = credential_inside(pair, spellings, &names) || credential_inside(pair, false, exact);
        assert!(
            credential,
            "cookie {:?} was dropped or changed\nsent {}\nedits {edits:?}",
            String::from_utf8_lossy(pair), show(&headers)
        );
    }
    assert!(next.next().is_none(), "upstream holds a cookie that was never sent\nsent {}\nedits {edits:?}", show(&headers));
});

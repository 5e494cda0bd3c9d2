//! Percent-escapes (RFC 3986 §2.1) as servers decode them: the filter's
//! readings of a path and a query, and the auth service's reading of the
//! query Envoy's ext_authz hands it, the same way.

/// Percent-decoding rounds a lenient backend might apply; text still
/// decoding after this many is not guessed at.
pub const MAX_DECODE_ROUNDS: usize = 4;

/// Still percent-encoded after [`MAX_DECODE_ROUNDS`] rounds of decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooDeeplyEncoded;

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The byte a `%XX` at the start of `rest` stands for.
pub fn escape_at(rest: &[u8]) -> Option<u8> {
    match rest {
        [b'%', h, l, ..] => Some(hex(*h)? << 4 | hex(*l)?),
        _ => None,
    }
}

/// One pass over `bytes`, decoding the escapes `decode` accepts; others stay as written.
pub fn decode_where(bytes: &[u8], decode: impl Fn(u8) -> bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match bytes.get(i..).and_then(escape_at) {
            Some(d) if decode(d) => {
                out.push(d);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// What each round of decoding every escape leaves, as long as a round
/// changes anything: what a backend that decodes once, twice, … acts on
/// (the last is [`decode_fully`]'s). Empty for text with no escape.
pub fn decode_rounds(text: &str) -> Result<Vec<Vec<u8>>, TooDeeplyEncoded> {
    let mut rounds: Vec<Vec<u8>> = Vec::new();
    let mut bytes = text.as_bytes().to_vec();
    loop {
        let next = decode_where(&bytes, |_| true);
        if next == bytes {
            return Ok(rounds);
        }
        if rounds.len() == MAX_DECODE_ROUNDS {
            return Err(TooDeeplyEncoded);
        }
        rounds.push(next.clone());
        bytes = next;
    }
}

/// Every escape decoded, again and again as long as that changes anything.
pub fn decode_fully(text: &str) -> Result<Vec<u8>, TooDeeplyEncoded> {
    Ok(decode_rounds(text)?
        .pop()
        .unwrap_or_else(|| text.as_bytes().to_vec()))
}

/// A query's name or value as a backend's parser may read it: every escape
/// decoded (as often as it changes anything; `+`, a space, is left to
/// [`crate::query::is_parameter`], and matters to no method).
pub fn decode_query_part(part: &str) -> String {
    let bytes = decode_fully(part).unwrap_or_else(|_| part.as_bytes().to_vec());
    String::from_utf8_lossy(&bytes).into_owned()
}

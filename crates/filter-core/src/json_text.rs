//! JSON text for the few small documents the filter writes (error bodies,
//! shared-data names). Written by hand rather than through `serde_json::Value`:
//! the value serializer and its number formatting are code every worker VM
//! loads for nothing (docs/bench.md, "Module size").

/// `s` as a JSON string literal, quotes included (RFC 8259 §7).
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                for nibble in [u32::from(c) >> 4, u32::from(c) & 0xf] {
                    out.extend(HEX.get(nibble as usize).map(|&b| char::from(b)));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON array of strings.
pub fn string_array<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let parts: Vec<String> = items.into_iter().map(quoted).collect();
    format!("[{}]", parts.join(","))
}

/// The error body of a refusal: `{"error": …, "error_description": …}`.
pub fn error_body(code: &str, description: &str) -> String {
    format!(
        "{{\"error\":{},\"error_description\":{}}}",
        quoted(code),
        quoted(description)
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const AWKWARD: &[&str] = &[
        "",
        "plain",
        "a \"quoted\" word",
        "back\\slash",
        "line\nbreak\ttab\r",
        "\u{0}\u{1f}\u{7f}",
        "é ✓ 𝄞",
        "</script>",
    ];

    #[test]
    fn every_string_reads_back_as_itself() {
        for s in AWKWARD {
            let back: String = serde_json::from_str(&quoted(s)).unwrap();
            assert_eq!(&back, s);
        }
    }

    #[test]
    fn arrays_and_error_bodies_are_json_a_client_reads() {
        let back: Vec<String> =
            serde_json::from_str(&string_array(AWKWARD.iter().copied())).unwrap();
        assert_eq!(back, AWKWARD);
        assert_eq!(string_array([]), "[]");
        let body: serde_json::Value =
            serde_json::from_str(&error_body("invalid_token", "say \"hi\"")).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "invalid_token", "error_description": "say \"hi\""})
        );
    }
}

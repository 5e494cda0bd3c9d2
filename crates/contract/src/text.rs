//! Substring search over bytes, for the filter's few fixed patterns (`://`,
//! `::`, `//`). `str::split_once` and `str::contains` with a `&str` pattern
//! bring core's two-way searcher into the Wasm module, about a kilobyte
//! (docs/bench.md, "Module size"); the patterns here are two or three
//! bytes, the texts short.

/// `text` around the first occurrence of `pattern` (which is not empty).
pub fn split_once<'a>(text: &'a str, pattern: &str) -> Option<(&'a str, &'a str)> {
    let at = text
        .as_bytes()
        .windows(pattern.len().max(1))
        .position(|window| window == pattern.as_bytes())?;
    Some((text.get(..at)?, text.get(at + pattern.len()..)?))
}

/// Whether `text` contains `pattern` (which is not empty).
pub fn contains(text: &str, pattern: &str) -> bool {
    split_once(text, pattern).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_finds_as_the_standard_library_does() {
        let texts = [
            "",
            "a",
            "https://a/b",
            "a://b://c",
            "é://ü",
            "::1",
            "1::",
            "a::b::c",
            "//",
            "/a//b",
            "]:",
            "[::1]:80",
            "/é",
        ];
        for text in texts {
            for pattern in ["://", "::", "//", "]:"] {
                assert_eq!(
                    split_once(text, pattern),
                    text.split_once(pattern),
                    "{text:?} {pattern:?}"
                );
                assert_eq!(
                    contains(text, pattern),
                    text.contains(pattern),
                    "{text:?} {pattern:?}"
                );
            }
        }
    }
}

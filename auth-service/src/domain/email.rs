//! Email addresses in one form, so that spellings that look alike and are
//! the same address are one account: trimmed, Unicode NFKC, lower-cased, the
//! domain in ASCII (IDNA, UTS #46); bounded, one `@`, a dot-atom local part
//! (no quoted, escaped or commented spellings), a dotted domain; no
//! invisible characters in the local part (Unicode format characters, among
//! them the bidi controls): each would make an account that displays like
//! another's.
//! Sign-up, sign-in, password reset, the admin lookup, the CLI and the dev
//! outbox all parse through [`Email::parse`].

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    /// Longest input looked at (normalisation may lengthen or shorten it;
    /// the result is held to [`Email::MAX_LEN`]).
    const MAX_INPUT_LEN: usize = 1024;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.len() > Self::MAX_INPUT_LEN {
            return Err("email must be 1 to 254 characters".into());
        }
        // NFKC folds compatibility forms (fullwidth letters, the Kelvin sign, a
        // fullwidth `@`) and composes accents; lower-casing can leave a
        // sequence NFKC would change, so it is applied again.
        let folded: String = trimmed
            .nfkc()
            .collect::<String>()
            .to_lowercase()
            .nfkc()
            .map(fold_case)
            .collect();
        if folded.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("email must not contain spaces or control characters".into());
        }
        let (local, domain) = folded.split_once('@').ok_or("email needs an `@`")?;
        if local.is_empty() || local.len() > 64 || domain.contains('@') {
            return Err("email has an invalid local part".into());
        }
        // The domain's are UTS #46's to map or refuse (a joiner is valid in some scripts' labels).
        if local.chars().any(invisible) {
            return Err("email must not contain invisible characters".into());
        }
        if !dot_atom(local) {
            return Err("email has an invalid local part".into());
        }
        let domain = ascii_domain(domain).ok_or("email has an invalid domain")?;
        let value = format!("{local}@{domain}");
        if value.len() > Self::MAX_LEN {
            return Err("email must be 1 to 254 characters".into());
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lower-casing is not case folding: the letters a lower-cased, NFKC
/// address can still hold whose case fold (Unicode's simple one,
/// CaseFolding.txt C and S) is another letter: the final sigma `ς`, which
/// `to_lowercase` writes for a capital sigma at the end of a word (so `ΑΣ`
/// and `ασ`, one mailbox to a server that ignores case, would be two
/// accounts), and the old Cyrillic letter variants U+1C80–U+1C88.
fn fold_case(c: char) -> char {
    match c {
        '\u{3c2}' => '\u{3c3}',
        '\u{1c80}' => '\u{432}',
        '\u{1c81}' => '\u{434}',
        '\u{1c82}' => '\u{43e}',
        '\u{1c83}' => '\u{441}',
        '\u{1c84}' | '\u{1c85}' => '\u{442}',
        '\u{1c86}' => '\u{44a}',
        '\u{1c87}' => '\u{463}',
        '\u{1c88}' => '\u{a64b}',
        c => c,
    }
}

/// A character that shows nothing (or only reorders what is around it):
/// general category Cf — zero-width space and joiners, the soft hyphen, the
/// word joiner, the byte-order mark, the bidi embeddings, overrides, isolates
/// and marks — and, outside Cf, those that render nothing after a letter:
/// the combining grapheme joiner and the variation selectors.
fn invisible(c: char) -> bool {
    c.general_category() == GeneralCategory::Format
        || matches!(c, '\u{34f}' | '\u{180b}'..='\u{180d}' | '\u{180f}' | '\u{fe00}'..='\u{fe0f}' | '\u{e0100}'..='\u{e01ef}')
}

/// A local part in its one plain spelling, the dot-atom of RFC 5322 §3.2.3
/// (RFC 6531 letters and digits beyond ASCII): atoms of letters, digits and
/// ``!#$%&'*+-/=?^_`{|}~``, joined by single dots. Quoted strings,
/// backslashes, comments and the other specials are refused: `"alice"`,
/// `"\alice"` and `"a\lice"` are all `alice` to the SMTP client (each would
/// be an account of its own, with its own mail budget, whose mails reach
/// `alice`), and `a..b`, `a,b` or `a<b>` it cannot address at all.
fn dot_atom(local: &str) -> bool {
    local.split('.').all(|atom| {
        !atom.is_empty()
            && atom.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || "!#$%&'*+-/=?^_`{|}~".contains(c)
                    || (!c.is_ascii() && c.is_alphanumeric())
            })
    })
}

/// The domain as an ASCII host name (UTS #46 processing, IDNA2008 rules):
/// Unicode labels in their `xn--` form, letters, digits and hyphens only,
/// no label starting or ending with a hyphen, DNS lengths, at least two
/// labels. `None` for whatever does not map to one.
fn ascii_domain(domain: &str) -> Option<String> {
    let ascii = Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::CheckFirstLast,
            DnsLength::Verify,
        )
        .ok()?
        .into_owned();
    let labels_ok = ascii
        .split('.')
        .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'));
    (ascii.contains('.') && labels_ok).then_some(ascii)
}

impl std::fmt::Display for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        assert_eq!(
            Email::parse("  Alice@Example.COM ").unwrap().as_str(),
            "alice@example.com"
        );
        for bad in [
            "",
            "alice",
            "@example.com",
            "a@b",
            "a@@b.c",
            "a b@c.d",
            "a@.c",
            "a@b..c",
            &"x".repeat(300),
            // Quoted, escaped or commented spellings, and other specials.
            "\"alice\"@example.com",
            "\"\\alice\"@example.com",
            "\"a\\lice\"@example.com",
            "\u{ff02}alice\u{ff02}@example.com",
            "alice(x)@example.com",
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a,b@example.com",
            "a:b@example.com",
            "a<b>@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    /// Spellings that look alike and are the same address are one address:
    /// composed and decomposed accents, compatibility characters (fullwidth
    /// letters, the Kelvin sign, a fullwidth `@`), and a Unicode domain and
    /// its ASCII (punycode) form.
    #[test]
    fn unicode_spellings_of_one_address_are_one_address() {
        let same: &[(&str, &str)] = &[
            ("jos\u{e9}@example.com", "jos\u{e9}@example.com"),
            ("jose\u{301}@example.com", "jos\u{e9}@example.com"),
            ("JOSE\u{301}@EXAMPLE.COM", "jos\u{e9}@example.com"),
            ("jose@\u{ff45}xample.com", "jose@example.com"),
            (
                "\u{ff4a}\u{ff4f}\u{ff53}\u{ff45}@example.com",
                "jose@example.com",
            ),
            ("jose\u{ff20}example.com", "jose@example.com"),
            // KELVIN SIGN, in the local part and in the domain.
            ("\u{212a}elvin@example.com", "kelvin@example.com"),
            ("kelvin@\u{212a}elvin.example", "kelvin@kelvin.example"),
            ("kelvin@KELVIN.example", "kelvin@kelvin.example"),
            // ANGSTROM SIGN → å; LATIN SMALL LIGATURE FI → fi.
            ("\u{212b}sa@example.com", "\u{e5}sa@example.com"),
            ("\u{fb01}le@example.com", "file@example.com"),
            ("ada@b\u{fc}cher.example", "ada@xn--bcher-kva.example"),
            ("ada@bu\u{308}cher.example", "ada@xn--bcher-kva.example"),
            ("ada@B\u{dc}CHER.example", "ada@xn--bcher-kva.example"),
            ("ada@xn--bcher-kva.example", "ada@xn--bcher-kva.example"),
            ("ada@XN--BCHER-KVA.EXAMPLE", "ada@xn--bcher-kva.example"),
            // Ideographic full stop as a label separator.
            ("ada@example\u{3002}com", "ada@example.com"),
            // Case folding, not only lower case: a final sigma (which is what
            // lower-casing a capital sigma at the end gives) and the old
            // Cyrillic letter variants are their plain letters.
            ("\u{391}\u{3a3}@example.com", "\u{3b1}\u{3c3}@example.com"),
            ("\u{3b1}\u{3c2}@example.com", "\u{3b1}\u{3c3}@example.com"),
            (
                "\u{3a3}\u{391}\u{3a3}.x@example.com",
                "\u{3c3}\u{3b1}\u{3c3}.x@example.com",
            ),
            ("\u{1c82}lga@example.com", "\u{43e}lga@example.com"),
        ];
        for (input, expected) in same {
            assert_eq!(
                Email::parse(input).map(|e| e.0),
                Ok((*expected).to_owned()),
                "{input:?}"
            );
        }
        // Normalising twice changes nothing.
        for (_, expected) in same {
            assert_eq!(Email::parse(expected).unwrap().as_str(), *expected);
        }
    }

    /// Invisible characters in the local part (format characters, bidi
    /// controls, variation selectors) are refused: each would make an
    /// account that displays like another's.
    #[test]
    fn invisible_characters_in_the_local_part_are_refused() {
        for bad in [
            "alice\u{200b}@example.com",
            "al\u{ad}ice@example.com",
            "alice\u{2060}@example.com",
            "ecila\u{202e}@example.com",
            "\u{202a}alice@example.com",
            "alice\u{2066}@example.com",
            "alice\u{200e}@example.com",
            "alice\u{61c}@example.com",
            "alice\u{200d}@example.com",
            "\u{feff}alice@example.com",
            "ali\u{34f}ce@example.com",
            "alice\u{fe0f}@example.com",
            "alice\u{e0041}@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        // Letters of any script are not invisible.
        assert_eq!(
            Email::parse("\u{627}\u{644}\u{62c}@example.com")
                .unwrap()
                .as_str(),
            "\u{627}\u{644}\u{62c}@example.com"
        );
    }

    /// A domain that does not map to a valid ASCII host name is refused.
    #[test]
    fn domains_that_do_not_map_are_refused() {
        for bad in [
            "a@exa_mple.com",
            "a@exa mple.com",
            "a@-example.com",
            "a@example-.com",
            "a@xn--zz.example",
            "a@example.com.",
            "a@\u{200b}.example",
            "a@ex\u{fffd}ample.com",
            &format!("a@{}.com", "x".repeat(64)),
            &format!("{}@example.com", "\u{fdfa}".repeat(4)),
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }
}

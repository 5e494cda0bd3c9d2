//! Email addresses: trimmed, lower-cased, bounded, one `@`, a dotted domain.

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let value = raw.trim().to_lowercase();
        if value.is_empty() || value.len() > Self::MAX_LEN {
            return Err("email must be 1 to 254 characters".into());
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("email must not contain spaces or control characters".into());
        }
        let (local, domain) = value.split_once('@').ok_or("email needs an `@`")?;
        if local.is_empty() || local.len() > 64 || domain.contains('@') {
            return Err("email has an invalid local part".into());
        }
        let labels_ok = domain.split('.').all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'));
        if !domain.contains('.') || !labels_ok {
            return Err("email has an invalid domain".into());
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
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
        assert_eq!(Email::parse("  Alice@Example.COM ").unwrap().as_str(), "alice@example.com");
        for bad in ["", "alice", "@example.com", "a@b", "a@@b.c", "a b@c.d", "a@.c", "a@b..c", &"x".repeat(300)] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }
}

//! Device binding: recompute the token's `dfp` from this request (see
//! `authflow_contract::fingerprint`) and compare in constant time.

use authflow_contract::client_address::client_address_in_lines;
use std::borrow::Cow;

use authflow_contract::fingerprint::{self, DeviceAttribute, FingerprintInput, DEVICE_HEADER};

use crate::config::{DeviceBinding, DeviceMode, MissingFingerprint};
use crate::request::Request;
use crate::verify::VerifiedToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceCheck {
    /// Binding off, a service-account token without `dfp` (it has no
    /// device), or a user token without `dfp` that configuration allows.
    NotChecked,
    Match,
    /// The token has a `dfp` but the request carries no device secret.
    SecretMissing,
    /// Secret or attributes differ from those at sign-in.
    Mismatch,
    /// The token has no `dfp` and configuration requires one.
    FingerprintMissing,
}

impl DeviceCheck {
    /// The outcome's name in log lines (a `Debug` format would link its
    /// formatting code into the module for one log line).
    pub fn name(self) -> &'static str {
        match self {
            Self::NotChecked => "not_checked",
            Self::Match => "match",
            Self::SecretMissing => "secret_missing",
            Self::Mismatch => "mismatch",
            Self::FingerprintMissing => "fingerprint_missing",
        }
    }
}

pub fn check(binding: &DeviceBinding, token: &VerifiedToken, req: &Request) -> DeviceCheck {
    if binding.mode == DeviceMode::Off {
        return DeviceCheck::NotChecked;
    }
    let Some(claimed) = token.dfp.as_deref() else {
        // A service account signs in with its own credentials, from no device.
        if token.client_id.is_some() {
            return DeviceCheck::NotChecked;
        }
        return match binding.tokens_without_fingerprint {
            MissingFingerprint::Allow => DeviceCheck::NotChecked,
            MissingFingerprint::Deny => DeviceCheck::FingerprintMissing,
        };
    };
    // The header if it has a value, else the cookie, from every copy of either (the contract's rule).
    let Some(secret) =
        fingerprint::device_secret(req.header_values(DEVICE_HEADER), req.header_bytes("cookie"))
    else {
        return DeviceCheck::SecretMissing;
    };
    let ip_prefix = binding
        .attributes
        .contains(&DeviceAttribute::ClientIpPrefix)
        .then(|| {
            // Every line, as one list: the service computed the fingerprint that way.
            let lines: Vec<&[u8]> = req.header_bytes("x-forwarded-for").collect();
            client_address_in_lines(
                lines,
                req.client_address.as_deref(),
                binding.xff_num_trusted_hops,
            )
            .map(fingerprint::ip_prefix)
        });
    // An unknown client is no network: it matches no binding (not even one
    // made where the sign-in's address was unknown too, the empty prefix).
    let ip_prefix = match ip_prefix {
        Some(None) => return DeviceCheck::Mismatch,
        known => known.flatten(),
    };
    // A header sent several times counts with all its copies, combined as the contract says.
    let values: Vec<(&str, Cow<'_, str>)> = binding
        .attributes
        .iter()
        .map(|a| match a {
            DeviceAttribute::Header(h) => (
                h.as_str(),
                fingerprint::combined_header_value(req.header_values(h)),
            ),
            DeviceAttribute::ClientIpPrefix => {
                (a.name(), Cow::Borrowed(ip_prefix.as_deref().unwrap_or("")))
            }
        })
        .collect();
    let attributes = values.iter().map(|(n, v)| (*n, v.as_ref())).collect();
    let computed = FingerprintInput { secret, attributes }.hash();
    if fingerprint::matches(claimed, &computed) {
        DeviceCheck::Match
    } else {
        DeviceCheck::Mismatch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FilterConfig;
    use crate::request::HeaderReads;

    fn binding(hops: u32) -> FilterConfig {
        let json = format!(
            r#"{{"providers": [{{"name": "p", "issuer": "https://i", "audiences": ["api"], "algorithms": ["EdDSA"], "jwks": {{"remote": {{"cluster": "c", "path": "/j"}}}}}}],
                "device_binding": {{"mode": "enforce", "attributes": ["client-ip-prefix"], "xff_num_trusted_hops": {hops}}}}}"#
        );
        FilterConfig::from_json(json.as_bytes()).unwrap()
    }

    fn token_for(address: &str) -> VerifiedToken {
        let dfp = FingerprintInput {
            secret: "s3cret",
            attributes: vec![(
                DeviceAttribute::CLIENT_IP_PREFIX,
                &fingerprint::client_ip_prefix(address),
            )],
        }
        .hash();
        VerifiedToken {
            dfp: Some(dfp),
            ..VerifiedToken::new(crate::ProviderId::FIRST, String::new(), 0)
        }
    }

    fn request(xff: &str, peer: &str) -> Request {
        let headers = vec![
            (DEVICE_HEADER.to_owned(), "s3cret".to_owned()),
            ("x-forwarded-for".to_owned(), xff.to_owned()),
        ];
        Request::from_headers(headers, Some(peer.to_owned()))
    }

    #[test]
    fn client_ip_prefix_counts_trusted_hops_like_the_service() {
        // One trusted proxy in front of Envoy: the address it appended, not
        // the peer (the proxy) and not what the client wrote first.
        let config = binding(1);
        // Device binding reads the whole map (every copy counts), x-forwarded-for included.
        assert_eq!(HeaderReads::for_config(&config), HeaderReads::All);
        let req = request("198.51.100.1, 203.0.113.77", "10.0.0.9:4000");
        assert_eq!(
            check(&config.device, &token_for("203.0.113.5"), &req),
            DeviceCheck::Match
        );
        assert_eq!(
            check(&config.device, &token_for("198.51.100.1"), &req),
            DeviceCheck::Mismatch
        );
        // Default 0: Envoy's own idea of the client (source.address).
        let config = binding(0);
        assert_eq!(
            check(&config.device, &token_for("10.0.0.1"), &req),
            DeviceCheck::Match
        );
    }

    /// A dual-stack proxy writes an IPv4 client as `::ffff:a.b.c.d`: a token
    /// bound to one IPv4 network must not pass from another through it.
    #[test]
    fn ipv4_mapped_entries_bind_to_their_ipv4_network() {
        let config = binding(1);
        let req = request("::ffff:203.0.113.77", "10.0.0.9:4000");
        assert_eq!(
            check(&config.device, &token_for("::ffff:198.51.100.1"), &req),
            DeviceCheck::Mismatch
        );
        assert_eq!(
            check(&config.device, &token_for("203.0.113.5"), &req),
            DeviceCheck::Match
        );
    }

    /// Finding: the filter read only the first `x-forwarded-for` line while
    /// the service (which computed the fingerprint) reads them all as one
    /// list. A client that sends its own line, to which the trusted proxy's
    /// entry is appended as a second line, chose the address the filter
    /// counted from: a thief holding a token and its device secret could
    /// claim the owner's network.
    #[test]
    fn every_x_forwarded_for_line_counts_as_the_service_counts_them() {
        let config = binding(1);
        let headers = vec![
            (DEVICE_HEADER.to_owned(), "s3cret".to_owned()),
            ("x-forwarded-for".to_owned(), "203.0.113.5".to_owned()),
            ("x-forwarded-for".to_owned(), "198.51.100.1".to_owned()),
        ];
        let req = Request::from_headers(headers, Some("10.0.0.9:4000".to_owned()));
        assert_eq!(
            check(&config.device, &token_for("203.0.113.5"), &req),
            DeviceCheck::Mismatch,
            "the client's own line is not the trusted proxy's entry"
        );
        assert_eq!(
            check(&config.device, &token_for("198.51.100.1"), &req),
            DeviceCheck::Match
        );
    }

    /// An unknown client address (behind `xff_num_trusted_hops` proxies, an
    /// `x-forwarded-for` with too few entries or junk where the trusted entry
    /// belongs) is no network: it must not match a token whose sign-in address
    /// was unknown too (the service then binds the empty prefix), or such a
    /// token passes from every client whose address is unknown.
    #[test]
    fn an_unknown_client_address_matches_no_binding() {
        let config = binding(1);
        let unbound = {
            let dfp = FingerprintInput {
                secret: "s3cret",
                attributes: vec![(DeviceAttribute::CLIENT_IP_PREFIX, "")],
            }
            .hash();
            VerifiedToken {
                dfp: Some(dfp),
                ..VerifiedToken::new(crate::ProviderId::FIRST, String::new(), 0)
            }
        };
        for xff in ["", "not-an-address", "203.0.113.5:99999"] {
            assert_eq!(
                check(&config.device, &unbound, &request(xff, "10.0.0.9:4000")),
                DeviceCheck::Mismatch,
                "{xff:?}"
            );
        }
    }
}

//! Device binding: recompute the token's `dfp` from this request (see
//! `authflow_contract::fingerprint`) and compare in constant time.

use authflow_contract::fingerprint::{self, DeviceAttribute, FingerprintInput, DEVICE_COOKIE, DEVICE_HEADER};

use crate::config::{DeviceBinding, DeviceMode, MissingFingerprint};
use crate::request::Request;
use crate::verify::VerifiedToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceCheck {
    /// Binding off, or a token without `dfp` that configuration allows.
    NotChecked,
    Match,
    /// The token has a `dfp` but the request carries no device secret.
    SecretMissing,
    /// Secret or attributes differ from those at sign-in.
    Mismatch,
    /// The token has no `dfp` and configuration requires one.
    FingerprintMissing,
}

pub fn check(binding: &DeviceBinding, token: &VerifiedToken, req: &Request) -> DeviceCheck {
    if binding.mode == DeviceMode::Off {
        return DeviceCheck::NotChecked;
    }
    let Some(claimed) = token.dfp.as_deref() else {
        return match binding.tokens_without_fingerprint {
            MissingFingerprint::Allow => DeviceCheck::NotChecked,
            MissingFingerprint::Deny => DeviceCheck::FingerprintMissing,
        };
    };
    let secret = req.header(DEVICE_HEADER).or_else(|| req.cookie(DEVICE_COOKIE)).map(str::trim);
    let Some(secret) = secret.filter(|s| !s.is_empty() && s.len() <= fingerprint::MAX_SECRET_LEN) else {
        return DeviceCheck::SecretMissing;
    };
    let ip_prefix = binding
        .attributes
        .contains(&DeviceAttribute::ClientIpPrefix)
        .then(|| req.client_address.as_deref().map(fingerprint::client_ip_prefix).unwrap_or_default());
    let attributes = binding
        .attributes
        .iter()
        .map(|a| match a {
            DeviceAttribute::Header(h) => (h.as_str(), req.header(h).unwrap_or("")),
            DeviceAttribute::ClientIpPrefix => (a.name(), ip_prefix.as_deref().unwrap_or("")),
        })
        .collect();
    let computed = FingerprintInput { secret, attributes }.hash();
    if fingerprint::matches(claimed, &computed) {
        DeviceCheck::Match
    } else {
        DeviceCheck::Mismatch
    }
}

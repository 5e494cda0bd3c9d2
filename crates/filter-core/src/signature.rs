//! Who checks a signature: the host's BoringSSL when it offers Envoy's
//! `verify_signature` foreign function (native speed), else the filter's own
//! verifiers ([`authflow_contract::jws`]), which always remain the fallback.
//!
//! Whether the host can check an algorithm is learnt once per VM, on the
//! first token of that algorithm the own verifier accepted: the host must
//! accept that signature and refuse it with one bit flipped. Until then, and
//! for good after a failed probe, the own verifier decides. (Envoy's host
//! takes RSA and ECDSA keys; its Ed25519 keys refuse a hash name, so EdDSA
//! stays in Wasm there.) A host call that fails later falls back for that call.
//!
//! The wire form is Envoy's `verify_signature.proto`
//! (`source/extensions/common/wasm/ext/` in Envoy), encoded by hand: four
//! length-delimited fields out, one bool back.

use std::cell::Cell;

use authflow_contract::der;
use authflow_contract::dpop::{jwk_thumbprint, ProofKeys};
use authflow_contract::jwk::{Algorithm, KeyEntry, PublicKey};

use crate::proof_keys::ProofKeyCache;
use crate::timing::{self, Piece};

/// The foreign function's name in Envoy's Wasm host.
pub const FOREIGN_FUNCTION: &str = "verify_signature";

/// Calls the host's foreign function with encoded arguments; `None` when the
/// call failed (function absent, arguments refused).
pub type ForeignCall = Box<dyn Fn(&[u8]) -> Option<Vec<u8>>>;

/// Which verifier decided a signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Host,
    Wasm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum Support {
    #[default]
    Unknown,
    Yes,
    No,
}

const ALGORITHMS: [Algorithm; 3] = [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256];

fn index(alg: Algorithm) -> usize {
    match alg {
        Algorithm::EdDSA => 0,
        Algorithm::ES256 => 1,
        Algorithm::RS256 => 2,
    }
}

pub struct SignatureChecker {
    host: Option<ForeignCall>,
    support: [Cell<Support>; 3],
    /// Signatures checked per algorithm (as [`ALGORITHMS`]) and path, not yet reported.
    counts: [[Cell<u64>; 2]; 3],
    /// DPoP proof keys seen lately, prepared.
    proof_keys: ProofKeyCache,
}

impl Default for SignatureChecker {
    fn default() -> Self {
        Self::own_only()
    }
}

impl SignatureChecker {
    /// Only the filter's own verifiers (a host without the foreign function, and host tests).
    pub fn own_only() -> Self {
        SignatureChecker {
            host: None,
            support: Default::default(),
            counts: Default::default(),
            proof_keys: ProofKeyCache::default(),
        }
    }

    /// The host's verifier where it proves able, the own ones elsewhere.
    pub fn with_host(call: ForeignCall) -> Self {
        SignatureChecker {
            host: Some(call),
            ..Self::own_only()
        }
    }

    /// Whether `signature` signs `input` under `key`.
    pub fn verify(&self, key: &KeyEntry, input: &[u8], signature: &[u8]) -> bool {
        self.decide(key.algorithm(), &key.spki, input, signature, || {
            key.signature.verify(input, signature)
        })
    }

    fn decide(
        &self,
        alg: Algorithm,
        spki: &[u8],
        input: &[u8],
        signature: &[u8],
        own: impl Fn() -> bool,
    ) -> bool {
        let _span = timing::span(Piece::Signature);
        let support = self.support.get(index(alg)).map_or(Support::No, Cell::get);
        let (valid, path) = match (support, &self.host) {
            (Support::Yes, Some(host)) => match host_verify(host, alg, spki, input, signature) {
                Some(valid) => (valid, Path::Host),
                None => (own(), Path::Wasm),
            },
            (Support::Unknown, Some(host)) => {
                let valid = own();
                if valid {
                    let able = probe(host, alg, spki, input, signature);
                    if let Some(s) = self.support.get(index(alg)) {
                        s.set(if able { Support::Yes } else { Support::No });
                    }
                    log::info!(
                        "authflow: {} signatures are checked {}",
                        alg.as_str(),
                        if able {
                            "by the host (verify_signature)"
                        } else {
                            "in Wasm (the host cannot)"
                        }
                    );
                }
                (valid, Path::Wasm)
            }
            _ => (own(), Path::Wasm),
        };
        if let Some(c) = self
            .counts
            .get(index(alg))
            .and_then(|per_path| per_path.get(path as usize))
        {
            c.set(c.get().saturating_add(1));
        }
        valid
    }

    /// Signatures checked since the last call: (algorithm, path, count), nonzero only.
    pub fn take_counts(&self) -> Vec<(Algorithm, Path, u64)> {
        let mut out = Vec::new();
        for (alg, per_path) in ALGORITHMS.iter().zip(&self.counts) {
            for (path, c) in [Path::Host, Path::Wasm].into_iter().zip(per_path) {
                let n = c.replace(0);
                if n > 0 {
                    out.push((*alg, path, n));
                }
            }
        }
        out
    }
}

/// DPoP proof keys ([`crate::proof_keys`]): the host decides a signature
/// when it can, else the contract's verifiers.
impl ProofKeys for SignatureChecker {
    fn on_curve(&self, key: &PublicKey) -> bool {
        self.proof_keys.get(key).is_some()
    }

    fn thumbprint(&self, key: &PublicKey) -> String {
        self.proof_keys
            .get(key)
            .map_or_else(|| jwk_thumbprint(key), |k| k.thumbprint.clone())
    }

    fn verify(&self, key: &PublicKey, input: &[u8], signature: &[u8]) -> bool {
        let Some(k) = self.proof_keys.get(key) else {
            return false;
        };
        self.decide(key.algorithm(), &k.spki, input, signature, || {
            match &k.own {
                Some(own) => own.verify(input, signature),
                None => authflow_contract::dpop::verify_signature(key, input, signature),
            }
        })
    }

    fn known_header(&self, header: &str) -> Option<PublicKey> {
        self.proof_keys.by_header(header).map(|k| k.key.clone())
    }

    fn remember_header(&self, header: &str, key: &PublicKey) {
        self.proof_keys.remember_header(header, key);
    }
}

/// The host accepts a signature the own verifier accepted, and refuses it
/// with its last bit flipped: only then is it trusted with this algorithm.
fn probe(host: &ForeignCall, alg: Algorithm, spki: &[u8], input: &[u8], signature: &[u8]) -> bool {
    let mut tampered = signature.to_vec();
    if let Some(last) = tampered.last_mut() {
        *last ^= 1;
    }
    host_verify(host, alg, spki, input, signature) == Some(true)
        && host_verify(host, alg, spki, input, &tampered) == Some(false)
}

/// The host's verdict; `None` when the host gave none.
fn host_verify(
    host: &ForeignCall,
    alg: Algorithm,
    spki: &[u8],
    input: &[u8],
    signature: &[u8],
) -> Option<bool> {
    let (hash, signature) = match alg {
        Algorithm::RS256 => ("sha256", signature.to_vec()),
        // A signature of the wrong length is no signature at all.
        Algorithm::ES256 => match der::ecdsa_p256_signature(signature) {
            Some(der) => ("sha256", der),
            None => return Some(false),
        },
        Algorithm::EdDSA => ("sha512", signature.to_vec()),
    };
    let answer = host(&encode_arguments(hash, spki, &signature, input))?;
    decode_result(&answer)
}

/// `VerifySignatureArguments { hash_function = 1, public_key = 2, signature = 3, text = 4 }`.
pub fn encode_arguments(
    hash: &str,
    public_key_der: &[u8],
    signature: &[u8],
    text: &[u8],
) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(hash.len() + public_key_der.len() + signature.len() + text.len() + 20);
    for (field, bytes) in [
        (1u8, hash.as_bytes()),
        (2, public_key_der),
        (3, signature),
        (4, text),
    ] {
        out.push(field << 3 | 2);
        let mut len = bytes.len();
        while len >= 0x80 {
            out.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(bytes);
    }
    out
}

/// `VerifySignatureResult { bool result = 1; string error = 2; }` → `result`;
/// `None` when the bytes are not such a message.
pub fn decode_result(mut bytes: &[u8]) -> Option<bool> {
    let mut result = false;
    while let Some((&tag, rest)) = bytes.split_first() {
        bytes = rest;
        match tag & 7 {
            0 => {
                let (value, rest) = varint(bytes)?;
                bytes = rest;
                if tag >> 3 == 1 {
                    result = value != 0;
                }
            }
            2 => {
                let (len, rest) = varint(bytes)?;
                bytes = rest.get(usize::try_from(len).ok()?..)?;
            }
            _ => return None,
        }
    }
    Some(result)
}

fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, bytes.get(i + 1..)?));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use authflow_contract::KeySet;
    use std::rc::Rc;

    const ED25519_JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
    // RFC 8032 §7.1 test 1: the empty message.
    const ED25519_SIG: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A host that answers with the own verifier (what a working BoringSSL would say),
    /// counting its calls; `able: false` answers like Envoy for a key it cannot use.
    fn fake_host(key: KeyEntry, able: bool, calls: Rc<Cell<u32>>) -> ForeignCall {
        Box::new(move |args: &[u8]| {
            calls.set(calls.get() + 1);
            if !able {
                return Some(vec![0x08, 0x00, 0x12, 0x02, b'n', b'o']);
            }
            // Pull signature (3) and text (4) back out of the encoded arguments.
            let mut fields: Vec<Vec<u8>> = Vec::new();
            let mut rest = args;
            while let Some((_, r)) = rest.split_first() {
                let (len, r) = varint(r).unwrap();
                fields.push(r[..len as usize].to_vec());
                rest = &r[len as usize..];
            }
            let ok = key.signature.verify(&fields[3], &fields[2]);
            Some(if ok {
                vec![0x08, 0x01]
            } else {
                vec![0x08, 0x00]
            })
        })
    }

    fn ed25519_key() -> KeyEntry {
        KeySet::parse(ED25519_JWKS.as_bytes())
            .unwrap()
            .keys
            .remove(0)
    }

    #[test]
    fn the_host_takes_over_after_a_successful_probe() {
        let key = ed25519_key();
        let calls = Rc::new(Cell::new(0));
        let checker = SignatureChecker::with_host(fake_host(key.clone(), true, Rc::clone(&calls)));
        let sig = hex(ED25519_SIG);
        let mut bad = sig.clone();
        bad[0] ^= 1;
        // An invalid signature first: no probe (a refusal proves nothing about the host).
        assert!(!checker.verify(&key, b"", &bad));
        assert_eq!(calls.get(), 0);
        assert!(checker.verify(&key, b"", &sig));
        assert_eq!(
            calls.get(),
            2,
            "probe: the valid signature and a tampered one"
        );
        assert!(checker.verify(&key, b"", &sig));
        assert!(!checker.verify(&key, b"", &bad));
        assert_eq!(calls.get(), 4);
        assert_eq!(
            checker.take_counts(),
            [
                (Algorithm::EdDSA, Path::Host, 2),
                (Algorithm::EdDSA, Path::Wasm, 2)
            ]
        );
        assert!(checker.take_counts().is_empty());
    }

    #[test]
    fn a_host_that_cannot_is_asked_once() {
        let key = ed25519_key();
        let calls = Rc::new(Cell::new(0));
        let checker = SignatureChecker::with_host(fake_host(key.clone(), false, Rc::clone(&calls)));
        let sig = hex(ED25519_SIG);
        for _ in 0..3 {
            assert!(checker.verify(&key, b"", &sig));
        }
        assert_eq!(calls.get(), 1);
        assert_eq!(checker.take_counts(), [(Algorithm::EdDSA, Path::Wasm, 3)]);
    }

    #[test]
    fn a_failing_host_call_falls_back_to_the_own_verifier() {
        let key = ed25519_key();
        let fail = Rc::new(Cell::new(false));
        let fail_in_host = Rc::clone(&fail);
        let checker = SignatureChecker::with_host(Box::new(move |_: &[u8]| {
            if fail_in_host.get() {
                None
            } else {
                // Says yes to anything, tampered or not.
                Some(vec![0x08, 1])
            }
        }));
        let sig = hex(ED25519_SIG);
        // The probe fails here: this host accepts the tampered signature too.
        assert!(checker.verify(&key, b"", &sig));
        assert_eq!(checker.support[0].get(), Support::No);
        let mut bad = sig.clone();
        bad[5] ^= 1;
        assert!(!checker.verify(&key, b"", &bad), "the own verifier decides");
        // A host trusted before that fails now: the own verifier answers.
        checker.support[0].set(Support::Yes);
        fail.set(true);
        assert!(checker.verify(&key, b"", &sig));
        assert!(!checker.verify(&key, b"", &bad));
    }

    #[test]
    fn arguments_and_results_use_the_protobuf_wire_form() {
        let long = vec![7u8; 300];
        let args = encode_arguments("sha256", &[1, 2], &long, b"");
        assert_eq!(&args[..8], b"\x0a\x06sha256");
        assert_eq!(&args[8..12], &[0x12, 2, 1, 2]);
        assert_eq!(&args[12..15], &[0x1a, 0xac, 0x02], "300 as a varint");
        assert_eq!(&args[args.len() - 2..], &[0x22, 0]);
        assert_eq!(decode_result(&[0x08, 0x01]), Some(true));
        assert_eq!(
            decode_result(&[]),
            Some(false),
            "proto3 leaves a false bool out"
        );
        assert_eq!(decode_result(b"\x12\x03bad"), Some(false));
        assert_eq!(decode_result(b"\x12\x03bad\x08\x01"), Some(true));
        assert_eq!(decode_result(b"\x12\x09short"), None);
        assert_eq!(decode_result(&[0x08, 0xff]), None);
        assert_eq!(
            decode_result(&[0x0d, 0, 0, 0, 0]),
            None,
            "a fixed32 is no field of this message"
        );
    }
}

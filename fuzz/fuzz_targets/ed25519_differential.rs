//! Differential: the filter's Ed25519 verifier (`Ed25519Key`, a table of
//! multiples of the key, comparing encodings; `verify_once` for a key used
//! once, without the table) must decide as ed25519-dalek's
//! `verify_strict` on every key, message and signature: genuine signatures
//! (then tampered), arbitrary bytes, the small-order points as key or `R`,
//! and `s` at the group order's edges, non-canonical encodings of `R`
//! among them (both refuse those, as RFC 8032 §5.1.3 asks: `verify_strict`
//! compares the encoding it recomputes with the one sent).
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use authflow_contract::ed25519_verify::{verify_once, Ed25519Key};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Key {
    /// One of a few fixed keys, prepared once: building a key's table costs
    /// more than a check, and most inputs are about signatures.
    Fixed(u8),
    /// The public key of this secret seed (a fresh table each time).
    Secret([u8; 32]),
    /// Any 32 bytes (a point or not).
    Raw([u8; 32]),
    /// One of the eight small-order points.
    SmallOrder(u8),
}

#[derive(Arbitrary, Debug)]
enum R {
    Genuine,
    Raw([u8; 32]),
    SmallOrder(u8),
    /// The genuine `R` with y + p (a non-canonical encoding where one exists) or the sign bit flipped.
    Twisted { add_p: bool },
}

#[derive(Arbitrary, Debug)]
enum S {
    Genuine,
    Raw([u8; 32]),
    /// The genuine `s` plus a multiple of ℓ (non-canonical), or ℓ − 1, ℓ, 0.
    Edge(u8),
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    key: Key,
    message: &'a [u8],
    r: R,
    s: S,
    flip: Option<(u8, u8)>,
    truncate: bool,
}

const ELL: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0x10,
];
const P: [u8; 32] = [
    0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
];

/// Little-endian a + b (mod 2²⁵⁶).
fn add(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = sum as u8;
        carry = sum >> 8;
    }
    out
}

fn small_order(i: u8) -> [u8; 32] {
    let points = curve25519_dalek::constants::EIGHT_TORSION;
    points[usize::from(i) % points.len()].compress().to_bytes()
}

struct Prepared {
    signing: SigningKey,
    ours: Ed25519Key,
}

fn fixed_keys() -> &'static [Prepared] {
    static KEYS: OnceLock<Vec<Prepared>> = OnceLock::new();
    KEYS.get_or_init(|| {
        [[1u8; 32], [2; 32], [0x42; 32], [0x7f; 32]]
            .iter()
            .filter_map(|seed| {
                let signing = SigningKey::from_bytes(seed);
                let ours = Ed25519Key::new(&signing.verifying_key().to_bytes())?;
                Some(Prepared { signing, ours })
            })
            .collect()
    })
}

fn reference(key: &[u8; 32], message: &[u8], sig: &[u8]) -> bool {
    VerifyingKey::from_bytes(key).is_ok_and(|k| ed25519_dalek::Signature::from_slice(sig).is_ok_and(|s| k.verify_strict(message, &s).is_ok()))
}

fuzz_target!(|input: Input| {
    let fixed;
    let (signing, key_bytes, ours): (Option<SigningKey>, [u8; 32], Option<Ed25519Key>) = match input.key {
        Key::Fixed(i) => {
            let keys = fixed_keys();
            fixed = &keys[usize::from(i) % keys.len()];
            (Some(fixed.signing.clone()), fixed.signing.verifying_key().to_bytes(), Some(fixed.ours.clone()))
        }
        // Fresh keys without a table (a DPoP proof's key until used often): the other path.
        Key::Secret(seed) => {
            let signing = SigningKey::from_bytes(&seed);
            let bytes = signing.verifying_key().to_bytes();
            (Some(signing), bytes, Ed25519Key::lazy(&bytes))
        }
        Key::Raw(bytes) => (None, bytes, Ed25519Key::lazy(&bytes)),
        Key::SmallOrder(i) => {
            let bytes = small_order(i);
            (None, bytes, Ed25519Key::new(&bytes))
        }
    };
    // The key is refused exactly where ed25519-dalek refuses it.
    assert_eq!(ours.is_some(), VerifyingKey::from_bytes(&key_bytes).is_ok(), "key {key_bytes:?}");

    let genuine = signing.as_ref().map(|k| k.sign(input.message).to_bytes()).unwrap_or([0; 64]);
    let genuine_r: [u8; 32] = genuine[..32].try_into().unwrap_or([0; 32]);
    let genuine_s: [u8; 32] = genuine[32..].try_into().unwrap_or([0; 32]);
    let r = match input.r {
        R::Genuine => genuine_r,
        R::Raw(b) => b,
        R::SmallOrder(i) => small_order(i),
        R::Twisted { add_p: true } => add(&genuine_r, &P),
        R::Twisted { add_p: false } => {
            let mut r = genuine_r;
            r[31] ^= 0x80;
            r
        }
    };
    let s = match input.s {
        S::Genuine => genuine_s,
        S::Raw(b) => b,
        S::Edge(i) => match i % 4 {
            0 => add(&genuine_s, &ELL),
            1 => ELL,
            2 => add(&ELL, &[0xff; 32]), // ℓ − 1
            _ => [0; 32],
        },
    };
    let mut sig = [r, s].concat();
    if let Some((at, bit)) = input.flip {
        sig[usize::from(at) % 64] ^= 1 << (bit % 8);
    }
    if input.truncate {
        sig.pop();
    }
    let Some(ours) = ours else { return };
    let decided = ours.verify(input.message, &sig);
    // With a table or without it, through a prepared key or once: the same decision.
    assert_eq!(decided, verify_once(&key_bytes, input.message, &sig));
    let expected = reference(&key_bytes, input.message, &sig);
    assert_eq!(
        decided, expected,
        "key {key_bytes:?}, message {:?}, signature {sig:?}: ours {decided}, verify_strict {expected}",
        input.message
    );
});

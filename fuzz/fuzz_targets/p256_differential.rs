//! Differential: the filter's own P-256 verifier (`P256Key`, 32-bit limbs
//! and comb tables, built for Wasm) must decide exactly as the `p256`
//! crate's `VerifyingKey::verify` on every key, message and signature:
//! genuine signatures (then tampered), arbitrary bytes, and the scalar edge
//! cases (0, 1, n − 1, n, p − n, p, 2²⁵⁶ − 1, the key's own x); and
//! `verify_once` (no table: a DPoP proof's key) exactly as `P256Key`.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use authflow_contract::p256_verify::{verify_once, P256Key};
use libfuzzer_sys::fuzz_target;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};

#[derive(Arbitrary, Debug)]
enum Key<'a> {
    /// One of a few fixed keys, prepared once: most inputs spend their time
    /// on signatures, not on building a key's table.
    Fixed(u8),
    /// The public key of this secret scalar (a point on the curve).
    Secret([u8; 32]),
    /// Any encoding at all.
    Raw(&'a [u8]),
    /// 0x04 ‖ x ‖ y with arbitrary coordinates (almost never on the curve).
    Coordinates([u8; 32], [u8; 32]),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Scalar {
    Bytes([u8; 32]),
    Edge(u8),
    /// x of the public key (for r), which is what a verification compares against.
    KeyX,
}

#[derive(Arbitrary, Debug)]
enum Sig<'a> {
    /// Signed by the key's secret (only for `Key::Secret`), then tampered.
    Genuine { flip: Option<(u8, u8)>, negate_s: bool },
    Raw(&'a [u8]),
    Parts(Scalar, Scalar),
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    key: Key<'a>,
    message: &'a [u8],
    sig: Sig<'a>,
}

fn hex32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    out
}

fn edge(i: u8) -> [u8; 32] {
    const N: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
    const N_MINUS_1: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632550";
    const N_PLUS_1: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632552";
    const P: &str = "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff";
    const P_MINUS_N: &str = "000000000000000000000000000000004319055358e8617b0c46353d039cdaae";
    const P_MINUS_N_MINUS_1: &str = "000000000000000000000000000000004319055358e8617b0c46353d039cdaad";
    const HALF_N: &str = "7fffffff800000007fffffffffffffffde737d56d38bcf4279dce5617e3192a8";
    match i % 11 {
        0 => [0; 32],
        1 => {
            let mut one = [0; 32];
            one[31] = 1;
            one
        }
        2 => hex32(N),
        3 => hex32(N_MINUS_1),
        4 => hex32(N_PLUS_1),
        5 => hex32(P),
        6 => hex32(P_MINUS_N),
        7 => hex32(P_MINUS_N_MINUS_1),
        8 => hex32(HALF_N),
        9 => [0xff; 32],
        _ => {
            let mut two = [0; 32];
            two[31] = 2;
            two
        }
    }
}

struct Prepared {
    signing: SigningKey,
    encoded: Vec<u8>,
    ours: P256Key,
}

fn fixed_keys() -> &'static [Prepared] {
    static KEYS: OnceLock<Vec<Prepared>> = OnceLock::new();
    KEYS.get_or_init(|| {
        [[1u8; 32], [2; 32], [0x42; 32], [0x7f; 32]]
            .iter()
            .filter_map(|d| {
                let signing = SigningKey::from_slice(d).ok()?;
                let encoded = signing.verifying_key().to_sec1_point(false).as_bytes().to_vec();
                let ours = P256Key::from_sec1_uncompressed(&encoded)?;
                Some(Prepared { signing, encoded, ours })
            })
            .collect()
    })
}

fn reference(key: &[u8], message: &[u8], sig: &[u8]) -> Option<bool> {
    let key = VerifyingKey::from_sec1_bytes(key).ok()?;
    Some(Signature::from_slice(sig).is_ok_and(|s| key.verify(message, &s).is_ok()))
}

fuzz_target!(|input: Input| {
    let mut signing = None;
    let mut prepared = None;
    let key_bytes: Vec<u8> = match &input.key {
        Key::Fixed(i) => {
            let keys = fixed_keys();
            let p = &keys[usize::from(*i) % keys.len()];
            signing = Some(p.signing.clone());
            prepared = Some(p.ours.clone());
            p.encoded.clone()
        }
        Key::Secret(d) => match SigningKey::from_slice(d) {
            Ok(sk) => {
                let bytes = sk.verifying_key().to_sec1_point(false).as_bytes().to_vec();
                signing = Some(sk);
                bytes
            }
            Err(_) => return,
        },
        Key::Raw(b) => b.to_vec(),
        Key::Coordinates(x, y) => [&[4u8][..], x, y].concat(),
    };
    let key_x: [u8; 32] = key_bytes.get(1..33).and_then(|x| x.try_into().ok()).unwrap_or([0; 32]);
    let scalar = |s: Scalar| match s {
        Scalar::Bytes(b) => b,
        Scalar::Edge(i) => edge(i),
        Scalar::KeyX => key_x,
    };
    let sig: Vec<u8> = match &input.sig {
        Sig::Genuine { flip, negate_s } => {
            let Some(sk) = &signing else { return };
            let s: Signature = sk.sign(input.message);
            let s = if *negate_s { Signature::from_scalars(s.r(), -*s.s()).unwrap_or(s) } else { s };
            let mut bytes = s.to_bytes().to_vec();
            if let Some((at, bit)) = flip {
                bytes[usize::from(*at) % 64] ^= 1 << (bit % 8);
            }
            bytes
        }
        Sig::Raw(b) => b.to_vec(),
        Sig::Parts(r, s) => [scalar(*r), scalar(*s)].concat(),
    };

    let ours = prepared.or_else(|| P256Key::from_sec1_uncompressed(&key_bytes));
    let uncompressed = key_bytes.len() == 65 && key_bytes[0] == 4;
    let expected = reference(&key_bytes, input.message, &sig);
    match (&ours, uncompressed) {
        // Same key, same decision.
        (Some(k), _) => {
            let Some(expected) = expected else { panic!("only ours accepted the key {key_bytes:02x?}") };
            assert_eq!(k.verify(input.message, &sig), expected, "key {key_bytes:02x?} sig {sig:02x?}");
            // A key used once (a DPoP proof's): no table, the same decision.
            let (x, y) = key_bytes[1..].split_at(32);
            assert_eq!(
                verify_once(x.try_into().unwrap(), y.try_into().unwrap(), input.message, &sig),
                expected,
                "verify_once: key {key_bytes:02x?} sig {sig:02x?}"
            );
        }
        (None, true) => assert!(expected.is_none(), "only the reference accepted the key {key_bytes:02x?}"),
        // Compressed or other encodings: ours takes only uncompressed points, by design.
        (None, false) => {}
    }
});

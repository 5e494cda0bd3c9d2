//! The small values one worker VM writes to Envoy's shared data and another
//! reads back (shared data outlives a VM and a module reload, so a value may
//! come from another build): the fetch lease, the revocation "fresh" stamp,
//! a DPoP replay slot, the nonce key; and the host's answer to a signature
//! call, and a client's DPoP nonce. None may panic, and what a reader takes
//! from them must be what a writer meant.
#![no_main]

use authflow_contract::dpop::nonce;
use authflow_contract::dpop::{DpopError, NonceKey};
use authflow_filter_core::dpop::ProofUse;
use authflow_filter_core::revocation_sync::FreshStamp;
use authflow_filter_core::{lease, nonce as filter_nonce, replay, signature, ProviderId};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_900_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(bytes);
    let word = |at: usize| {
        let mut w = [0u8; 8];
        for (i, b) in bytes.iter().skip(at).take(8).enumerate() {
            w[i] = *b;
        }
        u64::from_le_bytes(w)
    };
    match selector % 5 {
        0 => {
            // The lease: a claim is always readable by the next claimer, and
            // once written it keeps another VM out until it runs out.
            let ttl = 1 + word(0) % 120_000;
            if let Some(value) = lease::claim(Some(bytes), 7, NOW, ttl) {
                assert_eq!(
                    lease::claim(Some(value.as_bytes()), 9, NOW, ttl),
                    None,
                    "{value}"
                );
                assert!(lease::claim(Some(value.as_bytes()), 7, NOW + 1, ttl).is_some());
            }
        }
        1 => {
            // The fresh stamp: what a reader takes, written back, reads the same.
            if let Some(stamp) = FreshStamp::parse(bytes) {
                assert_eq!(FreshStamp::parse(&stamp.to_bytes()), Some(stamp));
            }
        }
        2 => {
            // A replay slot: a proof filed in it is refused when it comes again,
            // and the slot never grows past its bound by this proof.
            let proof = ProofUse {
                id: word(0).to_be_bytes(),
                iat: NOW,
                provider: ProviderId::FIRST,
                renew_nonce: false,
                public_route: false,
            };
            let bucket = u64::from_be_bytes(
                bytes
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or_default(),
            )
            .wrapping_add(word(8) % 4);
            if let Ok(value) = replay::record(Some(bytes), bucket, &proof) {
                assert!(
                    value.len() <= 8 + 8 * replay::ENTRIES_PER_SLOT,
                    "{} bytes",
                    value.len()
                );
                assert_eq!(
                    replay::record(Some(&value), bucket, &proof),
                    Err(DpopError::Replayed),
                    "a proof filed in a slot of {} bytes",
                    bytes.len()
                );
            }
        }
        3 => {
            // The host's answer to a signature call; the nonce key from the
            // environment or from shared data.
            let _ = signature::decode_result(bytes);
            let _ = filter_nonce::parse_key(&text);
            let _ = filter_nonce::from_shared(bytes);
        }
        _ => {
            // A client's nonce: only one this key issued, in its window, holds.
            let key = NonceKey::new(&[5; 32]).expect("a 32-byte key");
            let held = nonce::check(&key, &text, NOW, filter_nonce::NONCE_WINDOW_SECS);
            let _ = nonce::issued_at(&text);
            if held {
                let issued = nonce::issued_at(&text).expect("a nonce that holds has an issue time");
                assert_eq!(nonce::issue(&key, issued), text, "one spelling per nonce");
            }
        }
    }
});

//! Fixed-base comb (Lim–Lee) tables and the double-scalar multiplication
//! u₁·G + u₂·Q that ECDSA verification needs.
//!
//! A 256-bit scalar k, split into eight 32-bit limbs k₀…k₇, is
//! Σⱼ 2ʲ · Σᵢ bitⱼ(kᵢ) · 2³²ⁱ. For a point P the table holds every
//! Σᵢ cᵢ·2³²ⁱ·P with cᵢ ∈ {0, 1} (255 non-zero combinations), so k·P costs 31
//! doublings and at most 32 table additions; with tables for both G and Q the
//! doublings are shared: 31 doublings and at most 64 mixed additions in all.

use std::sync::{Arc, OnceLock};

use super::point::{batch_to_affine, Affine, Jacobian};

/// Teeth of the comb: one per 32-bit limb of the scalar.
const TEETH: usize = 8;
const SPACING: usize = 32;
const ENTRIES: usize = (1 << TEETH) - 1;

/// Σᵢ cᵢ·2³²ⁱ·P for the 255 non-zero bit patterns c, entry c − 1 (16 KB).
/// Shared, so cloning a prepared key stays cheap.
#[derive(Clone)]
pub struct CombTable(Arc<[Affine]>);

impl CombTable {
    /// 224 doublings, 247 additions and two inversions (one per batch to affine).
    pub fn new(point: &Affine) -> Option<CombTable> {
        let bases = teeth_bases(point)?;
        let mut entries: Vec<Jacobian> = Vec::with_capacity(ENTRIES);
        for pattern in 1..=ENTRIES {
            // Highest set tooth, plus the entry for the pattern without it (built earlier).
            let top = usize::BITS - 1 - pattern.leading_zeros();
            let rest = pattern & !(1 << top);
            let base = bases.get(top as usize)?;
            let entry = match rest.checked_sub(1) {
                None => Jacobian::from(base),
                Some(index) => entries.get(index)?.add_affine(base),
            };
            entries.push(entry);
        }
        Some(CombTable(batch_to_affine(&entries)?.into()))
    }

    /// The entry for column `column` (0 when no tooth is set: nothing to add).
    fn entry(&self, column: usize) -> Option<&Affine> {
        self.0.get(column.checked_sub(1)?)
    }
}

/// 2³²ⁱ·P for i = 0…7, affine.
fn teeth_bases(point: &Affine) -> Option<Vec<Affine>> {
    let mut bases = Vec::with_capacity(TEETH);
    let mut current = Jacobian::from(point);
    bases.push(current);
    for _ in 1..TEETH {
        for _ in 0..SPACING {
            current = current.double();
        }
        bases.push(current);
    }
    batch_to_affine(&bases)
}

/// The generator's table, built on first use (once per process).
pub fn generator_table() -> Option<&'static CombTable> {
    static TABLE: OnceLock<Option<CombTable>> = OnceLock::new();
    TABLE
        .get_or_init(|| CombTable::new(&Affine::generator()?))
        .as_ref()
}

/// The comb column at `bit`: bit `bit` of limb i becomes bit i of the table index.
fn column(scalar: &[u32; 8], bit: usize) -> usize {
    scalar.iter().enumerate().fold(0, |acc, (i, limb)| {
        acc | ((((limb >> bit) & 1) as usize) << i)
    })
}

/// a·A + b·B for tables of A and B; scalars as little-endian u32 limbs.
pub fn double_mul(
    a: &[u32; 8],
    table_a: &CombTable,
    b: &[u32; 8],
    table_b: &CombTable,
) -> Jacobian {
    let mut acc = Jacobian::IDENTITY;
    for bit in (0..SPACING).rev() {
        if !acc.is_identity() {
            acc = acc.double();
        }
        if let Some(p) = table_a.entry(column(a, bit)) {
            acc = acc.add_affine(p);
        }
        if let Some(p) = table_b.entry(column(b, bit)) {
            acc = acc.add_affine(p);
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::super::point::tests::{encode, from_reference, reference_encode};
    use super::*;
    use p256::elliptic_curve::ff::PrimeField;
    use p256::{ProjectivePoint, Scalar};

    fn limbs(k: &Scalar) -> [u32; 8] {
        super::super::field::limbs_from_be_bytes(&k.to_repr().into())
    }

    fn scalar(be_hex: &str) -> Scalar {
        let bytes: [u8; 32] = (0..32)
            .map(|i| u8::from_str_radix(&be_hex[2 * i..2 * i + 2], 16).unwrap())
            .collect::<Vec<_>>()
            .try_into()
            .unwrap();
        Scalar::from_repr(bytes.into()).unwrap()
    }

    fn interesting_scalars() -> Vec<Scalar> {
        let mut out = vec![
            Scalar::ONE,
            Scalar::ONE.double(),
            -Scalar::ONE, // n − 1
            -Scalar::ONE.double(),
            // Columns all zero except one, all ones, alternating limbs.
            scalar("0000000100000001000000010000000100000001000000010000000100000001"),
            scalar("8000000080000000800000008000000080000000800000008000000080000000"),
            scalar("00000000ffffffff00000000ffffffff00000000ffffffff00000000ffffffff"),
            scalar("7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),
            scalar("ffffffff00000000fffffffffffffffe0000000000000000000000000000000f"),
        ];
        let mut k = Scalar::from(0x1234_5678_u64);
        for _ in 0..24 {
            k = k.square() + Scalar::from(3u64);
            out.push(k);
        }
        out
    }

    #[test]
    fn tables_hold_the_right_multiples() {
        let g = Affine::generator().unwrap();
        let table = CombTable::new(&g).unwrap();
        let two_32 = Scalar::from(1u64 << 32);
        for pattern in 1..=ENTRIES {
            let mut k = Scalar::ZERO;
            for tooth in (0..TEETH).rev() {
                k *= two_32;
                if pattern >> tooth & 1 == 1 {
                    k += Scalar::ONE;
                }
            }
            assert_eq!(
                table.entry(pattern),
                Some(&from_reference(&(ProjectivePoint::GENERATOR * k)))
            );
        }
        assert!(table.entry(0).is_none());
        assert!(table.entry(ENTRIES + 1).is_none());
    }

    #[test]
    fn single_and_double_multiplication_match_reference() {
        let g = generator_table().unwrap();
        let q_point = ProjectivePoint::GENERATOR
            * scalar("3a1f00000000000000000000000000000000000000000000000000000000c0de");
        let q = CombTable::new(&from_reference(&q_point)).unwrap();
        let zero = [0u32; 8];
        let scalars = interesting_scalars();
        for (i, k) in scalars.iter().enumerate() {
            let expected = ProjectivePoint::GENERATOR * k;
            assert_eq!(
                encode(&double_mul(&limbs(k), g, &zero, &q)),
                reference_encode(&expected)
            );
            assert_eq!(
                encode(&double_mul(&zero, g, &limbs(k), &q)),
                reference_encode(&(q_point * k))
            );
            let other = scalars[(i * 7 + 3) % scalars.len()];
            let both = ProjectivePoint::GENERATOR * k + q_point * other;
            assert_eq!(
                encode(&double_mul(&limbs(k), g, &limbs(&other), &q)),
                reference_encode(&both)
            );
        }
        assert!(double_mul(&zero, g, &zero, &q).is_identity());
    }

    #[test]
    fn double_multiplication_through_exceptional_sums() {
        // With Q = G, a·G + (n − a)·G is the identity, and a·G + a·G passes
        // through equal partial sums.
        let g = generator_table().unwrap();
        for k in interesting_scalars() {
            assert!(double_mul(&limbs(&k), g, &limbs(&-k), g).is_identity());
            let twice = ProjectivePoint::GENERATOR * k.double();
            assert_eq!(
                encode(&double_mul(&limbs(&k), g, &limbs(&k), g)),
                reference_encode(&twice)
            );
        }
    }
}

//! Points of P-256 (y² = x³ − 3x + b): affine points for the precomputed
//! tables and Jacobian points (x = X/Z², y = Y/Z³) for the running sum, so
//! that no step needs a field inversion.

use super::field::Fe;

/// The curve constant b, big-endian.
const B: [u8; 32] = [
    0x5a, 0xc6, 0x35, 0xd8, 0xaa, 0x3a, 0x93, 0xe7, 0xb3, 0xeb, 0xbd, 0x55, 0x76, 0x98, 0x86, 0xbc,
    0x65, 0x1d, 0x06, 0xb0, 0xcc, 0x53, 0xb0, 0xf6, 0x3b, 0xce, 0x3c, 0x3e, 0x27, 0xd2, 0x60, 0x4b,
];

/// The base point G (SEC 2), big-endian coordinates.
const GX: [u8; 32] = [
    0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40, 0xf2,
    0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2, 0x96,
];
const GY: [u8; 32] = [
    0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c, 0x0f, 0x9e, 0x16,
    0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51, 0xf5,
];

/// A point on the curve other than the identity (which has no affine form).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Affine {
    pub x: Fe,
    pub y: Fe,
}

impl Affine {
    /// Checked coordinates: `None` unless both are canonical and on the curve.
    /// P-256 has cofactor 1, so any such point generates the whole group.
    pub fn from_coordinates(x: &[u8; 32], y: &[u8; 32]) -> Option<Affine> {
        let point = Affine {
            x: Fe::from_be_bytes(x)?,
            y: Fe::from_be_bytes(y)?,
        };
        point.is_on_curve().then_some(point)
    }

    pub fn generator() -> Option<Affine> {
        Affine::from_coordinates(&GX, &GY)
    }

    fn is_on_curve(&self) -> bool {
        let Some(b) = Fe::from_be_bytes(&B) else {
            return false;
        };
        let x_cubed_minus_3x = self.x.square().sub(&triple(&Fe::ONE)).mul(&self.x);
        self.y.square() == x_cubed_minus_3x.add(&b)
    }
}

/// A point in Jacobian coordinates; Z = 0 is the identity.
#[derive(Clone, Copy, Debug)]
pub struct Jacobian {
    pub x: Fe,
    pub y: Fe,
    pub z: Fe,
}

impl From<&Affine> for Jacobian {
    fn from(p: &Affine) -> Self {
        Jacobian {
            x: p.x,
            y: p.y,
            z: Fe::ONE,
        }
    }
}

impl Jacobian {
    pub const IDENTITY: Jacobian = Jacobian {
        x: Fe::ONE,
        y: Fe::ONE,
        z: Fe::ZERO,
    };

    pub fn is_identity(&self) -> bool {
        self.z.is_zero()
    }

    /// 2·self, "dbl-2001-b" (3M + 5S, uses a = −3). The identity maps to
    /// itself (Z₃ = 2YZ = 0); P-256 has no point of order 2, so no other
    /// input yields Z₃ = 0.
    pub fn double(&self) -> Jacobian {
        let delta = self.z.square();
        let gamma = self.y.square();
        let beta = self.x.mul(&gamma);
        let alpha = triple(&self.x.sub(&delta).mul(&self.x.add(&delta)));
        let four_beta = beta.double().double();
        let x3 = alpha.square().sub(&four_beta.double());
        let z3 = self.y.add(&self.z).square().sub(&gamma).sub(&delta);
        let eight_gamma_sq = gamma.square().double().double().double();
        let y3 = alpha.mul(&four_beta.sub(&x3)).sub(&eight_gamma_sq);
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
        }
    }

    /// self + q with q affine (8M + 3S). The formula divides by x₂ − x₁, so the
    /// cases it cannot handle are branched on: identity, self = q (double) and
    /// self = −q (identity).
    pub fn add_affine(&self, q: &Affine) -> Jacobian {
        if self.is_identity() {
            return Jacobian::from(q);
        }
        let z1z1 = self.z.square();
        let u2 = q.x.mul(&z1z1);
        let s2 = q.y.mul(&self.z.mul(&z1z1));
        let h = u2.sub(&self.x);
        let r = s2.sub(&self.y);
        if h.is_zero() {
            return if r.is_zero() {
                self.double()
            } else {
                Jacobian::IDENTITY
            };
        }
        let hh = h.square();
        let hhh = h.mul(&hh);
        let v = self.x.mul(&hh);
        let x3 = r.square().sub(&hhh).sub(&v.double());
        let y3 = r.mul(&v.sub(&x3)).sub(&self.y.mul(&hhh));
        let z3 = self.z.mul(&h);
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
        }
    }
}

fn triple(a: &Fe) -> Fe {
    a.double().add(a)
}

/// Converts many points to affine with a single inversion (Montgomery's
/// trick: invert the product of all Z, then peel off one factor at a time).
/// `None` if any point is the identity.
pub fn batch_to_affine(points: &[Jacobian]) -> Option<Vec<Affine>> {
    if points.iter().any(Jacobian::is_identity) {
        return None;
    }
    // prefix[i] = Z₀·…·Z_{i−1}
    let mut prefix = Vec::with_capacity(points.len());
    let mut product = Fe::ONE;
    for p in points {
        prefix.push(product);
        product = product.mul(&p.z);
    }
    let mut inverse = product.invert(); // 1 / (Z₀·…·Z_{k−1})
    let mut affine = vec![
        Affine {
            x: Fe::ZERO,
            y: Fe::ZERO
        };
        points.len()
    ];
    for ((p, before), out) in points.iter().zip(&prefix).zip(affine.iter_mut()).rev() {
        let z_inv = inverse.mul(before);
        inverse = inverse.mul(&p.z);
        let z_inv2 = z_inv.square();
        *out = Affine {
            x: p.x.mul(&z_inv2),
            y: p.y.mul(&z_inv2.mul(&z_inv)),
        };
    }
    Some(affine)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use p256::elliptic_curve::sec1::ToSec1Point;
    use p256::elliptic_curve::Group;
    use p256::ProjectivePoint;

    /// The SEC1 uncompressed encoding (x ‖ y without the tag), or `None` for the identity.
    pub fn encode(p: &Jacobian) -> Option<[u8; 64]> {
        let a = batch_to_affine(std::slice::from_ref(p))?;
        let a = a.first()?;
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&a.x.to_be_bytes());
        out[32..].copy_from_slice(&a.y.to_be_bytes());
        Some(out)
    }

    pub fn reference_encode(p: &ProjectivePoint) -> Option<[u8; 64]> {
        let e = p.to_affine().to_sec1_point(false);
        let bytes = e.as_bytes();
        (bytes.len() == 65).then(|| bytes[1..].try_into().unwrap())
    }

    pub fn from_reference(p: &ProjectivePoint) -> Affine {
        let e = reference_encode(p).unwrap();
        Affine::from_coordinates(e[..32].try_into().unwrap(), e[32..].try_into().unwrap()).unwrap()
    }

    #[test]
    fn generator_matches_reference() {
        let g = Affine::generator().unwrap();
        assert_eq!(g, from_reference(&ProjectivePoint::GENERATOR));
    }

    #[test]
    fn rejects_points_off_the_curve() {
        let g = Affine::generator().unwrap();
        let y_plus_one = g.y.add(&Fe::ONE).to_be_bytes();
        assert!(Affine::from_coordinates(&g.x.to_be_bytes(), &y_plus_one).is_none());
        assert!(Affine::from_coordinates(&[0; 32], &[0; 32]).is_none());
        assert!(Affine::from_coordinates(&[0xff; 32], &g.y.to_be_bytes()).is_none());
    }

    #[test]
    fn doubling_and_addition_match_reference() {
        let g = Affine::generator().unwrap();
        let mut ours = Jacobian::from(&g);
        let mut reference = ProjectivePoint::GENERATOR;
        for step in 0..40 {
            if step % 3 == 0 {
                ours = ours.double();
                reference = reference.double();
            } else {
                ours = ours.add_affine(&g);
                reference += ProjectivePoint::GENERATOR;
            }
            assert_eq!(encode(&ours), reference_encode(&reference), "step {step}");
        }
    }

    #[test]
    fn exceptional_additions() {
        let g = Affine::generator().unwrap();
        let two_g = ProjectivePoint::GENERATOR.double();
        // P + P doubles, also when P is not normalised (Z ≠ 1).
        assert_eq!(
            encode(&Jacobian::from(&g).add_affine(&g)),
            reference_encode(&two_g)
        );
        let three_g = Jacobian::from(&g).double().add_affine(&g);
        let three_g_affine = from_reference(&(two_g + ProjectivePoint::GENERATOR));
        assert_eq!(
            encode(&three_g.add_affine(&three_g_affine)),
            reference_encode(&(two_g.double() + two_g))
        );
        // P + (−P) is the identity.
        let minus_three_g = Affine {
            x: three_g_affine.x,
            y: Fe::ZERO.sub(&three_g_affine.y),
        };
        assert!(three_g.add_affine(&minus_three_g).is_identity());
        // The identity is neutral, and doubles to itself.
        assert_eq!(
            encode(&Jacobian::IDENTITY.add_affine(&g)),
            reference_encode(&ProjectivePoint::GENERATOR)
        );
        assert!(Jacobian::IDENTITY.double().is_identity());
        assert!(batch_to_affine(&[Jacobian::from(&g), Jacobian::IDENTITY]).is_none());
    }
}

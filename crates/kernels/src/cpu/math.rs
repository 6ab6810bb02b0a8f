//! `e^x` and `erfc` for f32 in plain arithmetic, so that the kernels' loops over them vectorise.
//!
//! libm's `expf` is a call per element: a loop that calls it runs one element at a time, and the
//! softmax, cross-entropy, attention and GELU kernels spent most of their time there. This
//! version is straight-line code (no calls, no branches, only selects), which LLVM turns into
//! SIMD instructions even for the baseline x86-64 target. It uses no fused multiply-add and no
//! table, so it gives the same bits on every machine, vectorised or not, for any thread count.
//!
//! Method: `e^x = 2^n e^r` with `n = round(x log2 e)` and `r = x - n ln 2` in two parts
//! (Cody–Waite), `|r| <= ln2 / 2`; `e^r` by its Taylor polynomial to degree 7, whose truncation
//! error (`0.347^8 / 8! < 6e-9`) is below f32's half-ulp; `2^n` built in the exponent bits.
//! Measured against f64 `exp` over [-87.3, 88.3]: at most 1 ulp (`tests`).
//!
//! Range: results below f32's smallest normal number (x < -87.34) are 0 (no subnormals), and
//! results above 2^127.5 (x > 88.38, within a factor 1.5 of f32's largest number) are +inf. The
//! kernels only exponentiate values shifted by a row's maximum (<= 0) or feed large results
//! into a division, where neither matters. NaN gives NaN.

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that `n * LN2_HI` is exact for |n| < 2^8: 9 significant bits.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 * 2^23: adding it rounds an f32 of magnitude < 2^22 to an integer (to nearest even),
/// and that integer then sits in the low bits of the sum's representation.
const ROUND: f32 = 12_582_912.0;
const ROUND_BITS: u32 = 0x4B40_0000;
/// Just above ln(2^-126): the smallest normal result.
const LO: f32 = -87.336_54;
/// ln(2^127.5): `n` stays at most 127, so `2^n` is a normal number.
const HI: f32 = 88.376_26;

/// `e^x` in f32 (see the module's notes for accuracy and range).
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    // NaN passes the clamp unchanged and stays NaN to the end.
    let xc = x.clamp(LO, HI);
    let t = xc * LOG2_E + ROUND;
    let n = t.to_bits().wrapping_sub(ROUND_BITS) as i32; // in [-126, 127]
    let nf = t - ROUND;
    let r = (xc - nf * LN2_HI) - nf * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let scale = f32::from_bits(((n + 127) as u32) << 23);
    let y = p * scale;
    if x > HI {
        f32::INFINITY
    } else if x < LO {
        0.0
    } else {
        y
    }
}

/// The complementary error function in f32, from `e^x`: for `a = |z|`, `t = 1 / (1 + a/2)`,
/// `erfc(a) = t exp(-a^2 + P(t))` with the degree-9 polynomial of Press et al. (Numerical
/// Recipes, `erfcc`: relative error below 1.2e-7 for every a >= 0), and
/// `erfc(z) = 2 - erfc(-z)` for z < 0. In f32 the rounding of `a^2` adds a relative error of
/// about `a^2 * 6e-8` (2e-6 at a = 5, where erfc is 1.5e-12); measured against f64 erfc in
/// `tests`. Results below f32's smallest normal number (a > 9.2) are 0. libm's `erff` is a
/// branchy scalar call (35 ns here); this one vectorises with the loop around it.
#[inline(always)]
pub(crate) fn erfc_f32(z: f32) -> f32 {
    let a = z.abs();
    let t = 1.0 / (1.0 + 0.5 * a);
    let p = -1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_204
                                + t * (1.488_515_9 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * exp_f32(p - a * a);
    if z < 0.0 {
        2.0 - r
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite f32 of the same sign.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn within_one_ulp_of_f64_exp_over_the_normal_range() {
        let (mut worst, mut at) = (0, 0.0);
        let n = 2_000_001;
        for i in 0..n {
            let x = LO + (HI - LO) * i as f32 / (n - 1) as f32;
            let want = (x as f64).exp() as f32;
            let d = ulps(exp_f32(x), want);
            if d > worst {
                (worst, at) = (d, x);
            }
        }
        // Small arguments, where e^x is near 1 and rounding of r matters most.
        for i in -100_000..=100_000 {
            let x = i as f32 * 1e-6;
            let d = ulps(exp_f32(x), (x as f64).exp() as f32);
            if d > worst {
                (worst, at) = (d, x);
            }
        }
        assert!(worst <= 1, "{worst} ulp at x = {at}");
    }

    #[test]
    fn special_values() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-0.0), 1.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(1.0), std::f32::consts::E);
        // Just inside the ends of the range: normal, finite, accurate.
        let lo = exp_f32(LO);
        assert!(
            lo.is_normal() && ulps(lo, (LO as f64).exp() as f32) <= 2,
            "{lo:e}"
        );
        let hi = exp_f32(HI);
        assert!(
            hi.is_finite() && ulps(hi, (HI as f64).exp() as f32) <= 2,
            "{hi:e}"
        );
    }

    #[test]
    fn erfc_within_its_bound_of_f64_erfc() {
        let (mut worst, mut at) = (0f64, 0f32);
        for i in 0..=400_000 {
            let z = -10.0 + i as f32 * 5e-5; // [-10, 10]
            let want = libm::erfc(z as f64);
            if want < f32::MIN_POSITIVE as f64 {
                continue;
            }
            let got = erfc_f32(z) as f64;
            // 1.2e-7 from the polynomial, a few ulp of rounding, and |z|^2 * 6e-8 from the
            // rounding of z^2 in the exponent.
            let rel = (got - want).abs() / want / (4e-7 + (z as f64).powi(2) * 1.2e-7);
            if rel > worst {
                (worst, at) = (rel, z);
            }
        }
        assert!(worst <= 1.0, "erfc({at}): {worst:.2} of the bound");
        assert_eq!(erfc_f32(0.0), 1.0);
        assert_eq!(erfc_f32(f32::INFINITY), 0.0);
        assert_eq!(erfc_f32(f32::NEG_INFINITY), 2.0);
        assert_eq!(erfc_f32(20.0), 0.0);
        assert!(erfc_f32(f32::NAN).is_nan());
    }

    #[test]
    fn monotone_on_a_fine_grid() {
        let mut prev = 0.0;
        for i in 0..200_000 {
            let x = -20.0 + i as f32 * 2e-4;
            let y = exp_f32(x);
            assert!(y >= prev, "exp({x}) = {y} < {prev}");
            prev = y;
        }
    }
}

//! Counter-based hashing: a pure function from (seed, index) to 64 random-looking bits.
//!
//! Sampling and the train/val split are functions of an index rather than draws from a stateful
//! RNG, so resuming a run needs only the index, and any sample can be recomputed in isolation.

/// The splitmix64 increment (2^64 / golden ratio).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splitmix64 output function (Steele, Lea & Flood 2014): a bijection on u64 with good
/// avalanche, so neighbouring inputs give unrelated outputs.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Output number `index` of a splitmix64 stream whose state starts at `mix64(seed)`. Mixing the
/// seed first keeps seeds `s` and `s + GOLDEN` from giving the same stream shifted by one.
pub(crate) fn hash_index(seed: u64, index: u64) -> u64 {
    mix64(mix64(seed).wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// Uniform integer in `0..n` from 64 random bits by multiply-shift (Lemire 2019); the bias is at
/// most n / 2^64, far below anything a training run could notice. `n` must be > 0.
pub(crate) fn below(bits: u64, n: u64) -> u64 {
    ((u128::from(bits) * u128::from(n)) >> 64) as u64
}

/// Uniform f64 in [0, 1) from the top 53 bits.
pub(crate) fn unit_f64(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut seen = [false; 7];
        for i in 0..1000 {
            let v = below(hash_index(3, i), 7);
            assert!(v < 7);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(below(u64::MAX, 1), 0);
    }

    #[test]
    fn unit_f64_is_in_unit_interval() {
        assert_eq!(unit_f64(0), 0.0);
        assert!(unit_f64(u64::MAX) < 1.0);
    }
}

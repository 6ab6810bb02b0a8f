//! A seeded, counter-based random number generator whose whole state is two integers.
//!
//! candle's CPU generator cannot be seeded (`Device::Cpu.set_seed` fails), so every random number
//! Lantern draws — initial weights, dropout masks, MLM masking — comes from here. The state is
//! `(seed, counter)`: saving it in a checkpoint and restoring it reproduces the stream exactly.
//! Each output is `splitmix64(seed ^ mix(counter))`, so any position of the stream can also be
//! reached without drawing everything before it ([`Rng::at`]).

/// The full state of an [`Rng`]; checkpoints store it as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RngState {
    pub seed: u64,
    pub counter: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    seed: u64,
    counter: u64,
}

/// SplitMix64 finaliser (Steele, Lea, Flood 2014): a bijective mix with good avalanche.
#[inline]
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self { seed, counter: 0 }
    }

    /// A generator for an independent stream derived from this seed and a label (for example
    /// the optimizer step), so that a step's random numbers do not depend on earlier steps.
    pub fn derive(seed: u64, stream: u64) -> Self {
        Self::new(splitmix64(seed ^ splitmix64(stream.wrapping_add(0x5EED))))
    }

    pub fn at(seed: u64, counter: u64) -> Self {
        Self { seed, counter }
    }

    pub fn state(&self) -> RngState {
        RngState {
            seed: self.seed,
            counter: self.counter,
        }
    }

    pub fn from_state(s: RngState) -> Self {
        Self {
            seed: s.seed,
            counter: s.counter,
        }
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let out = splitmix64(self.seed ^ splitmix64(self.counter));
        self.counter += 1;
        out
    }

    /// Moves past the next `n` draws, as drawing them would ([`crate::ops::dropout`] computes
    /// them from their positions instead).
    pub fn skip(&mut self, n: u64) {
        self.counter += n;
    }

    /// Uniform in [0, 1) with 24 bits of mantissa: exactly representable in f32.
    #[inline]
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in [0, 1) with 53 bits.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n) (Lemire's multiply-shift; bias < n / 2^64, negligible here).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal by Box-Muller, one value per call (the pair's second half is dropped to
    /// keep the state a plain counter).
    pub fn next_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]: ln is finite
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// `n` draws from N(0, std^2) as f32.
    pub fn normal_vec(&mut self, n: usize, std: f64) -> Vec<f32> {
        (0..n).map(|_| (self.next_normal() * std) as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_continues_the_stream() {
        let mut a = Rng::new(7);
        for _ in 0..5 {
            a.next_u64();
        }
        let mut b = Rng::from_state(a.state());
        assert_eq!(a.next_u64(), b.next_u64());
    }

    #[test]
    fn uniform_and_normal_moments() {
        let mut r = Rng::new(1);
        let n = 200_000;
        let mean: f64 = (0..n).map(|_| r.next_f32() as f64).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        let xs: Vec<f64> = (0..n).map(|_| r.next_normal()).collect();
        let m = xs.iter().sum::<f64>() / n as f64;
        let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
        assert!(m.abs() < 0.01 && (v - 1.0).abs() < 0.02, "{m} {v}");
        assert!((0..1000).all(|_| r.below(10) < 10));
    }

    #[test]
    fn derived_streams_differ() {
        assert_ne!(Rng::derive(1, 0).next_u64(), Rng::derive(1, 1).next_u64());
        assert_ne!(Rng::derive(1, 0).next_u64(), Rng::derive(2, 0).next_u64());
    }
}

//! Deterministic causal-LM batch sampling. The data position of a run is one number: the global
//! index of the next sample.
//!
//! Training samples windows with replacement, as nanoGPT's `get_batch` does: sample `i` starts
//! at a position that is a pure function of `(seed, i)`. Resuming (or re-sharding across ranks)
//! needs only that index, not an RNG state, and any batch can be recomputed in isolation.
//! Validation walks fixed, non-overlapping windows so every evaluation sees the same tokens.

use crate::error::{Error, Result};
use crate::hash::{below, hash_index};
use crate::shard::Shard;

/// Keeps training-window starts independent of the train/val split hash for the same seed.
const SAMPLER_DOMAIN: u64 = 0x6C6D_5F77_696E_646F; // "lm_windo"

/// Start of the window (`seq_len + 1` tokens) for training sample `global_index`.
///
/// Uniform over every start that fits, `0..=shard_len - (seq_len + 1)` (the same range as
/// nanoGPT's `randint(len(data) - block_size)`). Returns 0 when no window fits; [`lm_batch`]
/// reports that case as an error.
pub fn lm_window_start(seed: u64, global_index: u64, shard_len: usize, seq_len: usize) -> usize {
    let window = seq_len.saturating_add(1);
    if shard_len < window {
        return 0;
    }
    let n_starts = (shard_len - window + 1) as u64;
    below(hash_index(seed ^ SAMPLER_DOMAIN, global_index), n_starts) as usize
}

fn check_window(shard: &Shard, seq_len: usize) -> Result<()> {
    if seq_len == 0 {
        return Err(Error::InvalidArgument(
            "seq_len must be at least 1".to_string(),
        ));
    }
    let needed = seq_len + 1;
    if shard.len() < needed {
        return Err(Error::ShardTooShort {
            path: shard.path().to_path_buf(),
            len: shard.len(),
            needed,
        });
    }
    Ok(())
}

/// Fill `inputs` and `targets` (each resized to `batch * seq_len`, row-major `(B, T)`) for
/// training samples `first_index .. first_index + batch`: row `b` holds
/// `tokens[s .. s + T]` and `tokens[s + 1 .. s + T + 1]` with `s = lm_window_start(..)`.
///
/// Buffers are caller-owned so a training loop reuses them instead of allocating each step.
pub fn lm_batch(
    shard: &Shard,
    seed: u64,
    first_index: u64,
    batch: usize,
    seq_len: usize,
    inputs: &mut Vec<u32>,
    targets: &mut Vec<u32>,
) -> Result<()> {
    check_window(shard, seq_len)?;
    fill_rows(shard, batch, seq_len, inputs, targets, |b| {
        lm_window_start(seed, first_index.wrapping_add(b), shard.len(), seq_len)
    });
    Ok(())
}

/// Number of distinct validation windows in a shard of `shard_len` tokens: window `k` covers
/// `k * seq_len ..= k * seq_len + seq_len` (its targets reach one token further), so one pass over
/// the val shard is this many windows. 0 when not even one fits.
pub fn lm_val_windows(shard_len: usize, seq_len: usize) -> u64 {
    if seq_len == 0 || shard_len < seq_len + 1 {
        return 0;
    }
    ((shard_len - 1) / seq_len) as u64
}

/// Fill `inputs`/`targets` like [`lm_batch`] with validation windows
/// `first_window .. first_window + batch`; window `k` starts at `(k mod n) * seq_len` where
/// `n = lm_val_windows(..)`, so asking for more windows than the shard holds wraps around.
pub fn lm_val_batch(
    shard: &Shard,
    first_window: u64,
    batch: usize,
    seq_len: usize,
    inputs: &mut Vec<u32>,
    targets: &mut Vec<u32>,
) -> Result<()> {
    check_window(shard, seq_len)?;
    let n = lm_val_windows(shard.len(), seq_len);
    fill_rows(shard, batch, seq_len, inputs, targets, |b| {
        (first_window.wrapping_add(b) % n) as usize * seq_len
    });
    Ok(())
}

/// Shared row filler; `start_of(b)` must return a start with `start + seq_len + 1 <= len`.
fn fill_rows(
    shard: &Shard,
    batch: usize,
    seq_len: usize,
    inputs: &mut Vec<u32>,
    targets: &mut Vec<u32>,
    start_of: impl Fn(u64) -> usize,
) {
    inputs.resize(batch * seq_len, 0);
    targets.resize(batch * seq_len, 0);
    for (b, (inp, tgt)) in inputs
        .chunks_exact_mut(seq_len)
        .zip(targets.chunks_exact_mut(seq_len))
        .enumerate()
    {
        let s = start_of(b as u64);
        shard.read_into(s, inp);
        shard.read_into(s + 1, tgt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::write_shard;

    fn shard_of(tokens: &[u32]) -> (tempfile::TempDir, Shard) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.bin");
        write_shard(&path, tokens, 1000).unwrap();
        let shard = Shard::open(&path).unwrap();
        (dir, shard)
    }

    #[test]
    fn window_start_is_pure_and_in_range() {
        for (len, t) in [(10usize, 4usize), (5, 4), (1000, 1), (1 << 40, 1024)] {
            for i in 0..500u64 {
                let s = lm_window_start(7, i, len, t);
                assert_eq!(s, lm_window_start(7, i, len, t));
                assert!(s + t < len, "start {s} + window {} > len {len}", t + 1);
            }
        }
        // Exactly one window fits: the only start is 0.
        assert_eq!(lm_window_start(1, 99, 5, 4), 0);
        // No window fits: defined, not a panic.
        assert_eq!(lm_window_start(1, 99, 3, 4), 0);
    }

    #[test]
    fn window_starts_spread_over_the_range() {
        let (len, t) = (1000usize, 8usize);
        let starts: Vec<usize> = (0..2000).map(|i| lm_window_start(42, i, len, t)).collect();
        let distinct: std::collections::HashSet<_> = starts.iter().collect();
        assert!(
            distinct.len() > 800,
            "only {} distinct starts",
            distinct.len()
        );
        // Both ends of the range are reachable: the last valid start is len - t - 1.
        assert!(starts.iter().any(|&s| s < 20));
        assert!(starts.iter().any(|&s| s > len - t - 1 - 20));
        let mean = starts.iter().sum::<usize>() as f64 / starts.len() as f64;
        assert!((mean - 495.5).abs() < 30.0, "mean {mean}");
        // A different seed gives a different sequence.
        let other: Vec<usize> = (0..2000).map(|i| lm_window_start(43, i, len, t)).collect();
        assert_ne!(starts, other);
    }

    #[test]
    fn batch_rows_are_shifted_windows() {
        let tokens: Vec<u32> = (0..100).collect();
        let (_dir, shard) = shard_of(&tokens);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        lm_batch(&shard, 3, 10, 4, 8, &mut x, &mut y).unwrap();
        assert_eq!((x.len(), y.len()), (32, 32));
        for b in 0..4 {
            let s = lm_window_start(3, 10 + b as u64, 100, 8);
            let row = &x[b * 8..(b + 1) * 8];
            assert_eq!(row, &tokens[s..s + 8]);
            assert_eq!(&y[b * 8..(b + 1) * 8], &tokens[s + 1..s + 9]);
        }
        // Samples 10..14 in one call equal 10..12 and 12..14 in two: the index is the position.
        let (mut x2, mut y2) = (Vec::new(), Vec::new());
        lm_batch(&shard, 3, 12, 2, 8, &mut x2, &mut y2).unwrap();
        assert_eq!(&x[16..], &x2[..]);
        assert_eq!(&y[16..], &y2[..]);
    }

    #[test]
    fn val_windows_are_fixed_and_wrap() {
        let tokens: Vec<u32> = (0..11).collect();
        let (_dir, shard) = shard_of(&tokens);
        assert_eq!(lm_val_windows(11, 5), 2);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        lm_val_batch(&shard, 0, 3, 5, &mut x, &mut y).unwrap();
        assert_eq!(x, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4]);
        assert_eq!(y, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn too_short_shard_is_an_error() {
        let (_dir, shard) = shard_of(&[1, 2, 3]);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let msg = lm_batch(&shard, 0, 0, 1, 3, &mut x, &mut y)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("s.bin") && msg.contains("3 tokens"), "{msg}");
        assert!(lm_val_batch(&shard, 0, 1, 3, &mut x, &mut y).is_err());
        assert!(lm_batch(&shard, 0, 0, 1, 0, &mut x, &mut y).is_err());
        // A window of exactly the shard's length is fine.
        lm_batch(&shard, 0, 0, 2, 2, &mut x, &mut y).unwrap();
        assert_eq!(x, [1, 2, 1, 2]);
    }
}

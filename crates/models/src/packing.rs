//! Several sequences in one row of a batch: packed fine-tuning data (TRL's `packing` with its
//! padding-free collator). Each token's position restarts at 0 with its sequence, and attention
//! stays within the sequence: query i sees key j when both are in the same sequence and
//! j <= i. transformers derives the same from `position_ids` without an attention mask
//! (`find_packed_sequence_indices` in its masking utilities), flash attention from
//! `cu_seq_lens`; the causal models here take a [`Packing`] beside the ids.

use crate::Result;
use candle_core::{DType, Device, Tensor};

/// The positions and the attention mask of rows that hold several sequences.
#[derive(Debug, Clone)]
pub struct Packing {
    /// (B, T) u32: each token's position within its own sequence.
    positions: Tensor,
    /// (B, 1, T, T) f32, additive: 0 where key j is in query i's sequence and j <= i, -inf
    /// elsewhere.
    mask: Tensor,
    /// One more than the largest position: the positions the tables must cover.
    span: usize,
}

impl Packing {
    /// Rows of `t` tokens, row r holding the sequences of `lengths[r]` one after the other
    /// from its start; what they leave of the row (padding) is one more sequence, so that its
    /// rows of attention are never empty. Lengths that are zero or overflow the row are errors.
    pub fn new(lengths: &[Vec<usize>], t: usize, device: &Device) -> Result<Self> {
        let b = lengths.len();
        let mut span = 0;
        for (r, row) in lengths.iter().enumerate() {
            let used: usize = row.iter().sum();
            if row.contains(&0) || used > t {
                return Err(crate::Error::Config(format!(
                    "packed row {r}: sequences of lengths {row:?} in a row of {t} tokens"
                )));
            }
            let pad = (used < t).then_some(t - used);
            span = row.iter().copied().chain(pad).fold(span, usize::max);
        }
        let rows: Vec<&[usize]> = lengths.iter().map(Vec::as_slice).collect();
        let positions = lantern_kernels::packed_positions(&rows, t);
        // Each token's sequence, numbered along its row (one more where a position restarts
        // at 0): the host sends B·T numbers and the (B, T, T) mask is made where it is used.
        let mut k = 0u32;
        let sequence: Vec<u32> = positions
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                k = match (i % t, p) {
                    (0, _) => 0,
                    (_, 0) => k + 1,
                    _ => k,
                };
                k
            })
            .collect();
        // Key j is visible to query i when both are in one sequence and j <= i.
        let sequence = Tensor::from_vec(sequence, (b, t), device)?;
        let same = sequence
            .unsqueeze(2)?
            .broadcast_eq(&sequence.unsqueeze(1)?)?; // (B, T, T) u8
        let causal = Tensor::tril2(t, DType::U8, device)?; // (T, T)
        let seen = same.broadcast_mul(&causal)?;
        let mask = seen.where_cond(
            &Tensor::zeros((b, t, t), DType::F32, device)?,
            &Tensor::full(f32::NEG_INFINITY, (b, t, t), device)?,
        )?;
        Ok(Self {
            positions: Tensor::from_vec(positions, (b, t), device)?,
            mask: mask.reshape((b, 1, t, t))?,
            span,
        })
    }

    /// (B, T) u32: each token's position within its sequence.
    pub fn positions(&self) -> &Tensor {
        &self.positions
    }

    /// (B, 1, T, T): the additive mask, for scores (B, H, T, T).
    pub fn mask(&self) -> &Tensor {
        &self.mask
    }

    /// One more than the largest position.
    pub fn span(&self) -> usize {
        self.span
    }

    /// Checks the packing to be of rows shaped as ids (B, T).
    pub fn check(&self, ids: &Tensor) -> Result<()> {
        if ids.dims() != self.positions.dims() {
            return Err(crate::Error::Config(format!(
                "a packing of rows {:?} for ids {:?}",
                self.positions.dims(),
                ids.dims()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_restart_and_attention_stays_in_each_sequence() {
        let p = Packing::new(&[vec![2, 3], vec![4]], 6, &Device::Cpu).unwrap();
        assert_eq!(
            p.positions().to_vec2::<u32>().unwrap(),
            [[0, 1, 0, 1, 2, 0], [0, 1, 2, 3, 0, 1]]
        );
        assert_eq!(p.span(), 4);
        let m = p.mask().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let seen = |r: usize, i: usize| -> Vec<usize> {
            (0..6).filter(|&j| m[(r * 6 + i) * 6 + j] == 0.0).collect()
        };
        assert_eq!(seen(0, 0), [0]);
        assert_eq!(seen(0, 1), [0, 1]);
        assert_eq!(seen(0, 2), [2]);
        assert_eq!(seen(0, 4), [2, 3, 4]);
        assert_eq!(seen(0, 5), [5]); // the padding, a sequence of its own
        assert_eq!(seen(1, 3), [0, 1, 2, 3]);
        assert_eq!(seen(1, 5), [4, 5]);
        assert!(Packing::new(&[vec![4, 3]], 6, &Device::Cpu).is_err());
        assert!(Packing::new(&[vec![0, 3]], 6, &Device::Cpu).is_err());
    }
}

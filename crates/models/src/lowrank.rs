//! The low-rank side path of a linear layer (LoRA, Hu et al. 2021), computed as peft computes
//! it: a layer `y = x·W0ᵀ (+ b)` adapted by A (r, in) and B (out, r) gives
//! `y = x·W0ᵀ + s·(drop(x)·Aᵀ)·Bᵀ (+ b)`, with dropout (`lora_dropout`) on the side path's input
//! alone, in training only.
//!
//! The models find adapters in their [`Params`] store: a store given a [`LowRankSpec`]
//! ([`Params::with_low_rank`]) that holds `<module>.lora_A.weight` and `<module>.lora_B.weight`
//! beside `<module>.weight` runs that module with the side path. W0 is then usually a constant
//! (frozen) and only A and B are recorded for backward, so the backward pass computes no
//! (out, in) weight gradient for the layer: two rank-r products instead.

use crate::{Mode, Params, Result};
use candle_core::Tensor;
use lantern_kernels::ops as k;

/// The settings every adapted layer of a model shares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LowRankSpec {
    /// s: alpha / r (rsLoRA: alpha / √r).
    pub scale: f64,
    /// The probability of zeroing an element of the side path's input, in training.
    pub dropout: f64,
}

/// The names of a module's adapter matrices in a store: `<module>.lora_A.weight` (r, in) and
/// `<module>.lora_B.weight` (out, r), peft's names less its `base_model.model.` prefix.
pub fn adapter_names(module: &str) -> (String, String) {
    (
        format!("{module}.lora_A.weight"),
        format!("{module}.lora_B.weight"),
    )
}

/// One layer's adapter: A (r, in), B (out, r) and the shared settings.
#[derive(Clone)]
pub struct LowRank {
    a: Tensor,
    b: Tensor,
    spec: LowRankSpec,
}

impl LowRank {
    /// The adapter of the linear layer whose weight is `weight` (`<module>.weight`), if
    /// `params` has a [`LowRankSpec`] and holds both of its matrices.
    pub fn of(params: &Params, weight: &str) -> Result<Option<LowRank>> {
        let (Some(spec), Some(module)) = (params.low_rank(), weight.strip_suffix(".weight")) else {
            return Ok(None);
        };
        let (a, b) = adapter_names(module);
        if params.var(&a).is_err() || params.var(&b).is_err() {
            return Ok(None);
        }
        Ok(Some(LowRank {
            a: params.get(&a)?,
            b: params.get(&b)?,
            spec,
        }))
    }

    /// The rank-r half of the side path: s·drop(x)·Aᵀ for x (rows, in) → (rows, r). The scale
    /// is taken here, on the narrow tensor. Draws the dropout mask from `mode` when training
    /// with dropout.
    pub fn down(&self, x: &Tensor, mode: &mut Mode<'_>) -> Result<Tensor> {
        let x = match mode {
            Mode::Train(rng) if self.spec.dropout > 0.0 => k::dropout(x, self.spec.dropout, rng)?,
            _ => x.clone(),
        };
        Ok((x.matmul(&self.a.t()?)? * self.spec.scale)?)
    }

    /// The other half: u (rows, r) from [`LowRank::down`] → u·Bᵀ (rows, out), or with
    /// `rows_of_b` = (start, len) only the outputs start..start + len (one of a fused
    /// projection's parts).
    pub fn up(&self, u: &Tensor, rows_of_b: Option<(usize, usize)>) -> Result<Tensor> {
        let b = match rows_of_b {
            Some((start, len)) => self.b.narrow(0, start, len)?,
            None => self.b.clone(),
        };
        Ok(u.matmul(&b.t()?)?)
    }

    /// `y + s·(drop(x)·Aᵀ)·Bᵀ` for x (rows, in) and y (rows, out), the layer's base product.
    pub fn add_to(&self, x: &Tensor, y: Tensor, mode: &mut Mode<'_>) -> Result<Tensor> {
        let u = self.down(x, mode)?;
        Ok((y + self.up(&u, None)?)?)
    }
}

/// A linear layer with a bias as the model stores them (each family its own layout), and its
/// adapter if the store has one.
pub(crate) struct Dense {
    pub wb: (Tensor, Tensor),
    pub lora: Option<LowRank>,
}

impl Dense {
    /// `<module>.weight`, `<module>.bias` and the module's adapter.
    pub fn load(params: &Params, module: &str) -> Result<Dense> {
        let weight = format!("{module}.weight");
        Ok(Dense {
            wb: (params.get(&weight)?, params.get(&format!("{module}.bias"))?),
            lora: LowRank::of(params, &weight)?,
        })
    }
}

/// `add_to` for an optional adapter: `y` as it is without one.
pub fn add_side(
    lora: Option<&LowRank>,
    x: &Tensor,
    y: Tensor,
    mode: &mut Mode<'_>,
) -> Result<Tensor> {
    match lora {
        Some(l) => l.add_to(x, y, mode),
        None => Ok(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use lantern_kernels::Rng;

    fn store(dropout: f64) -> Params {
        let dev = Device::Cpu;
        let mut p = Params::new();
        let t = |n: usize, m: usize, s: f32| {
            let v: Vec<f32> = (0..n * m).map(|i| ((i as f32) * s).sin()).collect();
            Tensor::from_vec(v, (n, m), &dev).unwrap()
        };
        p.insert("l.weight", t(3, 5, 0.3)).unwrap();
        p.insert("l.lora_A.weight", t(2, 5, 0.7)).unwrap();
        p.insert("l.lora_B.weight", t(3, 2, 1.1)).unwrap();
        p.with_low_rank(LowRankSpec {
            scale: 0.5,
            dropout,
        })
    }

    #[test]
    fn the_side_path_is_the_merged_weight_without_dropout() {
        let p = store(0.0);
        let x = Tensor::arange(0f32, 20.0, &Device::Cpu)
            .unwrap()
            .reshape((4, 5))
            .unwrap();
        let w = p.get("l.weight").unwrap();
        let lr = LowRank::of(&p, "l.weight").unwrap().expect("adapted");
        let y = lr
            .add_to(&x, x.matmul(&w.t().unwrap()).unwrap(), &mut Mode::Eval)
            .unwrap();
        let ba = p
            .get("l.lora_B.weight")
            .unwrap()
            .matmul(&p.get("l.lora_A.weight").unwrap())
            .unwrap();
        let merged = (w + (ba * 0.5).unwrap()).unwrap();
        let want = x.matmul(&merged.t().unwrap()).unwrap();
        let d = (y - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-4);
        // Without the spec, or without both matrices, no adapter.
        assert!(LowRank::of(&Params::new(), "l.weight").unwrap().is_none());
        assert!(LowRank::of(&p, "m.weight").unwrap().is_none());
    }

    #[test]
    fn dropout_acts_on_the_side_path_in_training_only() {
        let p = store(0.5);
        let lr = LowRank::of(&p, "l.weight").unwrap().unwrap();
        let x = Tensor::ones((64, 5), DType::F32, &Device::Cpu).unwrap();
        let eval = lr.down(&x, &mut Mode::Eval).unwrap();
        let mut rng = Rng::derive(1, 2);
        let train = lr.down(&x, &mut Mode::Train(&mut rng)).unwrap();
        assert_ne!(
            eval.to_vec2::<f32>().unwrap(),
            train.to_vec2::<f32>().unwrap()
        );
        // The same stream gives the same mask (activation checkpointing replays it).
        let again = lr
            .down(&x, &mut Mode::Train(&mut Rng::derive(1, 2)))
            .unwrap();
        assert_eq!(
            train.to_vec2::<f32>().unwrap(),
            again.to_vec2::<f32>().unwrap()
        );
    }
}

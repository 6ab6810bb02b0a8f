//! ModernBERT (Warner et al. 2024, "Smarter, Better, Faster, Longer: A Modern Bidirectional
//! Encoder for Fast, Memory Efficient, and Long Context Finetuning and Inference"): the encoder
//! of transformers' `ModernBertModel`, 1:1 in names and layouts, and the pieces its heads share.
//!
//! A layer is pre-LayerNorm (`attn_norm`, absent in layer 0 where the embeddings' norm stands
//! in; `mlp_norm`), attention through a fused `Wqkv` with rotary positions, and a GeGLU
//! feed-forward (`Wi` gives the input and the gate, `Wo(gelu(input) · gate)`); the encoder ends
//! with `final_norm`. Full layers (every third from layer 0 by default) attend over the whole
//! sequence with RoPE of base `global_rope_theta`; the others over keys within
//! `local_attention / 2` positions on either side, with RoPE of base `local_rope_theta`.
//! LayerNorms and linear layers have no biases by default (`norm_bias`, `attention_bias`,
//! `mlp_bias`, `classifier_bias`). The heads put `ModernBertPredictionHead` (dense → GELU →
//! LayerNorm) before their output layer: `decoder` (tied to the token embeddings) for the
//! masked LM, `classifier` for every other task.

use super::model::{adapted_act, drop as dropout};
use super::BertConfig;
use crate::llama::Rope;
use crate::lowrank::LowRank;
use crate::{Error, Mode, Params, Result};
use candle_core::{DType, Device, Tensor, TensorId};
use lantern_kernels::{self as k, Rng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// How the sequence classifier and the multiple-choice head read a sequence
/// (`classifier_pooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The first token's hidden state.
    #[default]
    Cls,
    /// The mean over the sequence's tokens (not its padding).
    Mean,
}

/// `ModernBertConfig`'s settings beyond the ones BERT has (transformers' names and defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModernSettings {
    /// Per layer: whether it attends over the whole sequence (`"full_attention"` in
    /// `layer_types`) rather than a local window (`"sliding_attention"`).
    pub global_layers: Vec<bool>,
    /// The local window's width: a token sees the keys within `local_attention / 2` positions.
    pub local_attention: usize,
    /// RoPE's base in the full layers and in the local ones.
    pub global_rope_theta: f64,
    pub local_rope_theta: f64,
    pub norm_bias: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    /// The prediction head's dense layer (`head.dense`) has a bias.
    pub classifier_bias: bool,
    /// The masked LM's `decoder` has a bias.
    pub decoder_bias: bool,
    pub classifier_pooling: Pooling,
    pub embedding_dropout: f64,
    pub mlp_dropout: f64,
    /// `bos_token_id`, `eos_token_id`, `cls_token_id`, `sep_token_id` as the config read had
    /// them, written back on export.
    #[serde(default)]
    pub special_ids: BTreeMap<String, u32>,
}

/// transformers' `global_attn_every_n_layers` default.
pub const GLOBAL_EVERY: usize = 3;

impl ModernSettings {
    /// transformers' defaults for a model of `layers` layers.
    pub fn new(layers: usize) -> Self {
        Self {
            global_layers: every_nth(layers, GLOBAL_EVERY),
            local_attention: 128,
            global_rope_theta: 160_000.0,
            local_rope_theta: 10_000.0,
            norm_bias: false,
            attention_bias: false,
            mlp_bias: false,
            classifier_bias: false,
            decoder_bias: true,
            classifier_pooling: Pooling::Cls,
            embedding_dropout: 0.0,
            mlp_dropout: 0.0,
            special_ids: BTreeMap::new(),
        }
    }

    pub(crate) fn validate(&self, layers: usize) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.global_layers.len() != layers {
            return bad(format!(
                "layer_types names {} layers but num_hidden_layers is {layers}",
                self.global_layers.len()
            ));
        }
        if self.local_attention < 2 {
            return bad(format!(
                "local_attention {} must be at least 2 (a window of local_attention / 2 on \
                 either side)",
                self.local_attention
            ));
        }
        for (name, theta) in [
            ("global_rope_theta", self.global_rope_theta),
            ("local_rope_theta", self.local_rope_theta),
        ] {
            if !(theta > 0.0 && theta.is_finite()) {
                return bad(format!("{name} {theta} must be positive"));
            }
        }
        for (name, p) in [
            ("embedding_dropout", self.embedding_dropout),
            ("mlp_dropout", self.mlp_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("{name} {p} must be in [0, 1)"));
            }
        }
        Ok(())
    }

    /// `global_attn_every_n_layers` when the layers follow that pattern (older transformers
    /// read only this key).
    pub fn global_every(&self) -> Option<usize> {
        let n = self.global_layers.len();
        (1..=n.max(1)).find(|&e| every_nth(n, e) == self.global_layers)
    }
}

/// Layer i is full when `i % every == 0` (transformers' `layer_types` from
/// `global_attn_every_n_layers`).
pub fn every_nth(layers: usize, every: usize) -> Vec<bool> {
    (0..layers).map(|i| i % every.max(1) == 0).collect()
}

fn settings(cfg: &BertConfig) -> Result<&ModernSettings> {
    cfg.modern
        .as_ref()
        .ok_or_else(|| Error::Config("a modernbert config without its settings".into()))
}

/// A weight and, when the layer has one, its bias.
fn push_layer(v: &mut Vec<(String, Vec<usize>)>, name: &str, shape: Vec<usize>, bias: bool) {
    let out = shape[0];
    v.push((format!("{name}.weight"), shape));
    if bias {
        v.push((format!("{name}.bias"), vec![out]));
    }
}

/// The encoder's parameters with their shapes, in transformers' order, under prefix `p`.
pub(crate) fn encoder_shapes(cfg: &BertConfig, p: &str) -> Vec<(String, Vec<usize>)> {
    let m = cfg
        .modern
        .clone()
        .unwrap_or_else(|| ModernSettings::new(cfg.num_hidden_layers));
    let (c, f) = (cfg.hidden_size, cfg.intermediate_size);
    let mut v = Vec::new();
    v.push((
        format!("{p}embeddings.tok_embeddings.weight"),
        vec![cfg.vocab_size, c],
    ));
    push_layer(&mut v, &format!("{p}embeddings.norm"), vec![c], m.norm_bias);
    for i in 0..cfg.num_hidden_layers {
        let l = format!("{p}layers.{i}");
        if i > 0 {
            push_layer(&mut v, &format!("{l}.attn_norm"), vec![c], m.norm_bias);
        }
        push_layer(
            &mut v,
            &format!("{l}.attn.Wqkv"),
            vec![3 * c, c],
            m.attention_bias,
        );
        push_layer(
            &mut v,
            &format!("{l}.attn.Wo"),
            vec![c, c],
            m.attention_bias,
        );
        push_layer(&mut v, &format!("{l}.mlp_norm"), vec![c], m.norm_bias);
        push_layer(&mut v, &format!("{l}.mlp.Wi"), vec![2 * f, c], m.mlp_bias);
        push_layer(&mut v, &format!("{l}.mlp.Wo"), vec![c, f], m.mlp_bias);
    }
    push_layer(&mut v, &format!("{p}final_norm"), vec![c], m.norm_bias);
    v
}

/// `ModernBertPredictionHead`'s parameters (`head.dense`, `head.norm`).
pub(crate) fn prediction_head_shapes(cfg: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let m = cfg
        .modern
        .clone()
        .unwrap_or_else(|| ModernSettings::new(cfg.num_hidden_layers));
    let c = cfg.hidden_size;
    let mut v = Vec::new();
    push_layer(&mut v, "head.dense", vec![c, c], m.classifier_bias);
    push_layer(&mut v, "head.norm", vec![c], m.norm_bias);
    v
}

/// transformers' `ModernBertPreTrainedModel._init_weights` for one parameter: weights from a
/// normal truncated at ±2σ (`initializer_cutoff_factor`) with σ = 0.02 for the embeddings,
/// `Wqkv` and `Wi`, 0.02 / √(2·layers) for the output projections (`Wo`) and `head.dense`,
/// 1 / √hidden for a task's `classifier`; zero biases and unit LayerNorm gains. The padding
/// row of the token embeddings is zero (it gets no gradient either).
pub(crate) fn init_param(
    name: &str,
    shape: &[usize],
    cfg: &BertConfig,
    rng: &mut Rng,
    device: &Device,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let is_norm = ["norm.weight", "attn_norm.weight", "mlp_norm.weight"]
        .iter()
        .any(|s| name.ends_with(s));
    if is_norm {
        return Ok(Tensor::ones(shape, DType::F32, device)?);
    }
    if name.ends_with(".bias") {
        return Ok(Tensor::zeros(shape, DType::F32, device)?);
    }
    let std = if name.ends_with("Wo.weight") || name == "head.dense.weight" {
        0.02 / (2.0 * cfg.num_hidden_layers as f64).sqrt()
    } else if name == "classifier.weight" {
        1.0 / (cfg.hidden_size as f64).sqrt()
    } else {
        0.02
    };
    let mut w: Vec<f32> = (0..n)
        .map(|_| loop {
            let x = rng.next_normal() * std;
            if x.abs() <= 2.0 * std {
                break x as f32;
            }
        })
        .collect();
    if name.ends_with("tok_embeddings.weight") {
        let c = shape[1];
        let pad = cfg.pad_token_id as usize;
        w[pad * c..(pad + 1) * c].iter_mut().for_each(|x| *x = 0.0);
    }
    Ok(Tensor::from_vec(w, shape, &Device::Cpu)?.to_device(device)?)
}

/// A weight and its bias from `params`, or zeros (a constant: no gradient) when the layer has
/// no bias: (out, in) and (out), or a LayerNorm's (C) and (C).
pub(crate) fn pair_or_zeros(params: &Params, name: &str, bias: bool) -> Result<(Tensor, Tensor)> {
    let w = params.get(&format!("{name}.weight"))?;
    let b = match bias {
        true => params.get(&format!("{name}.bias"))?,
        false => Tensor::zeros(w.dim(0)?, w.dtype(), w.device())?,
    };
    Ok((w, b))
}

/// `ModernBertPredictionHead` (names `head.dense`, `head.norm`): its dense layer and norm.
pub(crate) fn prediction_head(
    cfg: &BertConfig,
    params: &Params,
) -> Result<((Tensor, Tensor), (Tensor, Tensor))> {
    let m = settings(cfg)?;
    Ok((
        pair_or_zeros(params, "head.dense", m.classifier_bias)?,
        pair_or_zeros(params, "head.norm", m.norm_bias)?,
    ))
}

/// The sequence's pooled state: the first token's, or the mean over the tokens `mask` (B, T)
/// marks (all of them without a mask). hidden: (B, T, C) → (B, C).
pub(crate) fn pool(hidden: &Tensor, how: Pooling, mask: Option<&Tensor>) -> Result<Tensor> {
    match (how, mask) {
        (Pooling::Cls, _) => Ok(hidden.narrow(1, 0, 1)?.squeeze(1)?),
        (Pooling::Mean, None) => Ok(hidden.mean(1)?),
        (Pooling::Mean, Some(m)) => {
            let m = m.to_dtype(hidden.dtype())?.to_device(hidden.device())?; // (B, T)
            let sum = hidden.broadcast_mul(&m.unsqueeze(2)?)?.sum(1)?; // (B, C)
            Ok(sum.broadcast_div(&m.sum_keepdim(1)?)?)
        }
    }
}

/// A linear layer with an optional bias and an optional adapter.
struct Lin {
    w: Tensor,
    b: Option<Tensor>,
    lora: Option<LowRank>,
}

impl Lin {
    fn load(params: &Params, module: &str, bias: bool) -> Result<Self> {
        let weight = format!("{module}.weight");
        Ok(Self {
            w: params.get(&weight)?,
            b: match bias {
                true => Some(params.get(&format!("{module}.bias"))?),
                false => None,
            },
            lora: LowRank::of(params, &weight)?,
        })
    }

    /// x (.., in) → (.., out).
    fn apply(&self, x: &Tensor, mode: &mut Mode<'_>) -> Result<Tensor> {
        adapted_act(
            x,
            (&self.w, self.b.as_ref()),
            self.lora.as_ref(),
            false,
            mode,
        )
    }
}

struct Layer {
    /// None in layer 0 (transformers' `nn.Identity`).
    attn_norm: Option<(Tensor, Tensor)>,
    wqkv: Lin,
    wo: Lin,
    mlp_norm: (Tensor, Tensor),
    wi: Lin,
    mlp_wo: Lin,
    global: bool,
}

/// The encoder layers, the final norm and the rotary tables of both kinds of layer.
pub(crate) struct Stack {
    layers: Vec<Layer>,
    final_norm: (Tensor, Tensor),
    global_rope: Rope,
    local_rope: Rope,
    /// A key sees the queries within this many positions in a local layer.
    half_window: usize,
    /// The local layers' masks last built: every local layer of a forward shares one.
    masks: Mutex<LocalMasks>,
}

/// The window mask by sequence length (every step of a run of one length shares it), and the
/// window with the padding mask added, by the padding mask it was built from (every local
/// layer of one forward, and their recomputation in the backward pass, share it).
#[derive(Default)]
struct LocalMasks {
    window: Option<(usize, Tensor)>,
    with_padding: Option<(TensorId, Tensor)>,
}

impl Stack {
    /// The layers of `cfg` under prefix `p`, with rotary tables for its
    /// `max_position_embeddings` positions in the parameters' dtype.
    pub(crate) fn load(cfg: &BertConfig, params: &Params, p: &str) -> Result<Self> {
        let m = settings(cfg)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = format!("{p}layers.{i}");
                Ok(Layer {
                    attn_norm: match i {
                        0 => None,
                        _ => Some(pair_or_zeros(
                            params,
                            &format!("{l}.attn_norm"),
                            m.norm_bias,
                        )?),
                    },
                    wqkv: Lin::load(params, &format!("{l}.attn.Wqkv"), m.attention_bias)?,
                    wo: Lin::load(params, &format!("{l}.attn.Wo"), m.attention_bias)?,
                    mlp_norm: pair_or_zeros(params, &format!("{l}.mlp_norm"), m.norm_bias)?,
                    wi: Lin::load(params, &format!("{l}.mlp.Wi"), m.mlp_bias)?,
                    mlp_wo: Lin::load(params, &format!("{l}.mlp.Wo"), m.mlp_bias)?,
                    global: m.global_layers[i],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_norm = pair_or_zeros(params, &format!("{p}final_norm"), m.norm_bias)?;
        let (device, dtype) = (final_norm.0.device().clone(), final_norm.0.dtype());
        let hd = cfg.head_dim();
        let rope = |theta: f64| -> Result<Rope> {
            let inv = crate::llama::inv_freq(theta, hd, None, cfg.max_position_embeddings);
            Rope::new(&inv, 1.0, 0, cfg.max_position_embeddings, &device, dtype)
        };
        Ok(Self {
            layers,
            global_rope: rope(m.global_rope_theta)?,
            local_rope: rope(m.local_rope_theta)?,
            final_norm,
            half_window: m.local_attention / 2,
            masks: Mutex::new(LocalMasks::default()),
        })
    }

    pub(crate) fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// The additive mask of a local layer over T positions: 0 where |query − key| ≤ the half
    /// window, −∞ elsewhere → (1, 1, T, T) f32, added to `key_mask` (B, 1, 1, T) when given.
    fn window_mask(&self, t: usize, key_mask: Option<&Tensor>, device: &Device) -> Result<Tensor> {
        let mut masks = self.masks.lock().unwrap_or_else(|e| e.into_inner());
        let window = match &masks.window {
            Some((len, m)) if *len == t && m.device().same_device(device) => m.clone(),
            _ => {
                let w = self.half_window;
                let v: Vec<f32> = (0..t * t)
                    .map(|i| match (i / t).abs_diff(i % t) <= w {
                        true => 0.0,
                        false => f32::NEG_INFINITY,
                    })
                    .collect();
                let m = Tensor::from_vec(v, (1, 1, t, t), device)?;
                masks.window = Some((t, m.clone()));
                m
            }
        };
        let Some(key_mask) = key_mask else {
            return Ok(window);
        };
        match &masks.with_padding {
            Some((id, m)) if *id == key_mask.id() => Ok(m.clone()),
            _ => {
                let m = window.broadcast_add(&key_mask.to_dtype(DType::F32)?)?; // (B, 1, T, T)
                masks.with_padding = Some((key_mask.id(), m.clone()));
                Ok(m)
            }
        }
    }

    /// Layer `l` on x (B, T, C) with the padding mask (B, 1, 1, T) → (B, T, C); the last layer
    /// ends with `final_norm`, so every caller that runs the layers one by one gets the
    /// encoder's output.
    pub(crate) fn layer(
        &self,
        cfg: &BertConfig,
        l: usize,
        x: Tensor,
        key_mask: Option<&Tensor>,
        mode: &mut Mode<'_>,
    ) -> Result<Tensor> {
        let m = settings(cfg)?;
        let lyr = self.layers.get(l).ok_or_else(|| {
            Error::Config(format!("layer {l} of a model of {}", self.layers.len()))
        })?;
        let (b, t, c) = x.dims3()?;
        let (h, hd, f) = (
            cfg.num_attention_heads,
            cfg.head_dim(),
            cfg.intermediate_size,
        );
        let eps = cfg.layer_norm_eps;
        let normed = match &lyr.attn_norm {
            Some((w, bias)) => k::layer_norm(&x, w, bias, eps)?,
            None => x.clone(),
        };
        // Wqkv's outputs are q, k, v one after the other, each heads × hd.
        let qkv = lyr.wqkv.apply(&normed, mode)?.reshape((b, t, 3, h, hd))?;
        let part = |i: usize| -> Result<Tensor> { Ok(qkv.narrow(2, i, 1)?.squeeze(2)?) };
        let rope = match lyr.global {
            true => &self.global_rope,
            false => &self.local_rope,
        };
        if t > rope.len() {
            return Err(Error::Config(format!(
                "sequence length {t} exceeds the model's limit of {} tokens \
                 (max_position_embeddings)",
                rope.len()
            )));
        }
        let rope = rope.first(t)?;
        let heads = |y: Tensor| -> Result<Tensor> { Ok(y.transpose(1, 2)?.contiguous()?) };
        let q = heads(rope.apply(&part(0)?.contiguous()?)?)?; // (B, H, T, hd)
        let kk = heads(rope.apply(&part(1)?.contiguous()?)?)?;
        let v = heads(part(2)?)?;
        let mask = match lyr.global {
            true => key_mask.cloned(),
            false => Some(self.window_mask(t, key_mask, x.device())?),
        };
        let att = q.matmul(&kk.t()?)?; // (B, H, T, T)
        let att = k::masked_softmax(&att, 1.0 / (hd as f64).sqrt(), mask.as_ref())?;
        let att = dropout(att, cfg.attention_probs_dropout_prob, mode)?;
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, c))?;
        let y = dropout(
            lyr.wo.apply(&y, mode)?,
            cfg.attention_probs_dropout_prob,
            mode,
        )?;
        let x = (x + y)?;
        let normed = k::layer_norm(&x, &lyr.mlp_norm.0, &lyr.mlp_norm.1, eps)?;
        let gu = lyr.wi.apply(&normed, mode)?; // (B, T, 2F): the input, then the gate
                                               // One fused pass each way (the op makes the two halves contiguous).
        let act = k::geglu_erf(&gu.narrow(2, 0, f)?, &gu.narrow(2, f, f)?)?;
        let y = lyr
            .mlp_wo
            .apply(&dropout(act, m.mlp_dropout, mode)?, mode)?;
        let x = (x + y)?;
        match l + 1 == self.layers.len() {
            true => Ok(k::layer_norm(
                &x,
                &self.final_norm.0,
                &self.final_norm.1,
                eps,
            )?),
            false => Ok(x),
        }
    }
}

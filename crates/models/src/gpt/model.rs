use super::GptConfig;
use crate::lowrank::{add_side, Dense};
use crate::{BlockAttention, Mode, Packing, Params, Result};
use candle_core::{DType, Device, Tensor};
use lantern_kernels::{self as k, Rng, WeightLayout};
use serde::{Deserialize, Serialize};

/// How self-attention is computed (`model.attention` in a run config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionImpl {
    /// Fused on CUDA; on the CPU the composite path: the two tie at the `lantern bench`
    /// shape (T 128), and composite is twice as fast at T 512, where the fused CPU kernel's
    /// dot products lose to gemm (docs/training.md).
    #[default]
    Auto,
    /// [`k::causal_attention`]: one op from the (B, T, 3C) qkv to the (B, T, C) input of
    /// c_proj; the (B, H, T, T) scores never exist (on CUDA and the CPU).
    Fused,
    /// candle matmuls around the masked softmax kernel, with the (B, H, T, T) scores.
    Composite,
}

impl AttentionImpl {
    /// Whether this choice runs the fused op on `device`.
    pub fn fused_on(self, device: &Device) -> bool {
        match self {
            Self::Fused => true,
            Self::Composite => false,
            Self::Auto => device.is_cuda(),
        }
    }
}

/// Every parameter of the model with its shape, in a fixed order (init order, optimizer order).
pub fn param_shapes(cfg: &GptConfig) -> Vec<(String, Vec<usize>)> {
    let c = cfg.n_embd;
    let mut v = vec![
        (
            "transformer.wte.weight".to_string(),
            vec![cfg.vocab_size, c],
        ),
        (
            "transformer.wpe.weight".to_string(),
            vec![cfg.n_positions, c],
        ),
    ];
    for i in 0..cfg.n_layer {
        let p = format!("transformer.h.{i}");
        v.extend([
            (format!("{p}.ln_1.weight"), vec![c]),
            (format!("{p}.ln_1.bias"), vec![c]),
            (format!("{p}.attn.c_attn.weight"), vec![c, 3 * c]),
            (format!("{p}.attn.c_attn.bias"), vec![3 * c]),
            (format!("{p}.attn.c_proj.weight"), vec![c, c]),
            (format!("{p}.attn.c_proj.bias"), vec![c]),
            (format!("{p}.ln_2.weight"), vec![c]),
            (format!("{p}.ln_2.bias"), vec![c]),
            (format!("{p}.mlp.c_fc.weight"), vec![c, 4 * c]),
            (format!("{p}.mlp.c_fc.bias"), vec![4 * c]),
            (format!("{p}.mlp.c_proj.weight"), vec![4 * c, c]),
            (format!("{p}.mlp.c_proj.bias"), vec![c]),
        ]);
    }
    v.push(("transformer.ln_f.weight".to_string(), vec![c]));
    v.push(("transformer.ln_f.bias".to_string(), vec![c]));
    v
}

/// GPT-2 initialisation: N(0, 0.02) for matrices and embeddings, the residual projections
/// scaled by 1/sqrt(2·n_layer) (GPT-2 paper §2.3), zero biases, unit LayerNorm gains. Drawn in
/// `param_shapes` order from `rng`, so the same seed gives the same model on every device.
pub fn init_params(
    cfg: &GptConfig,
    rng: &mut Rng,
    device: &Device,
    dtype: DType,
) -> Result<Params> {
    cfg.validate()?;
    let mut params = Params::new();
    let resid_std = 0.02 / ((2 * cfg.n_layer) as f64).sqrt();
    for (name, shape) in param_shapes(cfg) {
        let n: usize = shape.iter().product();
        let t = if name.ends_with("ln_1.weight")
            || name.ends_with("ln_2.weight")
            || name.ends_with("ln_f.weight")
        {
            Tensor::ones(shape, DType::F32, device)?
        } else if name.ends_with(".bias") {
            Tensor::zeros(shape, DType::F32, device)?
        } else {
            let std = if name.ends_with("c_proj.weight") {
                resid_std
            } else {
                0.02
            };
            Tensor::from_vec(rng.normal_vec(n, std), shape, &Device::Cpu)?.to_device(device)?
        };
        params.insert(name, t.to_dtype(dtype)?)?;
    }
    Ok(params)
}

struct Block {
    ln_1: (Tensor, Tensor),
    c_attn: Dense,
    c_proj: Dense,
    ln_2: (Tensor, Tensor),
    c_fc: Dense,
    mlp_proj: Dense,
}

/// The keys and values of the tokens a [`Gpt`] has seen, for [`Gpt::forward_last_cached`]:
/// one (K, V) pair per block, each (B, H, n_positions, hd), allocated once and written in
/// place; the first `len` positions are filled.
#[derive(Default)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tokens seen so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The forward graph over a [`Params`] store. Holds the variables' tensors (shared storage),
/// so optimizer updates to the variables are seen by the next forward.
pub struct Gpt {
    cfg: GptConfig,
    /// NEFTune's α ([`Gpt::with_neftune`]); 0: none.
    neftune_alpha: f64,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: (Tensor, Tensor),
    attention: AttentionImpl,
}

/// How a linear layer multiplies: with candle's matmul, whose backward autograd records
/// (training, evaluation), or, in generation, with [`k::inference_matmul`], which runs the
/// GEMV kernel on the one or few rows of a step and has no backward.
/// Shared with Llama's linear layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Product {
    Matmul,
    Inference,
}

/// `act(x @ w + b)` for x: (.., in), w: (in, out) in HF Conv1D layout, b: (out); the bias
/// (and the GELU, when `gelu`) is one fused op after the matmul, and a LoRA adapter's side
/// path is added before it.
fn conv1d_act(
    x: &Tensor,
    layer: &Dense,
    gelu: bool,
    (product, mode): (Product, &mut Mode<'_>),
) -> Result<Tensor> {
    let (w, b) = &layer.wb;
    let dims = x.dims().to_vec();
    let (n_in, n_out) = w.dims2()?;
    let rows = x.elem_count() / n_in;
    let x = x.reshape((rows, n_in))?;
    let y = match product {
        Product::Matmul => x.matmul(w)?,
        Product::Inference => k::inference_matmul(&x, w, WeightLayout::InOut)?,
    }; // (rows, out)
    let y = add_side(layer.lora.as_ref(), &x, y, mode)?;
    let y = match gelu {
        true => k::bias_gelu_tanh(&y, b)?,
        false => k::bias_add(&y, b)?,
    };
    let mut out_dims = dims;
    *out_dims.last_mut().expect("rank >= 1") = n_out;
    Ok(y.reshape(out_dims)?)
}

/// `x @ w + b`, see [`conv1d_act`].
fn conv1d(x: &Tensor, layer: &Dense, run: (Product, &mut Mode<'_>)) -> Result<Tensor> {
    conv1d_act(x, layer, false, run)
}

impl Gpt {
    pub fn new(cfg: &GptConfig, params: &Params) -> Result<Self> {
        cfg.validate()?;
        let pair = |p: &str| -> Result<(Tensor, Tensor)> {
            Ok((
                params.get(&format!("{p}.weight"))?,
                params.get(&format!("{p}.bias"))?,
            ))
        };
        // `Conv1D` layers: weight (in, out), bias (out).
        let dense = |p: &str| Dense::load(params, p);
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                let p = format!("transformer.h.{i}");
                Ok(Block {
                    ln_1: pair(&format!("{p}.ln_1"))?,
                    c_attn: dense(&format!("{p}.attn.c_attn"))?,
                    c_proj: dense(&format!("{p}.attn.c_proj"))?,
                    ln_2: pair(&format!("{p}.ln_2"))?,
                    c_fc: dense(&format!("{p}.mlp.c_fc"))?,
                    mlp_proj: dense(&format!("{p}.mlp.c_proj"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            wte: params.get("transformer.wte.weight")?,
            wpe: params.get("transformer.wpe.weight")?,
            blocks,
            ln_f: pair("transformer.ln_f")?,
            attention: AttentionImpl::Auto,
            neftune_alpha: 0.0,
        })
    }

    /// The same model computing attention with `attention`.
    pub fn with_attention(mut self, attention: AttentionImpl) -> Self {
        self.attention = attention;
        self
    }

    /// The same model adding NEFTune's noise of strength `alpha` to the token embeddings
    /// while training ([`crate::neftune`]; before the position embeddings are added, as
    /// transformers' hook on `wte`).
    pub fn with_neftune(mut self, alpha: f64) -> Self {
        self.neftune_alpha = alpha;
        self
    }

    pub fn attention(&self) -> AttentionImpl {
        self.attention
    }

    /// Whether `forward` takes the fused attention op on `device` (training or not): the fused
    /// op has no attention dropout, so with dropout active the composite path runs.
    pub fn fused_attention(&self, device: &Device, training: bool) -> bool {
        let att_dropout = training && self.cfg.dropout > 0.0;
        !att_dropout && self.attention.fused_on(device)
    }

    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    fn drop(&self, x: Tensor, mode: &mut Mode<'_>) -> Result<Tensor> {
        match mode {
            Mode::Train(rng) if self.cfg.dropout > 0.0 => {
                Ok(k::dropout(&x, self.cfg.dropout, rng)?)
            }
            _ => Ok(x),
        }
    }

    /// Token plus position embeddings of ids (B, T) at positions `start..start + T` → (B, T, C).
    fn embed(&self, ids: &Tensor, start: usize) -> Result<Tensor> {
        let tok = k::embedding(&self.wte, ids, None)?; // (B, T, C)
        self.add_positions(tok, start)
    }

    /// Token embeddings tok (B, T, C) plus the position embeddings of `start..start + T`.
    fn add_positions(&self, tok: Tensor, start: usize) -> Result<Tensor> {
        let (b, t, _) = tok.dims3()?;
        let (c, n_pos) = (self.cfg.n_embd, self.cfg.n_positions);
        if start + t > n_pos {
            return Err(crate::Error::Config(format!(
                "sequence length {} exceeds the model's n_positions {n_pos}",
                start + t
            )));
        }
        let pos = self.wpe.narrow(0, start, t)?; // (T, C)
                                                 // pos is a bias over the B rows of (B, T·C): its gradient is their sum.
        let x = k::bias_add(&tok.reshape((b, t * c))?, &pos.reshape(t * c)?)?;
        Ok(x.reshape((b, t, c))?)
    }

    /// Token plus position embeddings of ids (B, T) at each token's own position in its
    /// packed sequence → (B, T, C).
    fn embed_packed(&self, tok: Tensor, ids: &Tensor, packing: &Packing) -> Result<Tensor> {
        packing.check(ids)?;
        // The positions' range is known on the host: no read back from the device.
        let (span, n_pos) = (packing.span(), self.cfg.n_positions);
        if span > n_pos {
            return Err(crate::Error::Config(format!(
                "position {} is past the model's n_positions {n_pos}",
                span - 1
            )));
        }
        Ok((tok + k::embedding(&self.wpe, packing.positions(), None)?)?)
    }

    /// c_attn's output qkv (B, T, 3C) cut into q, k, v, each (B, H, T, hd) and contiguous: for
    /// forwards without a backward (generation), where one product is cheapest.
    fn heads(&self, qkv: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, t, _) = qkv.dims3()?;
        let (h, hd) = (self.cfg.n_head, self.cfg.head_dim());
        let qkv = qkv.reshape((b, t, 3, h, hd))?.permute((2, 0, 3, 1, 4))?; // (3, B, H, T, hd)
        let part = |i: usize| qkv.get(i)?.contiguous();
        Ok((part(0)?, part(1)?, part(2)?))
    }

    /// q, k, v for the composite attention from the block's normalised input a (B, T, C), each
    /// (B, H, T, hd) and contiguous: c_attn as three products with its weight's and bias's
    /// column blocks (views), rather than one product whose (B, T, 3C) output is cut in three.
    /// The same values as [`Gpt::heads`]; what differs is the backward pass. Cutting the output
    /// makes each part's gradient a zero-padded (B, T, 3C) tensor (candle's narrow backward)
    /// and adds the three together; here the zero padding is of the weight's (C, 3C) gradient,
    /// and the input's gradient is the sum of three (B, T, C) products. Generation keeps
    /// [`Gpt::heads`]: a token at a time, three products over column blocks of the weight
    /// (rows 3C apart) ran 20 % slower than one.
    /// A LoRA adapter of c_attn adds its side path to each part: the rank-r half s·drop(a)·Aᵀ
    /// once (one dropout mask, as for one product), then that part's rows of B.
    fn qkv_heads(
        &self,
        a: &Tensor,
        layer: &Dense,
        mode: &mut Mode<'_>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, t, c) = a.dims3()?;
        let (h, hd) = (self.cfg.n_head, self.cfg.head_dim());
        let (w, bias) = &layer.wb;
        let rows = a.reshape((b * t, c))?;
        let down = match &layer.lora {
            Some(l) => Some(l.down(&rows, mode)?), // (B·T, r)
            None => None,
        };
        let part = |i: usize| -> Result<Tensor> {
            let (w, bias) = (w.narrow(1, i * c, c)?, bias.narrow(0, i * c, c)?); // (C, C), (C)
            let mut y = rows.matmul(&w)?; // (B·T, C)
            if let (Some(l), Some(u)) = (&layer.lora, &down) {
                y = (y + l.up(u, Some((i * c, c)))?)?;
            }
            let y = k::bias_add(&y, &bias)?;
            Ok(y.reshape((b, t, h, hd))?.transpose(1, 2)?.contiguous()?)
        };
        Ok((part(0)?, part(1)?, part(2)?))
    }

    /// The composite attention: `softmax(scale · q kᵀ + mask) v` with dropout on the weights,
    /// from q (B, H, Tq, hd) and k, v (B, H, Tk, hd) to the (B, Tq, C) input of c_proj.
    fn attend(
        &self,
        (q, kk, v): (&Tensor, &Tensor, &Tensor),
        mask: Option<&Tensor>,
        mode: &mut Mode<'_>,
    ) -> Result<Tensor> {
        let (b, _, tq, _) = q.dims4()?;
        let scale = 1.0 / (self.cfg.head_dim() as f64).sqrt();
        let att = q.matmul(&kk.t()?)?; // (B, H, Tq, Tk)
        let att = k::masked_softmax(&att, scale, mask)?;
        let att = self.drop(att, mode)?;
        let y = att.matmul(v)?; // (B, H, Tq, hd)
        Ok(y.transpose(1, 2)?.reshape((b, tq, self.cfg.n_embd))?) // (B, Tq, C)
    }

    /// The rest of a block after attention: y (B, T, C) is attention's output before c_proj,
    /// x the block's input; returns the block's output.
    fn block_after_attention(
        &self,
        blk: &Block,
        x: Tensor,
        y: &Tensor,
        mode: &mut Mode<'_>,
        product: Product,
    ) -> Result<Tensor> {
        let eps = self.cfg.layer_norm_epsilon;
        let y = conv1d(y, &blk.c_proj, (product, mode))?;
        let y = self.drop(y, mode)?;
        let x = (x + y)?;
        let m = k::layer_norm(&x, &blk.ln_2.0, &blk.ln_2.1, eps)?;
        let m = conv1d_act(&m, &blk.c_fc, true, (product, mode))?; // (B, T, 4C)
        let m = conv1d(&m, &blk.mlp_proj, (product, mode))?;
        let m = self.drop(m, mode)?;
        Ok((x + m)?)
    }

    /// ids: (B, T) u32 → logits (B, T, V) in the parameters' dtype.
    pub fn forward(&self, ids: &Tensor, mode: Mode<'_>) -> Result<Tensor> {
        self.forward_packed(ids, None, mode)
    }

    /// [`Gpt::forward`] of rows that may hold several sequences each ([`Packing`]).
    pub fn forward_packed(
        &self,
        ids: &Tensor,
        packing: Option<&Packing>,
        mut mode: Mode<'_>,
    ) -> Result<Tensor> {
        let x = self.last_block_output_packed(ids, packing, &mut mode)?;
        self.head(&x)
    }

    /// ids: (B, T) u32 → the last block's output (B, T, C), before the final LayerNorm: what
    /// the LM head and the task heads read.
    pub fn last_block_output(&self, ids: &Tensor, mode: &mut Mode<'_>) -> Result<Tensor> {
        self.last_block_output_packed(ids, None, mode)
    }

    /// [`Gpt::last_block_output`] of rows that may hold several sequences each.
    pub fn last_block_output_packed(
        &self,
        ids: &Tensor,
        packing: Option<&Packing>,
        mode: &mut Mode<'_>,
    ) -> Result<Tensor> {
        let mut x = self.embed_input(ids, packing, mode)?;
        let attention = self.block_attention(ids, packing, mode)?;
        for l in 0..self.blocks.len() {
            x = self.block(l, x, &attention, mode)?;
        }
        Ok(x)
    }

    // The pieces of `forward`, in its order, for callers that run them one at a time:
    // activation checkpointing keeps only the blocks' inputs and runs a block again, with the
    // dropout stream it had, when the backward pass reaches it.

    /// The number of Transformer blocks.
    pub fn n_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// The first block's input: token plus position embeddings of ids (B, T), with dropout →
    /// (B, T, C). Positions are 0..T, or each token's within its sequence when packed.
    pub fn embed_input(
        &self,
        ids: &Tensor,
        packing: Option<&Packing>,
        mode: &mut Mode<'_>,
    ) -> Result<Tensor> {
        let tok = k::embedding(&self.wte, ids, None)?; // (B, T, C)
        let tok = crate::neftune(tok, self.neftune_alpha, mode)?;
        let x = match packing {
            Some(p) => self.embed_packed(tok, ids, p)?,
            None => self.add_positions(tok, 0)?,
        };
        self.drop(x, mode)
    }

    /// How every block of a forward over `ids` (B, T) attends: the fused op (causal by itself;
    /// over packed rows, within each sequence by their positions), or the composite attention
    /// with the causal (T, T) mask or packed rows' (B, 1, T, T) one.
    pub fn block_attention(
        &self,
        ids: &Tensor,
        packing: Option<&Packing>,
        mode: &Mode<'_>,
    ) -> Result<BlockAttention> {
        let dev = ids.device();
        // The fused op has no attention dropout: with dropout active, the composite path runs.
        let fused = self.fused_attention(dev, matches!(mode, Mode::Train(_)));
        if let Some(p) = packing {
            p.check(ids)?;
            // Head dims without a CUDA kernel take the composite attention with the packing's
            // own mask (made on the device), not the fused op's composite fallback.
            return Ok(
                match fused && k::causal_attention_kernel_on(dev, self.cfg.head_dim()) {
                    true => BlockAttention::Fused(Some(p.positions().clone())),
                    false => BlockAttention::Masked(p.mask().clone()),
                },
            );
        }
        Ok(match fused {
            true => BlockAttention::Fused(None),
            false => BlockAttention::Masked(k::causal_mask(ids.dim(1)?, dev)?), // (T, T)
        })
    }

    /// Block `l` on x (B, T, C), attending as [`Gpt::block_attention`] says → (B, T, C).
    pub fn block(
        &self,
        l: usize,
        x: Tensor,
        attention: &BlockAttention,
        mode: &mut Mode<'_>,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let blk = self.blocks.get(l).ok_or_else(|| {
            crate::Error::Config(format!("block {l} of a model of {}", self.blocks.len()))
        })?;
        let (h, hd) = (cfg.n_head, cfg.head_dim());
        let scale = 1.0 / (hd as f64).sqrt();
        let a = k::layer_norm(&x, &blk.ln_1.0, &blk.ln_1.1, cfg.layer_norm_epsilon)?;
        let y = match attention {
            // c_attn's (B, T, 3C) output, read in place by the fused op.
            BlockAttention::Fused(positions) => {
                let qkv = conv1d(&a, &blk.c_attn, (Product::Matmul, mode))?;
                BlockAttention::fused(positions.as_ref(), &qkv, h, scale)? // (B, T, C)
            }
            BlockAttention::Masked(mask) => {
                let (q, kk, v) = self.qkv_heads(&a, &blk.c_attn, mode)?;
                self.attend((&q, &kk, &v), Some(mask), mode)?
            }
        };
        self.block_after_attention(blk, x, &y, mode, Product::Matmul)
    }

    /// The final LayerNorm (`transformer.ln_f`) of the last block's output x (B, T, C): the
    /// model's hidden states, which task heads read.
    pub fn final_norm(&self, x: &Tensor) -> Result<Tensor> {
        Ok(k::layer_norm(
            x,
            &self.ln_f.0,
            &self.ln_f.1,
            self.cfg.layer_norm_epsilon,
        )?)
    }

    /// The last block's output (B, T, C) → logits (B, T, V): final LayerNorm and the head tied
    /// to the token embeddings.
    pub fn head(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let x = self.final_norm(x)?;
        let logits = x.reshape((b * t, c))?.matmul(&self.wte.t()?)?;
        Ok(logits.reshape((b, t, self.cfg.vocab_size))?)
    }

    /// For generation: the logits (B, V) of the last of `ids` (B, T), the tokens that follow
    /// the `cache.len()` ones already in `cache`, which gets their keys and values. The same as
    /// the last position of [`Gpt::forward`] over all the tokens so far (up to rounding) at the
    /// cost of the new tokens only. Inference (no dropout); the total must stay within
    /// `n_positions`. Prefill with the prompt, then pass one token at a time.
    pub fn forward_last_cached(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let cfg = &self.cfg;
        let (c, h, hd) = (cfg.n_embd, cfg.n_head, cfg.head_dim());
        let start = cache.len;
        if t == 0 {
            return Err(crate::Error::Config("no tokens to run".into()));
        }
        let mut x = self.embed(ids, start)?;
        let full = (b, h, cfg.n_positions, hd);
        let fits = |kk: &Tensor| kk.dims() == [full.0, full.1, full.2, full.3];
        if cache
            .layers
            .first()
            .is_some_and(|(kk, _)| !fits(kk) || kk.dtype() != x.dtype())
        {
            if start > 0 {
                return Err(crate::Error::Config(format!(
                    "the cache was filled for another batch size or dtype than ({b}, {:?})",
                    x.dtype()
                )));
            }
            cache.layers.clear();
        }
        if cache.layers.is_empty() {
            let zeros = || Tensor::zeros(full, x.dtype(), ids.device());
            cache.layers = (0..self.blocks.len())
                .map(|_| Ok((zeros()?, zeros()?)))
                .collect::<Result<_>>()?;
        }
        // New token i (position start + i) sees keys 0..=start + i; a single token sees all.
        let mask = (t > 1)
            .then(|| k::causal_mask_after(start, t, ids.device()))
            .transpose()?;
        let eps = cfg.layer_norm_epsilon;
        for (blk, (kc, vc)) in self.blocks.iter().zip(&cache.layers) {
            let a = k::layer_norm(&x, &blk.ln_1.0, &blk.ln_1.1, eps)?;
            let qkv = conv1d(&a, &blk.c_attn, (Product::Inference, &mut Mode::Eval))?; // (B, T, 3C)
            let (q, kn, vn) = self.heads(&qkv)?; // (B, H, T, hd) each
            kc.slice_set(&kn, 2, start)?;
            vc.slice_set(&vn, 2, start)?;
            // Views of the filled part: (B, H, start + T, hd), rows of hd contiguous.
            let (kk, vv) = (kc.narrow(2, 0, start + t)?, vc.narrow(2, 0, start + t)?);
            let y = self.attend((&q, &kk, &vv), mask.as_ref(), &mut Mode::Eval)?; // (B, T, C)
            x = self.block_after_attention(blk, x, &y, &mut Mode::Eval, Product::Inference)?;
        }
        cache.len = start + t;
        let last = x.narrow(1, t - 1, 1)?.reshape((b, c))?; // (B, C)
        let last = k::layer_norm(&last, &self.ln_f.0, &self.ln_f.1, eps)?;
        // The head tied to the token embeddings wte (V, C): last · wteᵀ.
        Ok(k::inference_matmul(&last, &self.wte, WeightLayout::OutIn)?) // (B, V)
    }

    /// Mean next-token cross-entropy over all B·(T-1) positions of `ids`, as transformers
    /// computes it with `labels = input_ids` (used by parity checks and `lantern score`).
    pub fn shifted_loss(logits: &Tensor, ids: &Tensor) -> Result<Tensor> {
        let (b, t, v) = logits.dims3()?;
        let l = logits.narrow(1, 0, t - 1)?.reshape((b * (t - 1), v))?;
        let y = ids.narrow(1, 1, t - 1)?.flatten_all()?;
        let sum = k::cross_entropy_sum(&l, &y, None)?;
        Ok((sum / (b * (t - 1)) as f64)?)
    }

    /// The negative log-likelihood in nats of each token at positions `from..T` of `ids`
    /// (B, T), each predicted from all the tokens before it in its row → (B, T - from) f64.
    /// Evaluation (no dropout); `from` ≥ 1, since the token at position 0 has no context.
    /// Only the scored positions go through the final LayerNorm and the head, a chunk of rows
    /// at a time ([`super::perplexity::target_nll`]).
    pub fn target_nll(&self, ids: &Tensor, from: usize) -> Result<Tensor> {
        super::perplexity::check_first_target(from, ids.dim(1)?)?;
        let x = self.last_block_output(ids, &mut Mode::Eval)?; // (B, T, C)
        let (c, v) = (self.cfg.n_embd, self.cfg.vocab_size);
        super::perplexity::target_nll(&x, ids, from, |rows| {
            let len = rows.dim(0)?;
            Ok(self.head(&rows.reshape((1, len, c))?)?.reshape((len, v))?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::max_diff;

    fn tiny(dropout: f64) -> GptConfig {
        GptConfig {
            vocab_size: 50,
            n_positions: 40,
            n_embd: 32,
            n_layer: 2,
            n_head: 2,
            dropout,
            layer_norm_epsilon: 1e-5,
        }
    }

    /// Logits and parameter gradients of one training forward with `attention`.
    fn run(cfg: &GptConfig, attention: AttentionImpl) -> (Tensor, Vec<Tensor>) {
        let dev = Device::Cpu;
        let params = init_params(cfg, &mut Rng::new(7), &dev, DType::F32).unwrap();
        let ids: Vec<u32> = (0..2 * 37).map(|i| (i * 7 + 3) % 50).collect();
        let ids = Tensor::from_vec(ids, (2, 37), &dev).unwrap();
        let model = Gpt::new(cfg, &params).unwrap().with_attention(attention);
        let mut rng = Rng::new(1);
        let logits = model.forward(&ids, Mode::Train(&mut rng)).unwrap();
        let loss = Gpt::shifted_loss(&logits, &ids).unwrap();
        let g = loss.backward().unwrap();
        let grads: Vec<Tensor> = params
            .vars()
            .iter()
            .map(|v| g.get(v.as_tensor()).expect("gradient").clone())
            .collect();
        (logits, grads)
    }

    #[test]
    fn neftune_noises_the_token_embeddings_in_training_only() {
        // α = 8 over (B, T, C) = (2, 10, 32): each element moves by less than α/√(T·C), the
        // largest of 640 draws nearly that much; unpacked and packed alike; one draw per
        // element; evaluation and α = 0 leave the embeddings as they were.
        let cfg = tiny(0.0);
        let params = init_params(&cfg, &mut Rng::new(7), &Device::Cpu, DType::F32).unwrap();
        let plain = Gpt::new(&cfg, &params).unwrap();
        let m = Gpt::new(&cfg, &params).unwrap().with_neftune(8.0);
        let ids: Vec<u32> = (0..20).map(|i| (i * 7 + 3) % 50).collect();
        let ids = Tensor::from_vec(ids, (2, 10), &Device::Cpu).unwrap();
        let packing = Packing::new(&[vec![4, 6], vec![10]], 10, &Device::Cpu).unwrap();
        let mag = 8.0 / (10f64 * 32.0).sqrt();
        for p in [None, Some(&packing)] {
            let clean = plain.embed_input(&ids, p, &mut Mode::Eval).unwrap();
            let eval = m.embed_input(&ids, p, &mut Mode::Eval).unwrap();
            assert_eq!(max_diff(&eval, &clean), 0.0);
            let mut rng = Rng::new(5);
            let noisy = m.embed_input(&ids, p, &mut Mode::Train(&mut rng)).unwrap();
            let d = max_diff(&noisy, &clean) as f64;
            assert!(d <= mag * 1.0001 && d > 0.95 * mag, "{d} against {mag}");
            assert_eq!(rng.state().counter, 2 * 10 * 32);
            let mut rng = Rng::new(5);
            let none = plain
                .embed_input(&ids, p, &mut Mode::Train(&mut rng))
                .unwrap();
            assert_eq!(max_diff(&none, &clean), 0.0);
            assert_eq!(rng.state().counter, 0);
        }
    }

    /// Packed rows: each sequence's logits as alone, on either attention path asked for.
    #[test]
    fn packed_sequences_see_only_themselves() {
        let cfg = tiny(0.0);
        let params = init_params(&cfg, &mut Rng::new(7), &Device::Cpu, DType::F32).unwrap();
        for attention in [AttentionImpl::Fused, AttentionImpl::Composite] {
            let m = Gpt::new(&cfg, &params).unwrap().with_attention(attention);
            crate::testutil::check_packed(
                |ids, p| m.forward_packed(ids, Some(p), Mode::Eval).unwrap(),
                |ids| m.forward(ids, Mode::Eval).unwrap(),
                50,
                1e-5,
            );
        }
    }

    #[test]
    fn fused_and_composite_attention_agree() {
        let cfg = tiny(0.0);
        let (lf, gf) = run(&cfg, AttentionImpl::Fused);
        let (lc, gc) = run(&cfg, AttentionImpl::Composite);
        let d = max_diff(&lf, &lc);
        assert!(d < 1e-5, "logits differ by {d}");
        for (i, (a, b)) in gf.iter().zip(&gc).enumerate() {
            let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
            let scale = scale.to_scalar::<f32>().unwrap().max(1e-6);
            let d = max_diff(a, b);
            assert!(
                d <= 1e-4 * scale,
                "gradient {i} differs by {d} (scale {scale})"
            );
        }
    }

    /// The cached path gives the full forward's last-position logits at every length: a
    /// prefill of 5 tokens, a chunk of 4 after them (the offset causal mask), then one token
    /// at a time up to n_positions; two rows at once.
    #[test]
    fn cached_generation_matches_the_full_forward() {
        let cfg = tiny(0.0);
        let dev = Device::Cpu;
        let params = init_params(&cfg, &mut Rng::new(7), &dev, DType::F32).unwrap();
        let model = Gpt::new(&cfg, &params).unwrap();
        let n = cfg.n_positions;
        let ids: Vec<u32> = (0..2 * n as u32).map(|i| (i * 11 + 5) % 50).collect();
        let ids = Tensor::from_vec(ids, (2, n), &dev).unwrap();
        let full = model.forward(&ids, Mode::Eval).unwrap(); // (2, n, V)
        let mut cache = KvCache::new();
        let mut at = 0;
        for len in [5, 4].into_iter().chain(std::iter::repeat_n(1, n - 9)) {
            let chunk = ids.narrow(1, at, len).unwrap();
            let last = model.forward_last_cached(&chunk, &mut cache).unwrap();
            at += len;
            assert_eq!(cache.len(), at);
            let want = full.narrow(1, at - 1, 1).unwrap().squeeze(1).unwrap();
            let d = max_diff(&last, &want);
            assert!(d < 1e-4, "position {}: logits differ by {d}", at - 1);
        }
        // Past n_positions: a clear error, and the cache is left as it was.
        let more = ids.narrow(1, 0, 1).unwrap();
        let e = model.forward_last_cached(&more, &mut cache).unwrap_err();
        assert!(e.to_string().contains("n_positions"), "{e}");
        assert_eq!(cache.len(), n);
    }

    #[test]
    fn attention_dropout_runs_the_composite_path() {
        // The fused op has no dropout: with dropout on, `fused` trains exactly as `composite`.
        let cfg = tiny(0.1);
        let (lf, gf) = run(&cfg, AttentionImpl::Fused);
        let (lc, gc) = run(&cfg, AttentionImpl::Composite);
        assert_eq!(max_diff(&lf, &lc), 0.0);
        for (a, b) in gf.iter().zip(&gc) {
            assert_eq!(max_diff(a, b), 0.0);
        }
    }

    #[test]
    fn target_nll_is_the_cross_entropy_of_the_forward_logits() {
        let cfg = tiny(0.0);
        let dev = Device::Cpu;
        let params = init_params(&cfg, &mut Rng::new(3), &dev, DType::F32).unwrap();
        let model = Gpt::new(&cfg, &params.frozen()).unwrap();
        // 9 rows of 40: 9 · 39 = 351 scored positions, more than one chunk of the head.
        let (b, t) = (9, 40);
        let ids: Vec<u32> = (0..b * t).map(|i| ((i * 13 + i / 7) % 50) as u32).collect();
        let x = Tensor::from_vec(ids.clone(), (b, t), &dev).unwrap();
        let logits: Vec<Vec<Vec<f32>>> = model.forward(&x, Mode::Eval).unwrap().to_vec3().unwrap();
        for from in [1, 17, 39] {
            let got: Vec<Vec<f64>> = model.target_nll(&x, from).unwrap().to_vec2().unwrap();
            assert_eq!((got.len(), got[0].len()), (b, t - from));
            for (r, row) in got.iter().enumerate() {
                for (j, &nll) in row.iter().enumerate() {
                    let p = from + j; // the token scored, predicted at p - 1
                    let z = &logits[r][p - 1];
                    let lse = z.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
                    let want = lse - z[ids[r * t + p] as usize] as f64;
                    assert!(
                        (nll - want).abs() < 1e-5,
                        "row {r} position {p}: {nll} vs {want}"
                    );
                }
            }
        }
        // The mean over all positions is `shifted_loss`.
        let all: Vec<Vec<f64>> = model.target_nll(&x, 1).unwrap().to_vec2().unwrap();
        let mean = all.iter().flatten().sum::<f64>() / (b * (t - 1)) as f64;
        let logits = model.forward(&x, Mode::Eval).unwrap();
        let loss = Gpt::shifted_loss(&logits, &x)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((mean - loss as f64).abs() < 1e-5, "{mean} vs {loss}");
        for from in [0, 40] {
            let e = model.target_nll(&x, from).unwrap_err();
            assert!(e.to_string().contains("first target"), "{e}");
        }
    }
}

use super::LlamaConfig;
use crate::gpt::{AttentionImpl, Gpt, Product};
use crate::lowrank::{add_side, LowRank};
use crate::{BlockAttention, Error, Mode, Packing, Params, Result};
use candle_core::{DType, Device, Tensor};
use lantern_kernels::{self as k, Rng, WeightLayout};

/// The token embedding's name.
pub const EMBED_TOKENS: &str = "model.embed_tokens.weight";
/// The untied output layer's name.
pub const LM_HEAD: &str = "lm_head.weight";

/// Every parameter of the model with its shape, in transformers' `named_parameters` order
/// (init order, optimizer order). Linear weights are torch's (out, in); `lm_head.weight` is
/// absent when the head is tied to the embedding.
pub fn param_shapes(cfg: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let (c, i, q) = (cfg.hidden_size, cfg.intermediate_size, cfg.q_width());
    let kv = cfg.num_key_value_heads * cfg.head_dim();
    let mut v = vec![(EMBED_TOKENS.to_string(), vec![cfg.vocab_size, c])];
    let (qkv, o, mlp) = (cfg.qkv_bias(), cfg.o_bias(), cfg.mlp_bias);
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        // A Linear's weight, then its bias if it has one (torch's order). Phi-3 fuses q, k
        // and v into one layer and gate and up into another (and declares o_proj first).
        let linears: &[(&str, (usize, usize), bool)] = match cfg.fused_projections() {
            false => &[
                ("self_attn.q_proj", (q, c), qkv),
                ("self_attn.k_proj", (kv, c), qkv),
                ("self_attn.v_proj", (kv, c), qkv),
                ("self_attn.o_proj", (c, q), o),
                ("mlp.gate_proj", (i, c), mlp),
                ("mlp.up_proj", (i, c), mlp),
                ("mlp.down_proj", (c, i), mlp),
            ],
            true => &[
                ("self_attn.o_proj", (c, q), o),
                ("self_attn.qkv_proj", (q + 2 * kv, c), qkv),
                ("mlp.gate_up_proj", (2 * i, c), mlp),
                ("mlp.down_proj", (c, i), mlp),
            ],
        };
        for &(name, (out, inp), bias) in linears {
            v.push((format!("{p}.{name}.weight"), vec![out, inp]));
            if bias {
                v.push((format!("{p}.{name}.bias"), vec![out]));
            }
        }
        if cfg.qk_norm() {
            let (q_gains, k_gains) = match cfg.qk_norm_whole() {
                true => (q, kv),
                false => (cfg.head_dim(), cfg.head_dim()),
            };
            v.push((format!("{p}.self_attn.q_norm.weight"), vec![q_gains]));
            v.push((format!("{p}.self_attn.k_norm.weight"), vec![k_gains]));
        }
        if !cfg.post_norms_only() {
            v.push((format!("{p}.input_layernorm.weight"), vec![c]));
        }
        v.push((format!("{p}.post_attention_layernorm.weight"), vec![c]));
        if cfg.post_norms_only() {
            v.push((format!("{p}.post_feedforward_layernorm.weight"), vec![c]));
        }
        if cfg.sandwich_norms() {
            v.extend([
                (format!("{p}.pre_feedforward_layernorm.weight"), vec![c]),
                (format!("{p}.post_feedforward_layernorm.weight"), vec![c]),
            ]);
        }
    }
    v.push(("model.norm.weight".to_string(), vec![c]));
    if !cfg.tie_word_embeddings {
        v.push((LM_HEAD.to_string(), vec![cfg.vocab_size, c]));
    }
    v
}

/// transformers' `_init_weights` for Llama: every Linear weight and the embedding drawn from
/// N(0, initializer_range), the padding row of the embedding (if any) then zeroed, biases 0
/// and RMSNorm gains 1 (Gemma 3's stored w of its gains 1 + w: 0; no draws). Drawn in
/// `param_shapes` order from `rng`, so the same seed gives the same model on every device.
pub fn init_params(
    cfg: &LlamaConfig,
    rng: &mut Rng,
    device: &Device,
    dtype: DType,
) -> Result<Params> {
    cfg.validate()?;
    let mut params = Params::new();
    for (name, shape) in param_shapes(cfg) {
        let n: usize = shape.iter().product();
        let t = match (name.ends_with("norm.weight"), name.ends_with(".bias")) {
            (true, _) if !cfg.gemma() => Tensor::ones(shape, DType::F32, device)?,
            (true, _) | (_, true) => Tensor::zeros(shape, DType::F32, device)?,
            _ => {
                let mut v = rng.normal_vec(n, cfg.initializer_range);
                if let (EMBED_TOKENS, Some(p)) = (name.as_str(), cfg.pad_token_id) {
                    let c = cfg.hidden_size;
                    v[p as usize * c..(p as usize + 1) * c].fill(0.0);
                }
                Tensor::from_vec(v, shape, &Device::Cpu)?.to_device(device)?
            }
        };
        params.insert(name, t.to_dtype(dtype)?)?;
    }
    Ok(params)
}

/// A linear layer of a block: weight (out, in), its bias (out) if the config gives it one,
/// and its LoRA adapter if the store has one.
struct Proj {
    w: Tensor,
    b: Option<Tensor>,
    lora: Option<LowRank>,
}

/// The query or the key heads (which of Qwen3's head norms applies).
#[derive(Clone, Copy)]
enum Heads {
    Query,
    Key,
}

struct Block {
    /// The norm of attention's input (none in OLMo 2).
    input_layernorm: Option<Tensor>,
    /// Gemma's norms before (OLMo 2: none) and after the MLP (its `post_attention_layernorm`
    /// then follows attention rather than preceding the MLP).
    feedforward_norms: Option<(Option<Tensor>, Tensor)>,
    /// Qwen3's RMSNorm gains (head_dim) over each query and key head, before RoPE (OLMo 2's
    /// over all of them).
    qk_norm: Option<(Tensor, Tensor)>,
    /// q, k and v of the attention's input.
    qkv: Projections,
    o_proj: Proj,
    post_attention_layernorm: Tensor,
    /// The MLP's gate and up.
    gate_up: Projections,
    down_proj: Proj,
}

/// Linear layers of one input: separate (Llama's q_proj, k_proj, v_proj) or fused into one
/// whose output is theirs concatenated (Phi-3's qkv_proj), with the widths to split it by.
enum Projections {
    Separate(Vec<Proj>),
    Fused(Proj, Vec<usize>),
}

impl Projections {
    /// Each layer's output for x (.., in) → (.., width) each; a fused layer's output narrowed
    /// into the widths, in order.
    fn apply(&self, x: &Tensor, (product, mode): (Product, &mut Mode<'_>)) -> Result<Vec<Tensor>> {
        match self {
            Self::Separate(ps) => ps.iter().map(|p| proj(x, p, (product, mode))).collect(),
            Self::Fused(p, widths) => {
                let y = proj(x, p, (product, mode))?;
                let last = y.rank() - 1;
                let mut start = 0;
                widths
                    .iter()
                    .map(|&w| {
                        let part = y.narrow(last, start, w)?;
                        start += w;
                        Ok(part)
                    })
                    .collect()
            }
        }
    }
}

/// [`adapted`] through a block's layer, with its adapter's side path (drawing its dropout
/// from `mode`).
fn proj(x: &Tensor, p: &Proj, run: (Product, &mut Mode<'_>)) -> Result<Tensor> {
    adapted(x, (&p.w, p.b.as_ref()), p.lora.as_ref(), run)
}

/// x (B, T, heads, hd) turned by `rope`, or as it is on a layer without RoPE.
fn turn(rope: &Option<Rope>, x: &Tensor) -> Result<Tensor> {
    match rope {
        Some(r) => r.apply(x),
        None => Ok(x.clone()),
    }
}

/// The queries, keys and values of [`Projections::apply`] over a block's `qkv`.
fn qkv_of(parts: Vec<Tensor>) -> Result<[Tensor; 3]> {
    parts
        .try_into()
        .map_err(|_| Error::Config("q, k and v: three projections expected".into()))
}

/// `x @ w^T` for x: (.., in) and a torch Linear weight w: (out, in), without bias.
fn linear(x: &Tensor, w: &Tensor, product: Product) -> Result<Tensor> {
    adapted(x, (w, None), None, (product, &mut Mode::Eval))
}

/// [`linear`] plus the bias b (out), if any, plus `lora`'s side path.
fn adapted(
    x: &Tensor,
    (w, b): (&Tensor, Option<&Tensor>),
    lora: Option<&LowRank>,
    (product, mode): (Product, &mut Mode<'_>),
) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let (n_out, n_in) = w.dims2()?;
    let rows = x.elem_count() / n_in;
    let x = x.reshape((rows, n_in))?;
    let y = match product {
        Product::Matmul => x.matmul(&w.t()?)?,
        Product::Inference => k::inference_matmul(&x, w, WeightLayout::OutIn)?,
    }; // (rows, out)
    let y = match b {
        Some(b) => k::bias_add(&y, b)?,
        None => y,
    };
    let y = add_side(lora, &x, y, mode)?;
    *dims.last_mut().expect("rank >= 1") = n_out;
    Ok(y.reshape(dims)?)
}

/// transformers' `LlamaRMSNorm` over the last dimension: `x · rsqrt(mean(x²) + eps) · weight`,
/// the mean square in f32 whatever the dtype (f64 stays f64, for gradient checks). The fused
/// op (`lantern_kernels::ops::rms_norm`, with its own backward: candle_nn's fused `rms_norm`
/// records none, shared/CANDLE.md) computes the whole product in f32 and rounds once to x's
/// dtype; transformers rounds `x · rsqrt(..)` to the input dtype first and multiplies by the
/// weight in that dtype. The same operations in f32; in bf16 ours has one rounding fewer.
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(k::rms_norm(x, weight, eps)?)
}

/// The rotary position embedding (Su et al. 2021, "RoFormer") of a run of positions: what
/// every block of one forward shares, built once by [`Llama::block_context`] (or by
/// [`Llama::forward_last_cached`] at the cache's offset), as transformers builds them: the
/// angles `p · inv_freq` in f32 ([`LlamaConfig::inv_freq`]: the default RoPE or Llama 3.1's
/// scaled one), cos and sin of `cat(angles, angles)`, cast to the activations' dtype.
pub struct Rope {
    cos: Tensor, // (T, hd)
    sin: Tensor, // (T, hd)
}

impl Rope {
    /// The tables of positions `start..start + len` for the inverse frequencies `inv_freq`
    /// ([`LlamaConfig::inv_freq`], heads of `2 · inv_freq.len()`), cos and sin multiplied by
    /// `scale` (YaRN's and LongRoPE's attention factor, 1 otherwise) in f32 before the cast.
    pub(crate) fn new(
        inv_freq: &[f32],
        scale: f64,
        start: usize,
        len: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let head_dim = 2 * inv_freq.len();
        let mut cos = Vec::with_capacity(len * head_dim);
        let mut sin = Vec::with_capacity(len * head_dim);
        for p in start..start + len {
            let angles: Vec<f32> = inv_freq.iter().map(|&f| p as f32 * f).collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos() * scale as f32));
                sin.extend(angles.iter().map(|a| a.sin() * scale as f32));
            }
        }
        let table = |v: Vec<f32>| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, (len, head_dim), &Device::Cpu)?
                .to_dtype(dtype)?
                .to_device(device)?)
        };
        Ok(Self {
            cos: table(cos)?,
            sin: table(sin)?,
        })
    }

    /// The number of positions (rows of the tables).
    pub fn len(&self) -> usize {
        self.cos.dims()[0]
    }

    /// The tables of a row per token: row r · T + t of `positions` (B, T) u32 → (B·T, hd),
    /// from the tables of positions 0..span that `self` holds.
    fn gather(&self, positions: &Tensor) -> Result<Self> {
        let flat = positions.flatten_all()?;
        Ok(Self {
            cos: self.cos.index_select(&flat, 0)?,
            sin: self.sin.index_select(&flat, 0)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tables of the first `len` positions `self` holds.
    pub(crate) fn first(&self, len: usize) -> Result<Self> {
        Ok(Self {
            cos: self.cos.narrow(0, 0, len)?,
            sin: self.sin.narrow(0, 0, len)?,
        })
    }

    /// `x · cos + rotate_half(x) · sin` for x: (B, T, heads, hd), rotate_half(x) =
    /// `cat(-x[.., hd/2..], x[.., ..hd/2])` (transformers' `apply_rotary_pos_emb`). Tables
    /// narrower than the heads (Phi-3's `partial_rotary_factor`) turn the first dimensions and
    /// pass the rest through, as Phi-3's `apply_rotary_pos_emb` does.
    pub(crate) fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (rd, hd) = (self.cos.dim(1)?, x.dim(3)?);
        if rd == hd {
            return Ok(k::rope(x, &self.cos, &self.sin)?);
        }
        let turned = k::rope(&x.narrow(3, 0, rd)?.contiguous()?, &self.cos, &self.sin)?;
        Ok(Tensor::cat(&[&turned, &x.narrow(3, rd, hd - rd)?], 3)?)
    }
}

/// The keys and values of the tokens a [`Llama`] has seen, for [`Llama::forward_last_cached`]:
/// one (K, V) pair per block, each (B, num_key_value_heads, capacity, hd) — the key/value
/// heads only, not repeated for the query heads they serve — written in place; the first
/// `len` positions are filled. The capacity doubles as needed up to `max_position_embeddings`
/// (a long-context model's full window would be gigabytes), so a growth copies the filled part
/// once in a while.
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

    /// Positions the buffers hold (0 before the first call).
    pub fn capacity(&self) -> usize {
        self.layers.first().map_or(0, |(kk, _)| kk.dims()[2])
    }
}

/// The smallest capacity a cache is given: a prompt of a few tokens should not grow it at each
/// of the next tokens.
const MIN_CACHE: usize = 16;

/// The Llama decoder (`LlamaForCausalLM`) over a [`Params`] store. Holds the variables' tensors
/// (shared storage), so optimizer updates to the variables are seen by the next forward.
pub struct Llama {
    cfg: LlamaConfig,
    embed_tokens: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    /// `lm_head.weight` (V, C), or the embedding when tied.
    lm_head: Tensor,
    attention: AttentionImpl,
    /// NEFTune's α ([`Llama::with_neftune`]); 0: none.
    neftune_alpha: f64,
}

/// What the blocks of one forward share, built once by [`Llama::block_context`]: for each
/// kind of layer (its window and RoPE base), the RoPE tables of the positions and how it
/// attends (the fused op, causal by itself, or the composite attention's mask).
pub struct BlockContext {
    kinds: Vec<LayerContext>,
    /// Each layer's index into `kinds`.
    of_layer: Vec<usize>,
}

/// The RoPE tables and the attention of one kind of layer.
struct LayerContext {
    /// None on SmolLM3's NoPE layers.
    rope: Option<Rope>,
    attention: BlockAttention,
}

impl Llama {
    pub fn new(cfg: &LlamaConfig, params: &Params) -> Result<Self> {
        cfg.validate()?;
        let blocks = (0..cfg.num_hidden_layers)
            .map(|l| {
                let name = |s: &str| format!("model.layers.{l}.{s}.weight");
                let get = |s: &str| params.get(&name(s));
                let proj = |s: &str, bias: bool| -> Result<Proj> {
                    let b = format!("model.layers.{l}.{s}.bias");
                    Ok(Proj {
                        w: get(s)?,
                        b: bias.then(|| params.get(&b)).transpose()?,
                        lora: LowRank::of(params, &name(s))?,
                    })
                };
                let (qkv, o, mlp) = (cfg.qkv_bias(), cfg.o_bias(), cfg.mlp_bias);
                let qk_norm = match cfg.qk_norm() {
                    true => Some((get("self_attn.q_norm")?, get("self_attn.k_norm")?)),
                    false => None,
                };
                let feedforward_norms = match (cfg.sandwich_norms(), cfg.post_norms_only()) {
                    (true, _) => Some((
                        Some(get("pre_feedforward_layernorm")?),
                        get("post_feedforward_layernorm")?,
                    )),
                    (false, true) => Some((None, get("post_feedforward_layernorm")?)),
                    (false, false) => None,
                };
                let kv_width = cfg.num_key_value_heads * cfg.head_dim();
                let i = cfg.intermediate_size;
                let (qkv_in, gate_up) = match cfg.fused_projections() {
                    false => (
                        Projections::Separate(vec![
                            proj("self_attn.q_proj", qkv)?,
                            proj("self_attn.k_proj", qkv)?,
                            proj("self_attn.v_proj", qkv)?,
                        ]),
                        Projections::Separate(vec![
                            proj("mlp.gate_proj", mlp)?,
                            proj("mlp.up_proj", mlp)?,
                        ]),
                    ),
                    true => (
                        Projections::Fused(
                            proj("self_attn.qkv_proj", qkv)?,
                            vec![cfg.q_width(), kv_width, kv_width],
                        ),
                        Projections::Fused(proj("mlp.gate_up_proj", mlp)?, vec![i, i]),
                    ),
                };
                Ok(Block {
                    input_layernorm: match cfg.post_norms_only() {
                        true => None,
                        false => Some(get("input_layernorm")?),
                    },
                    feedforward_norms,
                    qk_norm,
                    qkv: qkv_in,
                    o_proj: proj("self_attn.o_proj", o)?,
                    post_attention_layernorm: get("post_attention_layernorm")?,
                    gate_up,
                    down_proj: proj("mlp.down_proj", mlp)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let embed_tokens = params.get(EMBED_TOKENS)?;
        let lm_head = match cfg.tie_word_embeddings {
            true => embed_tokens.clone(),
            false => params.get(LM_HEAD)?,
        };
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            blocks,
            norm: params.get("model.norm.weight")?,
            lm_head,
            attention: AttentionImpl::default(),
            neftune_alpha: 0.0,
        })
    }

    /// The same model adding NEFTune's noise of strength `alpha` to the token embeddings
    /// while training ([`crate::neftune`]), where transformers' hook on the input embeddings
    /// adds it: to the looked-up rows, before Gemma's and Gemma 2's √hidden and Granite's
    /// `embedding_multiplier` (applied by their models' forward), after Gemma 3's scaling
    /// (part of its embedding module).
    pub fn with_neftune(mut self, alpha: f64) -> Self {
        self.neftune_alpha = alpha;
        self
    }

    /// Chooses the attention path (`model.attention`: fused on CUDA and composite on the CPU by
    /// default, as for GPT).
    pub fn with_attention(mut self, attention: AttentionImpl) -> Self {
        self.attention = attention;
        self
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Refuses a run of `t` tokens after `start` that does not fit `max_position_embeddings`.
    fn check_positions(&self, start: usize, t: usize) -> Result<()> {
        let n = self.cfg.max_position_embeddings;
        if start + t > n {
            return Err(Error::Config(format!(
                "sequence length {} exceeds the model's max_position_embeddings {n}",
                start + t
            )));
        }
        Ok(())
    }

    /// What the layers of a run of `t` tokens after `start` take: one [`LayerContext`] per
    /// distinct (window, RoPE base, scaled RoPE or not, RoPE or none) among the layers (one for
    /// most models; Gemma 3's sliding and full layers differ in window, base and scaling,
    /// SmolLM3's NoPE layers in having none), and the index of each layer's. The RoPE tables
    /// are those of a sequence of `start + t` positions (LongRoPE's factors depend on it). A context gets the
    /// additive mask of its window when `needs_mask(l)` says the attention of its first layer
    /// `l` (and so of every layer sharing its window) reads one.
    /// Packed rows (`packing`, with `start` 0) take tables of a row per token, and the fused
    /// attention bounded by their positions or the composite one with the packing's mask (and
    /// the window's).
    fn contexts(
        &self,
        (start, t): (usize, usize),
        needs_mask: impl Fn(usize) -> bool,
        packing: Option<&Packing>,
        device: &Device,
    ) -> Result<BlockContext> {
        self.check_positions(start, t)?;
        // The positions the tables cover: transformers' dynamic RoPE (LongRoPE) reads the
        // largest position id + 1, which for packed rows is the longest sequence.
        let span = packing.map_or(start + t, Packing::span);
        let cfg = &self.cfg;
        // A kind of layer: its window, RoPE base (bits), whether its RoPE is scaled, whether
        // it has RoPE at all.
        type Kind = (Option<usize>, u64, bool, bool);
        let mut kinds: Vec<(Kind, LayerContext)> = Vec::new();
        let mut of_layer = Vec::with_capacity(self.blocks.len());
        for l in 0..self.blocks.len() {
            let (theta, scaling) = cfg.layer_rope(l);
            let has_rope = cfg.layer_has_rope(l);
            let key = (
                cfg.layer_window(l),
                theta.to_bits(),
                scaling.is_some(),
                has_rope,
            );
            let i = match kinds.iter().position(|(k, _)| *k == key) {
                Some(i) => i,
                None => {
                    let inv_freq = super::rope::inv_freq(theta, cfg.rotary_dim(), scaling, span);
                    let scale =
                        scaling.map_or(1.0, |s| s.attention_factor(cfg.max_position_embeddings));
                    // SmolLM3's NoPE layers: no tables.
                    let dtype = self.embed_tokens.dtype();
                    let rope = match packing {
                        Some(p) => has_rope
                            .then(|| {
                                Rope::new(&inv_freq, scale, 0, span, device, dtype)?
                                    .gather(p.positions())
                            })
                            .transpose()?,
                        None => has_rope
                            .then(|| Rope::new(&inv_freq, scale, start, t, device, dtype))
                            .transpose()?,
                    };
                    let attention = match packing {
                        // Within each sequence by the positions: the fused op where it has a
                        // kernel for the heads (else the composite attention with the
                        // packing's mask, made on the device, not the op's fallback).
                        Some(p)
                            if !needs_mask(l)
                                && k::causal_attention_kernel_on(device, cfg.head_dim()) =>
                        {
                            BlockAttention::Fused(Some(p.positions().clone()))
                        }
                        // (B, 1, T, T) over the scores (B, H, T, T); a window's mask added
                        // (0 or -inf each).
                        Some(p) => {
                            let m = p.mask().clone();
                            BlockAttention::Masked(match key.0 {
                                Some(w) => m.broadcast_add(&k::sliding_causal_mask(
                                    0,
                                    t,
                                    Some(w),
                                    device,
                                )?)?,
                                None => m,
                            })
                        }
                        None if needs_mask(l) => {
                            BlockAttention::Masked(k::sliding_causal_mask(start, t, key.0, device)?)
                        }
                        None => BlockAttention::Fused(None),
                    };
                    kinds.push((key, LayerContext { rope, attention }));
                    kinds.len() - 1
                }
            };
            of_layer.push(i);
        }
        Ok(BlockContext {
            kinds: kinds.into_iter().map(|(_, c)| c).collect(),
            of_layer,
        })
    }

    /// Gemma 3's RMSNorm (gains 1 + w, w stored) or Llama's (gains w) of x over its last
    /// dimension.
    fn norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        match self.cfg.gemma() {
            true => rms_norm(x, &(w + 1.0)?, self.cfg.rms_norm_eps),
            false => rms_norm(x, w, self.cfg.rms_norm_eps),
        }
    }

    /// The token embeddings of ids (B, T) → (B, T, C); Gemma 3 scales them by √hidden (in
    /// the embedding's dtype, as transformers does); Granite by its `embedding_multiplier`.
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed_noised(ids, &mut Mode::Eval)
    }

    /// [`Llama::embed`] with NEFTune's noise while `mode` trains.
    fn embed_noised(&self, ids: &Tensor, mode: &mut Mode<'_>) -> Result<Tensor> {
        let x = k::embedding(&self.embed_tokens, ids, self.cfg.pad_token_id)?;
        let gemma3 = self.cfg.model_type == crate::llama::LlamaFamily::Gemma3;
        let x = match gemma3 {
            true => x,
            false => crate::neftune(x, self.neftune_alpha, mode)?,
        };
        if let Some(g) = &self.cfg.granite {
            return Ok(x.affine(g.embedding_multiplier, 0.0)?);
        }
        let x = match self.cfg.gemma() {
            true => x.affine((self.cfg.hidden_size as f64).sqrt(), 0.0)?,
            false => x,
        };
        match gemma3 {
            true => crate::neftune(x, self.neftune_alpha, mode),
            false => Ok(x),
        }
    }

    /// x plus a residual branch's output y: y scaled by Granite's `residual_multiplier`.
    fn residual(&self, x: Tensor, y: &Tensor) -> Result<Tensor> {
        match &self.cfg.granite {
            Some(g) => Ok((x + y.affine(g.residual_multiplier, 0.0)?)?),
            None => Ok((x + y)?),
        }
    }

    /// ids: (B, T) u32 → logits (B, T, V) in the parameters' dtype.
    pub fn forward(&self, ids: &Tensor, mode: Mode<'_>) -> Result<Tensor> {
        self.forward_packed(ids, None, mode)
    }

    /// [`Llama::forward`] of rows that may hold several sequences each ([`Packing`]).
    pub fn forward_packed(
        &self,
        ids: &Tensor,
        packing: Option<&Packing>,
        mut mode: Mode<'_>,
    ) -> Result<Tensor> {
        let x = self.last_block_output_packed(ids, packing, &mut mode)?;
        self.head(&x)
    }

    /// ids: (B, T) u32 → the last block's output (B, T, C), before the final RMSNorm.
    pub fn last_block_output(&self, ids: &Tensor, mode: &mut Mode<'_>) -> Result<Tensor> {
        self.last_block_output_packed(ids, None, mode)
    }

    /// [`Llama::last_block_output`] of rows that may hold several sequences each.
    pub fn last_block_output_packed(
        &self,
        ids: &Tensor,
        packing: Option<&Packing>,
        mode: &mut Mode<'_>,
    ) -> Result<Tensor> {
        let mut x = self.embed_input(ids, mode)?;
        let ctx = self.block_context(ids, packing)?;
        for l in 0..self.blocks.len() {
            x = self.block(l, x, &ctx, mode)?;
        }
        Ok(x)
    }

    // The pieces of `forward`, in its order, for callers that run them one at a time:
    // activation checkpointing keeps only the blocks' inputs and runs a block again when the
    // backward pass reaches it. Llama has no dropout of its own: `mode` serves the dropout of
    // LoRA adapters' side paths (and gives the same signatures as GPT's).

    /// The number of Transformer blocks.
    pub fn n_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// The first block's input: the token embeddings of ids (B, T) → (B, T, C).
    pub fn embed_input(&self, ids: &Tensor, mode: &mut Mode<'_>) -> Result<Tensor> {
        self.check_positions(0, ids.dim(1)?)?;
        self.embed_noised(ids, mode)
    }

    /// What every block of a forward over `ids` (B, T) takes: the RoPE tables of positions
    /// 0..T and, for the composite attention, the causal (T, T) mask (within the layer's
    /// window, if it has one); packed rows: tables of each token's position in its sequence
    /// and the packing's mask. Errors past `max_position_embeddings`.
    pub fn block_context(&self, ids: &Tensor, packing: Option<&Packing>) -> Result<BlockContext> {
        let (t, device) = (ids.dim(1)?, ids.device());
        if let Some(p) = packing {
            p.check(ids)?;
        }
        // The fused op is causal only: a window shorter than the sequence takes the composite
        // attention, with the window's mask.
        let fused = self.attention.fused_on(device);
        let cfg = &self.cfg;
        self.contexts(
            (0, t),
            |l| !fused || cfg.needs_composite(l, t),
            packing,
            device,
        )
    }

    /// Block `l` on x (B, T, C) with `ctx` from [`Llama::block_context`] → (B, T, C).
    /// The fused attention ([`k::causal_attention`]) reads q, k and v packed into (B, T, 3·H·hd),
    /// the key and value heads repeated for the query heads they serve (transformers'
    /// `repeat_kv`); the composite one ([`Llama::attend`]) reads each key/value head once for
    /// all of its query heads.
    pub fn block(
        &self,
        l: usize,
        x: Tensor,
        ctx: &BlockContext,
        mode: &mut Mode<'_>,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let blk = self.blocks.get(l).ok_or_else(|| {
            Error::Config(format!("block {l} of a model of {}", self.blocks.len()))
        })?;
        let (b, t, _) = x.dims3()?;
        let (h, kv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim(),
        );
        let lc = ctx
            .of_layer
            .get(l)
            .map(|&i| &ctx.kinds[i])
            .ok_or_else(|| Error::Config(format!("no context for block {l}")))?;
        let rope = &lc.rope;
        if let Some(r) = rope.as_ref().filter(|r| r.len() != t && r.len() != b * t) {
            return Err(Error::Config(format!(
                "RoPE tables of {} positions for a sequence of {t}",
                r.len()
            )));
        }
        let a = self.input_norm(blk, &x)?;
        let [q, kk, v] = qkv_of(blk.qkv.apply(&a, (Product::Matmul, mode))?)?;
        let q = turn(
            rope,
            &self.head_norm(blk, &q.reshape((b, t, h, hd))?, Heads::Query)?,
        )?;
        let kk = turn(
            rope,
            &self.head_norm(blk, &kk.reshape((b, t, kv, hd))?, Heads::Key)?,
        )?;
        let v = v.reshape((b, t, kv, hd))?;
        let y = match &lc.attention {
            BlockAttention::Fused(positions) => {
                // Heads stay in (B, T, heads, hd): the packed layout puts head i at columns
                // i·hd.. of each third, so no transpose is needed.
                let (kk, v) = (self.repeat_kv(&kk)?, self.repeat_kv(&v)?); // (B, T, H, hd)
                let qkv = Tensor::cat(&[&q, &kk, &v], 2)?.reshape((b, t, 3 * h * hd))?;
                BlockAttention::fused(positions.as_ref(), &qkv, h, cfg.attn_scale())?
                // (B, T, H·hd)
            }
            BlockAttention::Masked(mask) => {
                let heads = |x: &Tensor| x.transpose(1, 2)?.contiguous(); // (B, n, T, hd)
                self.attend(&heads(&q)?, (&heads(&kk)?, &heads(&v)?), Some(mask))?
            }
        };
        self.block_after_attention(blk, x, &y, (Product::Matmul, mode))
    }

    /// Attention's input: block `blk`'s `input_layernorm` of x, or x where it has none
    /// (OLMo 2).
    fn input_norm(&self, blk: &Block, x: &Tensor) -> Result<Tensor> {
        match &blk.input_layernorm {
            Some(w) => self.norm(x, w),
            None => Ok(x.clone()),
        }
    }

    /// Qwen3's RMSNorm of each head of x (B, T, heads, hd), or OLMo 2's of all heads
    /// together: block `blk`'s `q_norm` or `k_norm`; x as it is for the other families.
    fn head_norm(&self, blk: &Block, x: &Tensor, heads: Heads) -> Result<Tensor> {
        let Some((q_norm, k_norm)) = &blk.qk_norm else {
            return Ok(x.clone());
        };
        let gain = match heads {
            Heads::Query => q_norm,
            Heads::Key => k_norm,
        };
        if !self.cfg.qk_norm_whole() {
            return self.norm(x, gain);
        }
        let (b, t, n, hd) = x.dims4()?;
        let whole = self.norm(&x.reshape((b, t, n * hd))?, gain)?;
        Ok(whole.reshape((b, t, n, hd))?)
    }

    /// The composite attention, grouped: q (B, H, T, hd) over k, v (B, KV, S, hd), query head
    /// j·n_rep + r reading key/value head j, so the query heads one key/value head serves are
    /// stacked as rows of one product with it and keys and values are never repeated; `mask`
    /// is additive over (T, S), or (B, 1, T, S) for packed rows → attention's output (B, T, H·hd), the input of o_proj.
    fn attend(
        &self,
        q: &Tensor,
        (kk, vv): (&Tensor, &Tensor),
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, h, t, hd) = q.dims4()?;
        let (kv, s) = (self.cfg.num_key_value_heads, kk.dim(2)?);
        let n_rep = h / kv;
        let q = q.reshape((b, kv, n_rep * t, hd))?;
        let att = q.matmul(&kk.t()?)?; // (B, KV, n_rep·T, S)
                                       // (B, H, T, S), the same memory: query head j·n_rep + r is row block r of KV head j.
                                       // Rank 4 lets a (T, S) or (B, 1, T, S) mask broadcast through its strides in the CUDA
                                       // kernel, which materialises masks of higher ranks.
        let att = att.reshape((b, h, t, s))?;
        let att = match self.cfg.attn_logit_softcapping {
            // Gemma's soft cap on the scaled scores, before the mask: tanh(s / c) · c.
            Some(cap) => {
                let capped = att.affine(self.cfg.attn_scale() / cap, 0.0)?.tanh()?;
                k::masked_softmax(&capped.affine(cap, 0.0)?, 1.0, mask)?
            }
            None => k::masked_softmax(&att, self.cfg.attn_scale(), mask)?,
        };
        let att = att.reshape((b, kv, n_rep * t, s))?;
        let y = att.matmul(vv)?.reshape((b, h, t, hd))?; // (B, H, T, hd)
        Ok(y.transpose(1, 2)?.reshape((b, t, h * hd))?) // (B, T, H·hd)
    }

    /// Key or value heads (B, T, KV, hd) → (B, T, H, hd), each repeated for the
    /// `H / KV` consecutive query heads it serves (`repeat_interleave` over the heads).
    fn repeat_kv(&self, x: &Tensor) -> Result<Tensor> {
        let n_rep = self.cfg.kv_groups();
        if n_rep == 1 {
            return Ok(x.clone());
        }
        let (b, t, kv, hd) = x.dims4()?;
        Ok(x.unsqueeze(3)?
            .broadcast_as((b, t, kv, n_rep, hd))?
            .reshape((b, t, kv * n_rep, hd))?)
    }

    /// The rest of a block after attention: y (B, T, H·hd) is attention's output before o_proj,
    /// x the block's input; returns the block's output.
    fn block_after_attention(
        &self,
        blk: &Block,
        x: Tensor,
        y: &Tensor,
        (product, mode): (Product, &mut Mode<'_>),
    ) -> Result<Tensor> {
        let o = proj(y, &blk.o_proj, (product, mode))?;
        // Gemma normalises attention's and the MLP's outputs too, and the MLP's input with a
        // norm of its own (OLMo 2 the outputs only); Llama normalises the MLP's input with
        // `post_attention_layernorm`.
        let (x, m) = match &blk.feedforward_norms {
            Some((pre, _)) => {
                let x = (x + self.norm(&o, &blk.post_attention_layernorm)?)?;
                let m = match pre {
                    Some(pre) => self.norm(&x, pre)?,
                    None => x.clone(),
                };
                (x, m)
            }
            None => {
                let x = self.residual(x, &o)?;
                let m = self.norm(&x, &blk.post_attention_layernorm)?;
                (x, m)
            }
        };
        // down(act(gate(m)) · up(m)): SiLU, Gemma 3's GELU with the tanh approximation; the
        // activation and the product one fused op each way.
        let [g, u]: [Tensor; 2] = blk
            .gate_up
            .apply(&m, (product, mode))?
            .try_into()
            .map_err(|_| Error::Config("gate and up: two projections expected".into()))?;
        let m = match self.cfg.gemma() {
            true => k::geglu_tanh(&g, &u)?,
            false => k::swiglu(&g, &u)?,
        }; // (B, T, I)
        let d = proj(&m, &blk.down_proj, (product, mode))?;
        match &blk.feedforward_norms {
            Some((_, post)) => Ok((x + self.norm(&d, post)?)?),
            None => self.residual(x, &d),
        }
    }

    /// The final RMSNorm (`model.norm`) of the last block's output x (B, T, C): the model's
    /// hidden states, which task heads read.
    pub fn final_norm(&self, x: &Tensor) -> Result<Tensor> {
        self.norm(x, &self.norm)
    }

    /// The last block's output (.., C) → logits (.., V): the final RMSNorm and `lm_head`.
    pub fn head(&self, x: &Tensor) -> Result<Tensor> {
        self.logits(linear(
            &self.final_norm(x)?,
            &self.lm_head,
            Product::Matmul,
        )?)
    }

    /// `lm_head`'s output z as the language model's logits: Gemma's `tanh(z / c) · c` where
    /// its config soft-caps them, Granite's z / `logits_scaling`, else z.
    fn logits(&self, z: Tensor) -> Result<Tensor> {
        if let Some(g) = &self.cfg.granite {
            return Ok(z.affine(1.0 / g.logits_scaling, 0.0)?);
        }
        match self.cfg.final_logit_softcapping {
            Some(cap) => Ok(z.affine(1.0 / cap, 0.0)?.tanh()?.affine(cap, 0.0)?),
            None => Ok(z),
        }
    }

    /// For generation: the logits (B, V) of the last of `ids` (B, T), the tokens that follow
    /// the `cache.len()` ones already in `cache`, which gets their keys and values (after
    /// RoPE, at positions `cache.len()..`). The same as the last position of
    /// [`Llama::forward`] over all the tokens so far (up to rounding) at the cost of the new
    /// tokens only. The total must stay within `max_position_embeddings`. Prefill with the
    /// prompt, then pass one token at a time.
    ///
    /// Attention is composite here ([`Llama::attend`]: the cached keys and values are never
    /// repeated).
    pub fn forward_last_cached(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let cfg = &self.cfg;
        let (c, h, kv, hd) = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim(),
        );
        let start = cache.len;
        if t == 0 {
            return Err(Error::Config("no tokens to run".into()));
        }
        if cfg.cache_expires(start, start + t) {
            return Err(Error::Config(format!(
                "{start} cached positions were rotated with LongRoPE's short factors, and {} \
                 positions take the long ones: run the whole sequence again with a new cache",
                start + t
            )));
        }
        // New token i (position start + i) sees keys 0..=start + i (those of the window
        // ending there, with a sliding window): the composite attention's masks. A single
        // token sees all unless its layer's window leaves the first keys out.
        let needs_mask = |l| t > 1 || cfg.window_applies(l, start + t);
        let ctx = self.contexts((start, t), needs_mask, None, ids.device())?;
        let mut x = self.embed(ids)?; // (B, T, C)
        self.reserve(cache, (b, t), x.dtype(), ids.device())?;
        for (l, (blk, (kc, vc))) in self.blocks.iter().zip(&cache.layers).enumerate() {
            let LayerContext { rope, attention } = &ctx.kinds[ctx.of_layer[l]];
            // No mask where the fused op would run: every cached key is visible.
            let mask = match attention {
                BlockAttention::Masked(m) => Some(m),
                BlockAttention::Fused(_) => None,
            };
            let a = self.input_norm(blk, &x)?;
            let [q, kk, vv] = qkv_of(blk.qkv.apply(&a, (Product::Inference, &mut Mode::Eval))?)?;
            // `rotate`: the queries or keys (normalised, for Qwen3, and rotated); None: values.
            let heads = |y: &Tensor, n: usize, rotate: Option<Heads>| -> Result<Tensor> {
                let y = y.reshape((b, t, n, hd))?;
                let y = match rotate {
                    Some(which) => turn(rope, &self.head_norm(blk, &y, which)?)?,
                    None => y,
                };
                Ok(y.transpose(1, 2)?.contiguous()?) // (B, n, T, hd)
            };
            let q = heads(&q, h, Some(Heads::Query))?;
            kc.slice_set(&heads(&kk, kv, Some(Heads::Key))?, 2, start)?;
            vc.slice_set(&heads(&vv, kv, None)?, 2, start)?;
            // Views of the filled part: (B, KV, start + T, hd).
            let (kk, vv) = (kc.narrow(2, 0, start + t)?, vc.narrow(2, 0, start + t)?);
            let y = self.attend(&q, (&kk, &vv), mask)?; // (B, T, H·hd)
            x = self.block_after_attention(blk, x, &y, (Product::Inference, &mut Mode::Eval))?;
        }
        cache.len = start + t;
        let last = x.narrow(1, t - 1, 1)?.reshape((b, c))?; // (B, C)
        self.logits(linear(
            &self.final_norm(&last)?,
            &self.lm_head,
            Product::Inference,
        )?) // (B, V)
    }

    /// Makes `cache` ready for `t` more tokens of a batch of `b` rows in `dtype`: allocated on
    /// first use, emptied when a new sequence (nothing cached) comes with another shape or
    /// dtype, grown when full (to the next power of two, at least double, at most
    /// `max_position_embeddings`, the filled part copied). The caller checked that the total
    /// fits `max_position_embeddings`.
    fn reserve(
        &self,
        cache: &mut KvCache,
        (b, t): (usize, usize),
        dtype: DType,
        device: &Device,
    ) -> Result<()> {
        let cfg = &self.cfg;
        let (kv, hd) = (cfg.num_key_value_heads, cfg.head_dim());
        let fits = |kk: &Tensor| kk.dims()[..2] == [b, kv] && kk.dtype() == dtype;
        if cache.layers.first().is_some_and(|(kk, _)| !fits(kk)) {
            if cache.len > 0 {
                return Err(Error::Config(format!(
                    "the cache was filled for another batch size or dtype than ({b}, {dtype:?})"
                )));
            }
            cache.layers.clear();
        }
        let (len, need, cap) = (cache.len, cache.len + t, cache.capacity());
        if need <= cap {
            return Ok(());
        }
        let new_cap = need
            .next_power_of_two()
            .max(2 * cap)
            .max(MIN_CACHE)
            .min(cfg.max_position_embeddings);
        let grown = |old: Option<&Tensor>| -> Result<Tensor> {
            let buf = Tensor::zeros((b, kv, new_cap, hd), dtype, device)?;
            if let Some(old) = old.filter(|_| len > 0) {
                buf.slice_set(&old.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
            }
            Ok(buf)
        };
        cache.layers = match cache.layers.is_empty() {
            true => (0..self.blocks.len())
                .map(|_| Ok((grown(None)?, grown(None)?)))
                .collect::<Result<_>>()?,
            false => cache
                .layers
                .iter()
                .map(|(kk, vv)| Ok((grown(Some(kk))?, grown(Some(vv))?)))
                .collect::<Result<_>>()?,
        };
        Ok(())
    }

    /// Mean next-token cross-entropy over all B·(T-1) positions of `ids`, as transformers
    /// computes it with `labels = input_ids` (GPT's, [`Gpt::shifted_loss`]).
    pub fn shifted_loss(logits: &Tensor, ids: &Tensor) -> Result<Tensor> {
        Gpt::shifted_loss(logits, ids)
    }

    /// The negative log-likelihood in nats of each token at positions `from..T` of `ids`
    /// (B, T), each predicted from all the tokens before it in its row → (B, T - from) f64.
    /// `from` ≥ 1, since the token at position 0 has no context. The same contract and
    /// chunking as [`Gpt::target_nll`]: only the scored positions go through the final norm
    /// and the head, a chunk of rows at a time ([`crate::gpt::perplexity::target_nll`]).
    pub fn target_nll(&self, ids: &Tensor, from: usize) -> Result<Tensor> {
        crate::gpt::perplexity::check_first_target(from, ids.dim(1)?)?;
        let x = self.last_block_output(ids, &mut Mode::Eval)?; // (B, T, C)
        crate::gpt::perplexity::target_nll(&x, ids, from, |rows| self.head(rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::max_diff;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn tiny(kv: usize, tied: bool) -> LlamaConfig {
        LlamaConfig {
            vocab_size: 50,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: kv,
            max_position_embeddings: 40,
            rms_norm_eps: 1e-6,
            rope_theta: 100.0,
            rope_scaling: None,
            tie_word_embeddings: tied,
            initializer_range: 0.2,
            pad_token_id: None,
            // The variants' keys as Llama's.
            ..LlamaConfig::preset("llama-tiny", 8).unwrap()
        }
    }

    fn ids(b: usize, t: usize, mul: u32) -> Tensor {
        let v: Vec<u32> = (0..(b * t) as u32).map(|i| (i * mul + 5) % 50).collect();
        Tensor::from_vec(v, (b, t), &Device::Cpu).unwrap()
    }

    fn model(cfg: &LlamaConfig, seed: u64) -> (Params, Llama) {
        let params = init_params(cfg, &mut Rng::new(seed), &Device::Cpu, DType::F32).unwrap();
        let m = Llama::new(cfg, &params).unwrap();
        (params, m)
    }

    #[test]
    fn neftune_noises_the_embeddings_where_transformers_hooks_them() {
        // α = 5, T = 6: the noise is at most α/√(T·C) per element where transformers' hook
        // adds it, so after a scaling applied later (Gemma's √C, Granite's multiplier 12) the
        // embeddings move by that much more; Gemma 3's scaling is inside its embedding
        // module, so its noise is added after it.
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden");
        let (alpha, t) = (5.0, 6);
        for (dir, later_scale) in [
            ("llama_tiny", 1.0),
            ("gemma_tiny", 32f64.sqrt()),
            ("gemma3_tiny", 1.0),
            ("granite_tiny", 12.0),
        ] {
            let cfg =
                crate::llama::hf::config_from_hf(&golden.join(dir).join("config.json")).unwrap();
            let c = cfg.hidden_size;
            let (_, m) = model(&cfg, 3);
            let m = m.with_neftune(alpha);
            let ids = ids(3, t, 7);
            let clean = m.embed_input(&ids, &mut Mode::Eval).unwrap();
            let mut rng = Rng::new(11);
            let noisy = m.embed_input(&ids, &mut Mode::Train(&mut rng)).unwrap();
            let mag = alpha / ((t * c) as f64).sqrt() * later_scale;
            let d = max_diff(&noisy, &clean) as f64;
            // 3·6·C draws: the largest comes within a few percent of the bound.
            assert!(
                d <= mag * 1.0001 && d > 0.95 * mag,
                "{dir}: {d} against {mag}"
            );
            // One draw per element, the same for the same generator.
            assert_eq!(rng.state().counter, (3 * t * c) as u64, "{dir}");
            let again = m
                .embed_input(&ids, &mut Mode::Train(&mut Rng::new(11)))
                .unwrap();
            assert_eq!(max_diff(&again, &noisy), 0.0, "{dir}");
        }
        // α = 0 (the default) draws nothing and changes nothing.
        let (_, m) = model(&tiny(2, false), 3);
        let mut rng = Rng::new(11);
        let x = m
            .embed_input(&ids(2, 5, 3), &mut Mode::Train(&mut rng))
            .unwrap();
        let clean = m.embed_input(&ids(2, 5, 3), &mut Mode::Eval).unwrap();
        assert_eq!(max_diff(&x, &clean), 0.0);
        assert_eq!(rng.state().counter, 0);
    }

    #[test]
    fn the_padding_row_starts_at_zero_and_gets_no_gradient() {
        let cfg = LlamaConfig {
            pad_token_id: Some(7),
            ..tiny(2, false)
        };
        let (params, m) = model(&cfg, 3);
        let table = params.get(EMBED_TOKENS).unwrap();
        let row = |t: &Tensor, r: usize| t.get(r).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(row(&table, 7), vec![0.0; 32]);
        assert!(row(&table, 6).iter().any(|&x| x != 0.0));
        // The padding id as a real token and as padding: its row stays out of the gradient.
        let ids = Tensor::new(&[[1u32, 7, 2, 3], [4, 5, 7, 7]], &Device::Cpu).unwrap();
        let loss = m
            .forward(&ids, Mode::Eval)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        let g = loss.backward().unwrap().get(&table).unwrap().clone();
        assert_eq!(row(&g, 7), vec![0.0; 32]);
        assert!(row(&g, 1).iter().any(|&x| x != 0.0));
    }

    #[test]
    fn param_shapes_are_transformers_names_in_its_order() {
        let names: Vec<String> = param_shapes(&tiny(2, false))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names.len(), 1 + 2 * 9 + 2);
        assert_eq!(names[0], "model.embed_tokens.weight");
        assert_eq!(names[2], "model.layers.0.self_attn.k_proj.weight");
        assert_eq!(names[9], "model.layers.0.post_attention_layernorm.weight");
        assert_eq!(names[names.len() - 1], "lm_head.weight");
        let tied = param_shapes(&tiny(2, true));
        assert_eq!(tied.last().unwrap().0, "model.norm.weight");
        let shapes: BTreeMap<String, Vec<usize>> =
            param_shapes(&tiny(2, false)).into_iter().collect();
        assert_eq!(shapes["model.layers.1.self_attn.v_proj.weight"], [16, 32]);
        assert_eq!(shapes["model.layers.1.mlp.down_proj.weight"], [32, 64]);
        let (params, _) = model(&tiny(2, false), 1);
        assert_eq!(params.num_elements(), tiny(2, false).num_params());
        assert_eq!(
            init_params(&tiny(2, true), &mut Rng::new(1), &Device::Cpu, DType::F32)
                .unwrap()
                .num_elements(),
            tiny(2, true).num_params()
        );
    }

    /// The cached path gives the full forward's last-position logits at every length: a
    /// prefill of 5 tokens, a chunk of 4 after them (the offset causal mask), then one token
    /// at a time up to max_position_embeddings (the cache growing 16 → 32 → 40); two rows.
    #[test]
    fn cached_generation_matches_the_full_forward() {
        for (kv, tied) in [(2, false), (4, true), (1, false)] {
            let cfg = tiny(kv, tied);
            let (_, m) = model(&cfg, 7);
            let n = cfg.max_position_embeddings;
            let x = ids(2, n, 11);
            let full = m.forward(&x, Mode::Eval).unwrap(); // (2, n, V)
            let mut cache = KvCache::new();
            let mut at = 0;
            let mut caps = Vec::new();
            for len in [5, 4].into_iter().chain(std::iter::repeat_n(1, n - 9)) {
                let chunk = x.narrow(1, at, len).unwrap();
                let last = m.forward_last_cached(&chunk, &mut cache).unwrap();
                at += len;
                assert_eq!(cache.len(), at);
                caps.push(cache.capacity());
                let want = full.narrow(1, at - 1, 1).unwrap().squeeze(1).unwrap();
                let d = max_diff(&last, &want);
                assert!(
                    d < 1e-5,
                    "kv {kv}: position {}: logits differ by {d}",
                    at - 1
                );
            }
            caps.dedup();
            assert_eq!(caps, [16, 32, 40]);
            // Past max_position_embeddings: a clear error, and the cache is left as it was.
            let e = m
                .forward_last_cached(&x.narrow(1, 0, 1).unwrap(), &mut cache)
                .unwrap_err();
            assert!(e.to_string().contains("max_position_embeddings"), "{e}");
            assert_eq!(cache.len(), n);
            let e = m.forward(&ids(1, n + 1, 3), Mode::Eval).unwrap_err();
            assert!(e.to_string().contains("max_position_embeddings"), "{e}");
        }
    }

    /// Grouped-query attention is MHA whose key and value heads are repeated for the query
    /// heads they serve: head h reads key/value head h / (H / KV) (`repeat_interleave`).
    #[test]
    fn gqa_equals_mha_with_repeated_key_value_weights() {
        let gqa = tiny(2, false);
        let mha = tiny(4, false);
        let (p, m) = model(&gqa, 3);
        let hd = gqa.head_dim();
        let mut p2 = Params::new();
        for (name, v) in p.iter() {
            let t = v.as_tensor();
            let t = match name.ends_with("k_proj.weight") || name.ends_with("v_proj.weight") {
                true => {
                    let heads: Vec<Tensor> = (0..4)
                        .map(|h| t.narrow(0, (h / 2) * hd, hd).unwrap())
                        .collect();
                    Tensor::cat(&heads, 0).unwrap()
                }
                false => t.clone(),
            };
            p2.insert(name, t).unwrap();
        }
        let m2 = Llama::new(&mha, &p2).unwrap();
        let x = ids(2, 23, 7);
        let d = max_diff(
            &m.forward(&x, Mode::Eval).unwrap(),
            &m2.forward(&x, Mode::Eval).unwrap(),
        );
        assert!(d < 1e-6, "logits differ by {d}");
        let (mut c1, mut c2) = (KvCache::new(), KvCache::new());
        let a = m.forward_last_cached(&x, &mut c1).unwrap();
        let b = m2.forward_last_cached(&x, &mut c2).unwrap();
        assert!(max_diff(&a, &b) < 1e-6);
    }

    /// Packed rows: each sequence's logits as alone, grouped heads, with a sliding window
    /// shorter than a sequence, and with the fused attention asked for.
    #[test]
    fn packed_sequences_see_only_themselves() {
        for (kv, window, attention) in [
            (2, None, AttentionImpl::Fused),
            (4, None, AttentionImpl::Composite),
            (2, Some(4), AttentionImpl::Auto),
        ] {
            let cfg = LlamaConfig {
                sliding_window: window,
                model_type: match window {
                    Some(_) => crate::llama::LlamaFamily::Mistral,
                    None => crate::llama::LlamaFamily::Llama,
                },
                ..tiny(kv, false)
            };
            let (_, m) = model(&cfg, 5);
            let m = m.with_attention(attention);
            crate::testutil::check_packed(
                |ids, p| m.forward_packed(ids, Some(p), Mode::Eval).unwrap(),
                |ids| m.forward(ids, Mode::Eval).unwrap(),
                50,
                1e-5,
            );
        }
    }

    #[test]
    fn batch_rows_are_independent() {
        let cfg = tiny(2, false);
        let (_, m) = model(&cfg, 5);
        let x = ids(3, 17, 13);
        let all = m.forward(&x, Mode::Eval).unwrap();
        for r in 0..3 {
            let one = m.forward(&x.narrow(0, r, 1).unwrap(), Mode::Eval).unwrap();
            let d = max_diff(&one, &all.narrow(0, r, 1).unwrap());
            assert!(d < 1e-6, "row {r} differs by {d}");
        }
    }

    /// Every parameter gets a finite, non-zero gradient (candle's fused norms and rotary ops
    /// would silently give none: shared/CANDLE.md).
    #[test]
    fn every_parameter_gets_a_gradient() {
        for (kv, tied) in [(2, false), (4, true)] {
            let cfg = tiny(kv, tied);
            let (params, m) = model(&cfg, 9);
            let x = ids(2, 12, 17);
            let mut rng = Rng::new(1);
            let logits = m.forward(&x, Mode::Train(&mut rng)).unwrap();
            let g = Llama::shifted_loss(&logits, &x)
                .unwrap()
                .backward()
                .unwrap();
            for (name, v) in params.iter() {
                let grad = g
                    .get(v.as_tensor())
                    .unwrap_or_else(|| panic!("{name}: no gradient"));
                let norm = grad
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(norm.is_finite() && norm > 0.0, "{name}: |grad|² = {norm}");
            }
        }
    }

    /// The fused attention (key/value heads repeated, packed for one op) and the grouped
    /// composite one (each key/value head read once by its query heads) give the same logits
    /// and gradients, with grouped-query attention and without.
    #[test]
    fn fused_and_composite_attention_agree() {
        for kv in [1, 2, 4] {
            let cfg = tiny(kv, false);
            let (params, _) = model(&cfg, 4);
            let x = ids(2, 11, 7);
            let run = |att: AttentionImpl| {
                let m = Llama::new(&cfg, &params).unwrap().with_attention(att);
                let logits = m.forward(&x, Mode::Eval).unwrap();
                let g = Llama::shifted_loss(&logits, &x)
                    .unwrap()
                    .backward()
                    .unwrap();
                let grads: Vec<Tensor> = params
                    .iter()
                    .map(|(_, v)| g.get(v.as_tensor()).unwrap().clone())
                    .collect();
                (logits, grads)
            };
            let (lf, gf) = run(AttentionImpl::Fused);
            let (lc, gc) = run(AttentionImpl::Composite);
            assert!(max_diff(&lf, &lc) < 1e-5, "kv {kv}: logits");
            for ((name, _), (a, b)) in params.iter().zip(gf.iter().zip(&gc)) {
                let scale = a
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(max_diff(a, b) <= 1e-5 * scale, "kv {kv}: {name}");
            }
        }
    }

    /// The pieces `forward` is made of, run one at a time, give its logits.
    #[test]
    fn pieces_compose_to_forward() {
        let cfg = tiny(2, false);
        let (_, m) = model(&cfg, 2);
        let x = ids(2, 9, 3);
        let mut mode = Mode::Eval;
        let mut h = m.embed_input(&x, &mut mode).unwrap();
        let ctx = m.block_context(&x, None).unwrap();
        for l in 0..m.n_blocks() {
            h = m.block(l, h, &ctx, &mut mode).unwrap();
        }
        let want = m.forward(&x, Mode::Eval).unwrap();
        assert_eq!(max_diff(&m.head(&h).unwrap(), &want), 0.0);
        let e = m.block(2, h, &ctx, &mut mode).err().unwrap().to_string();
        assert!(e.contains("block 2"), "{e}");
    }

    /// RoPE makes attention scores depend on relative positions only: q at m and k at n score
    /// as q at m + s and k at n + s; and it preserves norms (a rotation).
    #[test]
    fn rope_scores_depend_on_relative_position() {
        let dev = Device::Cpu;
        let hd = 8;
        let mut cfg = tiny(4, false);
        cfg.hidden_size = 4 * hd;
        let inv_freq = cfg.inv_freq();
        let q = Tensor::from_vec(
            (0..hd).map(|i| (i as f32 * 0.7).sin()).collect(),
            (1, 1, 1, hd),
            &dev,
        )
        .unwrap();
        let kk = Tensor::from_vec(
            (0..hd).map(|i| (i as f32 * 1.3).cos()).collect(),
            (1, 1, 1, hd),
            &dev,
        )
        .unwrap();
        let at = |x: &Tensor, p: usize| {
            Rope::new(&inv_freq, 1.0, p, 1, &dev, DType::F32)
                .unwrap()
                .apply(x)
                .unwrap()
        };
        let dot = |a: &Tensor, b: &Tensor| {
            (a * b)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let s0 = dot(&at(&q, 3), &at(&kk, 1));
        for s in [1, 5, 20] {
            let s1 = dot(&at(&q, 3 + s), &at(&kk, 1 + s));
            assert!((s0 - s1).abs() < 1e-4, "shift {s}: {s0} vs {s1}");
        }
        assert!(
            (dot(&q, &kk) - dot(&at(&q, 0), &at(&kk, 0))).abs() < 1e-6,
            "position 0 is identity"
        );
        assert!((dot(&q, &q) - dot(&at(&q, 7), &at(&q, 7))).abs() < 1e-5);
        assert!(
            (s0 - dot(&at(&q, 2), &at(&kk, 1))).abs() > 1e-3,
            "positions matter"
        );
    }

    #[test]
    fn target_nll_is_the_cross_entropy_of_the_forward_logits() {
        let cfg = tiny(2, false);
        let (params, _) = model(&cfg, 3);
        let m = Llama::new(&cfg, &params.frozen()).unwrap();
        // 9 rows of 40: 9 · 39 = 351 scored positions, more than one chunk of the head.
        let (b, t) = (9, 40);
        let raw: Vec<u32> = (0..b * t).map(|i| ((i * 13 + i / 7) % 50) as u32).collect();
        let x = Tensor::from_vec(raw.clone(), (b, t), &Device::Cpu).unwrap();
        let logits: Vec<Vec<Vec<f32>>> = m.forward(&x, Mode::Eval).unwrap().to_vec3().unwrap();
        for from in [1, 17, 39] {
            let got: Vec<Vec<f64>> = m.target_nll(&x, from).unwrap().to_vec2().unwrap();
            assert_eq!((got.len(), got[0].len()), (b, t - from));
            for (r, row) in got.iter().enumerate() {
                for (j, &nll) in row.iter().enumerate() {
                    let p = from + j; // the token scored, predicted at p - 1
                    let z = &logits[r][p - 1];
                    let lse = z.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
                    let want = lse - z[raw[r * t + p] as usize] as f64;
                    assert!(
                        (nll - want).abs() < 1e-5,
                        "row {r} position {p}: {nll} vs {want}"
                    );
                }
            }
        }
        let all: Vec<Vec<f64>> = m.target_nll(&x, 1).unwrap().to_vec2().unwrap();
        let mean = all.iter().flatten().sum::<f64>() / (b * (t - 1)) as f64;
        let logits = m.forward(&x, Mode::Eval).unwrap();
        let loss = Llama::shifted_loss(&logits, &x)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((mean - loss as f64).abs() < 1e-5, "{mean} vs {loss}");
        for from in [0, 40] {
            let e = m.target_nll(&x, from).unwrap_err();
            assert!(e.to_string().contains("first target"), "{e}");
        }
    }

    /// In bf16 the model runs end to end (norms in f32, cast back) and stays near f32.
    #[test]
    fn bf16_runs_close_to_f32() {
        let cfg = tiny(2, false);
        let (p, m) = model(&cfg, 4);
        let p16 = p.to(&Device::Cpu, DType::BF16).unwrap();
        let m16 = Llama::new(&cfg, &p16).unwrap();
        let x = ids(2, 10, 9);
        let a = m.forward(&x, Mode::Eval).unwrap();
        let b = m16.forward(&x, Mode::Eval).unwrap();
        assert_eq!(b.dtype(), DType::BF16);
        let scale = max_diff(&a, &a.zeros_like().unwrap());
        let d = max_diff(&a, &b);
        assert!(
            d < 0.05 * scale,
            "bf16 logits differ by {d} (max |logit| {scale})"
        );
        let mut cache = KvCache::new();
        let last = m16.forward_last_cached(&x, &mut cache).unwrap();
        assert!(max_diff(&last, &b.narrow(1, 9, 1).unwrap().squeeze(1).unwrap()) < 0.05 * scale);
        // A cache filled in bf16 refuses f32 tokens of the same sequence.
        let e = m
            .forward_last_cached(&x.narrow(1, 0, 1).unwrap(), &mut cache)
            .unwrap_err();
        assert!(e.to_string().contains("dtype"), "{e}");
    }
}

//! Activation checkpointing (`train.activation_checkpointing`, GPT, Llama and BERT; transformers'
//! `gradient_checkpointing`, torchtitan's full activation checkpointing, Chen et al. 2016,
//! "Training Deep Nets with Sublinear Memory Cost"): the forward pass keeps only each block's
//! input, and the backward pass runs each block again, from its input and with the dropout
//! stream it had, just before its gradients are needed.
//!
//! Memory: a forward of L blocks normally keeps every intermediate of every block for the
//! backward (attention's q, k, v and output, the LayerNorms' inputs, the MLP's 4C-wide
//! activations, the dropout masks): about 20 B·T·C values a block in the composite path. Here
//! it keeps L + 1 tensors of B·T·C, and the intermediates of one block at a time. The price
//! is one more forward of every block, about a third more compute per step.
//!
//! The gradient is the same function of the same numbers: each block is recomputed with the
//! same inputs, weights and dropout masks, and the gradient that reaches its output from above
//! is fed into its backward as `sum(y · g)`, whose gradient with respect to y is exactly g. Only
//! the order in which contributions to a weight used twice (the tied token embeddings: the
//! input and the head) are summed differs, which moves the last bits.
//!
//! candle has no way to start a backward pass from a given output gradient, or to drop a
//! graph and keep its values: detaching a block's output frees the graph behind it, and a
//! fresh variable made from the stored input starts the recomputed graph.

use crate::grads::{scaled_backward, StepGrads};
use crate::task::{causal_loss_sum, mlm_input, mlm_loss_sum, LossModel};
use crate::trainer::Batch;
use crate::{Error, Result};
use candle_core::{backprop::GradStore, Tensor, Var};
use lantern_kernels::Rng;
use lantern_models::bert::{BertForMaskedLM, BertInput, BertModel};
use lantern_models::decoder::Decoder;
use lantern_models::gpt::Gpt;
use lantern_models::llama::{BlockContext, Llama};
use lantern_models::{BlockAttention, Mode, Packing, Params};

/// The dropout stream `mode` is at: a copy to run a piece again with the same masks.
fn stream_of(mode: &Mode<'_>) -> Option<Rng> {
    match mode {
        Mode::Train(rng) => Some((**rng).clone()),
        Mode::Eval => None,
    }
}

/// Runs `f` in the mode `stream` was saved from (training from that point of the stream, or
/// evaluation).
fn replay<T>(stream: &Option<Rng>, f: impl FnOnce(&mut Mode<'_>) -> Result<T>) -> Result<T> {
    match stream {
        Some(rng) => f(&mut Mode::Train(&mut rng.clone())),
        None => f(&mut Mode::Eval),
    }
}

/// The gradient a backward pass gave `x` (the input of the piece it ran), detached.
fn grad_of(store: &GradStore, x: &Var, what: &str) -> Result<Tensor> {
    store
        .get(x.as_tensor())
        .map(Tensor::detach)
        .ok_or_else(|| Error::Config(format!("activation checkpointing: {what} got no gradient")))
}

/// A stack of blocks as activation checkpointing runs it: the first block's input (the
/// embeddings), then each block on the previous one's output. Pieces take the dropout stream
/// by `&mut Mode`, in the model's order.
pub trait Blocks {
    fn n_blocks(&self) -> usize;
    /// The first block's input (B, T, C).
    fn first(&self, mode: &mut Mode<'_>) -> Result<Tensor>;
    /// Block `l` on x.
    fn block(&self, l: usize, x: Tensor, mode: &mut Mode<'_>) -> Result<Tensor>;
}

/// One micro-batch's forward and backward through `blocks` with activation checkpointing:
/// `top(x, mode)` is the rest of the model and the loss (already divided as the step wants)
/// from the last block's output. The gradients of the loss times `scale` are added to
/// `grads`; returns the loss.
pub fn checkpointed_backward(
    blocks: &dyn Blocks,
    mut mode: Mode<'_>,
    top: impl FnOnce(&Tensor, &mut Mode<'_>) -> Result<Tensor>,
    scale: f64,
    (params, grads): (&Params, &mut StepGrads),
) -> Result<f64> {
    let n = blocks.n_blocks();
    // Forward, keeping each block's input (detached: the graph behind it is freed) and the
    // dropout stream each piece started from.
    let first_stream = stream_of(&mode);
    let mut x = blocks.first(&mut mode)?.detach();
    let mut kept: Vec<(Tensor, Option<Rng>)> = Vec::with_capacity(n);
    for l in 0..n {
        kept.push((x.clone(), stream_of(&mode)));
        x = blocks.block(l, x, &mut mode)?.detach();
    }
    // The top and the loss, with their graph (and the rest of the dropout stream): the
    // weights' gradients, and the one that reaches the last block's output.
    let out = Var::from_tensor(&x)?;
    drop(x);
    let loss = top(out.as_tensor(), &mut mode)?;
    let store = scaled_backward(&loss, scale)?;
    grads.accumulate(params, &store)?;
    let mut g = grad_of(&store, &out, "the last block's output")?;
    drop(store);
    // Each block again, last first: its graph lives only while its backward runs.
    for l in (0..n).rev() {
        let (input, stream) = kept.pop().expect("one kept input per block");
        let input = Var::from_tensor(&input)?;
        let y = replay(&stream, |m| blocks.block(l, input.as_tensor().clone(), m))?;
        let store = (y * &g)?.sum_all()?.backward()?;
        grads.accumulate(params, &store)?;
        g = grad_of(&store, &input, "a block's input")?;
    }
    // The embeddings (a tied table gets its second contribution here, after the top's).
    let x0 = replay(&first_stream, |m| blocks.first(m))?;
    let store = (x0 * &g)?.sum_all()?.backward()?;
    grads.accumulate(params, &store)?;
    Ok(f64::from(loss.to_scalar::<f32>()?))
}

/// GPT's blocks over one batch of ids.
pub struct GptBlocks<'a> {
    gpt: &'a Gpt,
    ids: &'a Tensor,
    packing: Option<&'a Packing>,
    attention: BlockAttention,
}

impl<'a> GptBlocks<'a> {
    /// The blocks over ids (B, T) (rows of packed sequences with `packing`), attending as a
    /// forward in `mode` does.
    pub fn new(
        gpt: &'a Gpt,
        (ids, packing): (&'a Tensor, Option<&'a Packing>),
        mode: &Mode<'_>,
    ) -> Result<Self> {
        Ok(Self {
            gpt,
            ids,
            packing,
            attention: gpt.block_attention(ids, packing, mode)?,
        })
    }
}

impl Blocks for GptBlocks<'_> {
    fn n_blocks(&self) -> usize {
        self.gpt.n_blocks()
    }
    fn first(&self, mode: &mut Mode<'_>) -> Result<Tensor> {
        Ok(self.gpt.embed_input(self.ids, self.packing, mode)?)
    }
    fn block(&self, l: usize, x: Tensor, mode: &mut Mode<'_>) -> Result<Tensor> {
        Ok(self.gpt.block(l, x, &self.attention, mode)?)
    }
}

/// Llama's blocks over one batch of ids, with the rotary tables every block reads.
pub struct LlamaBlocks<'a> {
    llama: &'a Llama,
    ids: &'a Tensor,
    ctx: BlockContext,
}

impl<'a> LlamaBlocks<'a> {
    /// The blocks over ids (B, T) (rows of packed sequences with `packing`).
    pub fn new(llama: &'a Llama, (ids, packing): (&'a Tensor, Option<&Packing>)) -> Result<Self> {
        Ok(Self {
            llama,
            ids,
            ctx: llama.block_context(ids, packing)?,
        })
    }
}

impl Blocks for LlamaBlocks<'_> {
    fn n_blocks(&self) -> usize {
        self.llama.n_blocks()
    }
    fn first(&self, mode: &mut Mode<'_>) -> Result<Tensor> {
        Ok(self.llama.embed_input(self.ids, mode)?)
    }
    fn block(&self, l: usize, x: Tensor, mode: &mut Mode<'_>) -> Result<Tensor> {
        Ok(self.llama.block(l, x, &self.ctx, mode)?)
    }
}

/// The blocks of a decoder (GPT-2's or Llama's) over ids (B, T), as a forward in `mode` runs
/// them.
pub fn decoder_blocks<'a>(
    model: &'a Decoder,
    ids: &'a Tensor,
    mode: &Mode<'_>,
) -> Result<Box<dyn Blocks + 'a>> {
    Ok(match model {
        Decoder::Gpt(gpt) => Box::new(GptBlocks::new(gpt, (ids, None), mode)?),
        Decoder::Llama(llama) => Box::new(LlamaBlocks::new(llama, (ids, None))?),
    })
}

/// BERT's encoder layers over one padded batch.
pub struct BertBlocks<'a> {
    bert: &'a BertModel,
    input: &'a BertInput<'a>,
    mask: Option<Tensor>,
}

impl<'a> BertBlocks<'a> {
    pub fn new(bert: &'a BertModel, input: &'a BertInput<'a>) -> Result<Self> {
        Ok(Self {
            bert,
            input,
            mask: bert.key_mask(input)?,
        })
    }
}

impl Blocks for BertBlocks<'_> {
    fn n_blocks(&self) -> usize {
        self.bert.n_layers()
    }
    fn first(&self, mode: &mut Mode<'_>) -> Result<Tensor> {
        Ok(self.bert.embed_input(self.input, mode)?)
    }
    fn block(&self, l: usize, x: Tensor, mode: &mut Mode<'_>) -> Result<Tensor> {
        Ok(self.bert.layer(l, x, self.mask.as_ref(), mode)?)
    }
}

/// A model trained with activation checkpointing: the same model, the same loss and the same
/// gradients, with each block's activations recomputed in the backward pass.
pub struct Recomputed<M>(pub M);

impl LossModel for Recomputed<Gpt> {
    fn loss_sum(&self, batch: &Batch, mode: Mode<'_>) -> Result<Tensor> {
        self.0.loss_sum(batch, mode)
    }

    fn loss_backward(
        &self,
        batch: &Batch,
        mode: Mode<'_>,
        (divisor, scale): (f64, f64),
        params: &Params,
        grads: &mut StepGrads,
    ) -> Result<f64> {
        let gpt = &self.0;
        let blocks = GptBlocks::new(gpt, (&batch.ids, batch.packing.as_ref()), &mode)?;
        let top = |x: &Tensor, _: &mut Mode<'_>| -> Result<Tensor> {
            Ok((causal_loss_sum(&gpt.head(x)?, batch)? / divisor)?)
        };
        checkpointed_backward(&blocks, mode, top, scale, (params, grads))
    }
}

impl LossModel for Recomputed<Llama> {
    fn loss_sum(&self, batch: &Batch, mode: Mode<'_>) -> Result<Tensor> {
        self.0.loss_sum(batch, mode)
    }

    fn loss_backward(
        &self,
        batch: &Batch,
        mode: Mode<'_>,
        (divisor, scale): (f64, f64),
        params: &Params,
        grads: &mut StepGrads,
    ) -> Result<f64> {
        let llama = &self.0;
        let blocks = LlamaBlocks::new(llama, (&batch.ids, batch.packing.as_ref()))?;
        let top = |x: &Tensor, _: &mut Mode<'_>| -> Result<Tensor> {
            Ok((causal_loss_sum(&llama.head(x)?, batch)? / divisor)?)
        };
        checkpointed_backward(&blocks, mode, top, scale, (params, grads))
    }
}

impl LossModel for Recomputed<BertForMaskedLM> {
    fn loss_sum(&self, batch: &Batch, mode: Mode<'_>) -> Result<Tensor> {
        self.0.loss_sum(batch, mode)
    }

    fn loss_backward(
        &self,
        batch: &Batch,
        mode: Mode<'_>,
        (divisor, scale): (f64, f64),
        params: &Params,
        grads: &mut StepGrads,
    ) -> Result<f64> {
        let mlm = &self.0;
        let input = mlm_input(batch);
        let blocks = BertBlocks::new(&mlm.bert, &input)?;
        let top = |x: &Tensor, _: &mut Mode<'_>| -> Result<Tensor> {
            Ok((mlm_loss_sum(&mlm.head_on(x)?, batch)? / divisor)?)
        };
        checkpointed_backward(&blocks, mode, top, scale, (params, grads))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use lantern_models::gpt::{init_params, GptConfig};

    /// The gradients of a step with recomputation are those without, with dropout on (the
    /// masks must be replayed) and over two micro-batches accumulated.
    #[test]
    fn recomputed_gradients_are_the_stored_ones() {
        let cfg = GptConfig {
            vocab_size: 64,
            n_positions: 16,
            n_embd: 32,
            n_layer: 3,
            n_head: 4,
            dropout: 0.1,
            layer_norm_epsilon: 1e-5,
        };
        let params = init_params(&cfg, &mut Rng::new(5), &Device::Cpu, DType::F32).unwrap();
        let batch = |seed: u32| {
            let ids: Vec<u32> = (0..24).map(|i| (i * 7 + seed) % 64).collect();
            let tgt: Vec<u32> = (0..24).map(|i| (i * 5 + seed) % 64).collect();
            Batch {
                ids: Tensor::from_vec(ids, (2, 12), &Device::Cpu).unwrap(),
                targets: Tensor::from_vec(tgt, 24, &Device::Cpu).unwrap(),
                weights: None,
                n_targets: 24,
                packing: None,
                loss: Default::default(),
                pairs: None,
                unpaired: None,
            }
        };
        let batches = [batch(1), batch(2)];
        let run = |model: &dyn LossModel| -> (Vec<f64>, StepGrads) {
            let mut grads = StepGrads::new(params.len());
            let losses = batches
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let mut rng = Rng::derive(9, i as u64);
                    model
                        .loss_backward(b, Mode::Train(&mut rng), (48.0, 1.0), &params, &mut grads)
                        .unwrap()
                })
                .collect();
            (losses, grads)
        };
        let plain = Gpt::new(&cfg, &params).unwrap();
        let (l1, g1) = run(&plain);
        let (l2, g2) = run(&Recomputed(Gpt::new(&cfg, &params).unwrap()));
        assert_eq!(l1, l2, "the same forward");
        assert_close(&params, &g1, &g2);
    }

    /// BERT's masked LM: the same, through its layers and the MLM head tied to the word
    /// embeddings.
    #[test]
    fn recomputed_bert_gradients_are_the_stored_ones() {
        use lantern_models::bert::{init_params, BertConfig, BertHead};
        let cfg = BertConfig::new(64, 32, 3, 4, 48, 16);
        let params = init_params(
            &cfg,
            BertHead::MaskedLm,
            &mut Rng::new(5),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap();
        let ids: Vec<u32> = (0..24).map(|i| (i * 7 + 3) % 64).collect();
        let tgt: Vec<u32> = (0..24).map(|i| (i * 5 + 1) % 64).collect();
        let w: Vec<f32> = (0..24).map(|i| f32::from(i % 3 == 0)).collect();
        let batch = Batch {
            ids: Tensor::from_vec(ids, (2, 12), &Device::Cpu).unwrap(),
            targets: Tensor::from_vec(tgt, 24, &Device::Cpu).unwrap(),
            weights: Some(Tensor::from_vec(w, 24, &Device::Cpu).unwrap()),
            n_targets: 8,
            packing: None,
            loss: Default::default(),
            pairs: None,
            unpaired: None,
        };
        let run = |model: &dyn LossModel| {
            let mut grads = StepGrads::new(params.len());
            let mut rng = Rng::derive(9, 0);
            let loss = model
                .loss_backward(
                    &batch,
                    Mode::Train(&mut rng),
                    (8.0, 1.0),
                    &params,
                    &mut grads,
                )
                .unwrap();
            (loss, grads)
        };
        let (l1, g1) = run(&BertForMaskedLM::new(&cfg, &params).unwrap());
        let (l2, g2) = run(&Recomputed(BertForMaskedLM::new(&cfg, &params).unwrap()));
        assert_eq!(l1, l2, "the same forward");
        assert_close(&params, &g1, &g2);
    }

    /// Llama: the same through its blocks (the rotary tables built once for all of them),
    /// grouped-query attention and the untied head, over two accumulated micro-batches.
    #[test]
    fn recomputed_llama_gradients_are_the_stored_ones() {
        use lantern_models::llama::{init_params, LlamaConfig};
        let mut cfg = LlamaConfig::preset("llama-tiny", 64).unwrap();
        (
            cfg.hidden_size,
            cfg.num_hidden_layers,
            cfg.intermediate_size,
        ) = (32, 3, 48);
        (cfg.num_attention_heads, cfg.num_key_value_heads) = (4, 2);
        cfg.max_position_embeddings = 16;
        let params = init_params(&cfg, &mut Rng::new(5), &Device::Cpu, DType::F32).unwrap();
        let batch = |seed: u32| {
            let ids: Vec<u32> = (0..24).map(|i| (i * 7 + seed) % 64).collect();
            let tgt: Vec<u32> = (0..24).map(|i| (i * 5 + seed) % 64).collect();
            Batch {
                ids: Tensor::from_vec(ids, (2, 12), &Device::Cpu).unwrap(),
                targets: Tensor::from_vec(tgt, 24, &Device::Cpu).unwrap(),
                weights: None,
                n_targets: 24,
                packing: None,
                loss: Default::default(),
                pairs: None,
                unpaired: None,
            }
        };
        let batches = [batch(1), batch(2)];
        let run = |model: &dyn LossModel| -> (Vec<f64>, StepGrads) {
            let mut grads = StepGrads::new(params.len());
            let losses = batches
                .iter()
                .map(|b| {
                    model
                        .loss_backward(b, Mode::Eval, (48.0, 1.0), &params, &mut grads)
                        .unwrap()
                })
                .collect();
            (losses, grads)
        };
        let (l1, g1) = run(&Llama::new(&cfg, &params).unwrap());
        let (l2, g2) = run(&Recomputed(Llama::new(&cfg, &params).unwrap()));
        assert_eq!(l1, l2, "the same forward");
        assert_close(&params, &g1, &g2);
    }

    /// Every gradient present in both and within 1e-6 of the largest of its tensor.
    fn assert_close(params: &Params, g1: &StepGrads, g2: &StepGrads) {
        for ((name, a), b) in params.names().iter().zip(&g1.grads).zip(&g2.grads) {
            let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
            let scale = a
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let d = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(scale > 0.0 && d <= 1e-6 * scale, "{name}: {d} of {scale}");
        }
    }
}

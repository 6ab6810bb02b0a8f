use super::modern::{self, Pooling};
use super::{BertConfig, Family};
use crate::lowrank::{add_side, Dense, LowRank};
use crate::{Error, Mode, Params, Result};
use candle_core::{DType, Device, Tensor};
use lantern_kernels::{self as k, Rng};

/// Which model on top of the encoder; fixes the parameter set and the HF architecture name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BertHead {
    /// `BertModel`: the encoder and the pooler; HF saves it without the `bert.` prefix.
    Encoder,
    /// `BertForMaskedLM`: the encoder without pooler, and the MLM head.
    MaskedLm,
    /// `BertForSequenceClassification`: encoder, pooler and `classifier`.
    SequenceClassification,
    /// `BertForTokenClassification`: the encoder without pooler and a `classifier` applied to
    /// every position.
    TokenClassification,
    /// `BertForQuestionAnswering`: the encoder without pooler and `qa_outputs`, which gives
    /// every position a start and an end logit (extractive question answering, SQuAD-style).
    QuestionAnswering,
    /// `BertForMultipleChoice`: each of an example's C choices is encoded as its own sequence
    /// (B·C rows), the head gives each one score, and the scores of one example's choices are
    /// its C logits (SWAG-style multiple choice).
    MultipleChoice,
}

impl BertHead {
    const ALL: [BertHead; 6] = [
        BertHead::Encoder,
        BertHead::MaskedLm,
        BertHead::SequenceClassification,
        BertHead::TokenClassification,
        BertHead::QuestionAnswering,
        BertHead::MultipleChoice,
    ];

    /// The BERT class name (messages; a config's own is [`BertConfig::architecture`]).
    pub fn architecture(self) -> &'static str {
        match self {
            BertHead::Encoder => "BertModel",
            BertHead::MaskedLm => "BertForMaskedLM",
            BertHead::SequenceClassification => "BertForSequenceClassification",
            BertHead::TokenClassification => "BertForTokenClassification",
            BertHead::QuestionAnswering => "BertForQuestionAnswering",
            BertHead::MultipleChoice => "BertForMultipleChoice",
        }
    }

    /// The class name after the family's prefix (`Model`, `ForMaskedLM`, ...).
    pub fn class_suffix(self) -> &'static str {
        &self.architecture()["Bert".len()..]
    }

    /// The head of a BERT architecture name.
    pub fn from_architecture(name: &str) -> Option<Self> {
        match Self::from_family_architecture(name) {
            Some((Family::Bert, head)) => Some(head),
            _ => None,
        }
    }

    /// The family and head of an architecture name of any family we implement
    /// (`BertForPreTraining` loads as the masked LM, as its NSP head is not used).
    pub fn from_family_architecture(name: &str) -> Option<(Family, Self)> {
        if name == "BertForPreTraining" {
            return Some((Family::Bert, BertHead::MaskedLm));
        }
        // No family's class prefix is a prefix of another's.
        Family::ALL.into_iter().find_map(|f| {
            let rest = name.strip_prefix(f.class_prefix())?;
            let head = Self::ALL.into_iter().find(|h| h.class_suffix() == rest)?;
            // ELECTRA's generator (ElectraForMaskedLM) is not implemented; its discriminator
            // (ElectraForPreTraining) names no head of ours either.
            (head != BertHead::MaskedLm || f.has_masked_lm()).then_some((f, head))
        })
    }

    /// Whether the head is a `classifier` over `id2label` (per sequence or per token). Not
    /// question answering: its two outputs (start, end) have no labels.
    pub fn is_classifier(self) -> bool {
        matches!(
            self,
            BertHead::SequenceClassification | BertHead::TokenClassification
        )
    }
}

/// Where a family's checkpoints keep one encoder layer's pieces (names without
/// `.weight`/`.bias`): query, key, value, attention output, its LayerNorm, intermediate,
/// output, its LayerNorm.
fn layer_names(cfg: &BertConfig, p: &str, i: usize) -> [String; 8] {
    let names = match cfg.model_type {
        Family::DistilBert => [
            "attention.q_lin",
            "attention.k_lin",
            "attention.v_lin",
            "attention.out_lin",
            "sa_layer_norm",
            "ffn.lin1",
            "ffn.lin2",
            "output_layer_norm",
        ],
        // ModernBERT's layers are `modern::Stack`'s, named there.
        Family::Bert
        | Family::Roberta
        | Family::XlmRoberta
        | Family::Electra
        | Family::ModernBert => [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "attention.output.LayerNorm",
            "intermediate.dense",
            "output.dense",
            "output.LayerNorm",
        ],
    };
    let layers = match cfg.model_type {
        Family::DistilBert => "transformer.layer",
        _ => "encoder.layer",
    };
    names.map(|n| format!("{p}{layers}.{i}.{n}"))
}

/// The names of the masked-LM head's transform, its LayerNorm and the output bias; `None`
/// for ELECTRA, whose generator is not implemented.
fn mlm_head_names(family: Family) -> Option<[&'static str; 3]> {
    Some(match family {
        Family::Bert => [
            "cls.predictions.transform.dense",
            "cls.predictions.transform.LayerNorm",
            "cls.predictions.bias",
        ],
        // RobertaLMHead and DistilBERT's vocab_* layers: the same network.
        Family::Roberta | Family::XlmRoberta => {
            ["lm_head.dense", "lm_head.layer_norm", "lm_head.bias"]
        }
        Family::DistilBert => [
            "vocab_transform",
            "vocab_layer_norm",
            "vocab_projector.bias",
        ],
        // ModernBertPredictionHead and the decoder's bias (each bias only when the config
        // asks for it).
        Family::ModernBert => ["head.dense", "head.norm", "decoder.bias"],
        Family::Electra => return None,
    })
}

/// Every parameter with its shape, in a fixed order (init order, optimizer order), named as
/// in `head`'s HF checkpoints. Linear weights are `[out, in]` (torch's `nn.Linear`).
pub fn param_shapes(cfg: &BertConfig, head: BertHead) -> Vec<(String, Vec<usize>)> {
    let p = cfg.prefix(head);
    let (c, f) = (cfg.hidden_size, cfg.intermediate_size);
    let mut v: Vec<(String, Vec<usize>)> = Vec::new();
    let lin = |v: &mut Vec<(String, Vec<usize>)>, name: &str, o: usize, i: usize| {
        v.push((format!("{name}.weight"), vec![o, i]));
        v.push((format!("{name}.bias"), vec![o]));
    };
    if cfg.model_type == Family::ModernBert {
        let mut v = modern::encoder_shapes(cfg, p);
        if head != BertHead::Encoder {
            v.extend(modern::prediction_head_shapes(cfg));
        }
        // Every task's output layer is `classifier` (with a bias); the masked LM's is the
        // decoder tied to the token embeddings, whose bias is a parameter of its own.
        let outputs = match head {
            BertHead::Encoder => return v,
            BertHead::MaskedLm => {
                if cfg.modern.as_ref().is_none_or(|m| m.decoder_bias) {
                    v.push(("decoder.bias".into(), vec![cfg.vocab_size]));
                }
                return v;
            }
            BertHead::SequenceClassification | BertHead::TokenClassification => cfg.num_labels(),
            BertHead::QuestionAnswering => QA_OUTPUTS,
            BertHead::MultipleChoice => 1,
        };
        lin(&mut v, "classifier", outputs, c);
        return v;
    }
    let ln_of = |v: &mut Vec<(String, Vec<usize>)>, name: &str, width: usize| {
        v.push((format!("{name}.weight"), vec![width]));
        v.push((format!("{name}.bias"), vec![width]));
    };
    let ln = |v: &mut Vec<(String, Vec<usize>)>, name: &str| ln_of(v, name, c);
    // The embeddings' own width (ELECTRA's embedding_size), projected to c when it differs.
    let e_dim = cfg.embedding_dim();
    let e = format!("{p}embeddings");
    v.push((
        format!("{e}.word_embeddings.weight"),
        vec![cfg.vocab_size, e_dim],
    ));
    v.push((
        format!("{e}.position_embeddings.weight"),
        vec![cfg.max_position_embeddings, e_dim],
    ));
    if cfg.model_type.has_token_type_table() {
        v.push((
            format!("{e}.token_type_embeddings.weight"),
            vec![cfg.type_vocab_size, e_dim],
        ));
    }
    ln_of(&mut v, &format!("{e}.LayerNorm"), e_dim);
    if cfg.projects_embeddings() {
        lin(&mut v, &format!("{p}embeddings_project"), c, e_dim);
    }
    for i in 0..cfg.num_hidden_layers {
        let [q, k, val, out, attn_ln, inter, output, out_ln] = layer_names(cfg, p, i);
        for name in [q, k, val, out] {
            lin(&mut v, &name, c, c);
        }
        ln(&mut v, &attn_ln);
        lin(&mut v, &inter, f, c);
        lin(&mut v, &output, c, f);
        ln(&mut v, &out_ln);
    }
    if cfg.has_pooler(head) {
        lin(&mut v, &format!("{p}pooler.dense"), c, c);
    }
    match (head, cfg.model_type) {
        (BertHead::Encoder, _) => {}
        (BertHead::MaskedLm, family) => {
            // None (ELECTRA): no head, and BertForMaskedLM::new says why.
            if let Some([dense, norm, bias]) = mlm_head_names(family) {
                lin(&mut v, dense, c, c);
                ln(&mut v, norm);
                v.push((bias.into(), vec![cfg.vocab_size]));
            }
        }
        (
            BertHead::SequenceClassification,
            Family::Roberta | Family::XlmRoberta | Family::Electra,
        ) => {
            // RobertaClassificationHead (ELECTRA's: GELU for the tanh): dense on <s>, then
            // out_proj.
            lin(&mut v, "classifier.dense", c, c);
            lin(&mut v, "classifier.out_proj", cfg.num_labels(), c);
        }
        (BertHead::SequenceClassification, Family::DistilBert) => {
            // pre_classifier + ReLU on [CLS], then classifier.
            lin(&mut v, "pre_classifier", c, c);
            lin(&mut v, "classifier", cfg.num_labels(), c);
        }
        (BertHead::SequenceClassification | BertHead::TokenClassification, _) => {
            lin(&mut v, "classifier", cfg.num_labels(), c);
        }
        (BertHead::QuestionAnswering, _) => {
            // Fixed at 2 whatever `id2label` says: the head is shaped by the task, not labels.
            lin(&mut v, "qa_outputs", QA_OUTPUTS, c);
        }
        // One score per choice: (1, c) whatever the labels or the number of choices.
        // ModernBERT's heads are laid out above.
        (
            BertHead::MultipleChoice,
            Family::Bert | Family::Roberta | Family::XlmRoberta | Family::ModernBert,
        ) => {
            lin(&mut v, "classifier", 1, c);
        }
        (BertHead::MultipleChoice, Family::DistilBert) => {
            lin(&mut v, "pre_classifier", c, c);
            lin(&mut v, "classifier", 1, c);
        }
        (BertHead::MultipleChoice, Family::Electra) => {
            // ElectraSequenceSummary's projection (`summary_use_proj`), then the scorer.
            lin(&mut v, "sequence_summary.summary", c, c);
            lin(&mut v, "classifier", 1, c);
        }
    }
    v
}

/// The masked-LM output layer's tensors that transformers ties to parameters (its weight to
/// the word embeddings, its bias to the head's bias), as (tied name, the parameter of `names`
/// it is): files that hold every tensor of the head, peft's `modules_to_save` adapters among
/// them, carry them as copies.
pub fn mlm_tied_copies(family: Family, names: &[String]) -> Vec<(&'static str, String)> {
    let Some(word) = names.iter().find(|n| {
        n.ends_with("embeddings.word_embeddings.weight")
            || n.ends_with("embeddings.tok_embeddings.weight")
    }) else {
        return Vec::new();
    };
    let ties: &[(&'static str, Option<&str>)] = match family {
        Family::Bert => &[
            ("cls.predictions.decoder.weight", None),
            ("cls.predictions.decoder.bias", Some("cls.predictions.bias")),
        ],
        Family::Roberta | Family::XlmRoberta => &[
            ("lm_head.decoder.weight", None),
            ("lm_head.decoder.bias", Some("lm_head.bias")),
        ],
        Family::DistilBert => &[("vocab_projector.weight", None)],
        Family::ModernBert => &[("decoder.weight", None)],
        Family::Electra => &[],
    };
    ties.iter()
        .map(|&(tied, of)| (tied, of.map_or_else(|| word.clone(), str::to_string)))
        .filter(|(_, of)| names.contains(of))
        .collect()
}

/// Whether a parameter belongs to the task head (initialised fresh when a pretrained encoder
/// is loaded into a model with a head, as transformers does) rather than the encoder.
pub fn is_head_param(name: &str) -> bool {
    [
        "cls.",
        "lm_head.",
        "vocab_transform.",
        "vocab_layer_norm.",
        "vocab_projector.",
        "pre_classifier.",
        "classifier.",
        "qa_outputs.",
        "sequence_summary.",
        // ModernBERT's prediction head and masked-LM decoder.
        "head.",
        "decoder.",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// The outputs of `qa_outputs`: a start and an end logit per position (transformers'
/// `BertForQuestionAnswering` uses `config.num_labels`, whose default is this 2).
pub const QA_OUTPUTS: usize = 2;

/// transformers' `BertPreTrainedModel._init_weights` for one parameter: N(0, 0.02) for
/// linear weights and embeddings (the padding row of the word embeddings zeroed, and in
/// RoBERTa that of the position embeddings too), zero biases, unit LayerNorm gains.
pub fn init_param(
    name: &str,
    shape: &[usize],
    cfg: &BertConfig,
    rng: &mut Rng,
    device: &Device,
) -> Result<Tensor> {
    if cfg.model_type == Family::ModernBert {
        return modern::init_param(name, shape, cfg, rng, device);
    }
    let n: usize = shape.iter().product();
    let t = if name.ends_with("LayerNorm.weight") || name.ends_with("layer_norm.weight") {
        Tensor::ones(shape, DType::F32, device)?
    } else if name.ends_with(".bias") || name == "cls.predictions.bias" {
        Tensor::zeros(shape, DType::F32, device)?
    } else {
        let mut w = rng.normal_vec(n, 0.02);
        let padded_positions =
            cfg.model_type.offsets_positions() && name.ends_with("position_embeddings.weight");
        if name.ends_with("word_embeddings.weight") || padded_positions {
            let c = shape[1];
            let pad = cfg.pad_token_id as usize;
            w[pad * c..(pad + 1) * c].iter_mut().for_each(|x| *x = 0.0);
        }
        Tensor::from_vec(w, shape, &Device::Cpu)?.to_device(device)?
    };
    Ok(t)
}

/// A freshly initialised model, drawn in [`param_shapes`] order from `rng`.
pub fn init_params(
    cfg: &BertConfig,
    head: BertHead,
    rng: &mut Rng,
    device: &Device,
    dtype: DType,
) -> Result<Params> {
    cfg.validate()?;
    // Regression has one output; a classifier needs two classes or more.
    let min_labels = match cfg.problem_type.as_deref() {
        Some("regression") => 1,
        _ => 2,
    };
    if head.is_classifier() && cfg.num_labels() < min_labels {
        return Err(Error::Config(format!(
            "{} needs at least {min_labels} label(s) (id2label)",
            cfg.architecture(head)
        )));
    }
    let mut params = Params::new();
    for (name, shape) in param_shapes(cfg, head) {
        let t = init_param(&name, &shape, cfg, rng, device)?;
        params.insert(name, t.to_dtype(dtype)?)?;
    }
    Ok(params)
}

/// `act(x @ w^T + b)` for x: (.., in), w: (out, in), b: (out); the bias (and the GELU, when
/// `gelu`) is one fused op after the matmul.
fn linear_act(x: &Tensor, (w, b): &(Tensor, Tensor), gelu: bool) -> Result<Tensor> {
    adapted_act(x, (w, Some(b)), None, gelu, &mut Mode::Eval)
}

/// [`linear_act`] with `lora`'s side path (its dropout drawn from `mode`) added before the
/// bias (and the GELU); a layer without a bias (ModernBERT's) skips the add.
pub(super) fn adapted_act(
    x: &Tensor,
    (w, b): (&Tensor, Option<&Tensor>),
    lora: Option<&LowRank>,
    gelu: bool,
    mode: &mut Mode<'_>,
) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let (n_out, n_in) = w.dims2()?;
    let x = x.reshape((x.elem_count() / n_in, n_in))?;
    let y = add_side(lora, &x, x.matmul(&w.t()?)?, mode)?; // (rows, out)
    let y = match (gelu, b) {
        (true, Some(b)) => k::bias_gelu_erf(&y, b)?,
        (false, Some(b)) => k::bias_add(&y, b)?,
        (true, None) => k::gelu_erf(&y)?,
        (false, None) => y,
    };
    *dims.last_mut().expect("rank >= 1") = n_out;
    Ok(y.reshape(dims)?)
}

/// `x @ w^T + b`, see [`linear_act`].
fn linear(x: &Tensor, wb: &(Tensor, Tensor)) -> Result<Tensor> {
    linear_act(x, wb, false)
}

/// The encoder's linear layers: weight (out, in) and bias (out), with a LoRA adapter if the
/// store has one (the heads' layers are never adapted: they train in full).
impl Dense {
    /// [`linear_act`] with the adapter's side path added before the bias (and the GELU).
    fn apply(&self, x: &Tensor, gelu: bool, mode: &mut Mode<'_>) -> Result<Tensor> {
        adapted_act(
            x,
            (&self.wb.0, Some(&self.wb.1)),
            self.lora.as_ref(),
            gelu,
            mode,
        )
    }
}

struct Layer {
    query: Dense,
    key: Dense,
    value: Dense,
    attn_out: Dense,
    attn_ln: (Tensor, Tensor),
    inter: Dense,
    out: Dense,
    out_ln: (Tensor, Tensor),
}

/// The inputs of one batch. ids: (B, T) u32; token_type_ids: (B, T) u32 (0 = first segment,
/// 1 = second; `None` = all 0; RoBERTa-family models ignore them, as their tokenizers never
/// pass them to the model); attention_mask: (B, T) of 1 (attend) / 0 (padding), any dtype
/// (`None` = no padding).
pub struct BertInput<'a> {
    pub ids: &'a Tensor,
    pub token_type_ids: Option<&'a Tensor>,
    pub attention_mask: Option<&'a Tensor>,
}

/// The encoder (`BertModel`): embeddings, post-LN layers and the optional pooler. Holds the
/// variables' tensors, so optimizer updates are seen by the next forward.
pub struct BertModel {
    cfg: BertConfig,
    word: Tensor,
    /// None for ModernBERT, whose positions are rotary.
    position: Option<Tensor>,
    /// None for DistilBERT, which has no token types.
    token_type: Option<Tensor>,
    emb_ln: (Tensor, Tensor),
    /// ELECTRA's `embeddings_project` (embedding width → hidden size), when they differ.
    emb_project: Option<Dense>,
    layers: Vec<Layer>,
    /// ModernBERT's layers (then `layers` is empty).
    modern: Option<modern::Stack>,
    pooler: Option<Dense>,
    /// NEFTune's α ([`BertModel::with_neftune`]); 0: none.
    neftune_alpha: f64,
}

fn pair(params: &Params, p: &str) -> Result<(Tensor, Tensor)> {
    Ok((
        params.get(&format!("{p}.weight"))?,
        params.get(&format!("{p}.bias"))?,
    ))
}

/// Dropout with probability `p` while training; x as it is otherwise.
pub(super) fn drop(x: Tensor, p: f64, mode: &mut Mode<'_>) -> Result<Tensor> {
    match mode {
        Mode::Train(rng) if p > 0.0 => Ok(k::dropout(&x, p, rng)?),
        _ => Ok(x),
    }
}

impl BertModel {
    /// The encoder of `head`'s parameter set (names carry `head.prefix()`).
    pub fn new(cfg: &BertConfig, params: &Params, head: BertHead) -> Result<Self> {
        cfg.validate()?;
        let p = cfg.prefix(head);
        if cfg.model_type == Family::ModernBert {
            let norm_bias = cfg.modern.as_ref().is_some_and(|m| m.norm_bias);
            return Ok(Self {
                cfg: cfg.clone(),
                word: params.get(&format!("{p}embeddings.tok_embeddings.weight"))?,
                position: None,
                token_type: None,
                emb_ln: modern::pair_or_zeros(params, &format!("{p}embeddings.norm"), norm_bias)?,
                emb_project: None,
                layers: Vec::new(),
                modern: Some(modern::Stack::load(cfg, params, p)?),
                pooler: None,
                neftune_alpha: 0.0,
            });
        }
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let [q, k, v, attn_out, attn_ln, inter, out, out_ln] = layer_names(cfg, p, i);
                Ok(Layer {
                    query: Dense::load(params, &q)?,
                    key: Dense::load(params, &k)?,
                    value: Dense::load(params, &v)?,
                    attn_out: Dense::load(params, &attn_out)?,
                    attn_ln: pair(params, &attn_ln)?,
                    inter: Dense::load(params, &inter)?,
                    out: Dense::load(params, &out)?,
                    out_ln: pair(params, &out_ln)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let token_type = match cfg.model_type.has_token_type_table() {
            true => Some(params.get(&format!("{p}embeddings.token_type_embeddings.weight"))?),
            false => None,
        };
        Ok(Self {
            cfg: cfg.clone(),
            word: params.get(&format!("{p}embeddings.word_embeddings.weight"))?,
            position: Some(params.get(&format!("{p}embeddings.position_embeddings.weight"))?),
            token_type,
            emb_ln: pair(params, &format!("{p}embeddings.LayerNorm"))?,
            emb_project: match cfg.projects_embeddings() {
                true => Some(Dense::load(params, &format!("{p}embeddings_project"))?),
                false => None,
            },
            layers,
            modern: None,
            pooler: if cfg.has_pooler(head) {
                Some(Dense::load(params, &format!("{p}pooler.dense"))?)
            } else {
                None
            },
            neftune_alpha: 0.0,
        })
    }

    /// The same model adding NEFTune's noise of strength `alpha` to the word embeddings while
    /// training ([`crate::neftune`]; before the position and token-type embeddings are added,
    /// as transformers' hook on `word_embeddings`).
    pub fn with_neftune(mut self, alpha: f64) -> Self {
        self.neftune_alpha = alpha;
        self
    }

    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// The word-embedding table (V, C), which the MLM decoder is tied to.
    pub fn word_embeddings(&self) -> &Tensor {
        &self.word
    }

    /// Last hidden state (B, T, C), in the parameters' dtype.
    pub fn forward(&self, input: &BertInput<'_>, mode: &mut Mode<'_>) -> Result<Tensor> {
        let mut x = self.embed_input(input, mode)?;
        let mask = self.key_mask(input)?;
        for l in 0..self.n_layers() {
            x = self.layer(l, x, mask.as_ref(), mode)?;
        }
        Ok(x)
    }

    // The pieces of `forward`, in its order, for callers that run them one at a time
    // (activation checkpointing runs a layer again in the backward pass).

    /// The number of encoder layers.
    pub fn n_layers(&self) -> usize {
        match &self.modern {
            Some(stack) => stack.n_layers(),
            None => self.layers.len(),
        }
    }

    /// The first layer's input: word + position + token-type embeddings, LayerNorm, dropout →
    /// (B, T, C).
    pub fn embed_input(&self, input: &BertInput<'_>, mode: &mut Mode<'_>) -> Result<Tensor> {
        let cfg = &self.cfg;
        let ids = input.ids;
        let (b, t) = ids.dims2()?;
        if t > cfg.max_tokens() {
            return Err(Error::Config(format!(
                "sequence length {t} exceeds the model's limit of {} tokens \
                 (max_position_embeddings {})",
                cfg.max_tokens(),
                cfg.max_position_embeddings
            )));
        }
        let c = cfg.embedding_dim(); // ELECTRA's embeddings are narrower than the layers
                                     // The pad token's row gets no gradient from the lookup, as transformers'
                                     // `nn.Embedding(padding_idx=pad_token_id)`.
        let tok = k::embedding(&self.word, ids, Some(cfg.pad_token_id))?; // (B, T, C)
        let tok = crate::neftune(tok, self.neftune_alpha, mode)?;
        let Some(position) = &self.position else {
            // ModernBERT: the token embeddings, LayerNorm and dropout; positions are rotary.
            let x = k::layer_norm(&tok, &self.emb_ln.0, &self.emb_ln.1, cfg.layer_norm_eps)?;
            let p = cfg.modern.as_ref().map_or(0.0, |m| m.embedding_dropout);
            return drop(x, p, mode);
        };
        let x = if cfg.model_type.offsets_positions() {
            // RoBERTa's position ids depend on the ids; its position table has
            // padding_idx = pad_token_id too.
            let pos = self.position_ids(ids)?; // (B, T)
            (tok + k::embedding(position, &pos, Some(cfg.pad_token_id))?)?
        } else {
            // pos is a bias over the B rows of (B, T·C): its gradient is their sum.
            let pos = position.narrow(0, 0, t)?; // (T, C)
            k::bias_add(&tok.reshape((b, t * c))?, &pos.reshape(t * c)?)?
        };
        let x = x.reshape((b, t, c))?;
        // RoBERTa's tokenizers give the model no token_type_ids (transformers'
        // `model_input_names`), so it sees type 0 everywhere whatever the pair encoding says;
        // DistilBERT has no token types at all.
        let types = input
            .token_type_ids
            .filter(|_| cfg.model_type.uses_token_types());
        let x = match (&self.token_type, types) {
            (Some(table), Some(tt)) => x.add(&k::embedding(table, tt, None)?)?,
            // All first-segment: row 0 of the table is a bias over the B·T rows.
            (Some(table), None) => k::bias_add(&x, &table.get(0)?)?,
            (None, _) => x,
        };
        let x = k::layer_norm(&x, &self.emb_ln.0, &self.emb_ln.1, cfg.layer_norm_eps)?;
        let x = drop(x, cfg.hidden_dropout_prob, mode)?;
        match &self.emb_project {
            Some(d) => d.apply(&x, false, mode), // (B, T, E) → (B, T, C)
            None => Ok(x),
        }
    }

    /// RoBERTa's position ids (transformers' `create_position_ids_from_input_ids`): the n-th
    /// non-pad token of a row gets `pad_token_id + n` (n from 1), a pad token `pad_token_id`.
    /// ids: (B, T) u32 → (B, T) u32 on the same device.
    pub fn position_ids(&self, ids: &Tensor) -> Result<Tensor> {
        let pad = self.cfg.pad_token_id;
        // On the ids' device (no copy to the host and back on a GPU): a running count of the
        // non-pad tokens, in f32 (exact: counts stay far below 2^24), kept at non-pad tokens.
        let real = ids.ne(pad)?.to_dtype(DType::F32)?; // (B, T) 1 = token, 0 = pad
        let count = real.cumsum(1)?;
        let pos = ((count * &real)? + pad as f64)?;
        Ok(pos.to_dtype(DType::U32)?)
    }

    /// The additive key mask (B, 1, 1, T) every layer takes: 0 where attended, f32::MIN at
    /// padding — the value transformers adds (`torch.finfo(float32).min`), so padded keys get
    /// exactly zero weight. `None` without an attention mask.
    pub fn key_mask(&self, input: &BertInput<'_>) -> Result<Option<Tensor>> {
        let (b, t) = input.ids.dims2()?;
        match input.attention_mask {
            Some(m) => {
                let m = m.to_dtype(DType::F32)?.to_device(input.ids.device())?;
                Ok(Some(((1.0 - m)? * f32::MIN as f64)?.reshape((b, 1, 1, t))?))
            }
            None => Ok(None),
        }
    }

    /// Layer `l` on x (B, T, C), with `mask` from [`BertModel::key_mask`] → (B, T, C).
    pub fn layer(
        &self,
        l: usize,
        x: Tensor,
        mask: Option<&Tensor>,
        mode: &mut Mode<'_>,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        if let Some(stack) = &self.modern {
            return stack.layer(cfg, l, x, mask, mode);
        }
        let lyr = self.layers.get(l).ok_or_else(|| {
            Error::Config(format!("layer {l} of a model of {}", self.layers.len()))
        })?;
        let (b, t, c) = x.dims3()?;
        let (h, hd) = (cfg.num_attention_heads, cfg.head_dim());
        let scale = 1.0 / (hd as f64).sqrt();
        let eps = cfg.layer_norm_eps;
        let heads = |y: Tensor| -> Result<Tensor> {
            Ok(y.reshape((b, t, h, hd))?.transpose(1, 2)?.contiguous()?) // (B, H, T, hd)
        };
        let q = heads(lyr.query.apply(&x, false, mode)?)?;
        let kk = heads(lyr.key.apply(&x, false, mode)?)?;
        let v = heads(lyr.value.apply(&x, false, mode)?)?;
        let att = q.matmul(&kk.t()?)?; // (B, H, T, T)
        let att = k::masked_softmax(&att, scale, mask)?;
        let att = drop(att, cfg.attention_probs_dropout_prob, mode)?;
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, c))?;
        // DistilBERT has no dropout after the attention's output projection.
        let p_out = match cfg.model_type {
            Family::DistilBert => 0.0,
            _ => cfg.hidden_dropout_prob,
        };
        let y = lyr.attn_out.apply(&y, false, mode)?;
        let y = drop(y, p_out, mode)?;
        // Post-LN (Devlin et al. 2019 / Vaswani et al. 2017): normalise after the residual.
        let x = k::layer_norm(&(x + y)?, &lyr.attn_ln.0, &lyr.attn_ln.1, eps)?;
        let m = lyr.inter.apply(&x, true, mode)?; // (B, T, F)
        let m = lyr.out.apply(&m, false, mode)?;
        let m = drop(m, cfg.hidden_dropout_prob, mode)?;
        Ok(k::layer_norm(&(x + m)?, &lyr.out_ln.0, &lyr.out_ln.1, eps)?)
    }

    /// The pooler: tanh(dense(hidden[:, 0])), the [CLS] position. hidden: (B, T, C) → (B, C).
    pub fn pool(&self, hidden: &Tensor, mode: &mut Mode<'_>) -> Result<Tensor> {
        let p = self.pooler.as_ref().ok_or_else(|| {
            Error::Config("this model has no pooler (transformers builds it without one)".into())
        })?;
        let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?; // (B, C)
        Ok(p.apply(&cls, false, mode)?.tanh()?)
    }
}

/// `BertForMaskedLM`: encoder → dense → gelu → LayerNorm → decoder tied to the word
/// embeddings, plus `cls.predictions.bias` (`RobertaForMaskedLM`: `lm_head.*`).
pub struct BertForMaskedLM {
    pub bert: BertModel,
    transform: (Tensor, Tensor),
    transform_ln: (Tensor, Tensor),
    bias: Tensor,
}

impl BertForMaskedLM {
    pub fn new(cfg: &BertConfig, params: &Params) -> Result<Self> {
        let [dense, ln, bias] = mlm_head_names(cfg.model_type).ok_or_else(|| {
            Error::Config(format!(
                "{} has no masked-LM head here (ELECTRA's generator is not implemented)",
                cfg.model_type.model_type()
            ))
        })?;
        let bert = BertModel::new(cfg, params, BertHead::MaskedLm)?;
        let ((transform, transform_ln), bias) = match &cfg.modern {
            // ModernBERT's decoder may have no bias (`decoder_bias`): zeros, a constant.
            Some(m) if !m.decoder_bias => (
                modern::prediction_head(cfg, params)?,
                Tensor::zeros(cfg.vocab_size, bert.word.dtype(), bert.word.device())?,
            ),
            Some(_) => (modern::prediction_head(cfg, params)?, params.get(bias)?),
            None => ((pair(params, dense)?, pair(params, ln)?), params.get(bias)?),
        };
        Ok(Self {
            bert,
            transform,
            transform_ln,
            bias,
        })
    }

    /// Logits (B, T, V).
    pub fn forward(&self, input: &BertInput<'_>, mut mode: Mode<'_>) -> Result<Tensor> {
        let x = self.bert.forward(input, &mut mode)?;
        self.head_on(&x)
    }

    /// The MLM head on the encoder's last hidden state (B, T, C) → logits (B, T, V).
    pub fn head_on(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let cfg = self.bert.config();
        let x = linear_act(x, &self.transform, true)?;
        let x = k::layer_norm(
            &x,
            &self.transform_ln.0,
            &self.transform_ln.1,
            cfg.layer_norm_eps,
        )?;
        let logits = x
            .reshape((b * t, c))?
            .matmul(&self.bert.word_embeddings().t()?)?;
        let logits = k::bias_add(&logits, &self.bias)?;
        Ok(logits.reshape((b, t, cfg.vocab_size))?)
    }

    /// Summed cross-entropy over the masked positions. logits: (B, T, V); targets: (B·T) u32
    /// (anything at unmasked positions); weights: (B·T) f32, 1 at masked positions, 0 elsewhere
    /// (transformers' label -100). Divide by the number of masked tokens for the mean.
    pub fn loss_sum(logits: &Tensor, targets: &Tensor, weights: &Tensor) -> Result<Tensor> {
        let (b, t, v) = logits.dims3()?;
        Ok(k::cross_entropy_sum(
            &logits.reshape((b * t, v))?,
            targets,
            Some(weights),
        )?)
    }
}

/// `BertForSequenceClassification`: encoder → pooler → dropout → `classifier`; in RoBERTa
/// (`RobertaForSequenceClassification`) encoder → `<s>` → dropout → `classifier.dense` → tanh
/// → dropout → `classifier.out_proj`; in DistilBERT encoder → `[CLS]` → `pre_classifier` →
/// ReLU → dropout (`seq_classif_dropout`) → `classifier`.
pub struct BertForSequenceClassification {
    pub bert: BertModel,
    head: SequenceHead,
    dropout: f64,
}

enum SequenceHead {
    /// BERT: one linear layer on the pooler's output.
    Pooled { classifier: (Tensor, Tensor) },
    /// RoBERTa's `RobertaClassificationHead`, on the first token's hidden state; ELECTRA's
    /// `ElectraClassificationHead` is the same with a GELU (`gelu`) where RoBERTa has a tanh.
    Roberta {
        dense: (Tensor, Tensor),
        out_proj: (Tensor, Tensor),
        gelu: bool,
    },
    /// A dense layer on the first token's hidden state, its activation, dropout, then
    /// `classifier`: DistilBERT's `pre_classifier` → ReLU (also its multiple-choice head), and
    /// ELECTRA's multiple-choice `ElectraSequenceSummary` → GELU (`gelu`).
    Projected {
        dense: (Tensor, Tensor),
        classifier: (Tensor, Tensor),
        gelu: bool,
    },
    /// ModernBERT: the pooled state (`classifier_pooling`) → `ModernBertPredictionHead`
    /// (dense → GELU → LayerNorm) → dropout → `classifier`.
    Modern {
        head: PredictionHead,
        classifier: (Tensor, Tensor),
        pooling: Pooling,
    },
}

/// ModernBERT's `ModernBertPredictionHead`: dense → GELU → LayerNorm (eps `norm_eps`), before
/// every head's output layer.
struct PredictionHead {
    dense: (Tensor, Tensor),
    norm: (Tensor, Tensor),
    eps: f64,
}

impl PredictionHead {
    fn load(cfg: &BertConfig, params: &Params) -> Result<Self> {
        let (dense, norm) = modern::prediction_head(cfg, params)?;
        Ok(Self {
            dense,
            norm,
            eps: cfg.layer_norm_eps,
        })
    }

    /// x (.., C) → (.., C).
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let h = linear_act(x, &self.dense, true)?;
        Ok(k::layer_norm(&h, &self.norm.0, &self.norm.1, self.eps)?)
    }
}

impl SequenceHead {
    /// The head on the last hidden state (B, T, C) of `bert` → (B, outputs), with `dropout`;
    /// `mask` (B, T) is the batch's attention mask, which ModernBERT's mean pooling reads.
    fn apply(
        &self,
        bert: &BertModel,
        x: &Tensor,
        mask: Option<&Tensor>,
        dropout: f64,
        mode: &mut Mode<'_>,
    ) -> Result<Tensor> {
        match self {
            SequenceHead::Modern {
                head,
                classifier,
                pooling,
            } => {
                let pooled = head.apply(&modern::pool(x, *pooling, mask)?)?;
                linear(&drop(pooled, dropout, mode)?, classifier)
            }
            SequenceHead::Pooled { classifier } => {
                let pooled = drop(bert.pool(x, mode)?, dropout, mode)?;
                linear(&pooled, classifier)
            }
            SequenceHead::Roberta {
                dense,
                out_proj,
                gelu,
            } => {
                let first = x.narrow(1, 0, 1)?.squeeze(1)?; // (B, C)
                let h = drop(first, dropout, mode)?;
                let h = match gelu {
                    true => linear_act(&h, dense, true)?,
                    false => linear(&h, dense)?.tanh()?,
                };
                let h = drop(h, dropout, mode)?;
                linear(&h, out_proj)
            }
            SequenceHead::Projected {
                dense,
                classifier,
                gelu,
            } => {
                let first = x.narrow(1, 0, 1)?.squeeze(1)?; // (B, C)
                let h = match gelu {
                    true => linear_act(&first, dense, true)?,
                    false => linear(&first, dense)?.relu()?,
                };
                linear(&drop(h, dropout, mode)?, classifier)
            }
        }
    }
}

impl BertForSequenceClassification {
    pub fn new(cfg: &BertConfig, params: &Params) -> Result<Self> {
        let head = match cfg.model_type {
            Family::Bert => SequenceHead::Pooled {
                classifier: pair(params, "classifier")?,
            },
            Family::Roberta | Family::XlmRoberta => SequenceHead::Roberta {
                dense: pair(params, "classifier.dense")?,
                out_proj: pair(params, "classifier.out_proj")?,
                gelu: false,
            },
            Family::Electra => SequenceHead::Roberta {
                dense: pair(params, "classifier.dense")?,
                out_proj: pair(params, "classifier.out_proj")?,
                gelu: true,
            },
            Family::DistilBert => SequenceHead::Projected {
                dense: pair(params, "pre_classifier")?,
                classifier: pair(params, "classifier")?,
                gelu: false,
            },
            Family::ModernBert => modern_head(cfg, params)?,
        };
        Ok(Self {
            bert: BertModel::new(cfg, params, BertHead::SequenceClassification)?,
            head,
            dropout: cfg.classifier_dropout.unwrap_or(cfg.hidden_dropout_prob),
        })
    }

    /// Logits (B, num_labels).
    pub fn forward(&self, input: &BertInput<'_>, mut mode: Mode<'_>) -> Result<Tensor> {
        let x = self.bert.forward(input, &mut mode)?;
        self.head_on(&x, input.attention_mask, &mut mode)
    }

    /// The head on the last hidden state (B, T, C) → (B, num_labels); `mask` is the input's
    /// attention mask (B, T).
    pub fn head_on(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        mode: &mut Mode<'_>,
    ) -> Result<Tensor> {
        self.head.apply(&self.bert, x, mask, self.dropout, mode)
    }
}

/// `BertForTokenClassification`: encoder → dropout → `classifier` at every position.
pub struct BertForTokenClassification {
    pub bert: BertModel,
    /// ModernBERT's prediction head before the dropout.
    head: Option<PredictionHead>,
    classifier: (Tensor, Tensor),
    dropout: f64,
}

/// ModernBERT's pooled head (sequence classification, multiple choice).
fn modern_head(cfg: &BertConfig, params: &Params) -> Result<SequenceHead> {
    Ok(SequenceHead::Modern {
        head: PredictionHead::load(cfg, params)?,
        classifier: pair(params, "classifier")?,
        pooling: cfg
            .modern
            .as_ref()
            .map_or(Pooling::Cls, |m| m.classifier_pooling),
    })
}

/// ModernBERT's prediction head, for the per-token heads; `None` in the other families.
fn token_head(cfg: &BertConfig, params: &Params) -> Result<Option<PredictionHead>> {
    match cfg.model_type {
        Family::ModernBert => Ok(Some(PredictionHead::load(cfg, params)?)),
        _ => Ok(None),
    }
}

impl BertForTokenClassification {
    pub fn new(cfg: &BertConfig, params: &Params) -> Result<Self> {
        // DistilBERT's token classifier takes its `dropout` (our hidden_dropout_prob); its
        // seq_classif_dropout (our classifier_dropout) is the sequence classifier's alone.
        let dropout = match cfg.model_type {
            Family::DistilBert => cfg.hidden_dropout_prob,
            _ => cfg.classifier_dropout.unwrap_or(cfg.hidden_dropout_prob),
        };
        Ok(Self {
            bert: BertModel::new(cfg, params, BertHead::TokenClassification)?,
            head: token_head(cfg, params)?,
            classifier: pair(params, "classifier")?,
            dropout,
        })
    }

    /// Logits (B, T, num_labels).
    pub fn forward(&self, input: &BertInput<'_>, mut mode: Mode<'_>) -> Result<Tensor> {
        let x = self.bert.forward(input, &mut mode)?; // (B, T, C)
        self.head_on(&x, &mut mode)
    }

    /// Dropout and classifier on the last hidden state (B, T, C) → (B, T, num_labels).
    pub fn head_on(&self, x: &Tensor, mode: &mut Mode<'_>) -> Result<Tensor> {
        let x = match &self.head {
            Some(h) => h.apply(x)?,
            None => x.clone(),
        };
        let x = drop(x, self.dropout, mode)?;
        linear(&x, &self.classifier)
    }
}

/// `BertForQuestionAnswering`: encoder → `qa_outputs` at every position, no dropout between
/// (as transformers; DistilBERT's has one, `qa_dropout`). Output channel 0 is the start logit,
/// 1 the end logit.
pub struct BertForQuestionAnswering {
    pub bert: BertModel,
    /// ModernBERT's prediction head before the dropout.
    head: Option<PredictionHead>,
    qa_outputs: (Tensor, Tensor),
    dropout: f64,
}

impl BertForQuestionAnswering {
    pub fn new(cfg: &BertConfig, params: &Params) -> Result<Self> {
        // ModernBERT's output layer is its `classifier`, after its prediction head and
        // `classifier_dropout`.
        let (outputs, dropout) = match cfg.model_type {
            Family::ModernBert => ("classifier", cfg.classifier_dropout.unwrap_or(0.0)),
            _ => ("qa_outputs", cfg.qa_dropout.unwrap_or(0.0)),
        };
        Ok(Self {
            bert: BertModel::new(cfg, params, BertHead::QuestionAnswering)?,
            head: token_head(cfg, params)?,
            qa_outputs: pair(params, outputs)?,
            dropout,
        })
    }

    /// Logits (B, T, 2); [`BertForQuestionAnswering::start_end`] splits them.
    pub fn forward(&self, input: &BertInput<'_>, mut mode: Mode<'_>) -> Result<Tensor> {
        let x = self.bert.forward(input, &mut mode)?; // (B, T, C)
        self.head_on(&x, &mut mode)
    }

    /// (Dropout and) `qa_outputs` on the last hidden state (B, T, C) → (B, T, 2).
    pub fn head_on(&self, x: &Tensor, mode: &mut Mode<'_>) -> Result<Tensor> {
        let x = match &self.head {
            Some(h) => h.apply(x)?,
            None => x.clone(),
        };
        linear(&drop(x, self.dropout, mode)?, &self.qa_outputs)
    }

    /// The start and end logits, each (B, T) and contiguous, of logits (B, T, 2).
    pub fn start_end(logits: &Tensor) -> Result<(Tensor, Tensor)> {
        let (_, _, n) = logits.dims3()?;
        if n != QA_OUTPUTS {
            return Err(Error::Config(format!(
                "question-answering logits have {n} channels, expected {QA_OUTPUTS}"
            )));
        }
        let channel =
            |i| -> Result<Tensor> { Ok(logits.narrow(2, i, 1)?.squeeze(2)?.contiguous()?) };
        Ok((channel(0)?, channel(1)?))
    }

    /// transformers' loss of `BertForQuestionAnswering`: each position is clamped to [0, T],
    /// T itself (an answer cut off by truncation) is ignored, and the result is
    /// (mean cross-entropy of the start logits + that of the end logits) / 2, each mean over
    /// its own non-ignored rows. logits: (B, T, 2); positions: B each → a scalar (f32).
    /// An error when every start or every end is ignored (torch would give NaN).
    pub fn loss(logits: &Tensor, start_positions: &[i64], end_positions: &[i64]) -> Result<Tensor> {
        let (b, t, _) = logits.dims3()?;
        let (start, end) = Self::start_end(logits)?;
        let dev = logits.device();
        let half = |x: &Tensor, pos: &[i64], what: &str| -> Result<Tensor> {
            if pos.len() != b {
                return Err(Error::Config(format!(
                    "{} {what} positions for a batch of {b}",
                    pos.len()
                )));
            }
            let clamped: Vec<usize> = pos.iter().map(|&p| p.clamp(0, t as i64) as usize).collect();
            // Ignored rows get target 0 and weight 0.
            let targets: Vec<u32> = clamped
                .iter()
                .map(|&p| if p == t { 0 } else { p as u32 })
                .collect();
            let weights: Vec<f32> = clamped.iter().map(|&p| f32::from(p != t)).collect();
            let n = weights.iter().sum::<f32>();
            if n == 0.0 {
                return Err(Error::Config(format!(
                    "every {what} position is outside the {t} tokens: the loss is undefined"
                )));
            }
            let sum = k::cross_entropy_sum(
                x,
                &Tensor::from_vec(targets, b, dev)?,
                Some(&Tensor::from_vec(weights, b, dev)?),
            )?;
            Ok((sum.to_dtype(DType::F32)? / n as f64)?)
        };
        let total = (half(&start, start_positions, "start")? + half(&end, end_positions, "end")?)?;
        Ok((total / 2.0)?)
    }
}

/// `BertForMultipleChoice`: each choice of an example is one sequence, scored by one logit;
/// an example's C scores are its logits over the choices. Per family (transformers'):
/// BERT and RoBERTa: encoder → pooler → dropout → `classifier` (BERT's dropout is
/// `classifier_dropout`, else `hidden_dropout_prob`; RoBERTa's always `hidden_dropout_prob`);
/// DistilBERT: `[CLS]` → `pre_classifier` → ReLU → dropout (`seq_classif_dropout`) →
/// `classifier`; ELECTRA: `ElectraSequenceSummary` with its config's defaults (the first
/// token → `sequence_summary.summary` → GELU → dropout `summary_last_dropout`) →
/// `classifier`.
pub struct BertForMultipleChoice {
    pub bert: BertModel,
    /// Pooled (BERT, RoBERTa) or projected (DistilBERT, ELECTRA), with one output.
    head: SequenceHead,
    dropout: f64,
}

impl BertForMultipleChoice {
    pub fn new(cfg: &BertConfig, params: &Params) -> Result<Self> {
        let (head, dropout) = match cfg.model_type {
            Family::Bert => (
                SequenceHead::Pooled {
                    classifier: pair(params, "classifier")?,
                },
                cfg.classifier_dropout.unwrap_or(cfg.hidden_dropout_prob),
            ),
            Family::Roberta | Family::XlmRoberta => (
                SequenceHead::Pooled {
                    classifier: pair(params, "classifier")?,
                },
                cfg.hidden_dropout_prob,
            ),
            Family::DistilBert => (
                SequenceHead::Projected {
                    dense: pair(params, "pre_classifier")?,
                    classifier: pair(params, "classifier")?,
                    gelu: false,
                },
                cfg.classifier_dropout.unwrap_or(cfg.hidden_dropout_prob),
            ),
            Family::Electra => (
                SequenceHead::Projected {
                    dense: pair(params, "sequence_summary.summary")?,
                    classifier: pair(params, "classifier")?,
                    gelu: true,
                },
                cfg.summary_last_dropout.unwrap_or(0.0),
            ),
            // Its "cls" pooling reads each row's first attended token: the first token, as
            // our rows are padded on the right.
            Family::ModernBert => (
                modern_head(cfg, params)?,
                cfg.classifier_dropout.unwrap_or(0.0),
            ),
        };
        Ok(Self {
            bert: BertModel::new(cfg, params, BertHead::MultipleChoice)?,
            head,
            dropout,
        })
    }

    /// One score per row: input (B·C, T) → (B·C, 1); [`BertForMultipleChoice::by_example`]
    /// lays them out as (B, C).
    pub fn forward(&self, input: &BertInput<'_>, mut mode: Mode<'_>) -> Result<Tensor> {
        let x = self.bert.forward(input, &mut mode)?;
        self.head_on(&x, input.attention_mask, &mut mode)
    }

    /// The head on the last hidden state (B·C, T, H) → (B·C, 1); `mask` is the input's
    /// attention mask (B·C, T).
    pub fn head_on(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        mode: &mut Mode<'_>,
    ) -> Result<Tensor> {
        self.head.apply(&self.bert, x, mask, self.dropout, mode)
    }

    /// The scores (B·C, 1) of B examples as their logits over the choices (B, C).
    pub fn by_example(scores: &Tensor, examples: usize) -> Result<Tensor> {
        let rows = scores.elem_count();
        if examples == 0 || !rows.is_multiple_of(examples) {
            return Err(Error::Config(format!(
                "{rows} choice scores do not split evenly over {examples} examples"
            )));
        }
        Ok(scores.reshape((examples, rows / examples))?)
    }
}

/// A BERT fine-tuning model of any kind (per-sequence or per-token classifier, question answering
/// or multiple choice), for code that trains, evaluates or serves them all.
pub enum BertClassifier {
    Sequence(BertForSequenceClassification),
    Token(BertForTokenClassification),
    QuestionAnswering(BertForQuestionAnswering),
    MultipleChoice(BertForMultipleChoice),
}

impl BertClassifier {
    /// The same model with NEFTune's noise on its encoder's word embeddings
    /// ([`BertModel::with_neftune`]).
    pub fn with_neftune(mut self, alpha: f64) -> Self {
        let bert = match &mut self {
            Self::Sequence(m) => &mut m.bert,
            Self::Token(m) => &mut m.bert,
            Self::QuestionAnswering(m) => &mut m.bert,
            Self::MultipleChoice(m) => &mut m.bert,
        };
        bert.neftune_alpha = alpha;
        self
    }

    /// The model of `head`, which must be [`BertHead::SequenceClassification`],
    /// [`BertHead::TokenClassification`], [`BertHead::QuestionAnswering`] or
    /// [`BertHead::MultipleChoice`].
    pub fn new(cfg: &BertConfig, params: &Params, head: BertHead) -> Result<Self> {
        match head {
            BertHead::SequenceClassification => Ok(Self::Sequence(
                BertForSequenceClassification::new(cfg, params)?,
            )),
            BertHead::TokenClassification => {
                Ok(Self::Token(BertForTokenClassification::new(cfg, params)?))
            }
            BertHead::QuestionAnswering => Ok(Self::QuestionAnswering(
                BertForQuestionAnswering::new(cfg, params)?,
            )),
            BertHead::MultipleChoice => Ok(Self::MultipleChoice(BertForMultipleChoice::new(
                cfg, params,
            )?)),
            other => Err(Error::Config(format!(
                "{} is not a fine-tuning head",
                other.architecture()
            ))),
        }
    }

    pub fn head(&self) -> BertHead {
        match self {
            Self::Sequence(_) => BertHead::SequenceClassification,
            Self::Token(_) => BertHead::TokenClassification,
            Self::QuestionAnswering(_) => BertHead::QuestionAnswering,
            Self::MultipleChoice(_) => BertHead::MultipleChoice,
        }
    }

    /// Logits: (B, num_labels) per sequence, (B, T, num_labels) per token, (B, T, 2) for
    /// question answering, (B·C, 1) for multiple choice (one score per choice row).
    pub fn forward(&self, input: &BertInput<'_>, mode: Mode<'_>) -> Result<Tensor> {
        match self {
            Self::Sequence(m) => m.forward(input, mode),
            Self::Token(m) => m.forward(input, mode),
            Self::QuestionAnswering(m) => m.forward(input, mode),
            Self::MultipleChoice(m) => m.forward(input, mode),
        }
    }

    /// The encoder.
    pub fn bert(&self) -> &BertModel {
        match self {
            Self::Sequence(m) => &m.bert,
            Self::Token(m) => &m.bert,
            Self::QuestionAnswering(m) => &m.bert,
            Self::MultipleChoice(m) => &m.bert,
        }
    }

    /// The head on the encoder's last hidden state (B, T, C): what [`BertClassifier::forward`]
    /// does after the encoder. `mask` is the input's attention mask (B, T).
    pub fn head_on(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        mode: &mut Mode<'_>,
    ) -> Result<Tensor> {
        match self {
            Self::Sequence(m) => m.head_on(x, mask, mode),
            Self::Token(m) => m.head_on(x, mode),
            Self::QuestionAnswering(m) => m.head_on(x, mode),
            Self::MultipleChoice(m) => m.head_on(x, mask, mode),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::max_diff;

    /// Asserts every parameter got a finite, non-zero gradient (`what` names the case).
    fn assert_every_parameter_trained(
        params: &Params,
        grads: &candle_core::backprop::GradStore,
        what: &str,
    ) {
        for (name, var) in params.iter() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{what} {name}: no gradient"));
            let s = g
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(s.is_finite() && s > 0.0, "{what} {name}: gradient sum {s}");
        }
    }

    /// The masked LM's summed loss at four of the ten positions of the tests' (2, 5) batches.
    fn masked_lm_loss(m: &BertForMaskedLM, input: &BertInput<'_>, rng: &mut Rng) -> Tensor {
        let logits = m.forward(input, Mode::Train(rng)).unwrap();
        let t = Tensor::new(&[5u32, 6, 7, 8, 9, 10, 11, 12, 13, 14], &Device::Cpu).unwrap();
        let w = Tensor::new(&[0f32, 1., 0., 1., 0., 0., 1., 0., 0., 1.], &Device::Cpu).unwrap();
        BertForMaskedLM::loss_sum(&logits, &t, &w).unwrap()
    }

    /// An encoder's parameters, f32 on the CPU, from seed 1.
    fn encoder_params(cfg: &BertConfig) -> Params {
        init_params(
            cfg,
            BertHead::Encoder,
            &mut Rng::new(1),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap()
    }

    fn tiny(labels: usize) -> BertConfig {
        let names: Vec<String> = (0..labels).map(|i| format!("c{i}")).collect();
        BertConfig::new(50, 16, 2, 2, 24, 16).with_labels(&names)
    }

    /// Every parameter of both heads gets a finite, non-zero gradient, with dropout on: no op
    /// on the path drops gradients (candle's fused norms would).
    #[test]
    fn every_parameter_gets_a_gradient() {
        // The pad id 0 once at a padded position and once attended (row 1), where only
        // `padding_idx` keeps its row's gradient at zero.
        let ids = Tensor::new(&[[2u32, 7, 9, 3, 0], [2, 11, 0, 13, 3]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 0], [1, 1, 1, 1, 1]], &Device::Cpu).unwrap();
        let tt = Tensor::new(&[[0u32, 0, 0, 0, 0], [0, 0, 1, 1, 1]], &Device::Cpu).unwrap();
        let input = BertInput {
            ids: &ids,
            token_type_ids: Some(&tt),
            attention_mask: Some(&mask),
        };
        for head in [
            BertHead::MaskedLm,
            BertHead::SequenceClassification,
            BertHead::TokenClassification,
            BertHead::QuestionAnswering,
        ] {
            let cfg = tiny(3);
            let params =
                init_params(&cfg, head, &mut Rng::new(1), &Device::Cpu, DType::F32).unwrap();
            let mut rng = Rng::new(2);
            let loss = match head {
                BertHead::MaskedLm => {
                    let m = BertForMaskedLM::new(&cfg, &params).unwrap();
                    masked_lm_loss(&m, &input, &mut rng)
                }
                BertHead::TokenClassification => {
                    let m = BertClassifier::new(&cfg, &params, head).unwrap();
                    let logits = m.forward(&input, Mode::Train(&mut rng)).unwrap();
                    assert_eq!(logits.dims(), &[2, 5, 3]);
                    // Labels at some positions only (transformers' -100 elsewhere).
                    let y = Tensor::new(&[0u32, 1, 2, 0, 0, 0, 2, 0, 1, 0], &Device::Cpu).unwrap();
                    let w = Tensor::new(&[0f32, 1., 1., 0., 0., 0., 1., 0., 1., 0.], &Device::Cpu)
                        .unwrap();
                    k::cross_entropy_sum(&logits.reshape((10, 3)).unwrap(), &y, Some(&w)).unwrap()
                }
                BertHead::QuestionAnswering => {
                    // 3 labels in the config: the QA head has 2 outputs all the same.
                    let m = BertClassifier::new(&cfg, &params, head).unwrap();
                    let logits = m.forward(&input, Mode::Train(&mut rng)).unwrap();
                    assert_eq!(logits.dims(), &[2, 5, 2]);
                    BertForQuestionAnswering::loss(&logits, &[1, 2], &[3, 4]).unwrap()
                }
                _ => {
                    let m = BertForSequenceClassification::new(&cfg, &params).unwrap();
                    let logits = m.forward(&input, Mode::Train(&mut rng)).unwrap();
                    let y = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
                    k::cross_entropy_sum(&logits, &y, None).unwrap()
                }
            };
            let grads = loss.backward().unwrap();
            assert_every_parameter_trained(&params, &grads, &format!("{head:?}"));
            // The pad token gets no gradient from its lookups, as with transformers'
            // `padding_idx`; under the MLM head the tied decoder gives it one.
            if head != BertHead::MaskedLm {
                let w = params
                    .get("bert.embeddings.word_embeddings.weight")
                    .unwrap();
                let g = grads.get(&w).unwrap();
                let pad = g.get(0).unwrap().abs().unwrap().sum_all().unwrap();
                assert_eq!(
                    pad.to_scalar::<f32>().unwrap(),
                    0.0,
                    "the pad row's gradient"
                );
            }
        }
    }

    /// RoBERTa: positions from pad_token_id + 1 over non-pad tokens, token types ignored, its
    /// names and heads, and every parameter trained (the pad rows of both the word and the
    /// position table excepted, as transformers' padding_idx).
    #[test]
    fn roberta_positions_names_and_gradients() {
        let mut cfg = tiny(3);
        cfg.model_type = Family::Roberta;
        cfg.pad_token_id = 1;
        cfg.type_vocab_size = 1;
        assert_eq!(cfg.max_tokens(), 14, "16 positions less pad_token_id + 1");
        // A pad id inside row 1 (attended) and at the end of row 0 (padding).
        let ids = Tensor::new(&[[0u32, 7, 9, 2, 1], [0, 11, 1, 13, 2]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 0], [1, 1, 1, 1, 1]], &Device::Cpu).unwrap();
        // Type 1 is past a one-row table: ignored, as transformers never sees it.
        let tt = Tensor::new(&[[0u32, 0, 0, 1, 1], [0, 0, 1, 1, 1]], &Device::Cpu).unwrap();
        let input = BertInput {
            ids: &ids,
            token_type_ids: Some(&tt),
            attention_mask: Some(&mask),
        };
        for head in [
            BertHead::MaskedLm,
            BertHead::SequenceClassification,
            BertHead::TokenClassification,
            BertHead::QuestionAnswering,
        ] {
            let params =
                init_params(&cfg, head, &mut Rng::new(1), &Device::Cpu, DType::F32).unwrap();
            let names: Vec<&str> = params.iter().map(|(n, _)| n).collect();
            assert!(
                names.iter().all(
                    |n| n.starts_with("roberta.") || is_head_param(n) && !n.starts_with("cls.")
                ),
                "{names:?}"
            );
            assert!(names.iter().all(|n| !n.contains("pooler")), "{names:?}");
            let pos = params
                .get("roberta.embeddings.position_embeddings.weight")
                .unwrap();
            let pad_pos = pos.get(1).unwrap().abs().unwrap().sum_all().unwrap();
            assert_eq!(
                pad_pos.to_scalar::<f32>().unwrap(),
                0.0,
                "init zeroes row pad"
            );
            let mut rng = Rng::new(2);
            let loss = match head {
                BertHead::MaskedLm => {
                    let m = BertForMaskedLM::new(&cfg, &params).unwrap();
                    let got = m.bert.position_ids(&ids).unwrap().to_vec2::<u32>().unwrap();
                    assert_eq!(got, [[2, 3, 4, 5, 1], [2, 3, 1, 4, 5]]);
                    masked_lm_loss(&m, &input, &mut rng)
                }
                BertHead::SequenceClassification => {
                    assert!(names.contains(&"classifier.dense.weight"));
                    assert!(names.contains(&"classifier.out_proj.bias"));
                    let m = BertClassifier::new(&cfg, &params, head).unwrap();
                    let logits = m.forward(&input, Mode::Train(&mut rng)).unwrap();
                    assert_eq!(logits.dims(), &[2, 3]);
                    let y = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
                    k::cross_entropy_sum(&logits, &y, None).unwrap()
                }
                _ => {
                    let m = BertClassifier::new(&cfg, &params, head).unwrap();
                    let logits = m.forward(&input, Mode::Train(&mut rng)).unwrap();
                    logits.sqr().unwrap().sum_all().unwrap()
                }
            };
            let grads = loss.backward().unwrap();
            assert_every_parameter_trained(&params, &grads, &format!("{head:?}"));
            let g = grads.get(&pos).unwrap();
            let pad = g.get(1).unwrap().abs().unwrap().sum_all().unwrap();
            assert_eq!(pad.to_scalar::<f32>().unwrap(), 0.0, "position row pad");
        }
        // Too few positions for the offset, and too long an input.
        let mut short = cfg.clone();
        short.max_position_embeddings = 2;
        assert!(short
            .validate()
            .unwrap_err()
            .to_string()
            .contains("pad_token_id + 1"));
        let p = encoder_params(&cfg);
        let enc = BertModel::new(&cfg, &p, BertHead::Encoder).unwrap();
        let long = Tensor::zeros((1, 15), DType::U32, &Device::Cpu).unwrap();
        let err = enc
            .embed_input(
                &BertInput {
                    ids: &long,
                    token_type_ids: None,
                    attention_mask: None,
                },
                &mut Mode::Eval,
            )
            .unwrap_err();
        assert!(err.to_string().contains("limit of 14 tokens"), "{err}");
    }

    #[test]
    fn neftune_noises_the_word_embeddings_in_training_only() {
        // Dropout off: a training forward draws exactly one number per word-embedding element
        // (B·T·C = 2·5·16), and changes the embeddings; evaluation and α = 0 do not.
        let mut cfg = tiny(2);
        cfg.hidden_dropout_prob = 0.0;
        cfg.attention_probs_dropout_prob = 0.0;
        let p = encoder_params(&cfg);
        let ids = Tensor::new(&[[2u32, 7, 9, 3, 0], [2, 11, 0, 13, 3]], &Device::Cpu).unwrap();
        let input = BertInput {
            ids: &ids,
            token_type_ids: None,
            attention_mask: None,
        };
        let plain = BertModel::new(&cfg, &p, BertHead::Encoder).unwrap();
        let noisy = BertModel::new(&cfg, &p, BertHead::Encoder)
            .unwrap()
            .with_neftune(5.0);
        let clean = plain.embed_input(&input, &mut Mode::Eval).unwrap();
        let eval = noisy.embed_input(&input, &mut Mode::Eval).unwrap();
        assert_eq!(max_diff(&eval, &clean), 0.0);
        let mut rng = Rng::new(4);
        let x = noisy
            .embed_input(&input, &mut Mode::Train(&mut rng))
            .unwrap();
        assert!(max_diff(&x, &clean) > 1e-3);
        assert_eq!(rng.state().counter, 2 * 5 * 16);
        let mut rng = Rng::new(4);
        let x = plain
            .embed_input(&input, &mut Mode::Train(&mut rng))
            .unwrap();
        assert_eq!(max_diff(&x, &clean), 0.0);
        assert_eq!(rng.state().counter, 0);
    }

    /// DistilBERT: its names, no token types or pooler, its heads, and every parameter trained.
    #[test]
    fn distilbert_names_heads_and_gradients() {
        let mut cfg = tiny(3);
        cfg.model_type = Family::DistilBert;
        cfg.type_vocab_size = 0;
        cfg.classifier_dropout = Some(0.2);
        cfg.qa_dropout = Some(0.1);
        let ids = Tensor::new(&[[2u32, 7, 9, 3, 0], [2, 11, 0, 13, 3]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 0], [1, 1, 1, 1, 1]], &Device::Cpu).unwrap();
        // No table to index: token types are ignored.
        let tt = Tensor::new(&[[0u32, 0, 0, 1, 1], [0, 0, 1, 1, 1]], &Device::Cpu).unwrap();
        let input = BertInput {
            ids: &ids,
            token_type_ids: Some(&tt),
            attention_mask: Some(&mask),
        };
        for (head, extra) in [
            (BertHead::MaskedLm, "vocab_projector.bias"),
            (BertHead::SequenceClassification, "pre_classifier.weight"),
            (BertHead::TokenClassification, "classifier.weight"),
            (BertHead::QuestionAnswering, "qa_outputs.weight"),
        ] {
            let params =
                init_params(&cfg, head, &mut Rng::new(1), &Device::Cpu, DType::F32).unwrap();
            let names: Vec<&str> = params.iter().map(|(n, _)| n).collect();
            assert!(names.contains(&extra), "{names:?}");
            assert!(names.contains(&"distilbert.transformer.layer.1.ffn.lin2.weight"));
            assert!(names.contains(&"distilbert.transformer.layer.0.sa_layer_norm.bias"));
            for n in &names {
                assert!(n.starts_with("distilbert.") || is_head_param(n), "{n}");
                assert!(!n.contains("token_type") && !n.contains("pooler"), "{n}");
            }
            let mut rng = Rng::new(2);
            let loss = match head {
                BertHead::MaskedLm => {
                    let m = BertForMaskedLM::new(&cfg, &params).unwrap();
                    masked_lm_loss(&m, &input, &mut rng)
                }
                _ => {
                    let m = BertClassifier::new(&cfg, &params, head).unwrap();
                    let logits = m.forward(&input, Mode::Train(&mut rng)).unwrap();
                    logits.sqr().unwrap().sum_all().unwrap()
                }
            };
            let grads = loss.backward().unwrap();
            assert_every_parameter_trained(&params, &grads, &format!("{head:?}"));
        }
        // The QA head's dropout is on in training and off in evaluation.
        let head = BertHead::QuestionAnswering;
        let params = init_params(&cfg, head, &mut Rng::new(1), &Device::Cpu, DType::F32).unwrap();
        let m = BertClassifier::new(&cfg, &params, head).unwrap();
        let eval = |m: &BertClassifier| m.forward(&input, Mode::Eval).unwrap();
        assert_eq!(max_diff(&eval(&m), &eval(&m)), 0.0);
        let train = m.forward(&input, Mode::Train(&mut Rng::new(3))).unwrap();
        let mut no_drop = cfg.clone();
        no_drop.hidden_dropout_prob = 0.0;
        no_drop.attention_probs_dropout_prob = 0.0;
        let m0 = BertClassifier::new(&no_drop, &params, head).unwrap();
        let train0 = m0.forward(&input, Mode::Train(&mut Rng::new(3))).unwrap();
        assert!(
            max_diff(&train0, &eval(&m0)) > 0.0,
            "qa_dropout applies in training"
        );
        assert!(max_diff(&train, &eval(&m)) > 0.0);
    }

    /// ELECTRA: narrow embeddings projected to the hidden size, token types used, no pooler,
    /// its GELU classification head, every parameter trained; no masked-LM head.
    #[test]
    fn electra_projects_its_embeddings_and_trains_every_parameter() {
        let mut cfg = tiny(3);
        cfg.model_type = Family::Electra;
        cfg.embedding_size = Some(8);
        let ids = Tensor::new(&[[2u32, 7, 9, 3, 0], [2, 11, 0, 13, 3]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 0], [1, 1, 1, 1, 1]], &Device::Cpu).unwrap();
        let tt = Tensor::new(&[[0u32, 0, 0, 1, 1], [0, 0, 1, 1, 1]], &Device::Cpu).unwrap();
        let input = BertInput {
            ids: &ids,
            token_type_ids: Some(&tt),
            attention_mask: Some(&mask),
        };
        for head in [
            BertHead::SequenceClassification,
            BertHead::TokenClassification,
            BertHead::QuestionAnswering,
        ] {
            let params =
                init_params(&cfg, head, &mut Rng::new(1), &Device::Cpu, DType::F32).unwrap();
            let word = params
                .get("electra.embeddings.word_embeddings.weight")
                .unwrap();
            assert_eq!(word.dims(), &[50, 8]);
            let proj = params.get("electra.embeddings_project.weight").unwrap();
            assert_eq!(proj.dims(), &[16, 8]);
            assert!(params.iter().all(|(n, _)| !n.contains("pooler")));
            let m = BertClassifier::new(&cfg, &params, head).unwrap();
            let logits = m.forward(&input, Mode::Train(&mut Rng::new(2))).unwrap();
            let grads = logits.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            assert_every_parameter_trained(&params, &grads, &format!("{head:?}"));
        }
        let p = init_params(
            &cfg,
            BertHead::MaskedLm,
            &mut Rng::new(1),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap();
        let e = BertForMaskedLM::new(&cfg, &p).err().unwrap().to_string();
        assert!(e.contains("generator"), "{e}");
        assert_eq!(
            BertHead::from_family_architecture("ElectraForMaskedLM"),
            None
        );
        assert_eq!(
            BertHead::from_family_architecture("ElectraForPreTraining"),
            None
        );
    }

    #[test]
    fn architectures_name_family_and_head() {
        let mut cfg = tiny(2);
        for (family, class) in [
            (Family::Bert, "BertForTokenClassification"),
            (Family::Roberta, "RobertaForTokenClassification"),
            (Family::XlmRoberta, "XLMRobertaForTokenClassification"),
            (Family::DistilBert, "DistilBertForTokenClassification"),
            (Family::Electra, "ElectraForTokenClassification"),
        ] {
            cfg.model_type = family;
            let head = BertHead::TokenClassification;
            assert_eq!(cfg.architecture(head), class);
            assert_eq!(
                BertHead::from_family_architecture(class),
                Some((family, head))
            );
            assert_eq!(Family::from_model_type(family.model_type()), Some(family));
        }
        assert_eq!(
            BertHead::from_family_architecture("BertForPreTraining"),
            Some((Family::Bert, BertHead::MaskedLm))
        );
        assert_eq!(
            BertHead::from_family_architecture("RobertaForCausalLM"),
            None
        );
        assert_eq!(BertHead::from_architecture("RobertaModel"), None);
    }

    #[test]
    fn init_follows_transformers_and_validates() {
        let cfg = tiny(2);
        let p = init_params(
            &cfg,
            BertHead::SequenceClassification,
            &mut Rng::new(0),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap();
        let pad_row = p
            .get("bert.embeddings.word_embeddings.weight")
            .unwrap()
            .get(0)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(pad_row, 0.0, "the padding row is zero");
        assert_eq!(p.get("classifier.weight").unwrap().dims(), &[2, 16]);
        assert!(init_params(
            &tiny(1),
            BertHead::SequenceClassification,
            &mut Rng::new(0),
            &Device::Cpu,
            DType::F32
        )
        .is_err());
        let mut bad = tiny(2);
        bad.hidden_act = "relu".into();
        assert!(bad.validate().unwrap_err().to_string().contains("relu"));
    }

    /// The QA loss as transformers computes it, from the logits in plain f64 loops: positions
    /// clamped to [0, T], T ignored, the mean over the kept rows of each end, then halved.
    #[test]
    fn question_answering_loss_clamps_and_ignores_as_transformers() {
        let (b, t) = (3, 4);
        let vals: Vec<f32> = (0..b * t * 2)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let logits = Tensor::from_vec(vals.clone(), (b, t, 2), &Device::Cpu).unwrap();
        let (start, end) = BertForQuestionAnswering::start_end(&logits).unwrap();
        assert_eq!(start.dims(), &[b, t]);
        assert_eq!(
            end.to_vec2::<f32>().unwrap()[1][2],
            vals[(t + 2) * 2 + 1],
            "channel 1 is the end"
        );
        // Row 1's start is beyond T (clamped to T: ignored); row 2's end is negative (→ 0).
        let (sp, ep) = ([2i64, 9, 0], [3i64, 1, -4]);
        let nll = |row: usize, pos: usize, ch: usize| -> f64 {
            let z: Vec<f64> = (0..t)
                .map(|j| vals[(row * t + j) * 2 + ch] as f64)
                .collect();
            let lse = z.iter().map(|x| x.exp()).sum::<f64>().ln();
            lse - z[pos]
        };
        let start_loss = (nll(0, 2, 0) + nll(2, 0, 0)) / 2.0;
        let end_loss = (nll(0, 3, 1) + nll(1, 1, 1) + nll(2, 0, 1)) / 3.0;
        let want = (start_loss + end_loss) / 2.0;
        let got = BertForQuestionAnswering::loss(&logits, &sp, &ep)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
        // Every start ignored: no defined loss.
        let err = BertForQuestionAnswering::loss(&logits, &[4, 5, 99], &ep).unwrap_err();
        assert!(err.to_string().contains("start"), "{err}");
        assert!(BertForQuestionAnswering::loss(&logits, &[0, 1], &[0, 1]).is_err());
    }

    #[test]
    fn question_answering_has_two_outputs_no_pooler_and_a_head_of_its_own() {
        let head = BertHead::QuestionAnswering;
        assert_eq!(BertHead::from_architecture(head.architecture()), Some(head));
        assert!(!tiny(0).has_pooler(head) && !head.is_classifier());
        // The labels of the config do not shape the head.
        let shapes = param_shapes(&tiny(5), head);
        let (last, first) = (shapes.len() - 1, shapes.len() - 2);
        assert_eq!(
            shapes[first],
            ("qa_outputs.weight".to_string(), vec![2, 16])
        );
        assert_eq!(shapes[last], ("qa_outputs.bias".to_string(), vec![2]));
        assert!(shapes.iter().all(|(n, _)| !n.contains("pooler")));
        assert!(is_head_param("qa_outputs.weight") && is_head_param("qa_outputs.bias"));
        let p = init_params(&tiny(0), head, &mut Rng::new(0), &Device::Cpu, DType::F32).unwrap();
        let bias = p.get("qa_outputs.bias").unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(bias, [0.0, 0.0]);
        let m = BertClassifier::new(&tiny(0), &p, head).unwrap();
        assert_eq!(m.head(), head);
        assert!(BertClassifier::new(&tiny(0), &p, BertHead::MaskedLm).is_err());
    }
}

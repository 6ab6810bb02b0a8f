//! `lantern score`: a language model's (GPT-2 or Llama) loss and perplexity on a text file, a text or token ids, of any
//! length, by sliding windows (`lantern_models::gpt::perplexity`, docs/training.md); its
//! zero-shot accuracy on multiple-choice examples (`--choices`, `lantern_train::lm_choice`);
//! and, for the transformers parity check, the logits of one forward (`--dump`).

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use lantern_data::choice::HellaSwagText;
use lantern_models::decoder::Decoder;
use lantern_models::gpt::perplexity::{Perplexity, Windowing};
use lantern_models::gpt::Gpt;
use lantern_models::{safetensors_io, Mode};
use lantern_train::lm_choice::{self, ChoiceSet};
use lantern_train::task::LossModel;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::model_dir;

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// A checkpoint, a run folder (its newest checkpoint) or a Hugging Face GPT-2 or
    /// Llama-family (Llama, Mistral, Qwen2, Qwen3, Gemma 3, Phi-3) folder.
    #[arg(long)]
    model: PathBuf,
    /// A peft LoRA adapter folder (adapter_config.json, adapter_model.safetensors) to
    /// merge into the model first, as peft's `PeftModel.from_pretrained` + `merge_and_unload`.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// A UTF-8 text file, tokenised whole with the model's tokenizer (no special tokens).
    #[arg(long, conflicts_with_all = ["tokens", "text", "choices"])]
    file: Option<PathBuf>,
    /// Multiple-choice examples (JSONL, CSV or TSV: SWAG's, HellaSwag's or text + choices
    /// records): each choice scored as the continuation of its context; prints the accuracy
    /// of the most likely choice (acc), per character (acc_norm) and per token (acc_per_token).
    #[arg(long, conflicts_with_all = ["tokens", "text", "stride", "dump"])]
    choices: Option<PathBuf>,
    /// --choices: how HellaSwag's records read: "raw" (`ctx` and the endings as they are, as
    /// llm.c evaluates HellaSwag) or "lm-eval" (lm-evaluation-harness's `hellaswag` task:
    /// `activity_label: ctx_a Ctx_b`, WikiHow's bracketed markup taken out, so that the
    /// figures are comparable with the harness's).
    #[arg(long, requires = "choices", default_value = "raw", value_parser = ["raw", "lm-eval"])]
    hellaswag: String,
    /// --choices: score the first N examples only.
    #[arg(long, requires = "choices")]
    limit: Option<usize>,
    /// --choices: write each example's log-likelihoods and answers here, one JSON object a
    /// line.
    #[arg(long, requires = "choices")]
    out: Option<PathBuf>,
    /// Token ids: JSON {"input_ids": [[...], ...]}; each row is scored on its own.
    #[arg(long, conflicts_with = "text")]
    tokens: Option<PathBuf>,
    /// A text, tokenised as --file.
    #[arg(long)]
    text: Option<String>,
    /// Tokens per window (default: the model's context, n_positions).
    #[arg(long)]
    max_length: Option<usize>,
    /// Tokens from one window's start to the next (default: --max-length, windows that do not
    /// overlap). Each window scores the tokens past the previous window's end.
    #[arg(long)]
    stride: Option<usize>,
    /// Windows (--choices: examples, all their choices) run through the model at a time (the
    /// result does not depend on it).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
    /// "auto" (the GPU when this build has CUDA and the driver sees one), "cpu", "cuda" or
    /// "cuda:N"; the model runs in f32 there.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Write `logits` (B, T, V) and `loss` of one forward as f32 safetensors here: the rows must
    /// have one length and fit in one window.
    #[arg(long)]
    dump: Option<PathBuf>,
}

/// What is scored: token rows, where they came from (for messages), and the text's size in
/// bytes when it is a text.
struct Input {
    rows: Vec<Vec<u32>>,
    what: String,
    bytes: Option<usize>,
}

pub fn run(a: ScoreArgs) -> Result<()> {
    let device = lantern_train::device::parse_device(&a.device)?;
    let m = model_dir::load_with(&a.model, a.adapter.as_deref())?;
    if let Some(p) = &a.choices {
        return choices(&a, p, m, &device);
    }
    let input = read_input(&a, &m)?;
    if let Some(bad) = input
        .rows
        .iter()
        .flatten()
        .find(|&&x| x as usize >= m.config.vocab_size())
    {
        bail!(
            "{}: token id {bad} is >= the model's vocabulary size {}",
            input.what,
            m.config.vocab_size()
        );
    }
    let context = m.config.max_positions();
    let max_length = a.max_length.unwrap_or(context);
    let stride = a.stride.unwrap_or(max_length);
    let windowing = Windowing::new(max_length, stride, context)
        .map_err(|e| anyhow!("--max-length {max_length} --stride {stride}: {e}"))?;
    if a.batch == 0 {
        bail!("--batch 0: at least one window must run at a time");
    }
    if a.dump.is_some() {
        check_dump(&input, max_length)?;
    }
    let model = m.decoder_on(&device)?;
    let mut total = Perplexity::default();
    for (i, row) in input.rows.iter().enumerate() {
        let what = match input.rows.len() {
            1 => input.what.clone(),
            _ => format!("{} row {i}", input.what),
        };
        let r = model
            .perplexity(row, &windowing, a.batch, &device)
            .with_context(|| what.clone())?;
        total = total.merge(r);
    }
    let bpb = input.bytes.map(|b| total.bits_per_byte(b));
    if a.json {
        let v = serde_json::json!({
            "tokens_scored": total.tokens,
            "windows": total.windows,
            "nll_sum": total.nll_sum,
            "mean_nll": total.mean_nll(),
            "perplexity": total.perplexity(),
            "bytes": input.bytes,
            "bits_per_byte": bpb,
            "input_tokens": input.rows.iter().map(Vec::len).sum::<usize>(),
            "sequences": input.rows.len(),
            "max_length": max_length,
            "stride": stride,
        });
        println!("{v}");
    } else {
        let per_byte = match (input.bytes, bpb) {
            (Some(b), Some(bpb)) => format!(" | {b} bytes, {bpb:.4} bits per byte"),
            _ => String::new(),
        };
        println!(
            "loss (mean NLL) {:.6} nats | perplexity {:.3} | {} tokens scored in {} windows \
             (max length {max_length}, stride {stride}){per_byte}",
            total.mean_nll(),
            total.perplexity(),
            total.tokens,
            total.windows,
        );
    }
    if let Some(p) = &a.dump {
        dump(&model, &input, &device, p)?;
    }
    Ok(())
}

/// `--choices`: the examples of `path` scored, the accuracies printed, each example's scores
/// written to `--out`.
fn choices(a: &ScoreArgs, path: &Path, m: model_dir::LoadedModel, device: &Device) -> Result<()> {
    if a.batch == 0 {
        bail!("--batch 0: at least one example must run at a time");
    }
    let window = a.max_length.unwrap_or(m.config.max_positions());
    if window == 0 || window > m.config.max_positions() {
        bail!(
            "--max-length {window}: the model reads 1 to {} tokens",
            m.config.max_positions()
        );
    }
    let tok = m.tokenizer()?;
    let hellaswag = match a.hellaswag.as_str() {
        "lm-eval" => HellaSwagText::LmEval,
        _ => HellaSwagText::Raw,
    };
    let set = ChoiceSet::read(
        path,
        hellaswag,
        &tok,
        (m.config.vocab_size(), window),
        a.limit,
    )?;
    let model = m.decoder_on(device)?;
    let model: &dyn LossModel = match &model {
        Decoder::Gpt(g) => g,
        Decoder::Llama(l) => l,
    };
    let (scored, tally) = lm_choice::evaluate(&set, model, (0, 1), a.batch, device)
        .with_context(|| path.display().to_string())?;
    if let Some(out) = &a.out {
        let mut text = String::new();
        for (
            item,
            lm_choice::Scored {
                scores,
                answers: ans,
            },
        ) in set.items.iter().zip(&scored)
        {
            let v = serde_json::json!({
                "line": item.line,
                "label": item.label,
                "loglik": scores.iter().map(|s| s.loglik).collect::<Vec<_>>(),
                "tokens": scores.iter().map(|s| s.tokens).collect::<Vec<_>>(),
                "acc": ans.acc,
                "acc_norm": ans.acc_norm,
                "acc_per_token": ans.acc_per_token,
            });
            text += &format!("{v}\n");
        }
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    }
    let report = tally.report();
    let what = format!(
        "{}: {} examples of {} choices ({} labelled, {} with the context cut to the window of \
         {window})",
        path.display(),
        set.items.len(),
        set.choices,
        set.labelled(),
        set.truncated,
    );
    if a.json {
        let v = serde_json::json!({
            "examples": set.items.len(),
            "labelled": set.labelled(),
            "choices": set.choices,
            "truncated": set.truncated,
            "max_length": window,
            "hellaswag": a.hellaswag,
            "acc": report.map(|r| r.acc.value),
            "acc_stderr": report.and_then(|r| r.acc.stderr),
            "acc_norm": report.map(|r| r.acc_norm.value),
            "acc_norm_stderr": report.and_then(|r| r.acc_norm.stderr),
            "acc_per_token": report.map(|r| r.acc_per_token.value),
            "acc_per_token_stderr": report.and_then(|r| r.acc_per_token.stderr),
        });
        println!("{v}");
    } else {
        match report {
            Some(r) => println!("{what} | {}", r.line()),
            None => println!("{what} | no labels, no accuracy"),
        }
    }
    Ok(())
}

fn read_input(a: &ScoreArgs, m: &model_dir::LoadedModel) -> Result<Input> {
    let encode = |text: &str| -> Result<Vec<u32>> {
        Ok(m.tokenizer()?
            .encode(text, false)
            .map_err(|e| anyhow!("tokenize: {e}"))?
            .get_ids()
            .to_vec())
    };
    let short = |what: String, n: usize| anyhow!("{what}: {n} token(s): at least 2 are needed");
    if let Some(p) = &a.file {
        let text = read_text(p)?;
        let ids = encode(&text).with_context(|| p.display().to_string())?;
        if ids.len() < 2 {
            return Err(short(p.display().to_string(), ids.len()));
        }
        return Ok(Input {
            rows: vec![ids],
            what: p.display().to_string(),
            bytes: Some(text.len()),
        });
    }
    if let Some(t) = &a.text {
        let ids = encode(t)?;
        if ids.len() < 2 {
            return Err(short("--text".into(), ids.len()));
        }
        return Ok(Input {
            rows: vec![ids],
            what: "--text".into(),
            bytes: Some(t.len()),
        });
    }
    let p = a
        .tokens
        .as_ref()
        .context("give --file PATH, --text TEXT or --tokens FILE")?;
    let rows = read_token_json(p)?;
    if rows.is_empty() {
        bail!("{}: no rows in input_ids", p.display());
    }
    if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() < 2) {
        return Err(short(format!("{} row {i}", p.display()), r.len()));
    }
    Ok(Input {
        rows,
        what: p.display().to_string(),
        bytes: None,
    })
}

/// The whole file as UTF-8 text; the errors name the file.
fn read_text(p: &Path) -> Result<String> {
    let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow!(
            "{}: not UTF-8 text (invalid byte at offset {})",
            p.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// `--dump` runs one forward over all rows: they must have one length and fit in a window.
fn check_dump(input: &Input, max_length: usize) -> Result<()> {
    let t = input.rows[0].len();
    if input.rows.iter().any(|r| r.len() != t) {
        bail!(
            "--dump: the rows of {} must all have one length",
            input.what
        );
    }
    if t > max_length {
        bail!(
            "--dump writes the logits of one forward, but {} has {t} tokens, more than one \
             window (--max-length {max_length}): score it without --dump",
            input.what
        );
    }
    Ok(())
}

/// The logits and mean loss of one forward over all rows (B, T), written to `path`.
fn dump(model: &Decoder, input: &Input, device: &Device, path: &Path) -> Result<()> {
    let t = input.rows[0].len();
    let ids = Tensor::from_vec(input.rows.concat(), (input.rows.len(), t), device)?;
    let logits = model.forward(&ids, Mode::Eval)?;
    let loss = Gpt::shifted_loss(&logits, &ids)?;
    let mut out = BTreeMap::new();
    out.insert(
        "logits".to_string(),
        logits.to_dtype(DType::F32)?.to_device(&Device::Cpu)?,
    );
    out.insert("loss".to_string(), loss.to_device(&Device::Cpu)?);
    std::fs::write(path, safetensors_io::serialize(&out)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn read_token_json(p: &Path) -> Result<Vec<Vec<u32>>> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", p.display()))?;
    let rows = v
        .get("input_ids")
        .and_then(|x| x.as_array())
        .with_context(|| format!("{}: expected {{\"input_ids\": [[...], ...]}}", p.display()))?;
    rows.iter()
        .map(|r| {
            r.as_array()
                .with_context(|| format!("{}: each row must be an array", p.display()))?
                .iter()
                .map(|x| {
                    x.as_u64()
                        .and_then(|x| u32::try_from(x).ok())
                        .with_context(|| {
                            format!("{}: token ids must be non-negative integers", p.display())
                        })
                })
                .collect()
        })
        .collect()
}

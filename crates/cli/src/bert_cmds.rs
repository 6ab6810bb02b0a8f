//! BERT commands: `finetune`, `eval`, `predict`, `wordpiece`, and `export` of BERT folders.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Subcommand;
use lantern_data::labelled::ProblemType;
use lantern_kernels::Rng;
use lantern_models::bert::{hf, BertHead, BertInput, BertModel, Family};
use lantern_models::decoder::classifier::DecoderHead;
use lantern_models::task::TaskConfig;
use lantern_models::{safetensors_io, Mode};
use lantern_train::finetune::{self, FinetuneOptions};
use lantern_train::finetune_config::FinetuneConfig;

use crate::{install_stop_handlers, Outcome};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum BertCmd {
    /// Fine-tune a BERT, RoBERTa, DistilBERT, ELECTRA or ModernBERT encoder for sequence or token
    /// classification, extractive question answering or multiple choice, or a GPT-2 (a
    /// `lantern train` run or a transformers folder) for sequence or token classification (TOML
    /// config); keeps best/ and last/
    /// checkpoints and exports the best to <run.dir>/model. SIGTERM/SIGINT finish the step,
    /// write last/ and exit with status 75; --resume continues exactly.
    Finetune {
        #[arg(long)]
        config: PathBuf,
        /// Override a config key: --set train.lr=3e-5 (repeatable).
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        sets: Vec<String>,
        /// Continue the run in run.dir from its last/ checkpoint (a new run if there is none).
        #[arg(long)]
        resume: bool,
        /// Stop after this many optimizer steps (counted from the start of the run), with a
        /// last/ checkpoint; continue later with --resume.
        #[arg(long)]
        stop_after: Option<u64>,
        #[arg(long)]
        quiet: bool,
    },
    /// Loss, accuracy, per-class and macro precision/recall/F1 and the confusion matrix of a
    /// classifier on labelled data (JSONL or CSV); for a token classifier, seqeval's
    /// entity-level precision/recall/F1 per type and the word accuracy (JSONL or CoNLL); for a
    /// question-answering model, the squad metric's exact match and F1 (SQuAD JSONL or .json;
    /// the squad_v2 metric for a model fine-tuned with unanswerable questions).
    Eval {
        /// A classifier folder, or a fine-tuning run folder (its exported model).
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        data: PathBuf,
        /// Where to write the metrics as JSON (default: <data>.metrics.json).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        #[command(flatten)]
        squad: SquadArgs,
    },
    /// Predict labels: writes one JSON line per example with the label and the probabilities;
    /// a token classifier writes each word's tag and the entities they form; a question-answering
    /// model each question's answer, its character offset, score and probability, and the n-best.
    Predict {
        #[arg(long)]
        checkpoint: PathBuf,
        /// JSONL or CSV with `text` (and optional `text_pair`); for a token classifier, JSONL
        /// with `tokens` (words) or `text` (split at white space), or CoNLL; for a
        /// question-answering model, SQuAD JSONL (`id`, `question`, `context`) or .json.
        /// Labels and answers, if present, are ignored.
        #[arg(long)]
        input: PathBuf,
        /// Default: <input>.predictions.jsonl.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        #[command(flatten)]
        squad: SquadArgs,
    },
    /// Run a BERT encoder (any BERT-family folder) on texts and write the last hidden states, the
    /// pooled output if the model has a pooler, the input ids and the attention mask as
    /// safetensors: sentence embeddings, and the parity check against transformers.
    Encode {
        #[arg(long)]
        model: PathBuf,
        /// JSONL or CSV with `text` (and optional `text_pair`).
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 128)]
        max_length: usize,
    },
    /// Train a BERT-style WordPiece tokenizer ([PAD] [UNK] [CLS] [SEP] [MASK], BERT's
    /// post-processor) on text files or folders, for from-scratch BERT models.
    Wordpiece {
        #[arg(long = "input", required = true, num_args = 1..)]
        inputs: Vec<PathBuf>,
        /// The tokenizer.json to write.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 8192)]
        vocab_size: usize,
    },
}

/// SQuAD 2.0 options of `eval` and `predict` for a question-answering model. A model
/// fine-tuned with `data.version_2_with_negative` already has them (from its run); these are
/// for another model (a transformers folder, or one fine-tuned on SQuAD v1.1), or to try
/// another threshold.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct SquadArgs {
    /// Questions may have no answer (SQuAD 2.0, run_qa's --version_2_with_negative): the null
    /// answer "" can be predicted, and eval scores with the squad_v2 metric.
    #[arg(long)]
    version_2_with_negative: bool,
    /// The answer is null when the null score minus the best span's score is above this
    /// (run_qa's --null_score_diff_threshold; default: the run's, else 0).
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    null_score_diff_threshold: Option<f64>,
}

impl SquadArgs {
    /// Applies the options to a model's: an error for a model that is not a
    /// question-answering one, or for a threshold without SQuAD 2.0.
    fn apply(self, c: &mut finetune::Classifier) -> Result<()> {
        if !self.version_2_with_negative && self.null_score_diff_threshold.is_none() {
            return Ok(());
        }
        if c.problem != ProblemType::QuestionAnswering {
            bail!(
                "--version-2-with-negative and --null-score-diff-threshold apply to \
                 question-answering models; {} is {}",
                c.source.display(),
                c.problem
            );
        }
        if self.version_2_with_negative {
            c.qa.version_2_with_negative = true;
        }
        if let Some(t) = self.null_score_diff_threshold {
            if !c.qa.version_2_with_negative {
                bail!(
                    "--null-score-diff-threshold applies to questions that may have no answer: \
                     add --version-2-with-negative ({} was fine-tuned on SQuAD v1.1)",
                    c.source.display()
                );
            }
            if t.is_nan() {
                bail!("--null-score-diff-threshold must be a number, not NaN");
            }
            c.qa.null_score_diff_threshold = t;
        }
        Ok(())
    }
}

pub fn run(cmd: BertCmd) -> Result<Outcome> {
    match cmd {
        BertCmd::Finetune {
            config,
            sets,
            resume,
            stop_after,
            quiet,
        } => {
            let cfg = FinetuneConfig::load(&config, &sets)?;
            let stop = install_stop_handlers()?;
            let s = finetune::finetune(
                cfg,
                FinetuneOptions {
                    quiet,
                    resume,
                    stop_after,
                    stop: Some(stop),
                },
            )?;
            let outcome = if s.preempted {
                Outcome::Preempted
            } else {
                Outcome::Done
            };
            if s.rank != 0 {
                return Ok(outcome);
            }
            let epochs = format!(
                "{} epochs{}",
                s.epochs_run,
                if s.stopped_early {
                    ", stopped early"
                } else {
                    ""
                }
            );
            match &s.best {
                Some(b) => println!(
                    "fine-tuned {} steps ({epochs}) in {:.1} s | best at step {}: {}",
                    s.steps,
                    s.train_seconds,
                    b.step,
                    b.report.summary()
                ),
                None => println!(
                    "fine-tuned {} steps ({epochs}) in {:.1} s",
                    s.steps, s.train_seconds
                ),
            }
            if let Some(b) = &s.best {
                println!("best checkpoint: {}", b.dir.display());
            }
            if let Some(e) = &s.exported {
                println!("exported: {}", e.display());
            }
            if let Some(r) = &s.test {
                println!("test: {}", r.summary());
            }
            if s.cut_short {
                let why = if s.preempted {
                    format!(
                        "stopped by a signal: exiting with status {}",
                        crate::EXIT_PREEMPTED
                    )
                } else {
                    "stopped by --stop-after".to_string()
                };
                eprintln!("{why} after step {}; continue with --resume", s.steps);
            }
            return Ok(outcome);
        }
        BertCmd::Eval {
            checkpoint,
            data,
            out,
            batch_size,
            squad,
        } => {
            let mut c = finetune::load_classifier(&checkpoint, &Device::Cpu)?;
            squad.apply(&mut c)?;
            if c.problem == ProblemType::QuestionAnswering {
                let questions = c.qa_data(&data, true)?;
                let model = c.frozen_model()?;
                let r = finetune::evaluate_qa(
                    &model,
                    &questions,
                    &c.qa,
                    (batch_size, c.pad_id),
                    &Device::Cpu,
                )?;
                write_eval(&r, &[], (&c.source, &data), out)?;
                return Ok(Outcome::Done);
            }
            if c.scores_preferences(&data) {
                // A reward model on preference records: accuracy and margin, as in training.
                let (examples, note) = c.reward_examples(&data)?;
                if let Some(n) = note {
                    eprintln!("{n}");
                }
                let model = c.frozen_model()?;
                let names = c.cfg.label_names();
                let r = finetune::evaluate(
                    &model,
                    &examples,
                    (ProblemType::RewardModeling, &names, c.loss_coef),
                    batch_size,
                    c.pad_id,
                    &Device::Cpu,
                )?;
                write_eval(&r, &names, (&c.source, &data), out)?;
                return Ok(Outcome::Done);
            }
            let examples = c.encode_file(&data)?;
            if let Some(e) = examples.iter().find(|e| e.label.is_none()) {
                bail!(
                    "{}: line {}: no label to evaluate against",
                    data.display(),
                    e.line
                );
            }
            let model = c.frozen_model()?;
            let names = c.cfg.label_names();
            let r = finetune::evaluate(
                &model,
                &examples,
                (c.problem, &names, c.loss_coef),
                batch_size,
                c.pad_id,
                &Device::Cpu,
            )?;
            write_eval(&r, &names, (&c.source, &data), out)?;
        }
        BertCmd::Predict {
            checkpoint,
            input,
            out,
            batch_size,
            squad,
        } => {
            let mut c = finetune::load_classifier(&checkpoint, &Device::Cpu)?;
            squad.apply(&mut c)?;
            if c.problem == ProblemType::QuestionAnswering {
                predict_answers(&c, &input, out, batch_size)?;
                return Ok(Outcome::Done);
            }
            let mut raw = c.read_file(&input)?;
            if c.problem == ProblemType::TokenClassification {
                // Plain text is tagged word by word, the words split at white space.
                for e in raw.iter_mut().filter(|e| e.words.is_none()) {
                    e.words = Some(e.text.split_whitespace().map(str::to_string).collect());
                    e.text_pair = None;
                }
            }
            let stripped: Vec<_> = raw
                .iter()
                .cloned()
                .map(|mut e| {
                    e.label = None;
                    e
                })
                .collect();
            let tok = lantern_data::labelled::for_classification(
                &c.tokenizer,
                c.max_length,
                &c.tokenizer_path,
            )?;
            let names = c.cfg.label_names();
            let examples =
                lantern_data::labelled::encode(&tok, &stripped, (c.problem, &names), &input)?;
            let model = c.frozen_model()?;
            let logits =
                finetune::predict_logits(&model, &examples, batch_size, c.pad_id, &Device::Cpu)?;
            let out = out.unwrap_or_else(|| suffixed(&input, "predictions.jsonl"));
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(&out)
                    .with_context(|| format!("creating {}", out.display()))?,
            );
            for ((ex, l), enc) in raw.iter().zip(&logits).zip(&examples) {
                if c.problem == ProblemType::TokenClassification {
                    let rec = tag_record(ex, enc, l, &names);
                    writeln!(f, "{rec}").with_context(|| format!("writing {}", out.display()))?;
                    continue;
                }
                if c.problem == ProblemType::MultipleChoice {
                    // The right choice's index, and each choice's probability.
                    let p = finetune::softmax(l);
                    let rec = serde_json::json!({
                        "line": ex.line, "text": ex.text, "choices": ex.choices, "logits": l,
                        "label": finetune::argmax(&p), "probabilities": p,
                    });
                    writeln!(f, "{rec}").with_context(|| format!("writing {}", out.display()))?;
                    continue;
                }
                let mut rec = serde_json::json!({
                    "line": ex.line, "text": ex.text, "text_pair": ex.text_pair, "logits": l,
                });
                let by_name = |p: &[f32]| -> serde_json::Map<String, serde_json::Value> {
                    names
                        .iter()
                        .zip(p)
                        .map(|(n, &x)| (n.clone(), (x as f64).into()))
                        .collect()
                };
                match c.problem {
                    ProblemType::SingleLabelClassification => {
                        let p = finetune::softmax(l);
                        let best = finetune::argmax(&p);
                        rec["label"] = names[best].clone().into();
                        rec["probabilities"] = by_name(&p).into();
                    }
                    ProblemType::MultiLabelClassification => {
                        // Each class on its own: sigmoid, predicted from 0.5 up.
                        let p: Vec<f32> = l.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect();
                        let chosen: Vec<&String> = names
                            .iter()
                            .zip(&p)
                            .filter(|(_, &x)| x >= 0.5)
                            .map(|(n, _)| n)
                            .collect();
                        rec["labels"] = serde_json::json!(chosen);
                        rec["probabilities"] = by_name(&p).into();
                    }
                    // A reward model's export reads as regression (one label); its reward.
                    ProblemType::Regression | ProblemType::RewardModeling => {
                        rec["score"] = (l[0] as f64).into()
                    }
                    ProblemType::TokenClassification
                    | ProblemType::QuestionAnswering
                    | ProblemType::MultipleChoice => unreachable!("written above"),
                }
                writeln!(f, "{rec}").with_context(|| format!("writing {}", out.display()))?;
            }
            f.flush()
                .with_context(|| format!("writing {}", out.display()))?;
            println!("{} predictions -> {}", logits.len(), out.display());
        }
        BertCmd::Encode {
            model,
            input,
            out,
            max_length,
        } => encode(&model, &input, &out, max_length)?,
        BertCmd::Wordpiece {
            inputs,
            out,
            vocab_size,
        } => {
            let files = collect_files(&inputs)?;
            let tok = lantern_data::tokenizer::train_wordpiece(&files, vocab_size)?;
            tok.save(&out, true)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
            println!(
                "trained WordPiece on {} files: vocabulary {} -> {}",
                files.len(),
                lantern_data::tokenizer::vocab_size(&tok),
                out.display()
            );
        }
    }
    Ok(Outcome::Done)
}

/// Prints an evaluation and writes it, with the checkpoint and data it is of, to `out`
/// (default: `<data>.metrics.json`).
fn write_eval(
    r: &lantern_train::metrics_cls::EvalReport,
    names: &[String],
    (checkpoint, data): (&Path, &Path),
    out: Option<PathBuf>,
) -> Result<()> {
    print!("{}", r.pretty(names));
    let out = out.unwrap_or_else(|| suffixed(data, "metrics.json"));
    let mut j = r.to_json(names);
    j["checkpoint"] = checkpoint.display().to_string().into();
    j["data"] = data.display().to_string().into();
    std::fs::write(&out, serde_json::to_string_pretty(&j)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("metrics: {}", out.display());
    Ok(())
}

/// Question answering's `predict`: one JSON line per question of `input` (SQuAD JSONL or
/// .json; answers, if any, are ignored) with its answer (`answer`, its character offset
/// `answer_start`, `score` = start + end logit, `probability` over the n-best) and the n-best
/// list, as run_qa's predictions and nbest_predictions files hold them. With SQuAD 2.0 the
/// answer may be "" (no answer; `answer_start` null, the score and probability the null
/// answer's), and `null_score` and `null_score_diff` (run_qa's null_odds file: the answer is
/// "" when it is above the threshold) come along.
fn predict_answers(
    c: &finetune::Classifier,
    input: &Path,
    out: Option<PathBuf>,
    batch_size: usize,
) -> Result<()> {
    let questions = c.qa_data(input, false)?;
    let model = c.frozen_model()?;
    let answers = finetune::predict_answers(
        &model,
        &questions,
        &c.qa,
        (batch_size, c.pad_id),
        &Device::Cpu,
    )?;
    let out = out.unwrap_or_else(|| suffixed(input, "predictions.jsonl"));
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?,
    );
    for (ex, choice) in questions.examples.iter().zip(&answers) {
        let best = choice.best();
        // No answer is at no position.
        let start = (!best.text.is_empty()).then_some(best.start);
        let mut rec = serde_json::json!({
            "id": ex.id, "line": ex.line, "question": ex.question,
            "answer": best.text, "answer_start": start,
            "score": best.score, "probability": best.probability,
        });
        if let Some(null) = choice.null {
            rec["null_score"] = null.score.into();
            rec["null_score_diff"] = null.diff.into();
        }
        rec["n_best"] = serde_json::to_value(&choice.n_best)?;
        writeln!(f, "{rec}").with_context(|| format!("writing {}", out.display()))?;
    }
    f.flush()
        .with_context(|| format!("writing {}", out.display()))?;
    println!("{} answers -> {}", answers.len(), out.display());
    Ok(())
}

/// One word-level example's prediction: each word's tag, its probability and the logits of its
/// first sub-token (`null` for a word truncated away or that gave no token), and the entities
/// the tags form (seqeval's chunks; `start`/`end` are word indices, `end` inclusive; `score`
/// the mean probability of their words).
fn tag_record(
    ex: &lantern_data::labelled::RawExample,
    enc: &lantern_data::labelled::Encoded,
    logits: &[f32],
    names: &[String],
) -> serde_json::Value {
    let words = ex.words.as_deref().unwrap_or_default();
    let mut tags: Vec<Option<&str>> = vec![None; words.len()];
    let mut scores: Vec<Option<f64>> = vec![None; words.len()];
    let mut word_logits: Vec<Option<&[f32]>> = vec![None; words.len()];
    let positions = lantern_data::labelled::first_subwords(&enc.word_ids);
    for ((_, w), row) in positions.into_iter().zip(logits.chunks(names.len())) {
        let p = finetune::softmax(row);
        let best = finetune::argmax(&p);
        tags[w] = Some(names[best].as_str());
        scores[w] = Some(f64::from(p[best]));
        word_logits[w] = Some(row);
    }
    let plain: Vec<&str> = tags.iter().map(|t| t.unwrap_or("O")).collect();
    let entities: Vec<serde_json::Value> = lantern_train::metrics_tok::entities(&plain)
        .into_iter()
        .map(|e| {
            // The mean of its words' probabilities, as transformers' NER pipeline scores an
            // entity (aggregation "simple"); words without a prediction are not counted.
            let s: Vec<f64> = scores[e.start..=e.end].iter().flatten().copied().collect();
            serde_json::json!({
                "type": e.kind,
                "start": e.start,
                "end": e.end,
                "text": words[e.start..=e.end].join(" "),
                "score": s.iter().sum::<f64>() / s.len().max(1) as f64,
            })
        })
        .collect();
    serde_json::json!({
        "line": ex.line, "words": words, "tags": tags, "scores": scores, "entities": entities,
        "logits": word_logits,
    })
}

fn encode(model: &Path, input: &Path, out: &Path, max_length: usize) -> Result<()> {
    let dir = finetune::resolve_checkpoint(model)?;
    let (cfg, head) = hf::config_from_hf(&dir.join("config.json"))?;
    let head = head.unwrap_or(BertHead::Encoder);
    let (params, _) = hf::load_params(
        &dir.join("model.safetensors"),
        &cfg,
        head,
        &mut Rng::new(0),
        &Device::Cpu,
        DType::F32,
    )?;
    let tok_path = dir.join("tokenizer.json");
    let tokenizer = lantern_data::tokenizer::load_tokenizer(&tok_path)?;
    lantern_data::tokenizer::check_vocab(&tokenizer, cfg.vocab_size, &tok_path)?;
    let tok = lantern_data::labelled::for_classification(&tokenizer, max_length, &tok_path)?;
    let mut raw = lantern_data::labelled::read_examples(input)?;
    raw.iter_mut().for_each(|e| e.label = None);
    // Labels were dropped: the problem type does not matter.
    let examples = lantern_data::labelled::encode(
        &tok,
        &raw,
        (ProblemType::SingleLabelClassification, &[]),
        input,
    )?;
    let pad = tokenizer.token_to_id("[PAD]").unwrap_or(cfg.pad_token_id);
    let refs: Vec<_> = examples.iter().collect();
    let b = lantern_data::labelled::pad_batch(&refs, pad);
    let shape = (b.rows, b.cols);
    let ids = Tensor::from_slice(&b.ids, shape, &Device::Cpu)?;
    let tt = Tensor::from_slice(&b.type_ids, shape, &Device::Cpu)?;
    let mask = Tensor::from_slice(&b.attention_mask, shape, &Device::Cpu)?;
    let bert = BertModel::new(&cfg, &params.frozen(), head)?;
    let hidden = bert.forward(
        &BertInput {
            ids: &ids,
            token_type_ids: Some(&tt),
            attention_mask: Some(&mask),
        },
        &mut Mode::Eval,
    )?;
    let mut t = BTreeMap::new();
    if cfg.has_pooler(head) {
        t.insert(
            "pooler_output".to_string(),
            bert.pool(&hidden, &mut Mode::Eval)?,
        );
    }
    t.insert("last_hidden_state".to_string(), hidden);
    t.insert("input_ids".to_string(), ids.to_dtype(DType::I64)?);
    t.insert("token_type_ids".to_string(), tt.to_dtype(DType::I64)?);
    t.insert("attention_mask".to_string(), mask.to_dtype(DType::I64)?);
    std::fs::write(out, safetensors_io::serialize(&t)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "encoded {} texts ({} x {} tokens) with {} -> {}",
        b.rows,
        b.rows,
        b.cols,
        dir.display(),
        out.display()
    );
    Ok(())
}

fn suffixed(p: &Path, suffix: &str) -> PathBuf {
    let stem = p.file_stem().map_or("out".into(), |s| s.to_string_lossy());
    p.with_file_name(format!("{stem}.{suffix}"))
}

fn collect_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            v.sort();
            files.extend(v);
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            bail!("input {} does not exist", p.display());
        }
    }
    if files.is_empty() {
        bail!("no input files");
    }
    Ok(files)
}

/// Whether `path` is a fine-tuning model: a BERT-family folder (an HF BERT, RoBERTa, XLM-R,
/// DistilBERT, ELECTRA or ModernBERT folder, a fine-tuning checkpoint or run), or a GPT-2 or Llama-family
/// classifier (`GPT2ForSequenceClassification`, `LlamaForTokenClassification`, ...). Their
/// language models are not.
pub fn is_task_model(path: &Path) -> bool {
    let Ok(dir) = finetune::resolve_checkpoint(path) else {
        return false;
    };
    let Some(v) = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    else {
        return false;
    };
    match v.get("model_type").and_then(|m| m.as_str()) {
        Some(mt) if lantern_models::decoder::is_model_type(mt) => v
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(|a| a.as_str())
            .is_some_and(DecoderHead::is_architecture),
        Some(other) => Family::from_model_type(other).is_some(),
        None => false,
    }
}

/// Exports a fine-tuning model (a BERT-family folder with any of our heads, or a GPT-2 or
/// Llama classifier) in Hugging Face format, checking every tensor
/// against the config on the way; an existing `out` is never overwritten.
pub fn export(path: &Path, out: &Path, dtype: DType) -> Result<()> {
    if out.exists() {
        bail!(
            "{} already exists: remove it or choose another --out",
            out.display()
        );
    }
    let dir = finetune::resolve_checkpoint(path)?;
    let (cfg, head) = TaskConfig::from_hf(&dir.join("config.json"))?;
    let head = head.with_context(|| {
        format!(
            "{}: \"architectures\" names no BERT-family model or GPT-2 or Llama-family classifier \
             Lantern implements",
            dir.join("config.json").display()
        )
    })?;
    let (params, report) = cfg.load_params(
        &dir.join("model.safetensors"),
        head,
        &mut Rng::new(0),
        &Device::Cpu,
        DType::F32,
    )?;
    if !report.newly_initialised.is_empty() {
        bail!(
            "{}: missing {}",
            dir.join("model.safetensors").display(),
            report.newly_initialised.join(", ")
        );
    }
    let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let write = || -> Result<()> {
        let bytes = safetensors_io::serialize(&cfg.export_tensors(&params, dtype)?)?;
        std::fs::write(tmp.join("model.safetensors"), bytes)?;
        let c = cfg.to_hf_config(head, dtype);
        std::fs::write(tmp.join("config.json"), serde_json::to_string_pretty(&c)?)?;
        let tok_path = dir.join("tokenizer.json");
        if tok_path.is_file() {
            std::fs::copy(&tok_path, tmp.join("tokenizer.json"))?;
            // The folder's own tokenizer_config.json (given a pad token if the config has a
            // pad id it lacks) when it has one, else built.
            let tok = lantern_data::tokenizer::load_tokenizer(&tok_path)?;
            let tokens = lantern_train::model_tokens::of_task(&cfg);
            let bytes = lantern_data::tokenizer_config_bytes(&tok, &tokens, &[&dir])?;
            std::fs::write(tmp.join(lantern_data::TOKENIZER_CONFIG_FILE), bytes)?;
        }
        // A LoRA run's adapter (peft's files, fp32 as trained), beside the merged model.
        finetune::copy_adapter(&dir, &tmp)?;
        std::fs::rename(&tmp, out)?;
        Ok(())
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&tmp);
    })?;
    println!(
        "exported {} -> {} ({}, {dtype:?})",
        dir.display(),
        out.display(),
        cfg.architecture(head)
    );
    Ok(())
}

//! Zero-shot multiple choice for a causal language model: each choice is scored as the
//! continuation of the example's context and the most likely one is the model's answer
//! (lm-evaluation-harness's `multiple_choice` tasks; llm.c evaluates GPT-2 on HellaSwag this
//! way during training). `lantern score --choices` runs it on a file, and `data.eval_choices`
//! at every evaluation of a run.
//!
//! As lm-evaluation-harness builds its requests: the continuation is `" " + choice`; white
//! space ending the context moves to the continuation's start; the context and the whole
//! text are encoded without special tokens and the continuation's tokens are the whole's past
//! the context's; a sequence longer than the model's window loses tokens from the left (the
//! context's). A choice's log-likelihood is the sum of its tokens' log-probabilities.
//! Three answers:
//! - `acc`: the highest log-likelihood;
//! - `acc_norm`: the highest log-likelihood per character of the choice (lm-evaluation-harness);
//! - `acc_per_token`: the highest log-likelihood per token of the continuation (llm.c's
//!   HellaSwag `acc_norm`: the lowest mean loss).
//!
//! Ties go to the first choice, as numpy's `argmax`.

use crate::task::LossModel;
use crate::trainer::to_batch;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use lantern_data::choice::{read_lm_choices, HellaSwagText, LmChoice};
use lantern_models::Mode;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// One choice as the model reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    /// Context then continuation, at most the window plus one token: the model reads all but
    /// the last and predicts all but the first.
    tokens: Vec<u32>,
    /// The continuation's tokens, the last of `tokens`.
    continuation: usize,
}

/// An example, tokenized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChoiceItem {
    /// The example's line in its file.
    pub line: usize,
    pub label: Option<usize>,
    rows: Vec<Row>,
    /// Characters of each choice (`acc_norm`'s divisor).
    chars: Vec<usize>,
}

/// A file of multiple-choice examples, tokenized for one model.
#[derive(Debug, Clone)]
pub struct ChoiceSet {
    pub path: PathBuf,
    pub items: Vec<ChoiceItem>,
    /// Choices per example.
    pub choices: usize,
    /// Examples whose context lost tokens to the window.
    pub truncated: usize,
}

/// A choice's score: the summed log-probability of its continuation and its tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChoiceScore {
    pub loglik: f64,
    pub tokens: usize,
}

/// An example's three answers (indices of choices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answers {
    pub acc: usize,
    pub acc_norm: usize,
    pub acc_per_token: usize,
}

/// The first index of the largest value.
fn argmax(xs: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, x) in xs.enumerate() {
        if x > best.1 || i == 0 {
            best = (i, x);
        }
    }
    best.0
}

impl ChoiceItem {
    /// The answers its scores give.
    pub fn answers(&self, scores: &[ChoiceScore]) -> Answers {
        Answers {
            acc: argmax(scores.iter().map(|s| s.loglik)),
            acc_norm: argmax(
                scores
                    .iter()
                    .zip(&self.chars)
                    .map(|(s, &c)| s.loglik / c as f64),
            ),
            acc_per_token: argmax(scores.iter().map(|s| s.loglik / s.tokens as f64)),
        }
    }
}

/// Splits `context + " " + choice` into the context's tokens and the continuation's, as
/// lm-evaluation-harness's `_encode_pair` does.
fn encode_pair(tok: &Tokenizer, context: &str, choice: &str) -> Result<(Vec<u32>, Vec<u32>)> {
    let kept = context.trim_end().len();
    let (context, continuation) = (&context[..kept], format!("{} {choice}", &context[kept..]));
    let encode = |text: &str| -> Result<Vec<u32>> {
        Ok(tok
            .encode(text, false)
            .map_err(|e| Error::Config(format!("tokenize: {e}")))?
            .get_ids()
            .to_vec())
    };
    let whole = encode(&format!("{context}{continuation}"))?;
    let context = encode(context)?;
    let continuation = whole.get(context.len()..).unwrap_or_default().to_vec();
    Ok((context, continuation))
}

impl ChoiceSet {
    /// Reads and tokenizes `path` ([`read_lm_choices`], HellaSwag's records as `hellaswag`
    /// says) for a model of vocabulary `vocab` and window `window` tokens; `limit` keeps the
    /// first examples only.
    pub fn read(
        path: &Path,
        hellaswag: HellaSwagText,
        tok: &Tokenizer,
        (vocab, window): (usize, usize),
        limit: Option<usize>,
    ) -> Result<Self> {
        let mut examples = read_lm_choices(path, hellaswag)?;
        if let Some(n) = limit {
            examples.truncate(n);
        }
        Self::from_examples(path, &examples, tok, (vocab, window))
    }

    /// Tokenizes `examples` (of the file `path`, for messages).
    pub fn from_examples(
        path: &Path,
        examples: &[LmChoice],
        tok: &Tokenizer,
        (vocab, window): (usize, usize),
    ) -> Result<Self> {
        let bad = |line: usize, what: String| -> Error {
            lantern_data::Error::Format {
                path: path.to_path_buf(),
                problem: format!("{}: {what}", lantern_data::records::place(path, line)),
            }
            .into()
        };
        let mut items = Vec::with_capacity(examples.len());
        let mut truncated = 0;
        for ex in examples {
            let mut rows = Vec::with_capacity(ex.choices.len());
            let mut cut = false;
            for (i, choice) in ex.choices.iter().enumerate() {
                let (context, continuation) = encode_pair(tok, &ex.context, choice)?;
                if context.is_empty() {
                    return Err(bad(ex.line, "the context encodes to no tokens".into()));
                }
                if continuation.is_empty() {
                    return Err(bad(ex.line, format!("choice {i} encodes to no tokens")));
                }
                if continuation.len() > window {
                    return Err(bad(
                        ex.line,
                        format!(
                            "choice {i} is {} tokens, longer than the model's window of \
                             {window}: it cannot be scored (leave the example out)",
                            continuation.len()
                        ),
                    ));
                }
                let mut tokens = [context, continuation.clone()].concat();
                if let Some(&id) = tokens.iter().find(|&&x| x as usize >= vocab) {
                    return Err(bad(
                        ex.line,
                        format!("token id {id} is past the model's vocabulary of {vocab}"),
                    ));
                }
                // lm-evaluation-harness: `(context_enc + continuation_enc)[-(max_length + 1):]`.
                if tokens.len() > window + 1 {
                    tokens.drain(..tokens.len() - (window + 1));
                    cut = true;
                }
                rows.push(Row {
                    tokens,
                    continuation: continuation.len(),
                });
            }
            truncated += usize::from(cut);
            items.push(ChoiceItem {
                line: ex.line,
                label: ex.label,
                rows,
                chars: ex.choices.iter().map(|c| c.chars().count()).collect(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            choices: items.first().map_or(0, |i| i.rows.len()),
            items,
            truncated,
        })
    }

    /// How many examples have a label (an evaluation needs them).
    pub fn labelled(&self) -> usize {
        self.items.iter().filter(|i| i.label.is_some()).count()
    }

    /// The scores of the examples `which` (indices into `items`), `per_forward` examples'
    /// choices through the model at a time, rows padded on the right (a causal model's
    /// earlier positions never see the padding).
    pub fn score(
        &self,
        model: &dyn LossModel,
        which: &[usize],
        per_forward: usize,
        device: &Device,
    ) -> Result<Vec<Vec<ChoiceScore>>> {
        let mut out = Vec::with_capacity(which.len());
        for group in which.chunks(per_forward.max(1)) {
            let rows: Vec<&Row> = group.iter().flat_map(|&i| &self.items[i].rows).collect();
            let t = rows.iter().map(|r| r.tokens.len() - 1).max().unwrap_or(1);
            let r = rows.len();
            let (mut ids, mut targets, mut weights) =
                (vec![0u32; r * t], vec![0u32; r * t], vec![0f32; r * t]);
            for (k, row) in rows.iter().enumerate() {
                let n = row.tokens.len() - 1;
                ids[k * t..k * t + n].copy_from_slice(&row.tokens[..n]);
                targets[k * t..k * t + n].copy_from_slice(&row.tokens[1..]);
                weights[k * t + n - row.continuation..k * t + n].fill(1.0);
            }
            let mut batch = to_batch(&ids, &targets, r, t, device)?;
            batch.weights = Some(Tensor::from_vec(weights, r * t, device)?);
            batch.n_targets = rows.iter().map(|r| r.continuation).sum();
            let logps = model.row_logps(&batch, Mode::Eval)?.to_vec1::<f32>()?; // (R)
            let mut logps = logps.into_iter().zip(rows);
            for &i in group {
                let c = self.items[i].rows.len();
                out.push(
                    logps
                        .by_ref()
                        .take(c)
                        .map(|(lp, row)| ChoiceScore {
                            loglik: f64::from(lp),
                            tokens: row.continuation,
                        })
                        .collect(),
                );
            }
        }
        Ok(out)
    }
}

/// Right answers over the labelled examples seen; added over ranks, then reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub examples: usize,
    pub acc: usize,
    pub acc_norm: usize,
    pub acc_per_token: usize,
}

impl Tally {
    /// Counts `answers` against `label` (an unlabelled example counts for nothing).
    pub fn add(&mut self, label: Option<usize>, answers: Answers) {
        if let Some(l) = label {
            self.examples += 1;
            self.acc += usize::from(answers.acc == l);
            self.acc_norm += usize::from(answers.acc_norm == l);
            self.acc_per_token += usize::from(answers.acc_per_token == l);
        }
    }

    /// As f32s for an all-reduce (exact below 2²⁴ examples).
    pub fn to_f32(self) -> [f32; 4] {
        [self.examples, self.acc, self.acc_norm, self.acc_per_token].map(|x| x as f32)
    }

    pub fn from_f32(x: [f32; 4]) -> Self {
        let [examples, acc, acc_norm, acc_per_token] = x.map(|v| v.round() as usize);
        Self {
            examples,
            acc,
            acc_norm,
            acc_per_token,
        }
    }

    /// The share of right answers of each kind; `None` without a labelled example.
    pub fn report(&self) -> Option<ChoiceReport> {
        let n = self.examples;
        (n > 0).then(|| {
            let share = |k: usize| Share::of(k, n);
            ChoiceReport {
                examples: n,
                acc: share(self.acc),
                acc_norm: share(self.acc_norm),
                acc_per_token: share(self.acc_per_token),
            }
        })
    }
}

/// A share of right answers and its standard error (lm-evaluation-harness's `mean_stderr`:
/// the sample standard deviation over √n; `None` for one example).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Share {
    pub value: f64,
    pub stderr: Option<f64>,
}

impl Share {
    fn of(right: usize, n: usize) -> Self {
        let p = right as f64 / n as f64;
        Self {
            value: p,
            stderr: (n > 1).then(|| (p * (1.0 - p) / (n - 1) as f64).sqrt()),
        }
    }
}

/// The three accuracies over `examples` labelled examples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChoiceReport {
    pub examples: usize,
    pub acc: Share,
    pub acc_norm: Share,
    pub acc_per_token: Share,
}

impl ChoiceReport {
    /// `acc 0.3125 | acc_norm 0.3750 | acc_per_token 0.3750`.
    pub fn line(&self) -> String {
        format!(
            "acc {:.4} | acc_norm {:.4} | acc_per_token {:.4}",
            self.acc.value, self.acc_norm.value, self.acc_per_token.value
        )
    }
}

/// An example's scores, one per choice, and the answers they give.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub scores: Vec<ChoiceScore>,
    pub answers: Answers,
}

/// The examples of `set` that rank `rank` of `world` scores (every `world`-th from its own
/// index; all of them for a world of one), each with its scores and answers, and their tally.
pub fn evaluate(
    set: &ChoiceSet,
    model: &dyn LossModel,
    (rank, world): (usize, usize),
    per_forward: usize,
    device: &Device,
) -> Result<(Vec<Scored>, Tally)> {
    let which: Vec<usize> = (rank..set.items.len()).step_by(world.max(1)).collect();
    let scores = set.score(model, &which, per_forward, device)?;
    let mut tally = Tally::default();
    let out = which
        .iter()
        .zip(scores)
        .map(|(&i, scores)| {
            let item = &set.items[i];
            let answers = item.answers(&scores);
            tally.add(item.label, answers);
            Scored { scores, answers }
        })
        .collect();
    Ok((out, tally))
}

/// `row_logps`'s scoring through a model's logits, for tests of [`ChoiceSet::score`] with a
/// stand-in model.
#[cfg(test)]
struct Logits<F: Fn(&Tensor) -> Result<Tensor>>(F);

#[cfg(test)]
impl<F: Fn(&Tensor) -> Result<Tensor>> LossModel for Logits<F> {
    fn loss_sum(&self, _: &crate::trainer::Batch, _: lantern_models::Mode<'_>) -> Result<Tensor> {
        unreachable!("scoring only")
    }

    fn row_logps(&self, batch: &crate::trainer::Batch, mode: Mode<'_>) -> Result<Tensor> {
        assert!(matches!(mode, Mode::Eval), "a stand-in for evaluation");
        crate::task::row_logps(&(self.0)(&batch.ids)?, batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    /// A byte-level BPE trained on a few words: enough for pairs and spaces.
    fn tokenizer() -> Tokenizer {
        let texts = ["the cat sat on the mat. a dog ran off, and the cat ran too."; 8];
        lantern_data::tokenizer::train_bpe_from_texts(&texts, 300).unwrap()
    }

    fn example(context: &str, choices: &[&str], label: usize) -> LmChoice {
        LmChoice {
            line: 1,
            context: context.into(),
            choices: choices.iter().map(|c| c.to_string()).collect(),
            label: Some(label),
        }
    }

    #[test]
    fn pairs_split_as_the_harness_splits_them() {
        let tok = tokenizer();
        let ids = |t: &str| tok.encode(t, false).unwrap().get_ids().to_vec();
        let (c, k) = encode_pair(&tok, "the cat", "sat on the mat.").unwrap();
        assert_eq!(c, ids("the cat"));
        assert_eq!([c, k].concat(), ids("the cat sat on the mat."));
        // Trailing white space of the context goes to the continuation.
        let (c, k) = encode_pair(&tok, "the cat  ", "ran").unwrap();
        assert_eq!(c, ids("the cat"));
        assert_eq!([c, k].concat(), ids("the cat   ran"));
    }

    #[test]
    fn windows_cut_the_context_from_the_left_and_refuse_long_choices() {
        let tok = tokenizer();
        let ex = example(
            "the cat sat on the mat. a dog ran off,",
            &["and the cat", "x"],
            0,
        );
        let whole = |i: usize| {
            let (c, k) = encode_pair(&tok, &ex.context, &ex.choices[i]).unwrap();
            ([c, k.clone()].concat(), k.len())
        };
        let (w0, k0) = whole(0);
        let window = w0.len() - 3;
        let set = ChoiceSet::from_examples(
            Path::new("f.jsonl"),
            std::slice::from_ref(&ex),
            &tok,
            (300, window),
        )
        .unwrap();
        let row = &set.items[0].rows[0];
        assert_eq!(row.tokens, w0[w0.len() - window - 1..]);
        assert_eq!(row.continuation, k0);
        assert_eq!(set.truncated, 1);
        let e = ChoiceSet::from_examples(
            Path::new("f.jsonl"),
            std::slice::from_ref(&ex),
            &tok,
            (300, k0 - 1),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("f.jsonl: line 1: choice 0 is"), "{e}");
        let e = ChoiceSet::from_examples(Path::new("f.jsonl"), &[ex], &tok, (5, 64))
            .unwrap_err()
            .to_string();
        assert!(e.contains("past the model's vocabulary of 5"), "{e}");
    }

    #[test]
    fn answers_break_ties_to_the_first_and_normalise_by_characters_and_tokens() {
        let item = ChoiceItem {
            line: 1,
            label: Some(1),
            rows: vec![],
            chars: vec![4, 10, 2],
        };
        let s = |loglik: f64, tokens: usize| ChoiceScore { loglik, tokens };
        // Sums -4, -4, -3: the third; per character -1, -0.4, -1.5: the second; per token
        // -2, -4, -0.75: the third.
        let a = item.answers(&[s(-4.0, 2), s(-4.0, 1), s(-3.0, 4)]);
        assert_eq!((a.acc, a.acc_norm, a.acc_per_token), (2, 1, 2));
        let a = item.answers(&[s(-2.0, 1), s(-2.0, 1), s(-5.0, 1)]);
        assert_eq!(a.acc, 0, "a tie goes to the first");
        let mut t = Tally::default();
        t.add(Some(1), item.answers(&[s(-4.0, 2), s(-4.0, 1), s(-3.0, 4)]));
        t.add(None, a);
        // Per character -0.5, -0.2, -2.5: the second, right.
        t.add(Some(1), a);
        assert_eq!(Tally::from_f32(t.to_f32()), t);
        let r = t.report().unwrap();
        let values = (r.acc.value, r.acc_norm.value, r.acc_per_token.value);
        assert_eq!((r.examples, values), (2, (0.0, 1.0, 0.0)));
        assert_eq!(r.acc_norm.stderr, Some(0.0));
        t.add(Some(0), a);
        let r = t.report().unwrap();
        assert_eq!(r.acc.value, 1.0 / 3.0);
        // The sample standard deviation of (0, 0, 1) over √3.
        assert!((r.acc.stderr.unwrap() - (1.0f64 / 3.0 / 3.0).sqrt()).abs() < 1e-12);
        assert!(Tally::default().report().is_none());
    }

    /// The scores of a batch of examples are each example's own: the same as scoring it
    /// alone (padding never reaches an earlier position), and the continuation's
    /// log-probabilities under a model whose logits depend on every earlier token.
    #[test]
    fn scores_do_not_depend_on_the_batch_and_read_the_continuation_only() {
        let tok = tokenizer();
        let v = 300;
        let examples = [
            example(
                "the cat sat",
                &["on the mat.", "ran", "a dog ran off, and"],
                2,
            ),
            example("a dog", &["ran off.", "sat", "the"], 0),
            example("the mat. the cat ran", &["too.", "off", "and the dog"], 1),
        ];
        let set = ChoiceSet::from_examples(Path::new("f.jsonl"), &examples, &tok, (v, 64)).unwrap();
        // Logits at position p: a function of the ids at 0..=p (a cumulative sum), so the
        // right padding cannot change them.
        let model = Logits(|ids: &Tensor| {
            let (b, t) = ids.dims2()?;
            let x = ids.to_dtype(DType::F32)?.cumsum(1)?; // (B, T)
            let k = Tensor::arange(0f32, v as f32, ids.device())?; // (V)
            let l = x
                .unsqueeze(2)?
                .broadcast_mul(&k.reshape((1, 1, v))?)?
                .affine(1e-3, 0.0)?
                .sin()?;
            Ok(l.reshape((b, t, v))?)
        });
        let dev = Device::Cpu;
        let all: Vec<usize> = (0..3).collect();
        let together = set.score(&model, &all, 3, &dev).unwrap();
        for (i, together) in together.iter().enumerate() {
            let alone = set.score(&model, &[i], 1, &dev).unwrap();
            for (a, b) in alone[0].iter().zip(together) {
                assert!((a.loglik - b.loglik).abs() < 1e-5, "{a:?} {b:?}");
                assert_eq!(a.tokens, b.tokens);
            }
        }
        // By hand: the continuation's log-softmax at its positions.
        let row = &set.items[0].rows[1];
        let n = row.tokens.len() - 1;
        let ids = Tensor::from_slice(&row.tokens[..n], (1, n), &dev).unwrap();
        let logits = (model.0)(&ids).unwrap().squeeze(0).unwrap();
        let lp = candle_nn::ops::log_softmax(&logits, 1)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let want: f32 = (n - row.continuation..n)
            .map(|p| lp[p][row.tokens[p + 1] as usize])
            .sum();
        assert!((together[0][1].loglik - f64::from(want)).abs() < 1e-5);
        // Ranks' shares add up to the whole.
        let (_, whole) = evaluate(&set, &model, (0, 1), 2, &dev).unwrap();
        let mut sum = Tally::default();
        for r in 0..2 {
            let (_, t) = evaluate(&set, &model, (r, 2), 1, &dev).unwrap();
            sum = Tally::from_f32([0, 1, 2, 3].map(|k| sum.to_f32()[k] + t.to_f32()[k]));
        }
        assert_eq!(sum, whole);
        assert_eq!(whole.examples, 3);
    }
}

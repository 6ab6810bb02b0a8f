//! Generation (`lantern generate`, and the samples a training run writes): the loop over a
//! [`Decoder`] with its key/value cache ([`generate`]), and how it chooses the next token
//! from the model's logits, with the rules of
//! Hugging Face `generate`: the repetition penalty (`RepetitionPenaltyLogitsProcessor`), then
//! temperature, top-k and top-p (`TemperatureLogitsWarper`, `TopKLogitsWarper`,
//! `TopPLogitsWarper`), in that order; temperature 0 is greedy, where only the penalty applies
//! (as in transformers' greedy search, which runs the processors but not the warpers).
//!
//! Checked against transformers 5.24 on `tests/golden/sampling.json`
//! (`scripts/make_sampling_golden.py`). One difference, kept from Lantern's earlier sampler: top-k
//! keeps exactly k tokens (the lower ids on a tie at the k-th logit), where transformers keeps
//! every token tied with the k-th.

use crate::decoder::Decoder;
use crate::{Mode, Result};
use candle_core::{DType, Device, Tensor};
use lantern_kernels::Rng;
use std::borrow::Cow;

/// A sampling setting out of range: its name (`temperature`, `top_p`, `repetition_penalty`),
/// its value and what it must be. Commands name it as their flag or config key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BadSetting {
    pub name: &'static str,
    pub value: f64,
    pub expected: &'static str,
}

impl BadSetting {
    /// As a command-line flag names it: `--top-p 1.5: expected a number in (0, 1] (1 = off)`.
    pub fn flag(&self) -> String {
        format!(
            "--{} {}: {}",
            self.name.replace('_', "-"),
            self.value,
            self.expected
        )
    }

    /// As a config key of `section` names it: `sample.top_p 1.5: expected ...`.
    pub fn key(&self, section: &str) -> String {
        format!("{section}.{} {}: {}", self.name, self.value, self.expected)
    }
}

/// The settings of the next-token choice, validated by [`Sampling::new`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0 (or below) = greedy.
    temperature: f64,
    /// 0 = all tokens.
    top_k: usize,
    /// In (0, 1]; 1 = off.
    top_p: f64,
    /// > 0; 1 = off.
    repetition_penalty: f64,
}

impl Sampling {
    /// Checks each setting's range.
    pub fn new(
        temperature: f64,
        top_k: usize,
        top_p: f64,
        repetition_penalty: f64,
    ) -> std::result::Result<Self, BadSetting> {
        let bad = |name, value, expected| {
            Err(BadSetting {
                name,
                value,
                expected,
            })
        };
        if temperature.is_nan() {
            return bad(
                "temperature",
                temperature,
                "expected a number >= 0 (0 = greedy)",
            );
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return bad("top_p", top_p, "expected a number in (0, 1] (1 = off)");
        }
        if !(repetition_penalty > 0.0 && repetition_penalty.is_finite()) {
            return bad(
                "repetition_penalty",
                repetition_penalty,
                "expected a finite number > 0 (1 = off)",
            );
        }
        Ok(Self {
            temperature,
            top_k,
            top_p,
            repetition_penalty,
        })
    }

    fn greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

/// The next token for `logits` after `seen` (the sequence so far: prompt and generated ids). The
/// greedy choice takes no random number; sampling takes one `rng.next_f64()`.
pub fn pick(logits: &[f32], seen: &[u32], how: &Sampling, rng: &mut Rng) -> u32 {
    let (idx, w) = candidates(logits, seen, how);
    if how.greedy() {
        return idx[0] as u32;
    }
    let mut u = rng.next_f64() * w.iter().sum::<f64>();
    for (k, wi) in w.iter().enumerate() {
        if u < *wi {
            return idx[k] as u32;
        }
        u -= wi;
    }
    idx[idx.len() - 1] as u32
}

/// The tokens [`pick`] draws from, most likely first (ties: lower id first), with their
/// probabilities; greedy gives its one token with probability 1.
#[cfg(test)]
pub fn distribution(logits: &[f32], seen: &[u32], how: &Sampling) -> Vec<(u32, f64)> {
    let (idx, w) = candidates(logits, seen, how);
    if how.greedy() {
        return vec![(idx[0] as u32, 1.0)];
    }
    let sum: f64 = w.iter().sum();
    idx.iter()
        .zip(&w)
        .map(|(&i, &wi)| (i as u32, wi / sum))
        .collect()
}

/// When a sample ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub max_new: usize,
    /// Tokens that end the sample (not included).
    pub eot: Vec<u32>,
}

/// Autoregressive sampling. While the sequence fits the model's context, the prompt runs once
/// and each new token alone, against the keys and values cached so far; past that, every
/// token runs the forward over the last context-length tokens (GPT-2's positions are absolute
/// and Llama's rotary angles are baked into its cached keys, so a cache cannot slide with the
/// window; a LongRoPE model's cache is dropped once, where the sequence passes its original
/// context). Each token is chosen by [`pick`] from the last position's logits and the whole
/// sequence so far. Returns the new tokens.
pub fn generate(
    model: &Decoder,
    device: &Device,
    prompt: &[u32],
    how: &Sampling,
    stop: &Stop,
    rng: &mut Rng,
) -> Result<Vec<u32>> {
    let n_pos = model.max_positions();
    let mut ids = prompt.to_vec();
    let mut out = Vec::new();
    let mut cache = model.cache();
    for _ in 0..stop.max_new {
        // LongRoPE's cached keys are rotated with its short factors: past the original
        // context the whole sequence runs again (transformers' Phi-3 generation does).
        if model.cache_expires(&cache, ids.len()) {
            cache = model.cache();
        }
        let last = if ids.len() <= n_pos {
            let new = &ids[cache.len()..];
            let x = Tensor::from_slice(new, (1, new.len()), device)?;
            model.forward_last_cached(&x, &mut cache)?.get(0)?
        } else {
            let ctx = &ids[ids.len() - n_pos..];
            let x = Tensor::from_slice(ctx, (1, n_pos), device)?;
            model.forward(&x, Mode::Eval)?.get(0)?.get(n_pos - 1)?
        };
        let last: Vec<f32> = last.to_dtype(DType::F32)?.to_vec1()?;
        let next = pick(&last, &ids, how, rng);
        if stop.eot.contains(&next) {
            break;
        }
        ids.push(next);
        out.push(next);
    }
    Ok(out)
}

/// `RepetitionPenaltyLogitsProcessor`: each token id in `seen` (once, however often it occurs;
/// ids past the vocabulary are ignored) has its logit multiplied by `penalty` where negative and
/// divided by it otherwise, in f32 as torch does on float32 scores.
pub fn penalize<'a>(logits: &'a [f32], seen: &[u32], penalty: f64) -> Cow<'a, [f32]> {
    if penalty == 1.0 {
        return Cow::Borrowed(logits);
    }
    let r = penalty as f32;
    let mut hit = vec![false; logits.len()];
    let mut out = logits.to_vec();
    for &id in seen {
        let i = id as usize;
        if i < out.len() && !hit[i] {
            hit[i] = true;
            let l = out[i];
            out[i] = if l < 0.0 { l * r } else { l / r };
        }
    }
    Cow::Owned(out)
}

/// The token ids that can be drawn, most likely first (stable: lower id first on a tie), and
/// their unnormalised weights `exp((logit - max) / temperature)`. Greedy: the argmax first
/// (weights unused).
fn candidates(logits: &[f32], seen: &[u32], how: &Sampling) -> (Vec<usize>, Vec<f64>) {
    let l = penalize(logits, seen, how.repetition_penalty);
    let mut idx: Vec<usize> = (0..l.len()).collect();
    idx.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
    if how.greedy() {
        return (idx, Vec::new());
    }
    if how.top_k > 0 && how.top_k < idx.len() {
        idx.truncate(how.top_k);
    }
    let max = l[idx[0]] as f64;
    let w: Vec<f64> = idx
        .iter()
        .map(|&i| ((l[i] as f64 - max) / how.temperature).exp())
        .collect();
    if how.top_p < 1.0 {
        let keep = top_p_keep(&l, &idx, how.temperature, how.top_p);
        return idx
            .iter()
            .zip(&w)
            .zip(&keep)
            .filter(|(_, &k)| k)
            .map(|((&i, &wi), _)| (i, wi))
            .unzip();
    }
    (idx, w)
}

/// `TopPLogitsWarper` on the tokens `idx` (what top-k left), for each of them whether it stays.
/// The warper sorts the float32 scores (logits / temperature) ascending, takes the cumulative
/// sum of their softmax (accumulated in f64 and rounded to f32 at each step, as torch's CPU
/// cumsum) and removes every token whose cumulative probability is <= 1 - top_p (compared in
/// f32, the threshold rounded to f32), except the last, most likely one. So a token stays only
/// while the tokens more likely than it add up to less than top_p; on a tie the ascending
/// order is by id (a stable sort), so the lower ids of a tie go first.
fn top_p_keep(l: &[f32], idx: &[usize], temperature: f64, top_p: f64) -> Vec<bool> {
    let t = temperature as f32;
    let s: Vec<f32> = idx.iter().map(|&i| l[i] / t).collect();
    let mut order: Vec<usize> = (0..idx.len()).collect();
    order.sort_by(|&a, &b| s[a].total_cmp(&s[b]).then(idx[a].cmp(&idx[b])));
    let top = s[order[order.len() - 1]] as f64;
    let e: Vec<f64> = s.iter().map(|&x| (x as f64 - top).exp()).collect();
    let sum: f64 = e.iter().sum();
    let threshold = (1.0 - top_p) as f32;
    let mut keep = vec![true; idx.len()];
    let mut acc = 0.0f64;
    for &j in &order[..order.len() - 1] {
        acc += (e[j] / sum) as f32 as f64;
        if acc as f32 <= threshold {
            keep[j] = false;
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// `pick` as it was before the repetition penalty and top-p (the reference for the
    /// defaults).
    fn old_pick(logits: &[f32], temperature: f64, top_k: usize, rng: &mut Rng) -> u32 {
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        if temperature <= 0.0 {
            return idx[0] as u32;
        }
        if top_k > 0 && top_k < idx.len() {
            idx.truncate(top_k);
        }
        let max = logits[idx[0]] as f64;
        let w: Vec<f64> = idx
            .iter()
            .map(|&i| ((logits[i] as f64 - max) / temperature).exp())
            .collect();
        let mut u = rng.next_f64() * w.iter().sum::<f64>();
        for (k, wi) in w.iter().enumerate() {
            if u < *wi {
                return idx[k] as u32;
            }
            u -= wi;
        }
        idx[idx.len() - 1] as u32
    }

    fn random_logits(rng: &mut Rng, n: usize, scale: f64) -> Vec<f32> {
        (0..n)
            .map(|_| ((rng.next_f64() * 2.0 - 1.0) * scale) as f32)
            .collect()
    }

    #[test]
    fn defaults_pick_as_before() {
        let mut gen = Rng::new(7);
        for case in 0..40u64 {
            let n = [5, 50, 512, 4096][case as usize % 4];
            let mut logits = random_logits(&mut gen, n, 4.0);
            if case % 5 == 0 {
                // Ties, including at the top-k boundary.
                for x in logits.iter_mut() {
                    *x = (*x * 2.0).round() / 2.0;
                }
            }
            let seen: Vec<u32> = (0..10).map(|_| gen.below(n as u64) as u32).collect();
            for (temperature, top_k) in [(0.8, 40), (1.0, 0), (0.3, 3), (1.7, 1), (0.0, 40)] {
                let how = Sampling::new(temperature, top_k, 1.0, 1.0).unwrap();
                let (mut a, mut b) = (Rng::new(case), Rng::new(case));
                for _ in 0..20 {
                    assert_eq!(
                        pick(&logits, &seen, &how, &mut a),
                        old_pick(&logits, temperature, top_k, &mut b),
                        "case {case}, temperature {temperature}, top-k {top_k}"
                    );
                }
                assert_eq!(a, b, "the same random numbers taken");
            }
        }
    }

    #[test]
    fn bad_settings_name_the_flag() {
        let err = |t, k, p, r| Sampling::new(t, k, p, r).unwrap_err().flag();
        for p in [0.0, -0.1, 1.5, f64::NAN] {
            let e = err(0.8, 40, p, 1.0);
            assert!(e.starts_with("--top-p ") && e.contains("(0, 1]"), "{e}");
        }
        for r in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = err(0.8, 40, 1.0, r);
            assert!(
                e.starts_with("--repetition-penalty ") && e.contains("> 0"),
                "{e}"
            );
        }
        assert!(err(f64::NAN, 40, 1.0, 1.0).starts_with("--temperature "));
        let e = Sampling::new(0.8, 40, 1.5, 1.0).unwrap_err().key("sample");
        assert_eq!(e, "sample.top_p 1.5: expected a number in (0, 1] (1 = off)");
        for (t, p, r) in [(0.8, 1.0, 1.0), (0.0, 1e-9, 1e9), (2.0, 0.5, 0.01)] {
            Sampling::new(t, 40, p, r).unwrap();
        }
    }

    #[test]
    fn greedy_applies_the_penalty_and_takes_no_random_number() {
        let how = Sampling::new(0.0, 40, 0.1, 2.0).unwrap();
        let mut rng = Rng::new(1);
        // 3.0 / 2 = 1.5 < 2.0 (id 1); -1.0 * 2 for the seen negative one.
        let logits = [3.0, 2.0, -1.0, 1.9];
        assert_eq!(pick(&logits, &[0, 2, 0], &how, &mut rng), 1);
        assert_eq!(rng, Rng::new(1));
        assert_eq!(distribution(&logits, &[0, 1], &how), vec![(3, 1.0)]);
    }

    #[test]
    fn tiny_top_p_is_greedy_and_draws_only_what_it_keeps() {
        let mut gen = Rng::new(3);
        for _ in 0..20 {
            let logits = random_logits(&mut gen, 100, 3.0);
            let seen = [1, 2, 3];
            let greedy = Sampling::new(0.0, 40, 1.0, 1.3).unwrap();
            let tiny = Sampling::new(0.9, 40, 1e-9, 1.3).unwrap();
            let mut rng = Rng::new(5);
            let first = pick(&logits, &seen, &greedy, &mut rng);
            assert_eq!(pick(&logits, &seen, &tiny, &mut rng), first);
            let nucleus = Sampling::new(1.2, 0, 0.7, 1.0).unwrap();
            let kept: Vec<u32> = distribution(&logits, &seen, &nucleus)
                .iter()
                .map(|x| x.0)
                .collect();
            for _ in 0..50 {
                assert!(kept.contains(&pick(&logits, &seen, &nucleus, &mut rng)));
            }
        }
    }

    /// The distributions of transformers 5.24's own processors (scripts/make_sampling_golden.py).
    #[test]
    fn matches_transformers_processors() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/golden/sampling.json"
        );
        let text = std::fs::read_to_string(path).expect("tests/golden/sampling.json");
        let golden: Value = serde_json::from_str(&text).unwrap();
        let floats = |v: &Value| -> Vec<Option<f64>> {
            v.as_array().unwrap().iter().map(Value::as_f64).collect()
        };
        let cases = golden["cases"].as_array().unwrap();
        assert!(cases.len() >= 20);
        for c in cases {
            let name = c["name"].as_str().unwrap();
            let logits: Vec<f32> = floats(&c["logits"])
                .iter()
                .map(|x| x.unwrap() as f32)
                .collect();
            let seen: Vec<u32> = c["seen"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            let (t, k) = (
                c["temperature"].as_f64().unwrap(),
                c["top_k"].as_u64().unwrap(),
            );
            let (p, r) = (
                c["top_p"].as_f64().unwrap(),
                c["repetition_penalty"].as_f64().unwrap(),
            );
            let how = Sampling::new(t, k as usize, p, r).unwrap();
            // The penalised (and scaled) scores are float32 operations as torch's: bit for bit.
            let scores = floats(&c["scores"]);
            let penalized = penalize(&logits, &seen, r);
            let scale = if t > 0.0 { t as f32 } else { 1.0 };
            for (i, s) in scores.iter().enumerate() {
                if let Some(s) = s {
                    assert_eq!(penalized[i] / scale, *s as f32, "{name}: score of id {i}");
                }
            }
            let ours = distribution(&logits, &seen, &how);
            if t == 0.0 {
                let argmax = c["argmax"].as_u64().unwrap() as u32;
                assert_eq!(ours, vec![(argmax, 1.0)], "{name}");
                continue;
            }
            let mut ids: Vec<u32> = ours.iter().map(|x| x.0).collect();
            ids.sort_unstable();
            let kept: Vec<u32> = c["kept"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(ids, kept, "{name}: the tokens kept");
            let probs = floats(&c["probs"]);
            let mut total = 0.0;
            for &(id, q) in &ours {
                let want = probs[id as usize].unwrap();
                assert!(
                    (q - want).abs() <= 1e-6,
                    "{name}: id {id}: {q} against {want}"
                );
                total += want;
            }
            assert!(
                (total - 1.0).abs() <= 1e-6,
                "{name}: golden mass outside the kept set"
            );
        }
    }
}

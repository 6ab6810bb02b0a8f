//! Perplexity of a token sequence of any length under a model of fixed context, by sliding
//! windows: Hugging Face's "Perplexity of fixed-length models" guide
//! (<https://huggingface.co/docs/transformers/perplexity>), with the exact token count.
//!
//! Windows start at 0, S, 2S, … and hold the tokens `[begin, min(begin + L, N))`; the loop
//! stops at the first window that reaches the end. A window scores the tokens from where the
//! previous window ended (`prev_end`) to its own end, each predicted from all the tokens of the
//! window before it, so with S < L every token but the first is scored exactly once, with
//! at least L − S tokens of context. The token at a window's start has no context in its
//! window: it is never scored, which only matters with S = L (non-overlapping windows), where
//! the first token of every window but the first is skipped, as in the guide and
//! transformers' own loss. S = L − 1 scores every token.
//!
//! The guide adds `loss · (num_valid_tokens − batch_size)` per window, which is one token
//! short for every window after the first when S < L (the window scores S tokens, its loss is
//! their mean, and it is counted as S − 1). Here the per-token NLLs are summed in f64 and
//! divided by the number of tokens actually scored.

use crate::Result;
use candle_core::{DType, Tensor};

/// Rows of logits [`target_nll`] forms at a time: (256, V) in f32 and f64 is 77 MB for GPT-2's
/// vocabulary, 98 MB for Llama 3's 128,256 tokens.
const NLL_CHUNK: usize = 256;

/// The negative log-likelihood in nats of each token at positions `from..T` of `ids` (B, T),
/// from a language model's last block output x (B, T, C) and its `head` ((rows, C) → logits
/// (rows, V): final norm and output projection) → (B, T − from) f64. `from` ≥ 1: the token at
/// position 0 has no context.
///
/// Only the scored positions go through the head, in chunks of `NLL_CHUNK` rows, so the
/// (B, T, V) logits are never held at once (1.6 GB for 8 windows of 1024 with GPT-2's 50,257
/// tokens). Each row's log-sum-exp is taken in f64 from the logits, `max + ln Σ exp(x − max)`.
pub(crate) fn target_nll(
    x: &Tensor,
    ids: &Tensor,
    from: usize,
    head: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (b, t, c) = x.dims3()?;
    check_first_target(from, t)?;
    let n = t - from;
    // Position p's output predicts the token at p + 1.
    let x = x
        .narrow(1, from - 1, n)?
        .contiguous()?
        .reshape((b * n, c))?;
    let y = ids.narrow(1, from, n)?.contiguous()?.reshape(b * n)?;
    let mut nll = Vec::new();
    for r0 in (0..b * n).step_by(NLL_CHUNK) {
        let len = NLL_CHUNK.min(b * n - r0);
        let logits = head(&x.narrow(0, r0, len)?)?.to_dtype(DType::F64)?; // (len, V)
        let m = logits.max_keepdim(1)?; // (len, 1)
        let lse = (logits.broadcast_sub(&m)?.exp()?.sum_keepdim(1)?.log()? + &m)?;
        let picked = logits.gather(&y.narrow(0, r0, len)?.unsqueeze(1)?, 1)?;
        nll.push((lse - picked)?.squeeze(1)?); // (len)
    }
    Ok(Tensor::cat(&nll, 0)?.reshape((b, n))?)
}

/// Refuses a first target outside `1..t` (before the forward runs).
pub(crate) fn check_first_target(from: usize, t: usize) -> Result<()> {
    if from == 0 || from >= t {
        return Err(crate::Error::Config(format!(
            "target_nll: first target {from} of a sequence of {t}: must be in 1..{t}"
        )));
    }
    Ok(())
}

/// Why a windowing cannot score a sequence; the messages use the guide's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("stride 0: windows must advance by at least one token")]
    ZeroStride,
    #[error("max length {0}: a window needs at least 2 tokens (one of context, one to score)")]
    LengthBelowTwo(usize),
    #[error(
        "stride {stride} is larger than the max length {max_length}: the tokens between \
         windows would not be scored"
    )]
    StrideAboveLength { stride: usize, max_length: usize },
    #[error("max length {max_length} is larger than the model's context (n_positions {context})")]
    LengthAboveContext { max_length: usize, context: usize },
    #[error("{0} token(s): at least 2 are needed to score one")]
    TooFewTokens(usize),
    #[error("batch 0: at least one window must run at a time")]
    ZeroBatch,
}

/// Window length L and stride S, checked against each other and a model's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windowing {
    max_length: usize,
    stride: usize,
}

/// One window: tokens `begin..end` run through the model, tokens `first_target..end` scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub begin: usize,
    pub end: usize,
    pub first_target: usize,
}

impl Window {
    pub fn len(&self) -> usize {
        self.end - self.begin
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.begin
    }

    /// The first scored position within the window (≥ 1).
    pub fn from(&self) -> usize {
        self.first_target - self.begin
    }
}

impl Windowing {
    /// 2 ≤ `max_length` ≤ `context` and 1 ≤ `stride` ≤ `max_length`.
    pub fn new(
        max_length: usize,
        stride: usize,
        context: usize,
    ) -> std::result::Result<Self, WindowError> {
        if stride == 0 {
            return Err(WindowError::ZeroStride);
        }
        if max_length < 2 {
            return Err(WindowError::LengthBelowTwo(max_length));
        }
        if stride > max_length {
            return Err(WindowError::StrideAboveLength { stride, max_length });
        }
        if max_length > context {
            return Err(WindowError::LengthAboveContext {
                max_length,
                context,
            });
        }
        Ok(Self { max_length, stride })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The windows over a sequence of `n` tokens, in order, each with at least one token to
    /// score: with S = L, a last window holding only its start token is left out (the guide
    /// runs it and gets a NaN loss over no tokens).
    pub fn windows(&self, n: usize) -> std::result::Result<Vec<Window>, WindowError> {
        if n < 2 {
            return Err(WindowError::TooFewTokens(n));
        }
        let mut out = Vec::new();
        let (mut begin, mut prev_end) = (0, 0);
        loop {
            let end = (begin + self.max_length).min(n);
            let first_target = prev_end.max(begin + 1);
            if first_target < end {
                out.push(Window {
                    begin,
                    end,
                    first_target,
                });
            }
            if end == n {
                return Ok(out);
            }
            prev_end = end;
            begin += self.stride;
        }
    }
}

/// The summed negative log-likelihood of the tokens scored, over the windows that ran.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Perplexity {
    /// Tokens scored.
    pub tokens: usize,
    /// Windows run.
    pub windows: usize,
    /// Σ −ln p(token | context) over the scored tokens, in nats, summed in f64.
    pub nll_sum: f64,
}

impl Perplexity {
    /// Mean NLL per scored token, in nats.
    pub fn mean_nll(&self) -> f64 {
        self.nll_sum / self.tokens as f64
    }

    /// `exp(mean NLL)`.
    pub fn perplexity(&self) -> f64 {
        self.mean_nll().exp()
    }

    /// Bits per byte of a text of `bytes` bytes: `Σ NLL / ln 2 / bytes`, which does not depend
    /// on the tokenizer.
    pub fn bits_per_byte(&self, bytes: usize) -> f64 {
        self.nll_sum / std::f64::consts::LN_2 / bytes as f64
    }

    /// Both sequences' tokens and windows together (several rows of `--tokens`).
    pub fn merge(self, other: Self) -> Self {
        Self {
            tokens: self.tokens + other.tokens,
            windows: self.windows + other.windows,
            nll_sum: self.nll_sum + other.nll_sum,
        }
    }
}

/// Scores `tokens` by `windowing`, running up to `batch` windows at a time through `nll`.
///
/// `nll(ids, rows, from)` gets `rows` windows of equal length T as one row-major (rows, T)
/// slice and returns the NLL of each token at positions `from..T` of each row, row-major
/// ((rows, T − from) values), each predicted from the tokens before it in its row. A batch
/// holds consecutive windows of the same length and `from` (the last, shorter window runs in a
/// batch of its own), and the NLLs are added in sequence order, so the result is the same for
/// every `batch` when `nll` gives each row the same values whatever its batch.
pub fn score_windows<F>(
    tokens: &[u32],
    windowing: &Windowing,
    batch: usize,
    mut nll: F,
) -> Result<Perplexity>
where
    F: FnMut(&[u32], usize, usize) -> Result<Vec<f64>>,
{
    if batch == 0 {
        return Err(WindowError::ZeroBatch.into());
    }
    let windows = windowing.windows(tokens.len())?;
    let mut out = Perplexity::default();
    let mut rest = &windows[..];
    while let Some(first) = rest.first() {
        let same = |w: &Window| w.len() == first.len() && w.from() == first.from();
        let rows = rest.iter().take(batch).take_while(|w| same(w)).count();
        let (group, tail) = rest.split_at(rows);
        let ids: Vec<u32> = group
            .iter()
            .flat_map(|w| &tokens[w.begin..w.end])
            .copied()
            .collect();
        let got = nll(&ids, rows, first.from())?;
        let per_row = first.end - first.first_target;
        if got.len() != rows * per_row {
            return Err(crate::Error::Config(format!(
                "scoring {rows} window(s) of {} tokens from position {} gave {} values, \
                 expected {}",
                first.len(),
                first.from(),
                got.len(),
                rows * per_row
            )));
        }
        for x in got {
            out.nll_sum += x;
        }
        out.tokens += rows * per_row;
        out.windows += rows;
        rest = tail;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(l: usize, s: usize) -> Windowing {
        Windowing::new(l, s, 1024).unwrap()
    }

    /// A stand-in model: token ids are their positions, so a row tells exactly which tokens a
    /// target was predicted from. Checks that each row is a contiguous run of the sequence and
    /// records every target's position; the "NLL" of a target depends on its whole context,
    /// so running it with any other context would change the sum.
    fn positional(
        seen: &mut Vec<usize>,
    ) -> impl FnMut(&[u32], usize, usize) -> Result<Vec<f64>> + '_ {
        move |ids, rows, from| {
            let t = ids.len() / rows;
            assert_eq!(ids.len(), rows * t);
            let mut out = Vec::new();
            for row in ids.chunks(t) {
                for (j, pair) in row.windows(2).enumerate() {
                    assert_eq!(pair[1], pair[0] + 1, "a window is a contiguous run");
                    if j + 1 >= from {
                        let ctx = &row[..=j];
                        seen.push(pair[1] as usize);
                        let h = ctx.iter().fold(0.5f64, |a, &x| (a * 1.37 + x as f64).sin());
                        out.push(1.0 + h + 0.01 * ctx.len() as f64);
                    }
                }
            }
            Ok(out)
        }
    }

    fn positions(n: usize) -> Vec<u32> {
        (0..n as u32).collect()
    }

    #[test]
    fn every_token_is_scored_once_when_windows_overlap() {
        for n in 2..60 {
            for l in 2..12 {
                for s in 1..=l {
                    let mut seen = Vec::new();
                    let r =
                        score_windows(&positions(n), &w(l, s), 3, positional(&mut seen)).unwrap();
                    let mut sorted = seen.clone();
                    sorted.sort_unstable();
                    sorted.dedup();
                    assert_eq!(sorted.len(), seen.len(), "n {n} L {l} S {s}: scored twice");
                    let expected: Vec<usize> = match s < l {
                        true => (1..n).collect(),
                        // S = L: each window's first token has no context in its window.
                        false => (1..n).filter(|p| p % l != 0).collect(),
                    };
                    assert_eq!(sorted, expected, "n {n} L {l} S {s}");
                    assert_eq!(r.tokens, seen.len());
                    let windows = w(l, s).windows(n).unwrap();
                    assert_eq!(r.windows, windows.len());
                    // The guide's loop: begin = 0, S, 2S, … up to the first window that ends
                    // at n; with S = L a last window of one token scores nothing and is dropped.
                    let guide = (0..).map(|k| k * s).position(|b| b + l >= n).unwrap() + 1;
                    let dropped = usize::from(s == l && n % l == 1 && n > l);
                    assert_eq!(windows.len(), guide - dropped, "n {n} L {l} S {s}");
                }
            }
        }
    }

    #[test]
    fn windows_follow_the_guide() {
        // N = 10, L = 4, S = 3: [0, 4) scores 1..4, [3, 7) 4..7, [6, 10) 7..10.
        let got = w(4, 3).windows(10).unwrap();
        let win = |begin, end, first_target| Window {
            begin,
            end,
            first_target,
        };
        assert_eq!(got, [win(0, 4, 1), win(3, 7, 4), win(6, 10, 7)]);
        // S = 1: each window after the first scores its last token, with L - 1 of context.
        let got = w(3, 1).windows(5).unwrap();
        assert_eq!(got, [win(0, 3, 1), win(1, 4, 3), win(2, 5, 4)]);
        // The last window is shorter: [0, 4), [2, 6), [4, 7) scoring 6..7.
        let got = w(4, 2).windows(7).unwrap();
        assert_eq!(got, [win(0, 4, 1), win(2, 6, 4), win(4, 7, 6)]);
        // S = L: [0, 4) scores 1..4, [4, 8) 5..8, and [8, 9) would score nothing.
        let got = w(4, 4).windows(9).unwrap();
        assert_eq!(got, [win(0, 4, 1), win(4, 8, 5)]);
        // Shorter than one window.
        assert_eq!(w(8, 8).windows(3).unwrap(), [win(0, 3, 1)]);
    }

    #[test]
    fn the_batch_does_not_change_the_result() {
        for (n, l, s) in [
            (97, 16, 5),
            (64, 16, 16),
            (65, 16, 16),
            (50, 7, 1),
            (5, 32, 8),
        ] {
            let tokens = positions(n);
            let mut seen = Vec::new();
            let one = score_windows(&tokens, &w(l, s), 1, positional(&mut seen)).unwrap();
            for batch in 2..=9 {
                let mut seen_b = Vec::new();
                let r = score_windows(&tokens, &w(l, s), batch, positional(&mut seen_b)).unwrap();
                // Bit for bit: the same values added in the same order.
                assert_eq!(r, one, "n {n} L {l} S {s} batch {batch}");
                assert_eq!(seen_b, seen);
            }
        }
    }

    #[test]
    fn batches_hold_windows_of_one_shape() {
        // N = 23, L = 8, S = 4: [0, 8) scores from position 1, [4, 12), [8, 16) and [12, 20)
        // from 4, and [16, 23), one token shorter, from 4 as well.
        let mut calls = Vec::new();
        score_windows(&positions(23), &w(8, 4), 8, |ids, rows, from| {
            calls.push((rows, ids.len() / rows, from));
            Ok(vec![0.0; rows * (ids.len() / rows - from)])
        })
        .unwrap();
        assert_eq!(calls, [(1, 8, 1), (3, 8, 4), (1, 7, 4)]);
    }

    #[test]
    fn sums_and_means() {
        let r = score_windows(&positions(5), &w(4, 4), 2, |ids, rows, from| {
            Ok(vec![0.5; rows * (ids.len() / rows - from)])
        })
        .unwrap();
        // [0, 4) scores 3 tokens; [4, 5) would score none.
        assert_eq!((r.tokens, r.windows), (3, 1));
        assert_eq!(r.nll_sum, 1.5);
        assert_eq!(r.mean_nll(), 0.5);
        assert!((r.perplexity() - 0.5f64.exp()).abs() < 1e-15);
        assert!((r.bits_per_byte(3) - 1.5 / std::f64::consts::LN_2 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn bad_settings_are_refused() {
        assert_eq!(Windowing::new(8, 0, 32), Err(WindowError::ZeroStride));
        assert_eq!(
            Windowing::new(1, 1, 32),
            Err(WindowError::LengthBelowTwo(1))
        );
        assert_eq!(
            Windowing::new(8, 9, 32),
            Err(WindowError::StrideAboveLength {
                stride: 9,
                max_length: 8
            })
        );
        assert_eq!(
            Windowing::new(64, 8, 32),
            Err(WindowError::LengthAboveContext {
                max_length: 64,
                context: 32
            })
        );
        assert_eq!(w(8, 8).windows(1), Err(WindowError::TooFewTokens(1)));
        assert_eq!(w(8, 8).windows(0), Err(WindowError::TooFewTokens(0)));
        let e = score_windows(&positions(9), &w(4, 4), 0, |_, _, _| Ok(vec![])).unwrap_err();
        assert!(e.to_string().contains("batch 0"), "{e}");
        // A scorer that returns the wrong number of values is caught.
        let e = score_windows(&positions(9), &w(4, 4), 1, |_, _, _| Ok(vec![1.0])).unwrap_err();
        assert!(e.to_string().contains("expected 3"), "{e}");
    }
}

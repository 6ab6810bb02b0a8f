#!/usr/bin/env python3
"""Golden next-token distributions from transformers' own logits processors, for the tests of
crates/cli/src/sampling.rs (`lantern generate`'s --repetition-penalty, --temperature, --top-k,
--top-p).

    .venv-ref/bin/python scripts/make_sampling_golden.py   # writes tests/golden/sampling.json

Each case is one step of `generate`: float32 logits for the next token, the sequence so far
(prompt + generated ids) and the settings. The processor list is built by `generate`'s own
`_get_logits_processor` from a `GenerationConfig` (so the order and the skipping of a setting
left at its neutral value are transformers'): with do_sample=True,
RepetitionPenaltyLogitsProcessor (if the penalty != 1), then TemperatureLogitsWarper (if != 1),
TopKLogitsWarper (if top_k != 0), TopPLogitsWarper (if top_p < 1); greedy (temperature 0 here,
do_sample=False) gets the penalty only and takes the argmax. Recorded: the processed scores
(float32, null = -inf), the ids left (not -inf), softmax(scores) (what `torch.multinomial`
draws from) and, for greedy cases, the argmax.

TopPLogitsWarper sorts the scores ascending, takes the cumulative sum of their softmax and
removes every token whose cumulative probability is <= 1 - top_p (float32: the threshold is
rounded to float32 too), keeping the last (most likely) one always. A token whose more likely
tokens already add up to top_p is therefore removed. On ties the ascending sort decides which
of the tied tokens go first; torch's CPU sort keeps tied values in index order only up to 16
elements (an insertion sort; past that the order of ties is arbitrary), so the cases with ties
use at most 16 tokens and the script checks that every case gives what a stable sort gives:
the lower ids of a tie are removed first.

Lantern's top-k keeps exactly k tokens (the lower ids on a tie at the k-th logit), where
TopKLogitsWarper keeps every token tied with the k-th; the cases have no such tie (checked).
Runs offline, on CPU, deterministic (numpy's seeded generator).
"""
import json
import math
import pathlib

import numpy as np
import torch
import transformers
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, LogitsProcessorList

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests/golden/sampling.json"
SEED = 20250611

# Only `self` of `_get_logits_processor`; its weights are never used.
_MODEL = GPT2LMHeadModel(GPT2Config(vocab_size=8, n_positions=8, n_embd=4, n_layer=1, n_head=1,
                                    bos_token_id=None, eos_token_id=None))


def processors(temperature, top_k, top_p, penalty, n_seen):
    greedy = temperature == 0.0
    settings = dict(repetition_penalty=penalty)
    if not greedy:
        settings.update(temperature=temperature, top_k=top_k, top_p=top_p)
    gc = GenerationConfig(do_sample=not greedy, **settings)
    return _MODEL._get_logits_processor(
        generation_config=gc, input_ids_seq_length=n_seen, encoder_input_ids=None,
        prefix_allowed_tokens_fn=None, logits_processor=LogitsProcessorList(), device="cpu",
        model_kwargs={})


def stable_top_p(scores, top_p):
    """TopPLogitsWarper's rule with a stable sort (ties in index order)."""
    sorted_logits, sorted_indices = torch.sort(scores, descending=False, stable=True)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - top_p)
    remove[..., -1:] = 0
    remove = remove.scatter(1, sorted_indices, remove)
    return scores.masked_fill(remove, -float("inf"))


def run(name, note, logits, seen, temperature=1.0, top_k=0, top_p=1.0, penalty=1.0):
    logits = np.asarray(logits, dtype=np.float32)
    vocab = logits.shape[0]
    procs = processors(temperature, top_k, top_p, penalty, len(seen))
    ids = torch.tensor([seen], dtype=torch.long)
    scores = procs(ids, torch.from_numpy(logits.copy())[None])
    names = [type(p).__name__ for p in procs]
    case = dict(name=name, note=note, vocab=vocab, logits=logits.tolist(), seen=list(seen),
                temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=penalty,
                processors=names)
    if temperature == 0.0:
        assert all(n == "RepetitionPenaltyLogitsProcessor" for n in names), names
        case["scores"] = scores[0].tolist()
        case["argmax"] = int(torch.argmax(scores, dim=-1)[0])
        return case
    # The same with a stable sort in top-p, and no tie at top-k's boundary.
    check = LogitsProcessorList([p for p in procs if type(p).__name__ != "TopPLogitsWarper"])
    before_top_p = check(ids, torch.from_numpy(logits.copy())[None])
    if top_p < 1.0:
        assert torch.equal(stable_top_p(before_top_p, top_p), scores), f"{name}: tie order"
    if 0 < top_k < vocab:
        warped = torch.from_numpy(logits.copy())[None]
        for p in check:
            if type(p).__name__ == "TopKLogitsWarper":
                break
            warped = p(ids, warped)
        top = torch.sort(warped[0], descending=True).values
        assert top[top_k - 1] != top[top_k], f"{name}: tie at the k-th score"
    probs = torch.softmax(scores, dim=-1)[0]
    s = scores[0].tolist()
    case["scores"] = [None if x == -math.inf else x for x in s]
    case["kept"] = [i for i, x in enumerate(s) if x != -math.inf]
    case["probs"] = probs.tolist()
    return case


def main():
    rng = np.random.default_rng(SEED)

    def normal(n, scale=2.0):
        return (rng.standard_normal(n) * scale).astype(np.float32)

    def seen(n, k):
        return [int(x) for x in rng.integers(0, n, size=k)]

    cases = []
    v50 = normal(50)
    cases.append(run("defaults", "lantern generate's defaults: temperature 0.8, top-k 40",
                     v50, seen(50, 6), temperature=0.8, top_k=40))
    cases.append(run("top_p_0.9", "nucleus alone", v50, seen(50, 6), top_p=0.9))
    cases.append(run("top_p_0.5_temperature_0.7", "temperature then nucleus", normal(50, 1.0), seen(50, 8),
                     temperature=0.7, top_p=0.5))
    cases.append(run("top_k_then_top_p", "the nucleus of the top-k tokens' renormalised probabilities",
                     normal(50, 1.0), seen(50, 8), temperature=1.3, top_k=10, top_p=0.6))
    cases.append(run("all_four", "penalty, temperature, top-k, top-p; repeated ids in the sequence",
                     normal(50, 1.0), [3, 3, 7, 7, 7, 12, 40, 41, 3], temperature=0.9, top_k=20,
                     top_p=0.8, penalty=1.3))
    mixed = normal(50)
    mixed[[1, 2, 5, 9]] = [2.5, -2.5, 0.0, -0.75]  # penalised: positive, negative, zero, negative
    cases.append(run("penalty_signs", "penalty on positive, negative and zero logits",
                     mixed, [1, 2, 5, 9, 1], penalty=1.5))
    cases.append(run("penalty_below_one", "a penalty < 1 favours the tokens seen",
                     normal(50), seen(50, 10), penalty=0.7))
    cases.append(run("penalty_huge", "a huge penalty: the seen tokens' positive logits become ~0",
                     normal(50), seen(50, 10), temperature=0.5, penalty=1e9))
    cases.append(run("penalty_id_past_vocab", "an id >= the vocabulary in the sequence is ignored",
                     normal(50), [4, 60, 4], penalty=2.0))
    cases.append(run("top_p_tiny", "top-p so small that only the most likely token stays",
                     normal(50), seen(50, 4), top_p=1e-6))
    far = normal(50)
    far[[0, 10, 20]] = [-150.0, -200.0, 120.0]
    cases.append(run("top_p_1", "top-p 1.0 adds no warper: every token stays, even those whose "
                     "float32 probability is 0", far, seen(50, 4), top_p=1.0))
    cases.append(run("large_vocab", "1000 tokens, temperature 1.2, top-p 0.95",
                     normal(1000, 4.0), seen(1000, 30), temperature=1.2, top_p=0.95))
    # Exact boundaries and ties (at most 16 tokens: see the docstring).
    cases.append(run("tie_equal_8_p_0.5", "8 equal logits, top-p 0.5: the 4 highest ids stay "
                     "(cumulative 0.5 <= 0.5 is removed)", np.zeros(8), [], top_p=0.5))
    cases.append(run("tie_equal_4_p_0.75", "4 equal logits, top-p 0.75: 3 stay", np.zeros(4), [],
                     top_p=0.75))
    cases.append(run("tie_equal_10_p_0.9", "10 equal logits, top-p 0.9: float32 0.1 <= "
                     "float32(1 - 0.9), so 9 stay", np.zeros(10), [], top_p=0.9))
    cases.append(run("tie_straddles_boundary", "a tie group cut by the top-p boundary",
                     [1.0, 0.5, 1.0, 2.0, 1.0, -1.0, 1.0, 0.0, 1.0, 1.0, -0.5, 1.0], [], top_p=0.6))
    cases.append(run("tie_with_top_k", "top-k cuts below a tie group, top-p inside it",
                     [0.3, 1.5, 1.5, -2.0, 1.5, 0.9, 1.5, 0.1, 2.2, -0.4, 1.5, 0.8, 0.0, 1.5], [7],
                     temperature=0.6, top_k=9, top_p=0.7, penalty=1.2))
    cases.append(run("penalty_breaks_tie", "the penalty lowers some of a tie group before top-p",
                     np.full(12, 0.5), [0, 3, 5], top_p=0.5, penalty=1.25))
    # Greedy: the penalty applies, the warpers do not; argmax takes the first maximum.
    cases.append(run("greedy_penalty", "greedy with a penalty: the argmax moves off a seen token",
                     [0.1, 3.0, 2.0, -1.0, 2.9, 0.0], [1, 4], temperature=0.0, penalty=1.6))
    cases.append(run("greedy_tie", "greedy with a tie at the maximum after the penalty: the lower id",
                     [1.0, 2.0, 4.0, 2.0, 0.5], [2], temperature=0.0, penalty=2.0))
    OUT.write_text(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__,
                               "seed": SEED, "cases": cases}, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()

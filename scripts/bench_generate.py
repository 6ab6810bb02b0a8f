#!/usr/bin/env python3
"""Greedy text generation, Lantern against transformers, side by side in one run on this
machine: the same GPT-2 or Llama folder, prompt, number of new tokens and threads. Run by
scripts/bench_generate.sh (which makes the model and builds Lantern).

  .venv-ref/bin/python scripts/bench_generate.py --lantern target/release/lantern \
      --model DIR --prompt "The " --max-new-tokens 200 --threads 2 [--repeats 3]

Lantern: `lantern generate --temperature 0 --ignore-eot`, its own timing line (prefill and
every new token, model loading excluded). transformers: `AutoModelForCausalLM.generate` with the
KV cache, greedy, exactly max_new_tokens (`min_new_tokens`), timed around the call after one
short warm-up. The best of --repeats runs of each. Both decode their tokens with the folder's
tokenizer.json; the texts must be the same (greedy on the same f32 weights).
"""
import argparse
import os
import re
import subprocess
import sys
import time


def lantern_run(a):
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    cmd = [a.lantern, "generate", "--model", a.model, "--prompt", a.prompt,
           "--max-new-tokens", str(a.max_new_tokens), "--temperature", "0", "--ignore-eot"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"lantern generate failed ({p.returncode}):\n{p.stderr}")
    m = re.search(r"sample 1: (\d+) tokens in ([0-9.]+) s", p.stderr)
    if not m:
        sys.exit(f"no timing line in lantern's stderr:\n{p.stderr}")
    text = p.stdout.split("--- sample 1 ---\n", 1)[1].rstrip("\n")
    return int(m.group(1)), float(m.group(2)), text


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lantern", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", default="The ")
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(a.threads)
    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    prompt_ids = tok.encode(a.prompt, add_special_tokens=False).ids
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    x = torch.tensor([prompt_ids])
    kw = dict(do_sample=False, use_cache=True, pad_token_id=0)
    with torch.inference_mode():
        model.generate(x, max_new_tokens=4, min_new_tokens=4, **kw)  # warm-up
        hf_best, hf_ids = float("inf"), None
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            out = model.generate(x, max_new_tokens=a.max_new_tokens,
                                 min_new_tokens=a.max_new_tokens, **kw)
            hf_best = min(hf_best, time.perf_counter() - t0)
            hf_ids = out[0, len(prompt_ids):].tolist()
    hf_text = a.prompt + tok.decode(hf_ids, skip_special_tokens=True)

    runs = [lantern_run(a) for _ in range(a.repeats)]
    n, lan_best, lan_text = min(runs, key=lambda r: r[1])
    if n != a.max_new_tokens or len(hf_ids) != a.max_new_tokens:
        sys.exit(f"token counts differ from {a.max_new_tokens}: lantern {n}, transformers {len(hf_ids)}")

    print(f"greedy generation, {a.max_new_tokens} new tokens after a prompt of {len(prompt_ids)}, "
          f"{a.threads} threads, best of {a.repeats}; model {a.model} ({type(model).__name__})\n")
    print("| implementation | seconds | tokens/s |")
    print("| --- | ---: | ---: |")
    print(f"| Lantern (KV cache) | {lan_best:.3f} | {n / lan_best:.1f} |")
    print(f"| transformers {__import__('transformers').__version__} / torch {torch.__version__} "
          f"(KV cache) | {hf_best:.3f} | {n / hf_best:.1f} |")
    print(f"\nratio Lantern / transformers tokens/s: {hf_best / lan_best:.2f}")
    same = lan_text == hf_text
    print(f"same text: {'yes' if same else 'NO'}")
    if not same:
        print(f"lantern:      {lan_text[:200]!r}\ntransformers: {hf_text[:200]!r}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

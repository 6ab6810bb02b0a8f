#!/usr/bin/env python3
"""PyTorch speed baseline: a nanoGPT-style GPT with the GPT-2 architecture, one full training
step (forward, cross-entropy, backward, AdamW step, zero_grad) timed per step.

Architecture (same as GPT-2 / Lantern's GPT): learned token + position embeddings, pre-LayerNorm
blocks (eps 1e-5), causal self-attention with one fused qkv Linear [C -> 3C] with bias and an
output projection with bias, MLP C -> 4C -> C with GELU (tanh form), final LayerNorm, lm_head
tied to wte (no bias), no dropout. Weights are fp32; --dtype bf16 runs the forward/loss under
torch.autocast(bfloat16) with fp32 master weights and optimizer state (the nanoGPT recipe).

Optimizer: torch.optim.AdamW(lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1) on all parameters,
fused=True on cuda, after clipping the gradients' global norm to --grad-clip (1.0, as Lantern's
step and nanoGPT; 0 = no clipping). Attention: F.scaled_dot_product_attention (flash on a GPU) by default on
cuda, the written-out softmax(QK^T)V on the CPU (--attn overrides).

stdout: exactly one JSON line at the end:
  {"impl", "tokens_per_s", "step_ms_median", "params", "threads", "device", "dtype", "attn",
   "flops_per_token", "mfu", "peak_tflops", "peak_mem_bytes", ...}
tokens_per_s = batch*seq_len / median step time over the --steps measured steps (after --warmup).
MFU as Lantern's `bench` and shared/ANCHORS.md: 6*N + 12*L*H*Q*T FLOPs per token (PaLM; N without
the position embedding) over --peak-tflops (default on cuda 989: H100 SXM dense bf16). Peak
memory: torch.cuda.max_memory_allocated over the whole run (tensors only, like Lantern's pool
high-water mark). Out of GPU memory: a message on stderr and exit status 3 (the batch search of
bundle/run.sh halves the batch on it). Progress goes to stderr.

--lora-r R: LoRA as peft trains it (peft's get_peft_model over the same model, LoraConfig r=R,
lora_alpha=R, no dropout, on --lora-targets, default c_attn): the rest frozen, AdamW and
clipping over the adapters only (Lantern's `bench --lora-r`).

Example (the ANCHORS.md CPU config):
  .venv-ref/bin/python scripts/bench_torch_gpt.py --n-layer 4 --n-embd 256 --n-head 4 \
      --vocab 2048 --seq-len 128 --batch 8 --steps 10 --warmup 3 --threads 2
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block_size: int, attn: str):
        super().__init__()
        assert n_embd % n_head == 0
        self.n_head = n_head
        self.attn = attn
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=True)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=True)
        if attn == "manual":
            mask = torch.tril(torch.ones(block_size, block_size, dtype=torch.bool))
            self.register_buffer("mask", mask.view(1, 1, block_size, block_size), persistent=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        if self.attn == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
            att = att.masked_fill(~self.mask[:, :, :T, :T], float("-inf"))
            att = F.softmax(att, dim=-1)
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, n_embd: int):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=True)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=True)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, n_embd, n_head, block_size, attn):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, eps=1e-5)
        self.attn = CausalSelfAttention(n_embd, n_head, block_size, attn)
        self.ln_2 = nn.LayerNorm(n_embd, eps=1e-5)
        self.mlp = MLP(n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, vocab, block_size, n_layer, n_embd, n_head, attn):
        super().__init__()
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList([Block(n_embd, n_head, block_size, attn) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets):
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))


def load_tokens(path, dtype, vocab):
    import numpy as np

    data = np.fromfile(path, dtype=np.uint16 if dtype == "uint16" else np.uint32)
    if data.size == 0:
        sys.exit(f"error: {path} holds no tokens")
    mx = int(data.max())
    if mx >= vocab:
        sys.exit(f"error: {path} has token id {mx} >= --vocab {vocab}")
    return torch.from_numpy(data.astype(np.int64))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10, help="measured steps")
    ap.add_argument("--warmup", type=int, default=3, help="unmeasured steps first (include compile)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 = leave default")
    ap.add_argument("--attn", choices=["manual", "sdpa"], default=None,
                    help="default: sdpa on cuda, manual on cpu")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--tokens", default=None, help="raw token file (uint16 by default); else random ids")
    ap.add_argument("--tokens-dtype", choices=["uint16", "uint32"], default="uint16")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--lora-r", type=int, default=0, help="LoRA rank through peft (0 = train every weight)")
    ap.add_argument("--lora-targets", default="c_attn", help="comma-separated peft target_modules")
    ap.add_argument("--grad-clip", type=float, default=1.0, help="global-norm clip (0 = none)")
    ap.add_argument("--tf32", action="store_true", help="let fp32 matmuls use TF32 on cuda")
    ap.add_argument(
        "--cuda-profiler-range",
        action="store_true",
        help="after the timed steps, one more step between cudaProfilerStart and "
        "cudaProfilerStop (for scripts/ktrace or ncu --profile-from-start off)",
    )
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="peak for MFU (default on cuda: 989, H100 SXM dense bf16; none on cpu)")
    args = ap.parse_args()
    if args.attn is None:
        args.attn = "sdpa" if args.device == "cuda" else "manual"
    try:
        return run(args)
    except torch.cuda.OutOfMemoryError as e:
        print(f"error: out of GPU memory at batch {args.batch} x {args.seq_len}: {e}", file=sys.stderr)
        return 3


def run(args) -> int:

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("error: --device cuda but torch.cuda.is_available() is False")
        # fp32 means fp32 unless --tf32 (Lantern's `bench --tf32` / train.tf32).
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.cuda.reset_peak_memory_stats()
    device = torch.device(args.device)
    torch.manual_seed(args.seed)

    model = GPT(args.vocab, args.seq_len, args.n_layer, args.n_embd, args.n_head, args.attn).to(device)
    n_params = sum(p.numel() for p in model.parameters())  # tied wte/lm_head counted once
    # N of the MFU formula leaves out the position table (block_size = seq_len rows).
    n_no_pos = n_params - model.wpe.weight.numel()
    L, H, Q, T_ = args.n_layer, args.n_head, args.n_embd // args.n_head, args.seq_len
    flops_per_token = 6 * n_no_pos + 12 * L * H * Q * T_
    peak_tflops = args.peak_tflops if args.peak_tflops else (989.0 if args.device == "cuda" else None)
    if args.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        targets = args.lora_targets.split(",")
        lora = LoraConfig(r=args.lora_r, lora_alpha=args.lora_r, lora_dropout=0.0, target_modules=targets)
        model = get_peft_model(model, lora)
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        trained, lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=(args.device == "cuda")
    )
    step_model = torch.compile(model) if args.compile else model

    B, T = args.batch, args.seq_len
    gen = torch.Generator().manual_seed(args.seed)
    if args.tokens:
        data = load_tokens(args.tokens, args.tokens_dtype, args.vocab)
        if data.numel() < T + 2:
            sys.exit(f"error: {args.tokens} holds {data.numel()} tokens, need > {T + 1}")

        def batch():
            ix = torch.randint(0, data.numel() - T - 1, (B,), generator=gen)
            x = torch.stack([data[i : i + T] for i in ix.tolist()])
            y = torch.stack([data[i + 1 : i + 1 + T] for i in ix.tolist()])
            return x.to(device), y.to(device)
    else:
        def batch():
            xy = torch.randint(0, args.vocab, (B, T + 1), generator=gen)
            return xy[:, :-1].contiguous().to(device), xy[:, 1:].contiguous().to(device)

    autocast = (
        torch.autocast(device_type=args.device, dtype=torch.bfloat16)
        if args.dtype == "bf16"
        else torch.autocast(device_type=args.device, enabled=False)
    )

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    def train_step(x, y):
        with autocast:
            loss = step_model(x, y)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trained, args.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    model.train()
    times = []
    last_loss = float("nan")
    total = args.warmup + args.steps
    for step in range(total):
        x, y = batch()
        sync()
        t0 = time.perf_counter()
        loss = train_step(x, y)
        sync()
        dt = time.perf_counter() - t0
        measured = step >= args.warmup
        if measured:
            times.append(dt)
            last_loss = loss.item()
        print(
            f"step {step:3d}{'' if measured else ' (warmup)'} loss {loss.item():.4f} {dt * 1000:.1f} ms",
            file=sys.stderr,
        )

    if args.cuda_profiler_range and args.device == "cuda":
        x, y = batch()
        sync()
        torch.cuda.profiler.start()
        train_step(x, y)
        sync()
        torch.cuda.profiler.stop()

    med = statistics.median(times) if times else float("nan")
    tokens_per_s = B * T / med
    cuda = args.device == "cuda"
    result = {
        "impl": "pytorch-compile" if args.compile else "pytorch-eager",
        "lora_r": args.lora_r or None,
        "trained_params": sum(p.numel() for p in trained),
        "tokens_per_s": round(tokens_per_s, 1),
        "step_ms_median": round(med * 1000, 3),
        "step_ms_min": round(min(times) * 1000, 3) if times else None,
        "step_ms_max": round(max(times) * 1000, 3) if times else None,
        "params": n_params,
        "params_no_pos": n_no_pos,
        "flops_per_token": flops_per_token,
        "flops_formula": "6N+12LHQT per token (PaLM; N without position embeddings)",
        "achieved_tflops": flops_per_token * tokens_per_s / 1e12,
        "peak_tflops": peak_tflops,
        "peak_name": "H100 SXM dense bf16 (989 TFLOP/s)" if cuda and not args.peak_tflops
        else (f"given: {peak_tflops} TFLOP/s" if peak_tflops else None),
        "mfu": flops_per_token * tokens_per_s / (peak_tflops * 1e12) if peak_tflops else None,
        "final_loss": last_loss,
        "peak_mem_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "peak_mem_reserved_bytes": torch.cuda.max_memory_reserved() if cuda else None,
        "peak_mem_method": "torch.cuda.max_memory_allocated (tensors only)" if cuda else None,
        "device_name": torch.cuda.get_device_name() if cuda else "cpu",
        "adamw": "fused" if cuda else "for-loop",
        "flash_sdp_enabled": torch.backends.cuda.flash_sdp_enabled() if cuda else None,
        "tf32": args.tf32,
        "grad_clip": args.grad_clip,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "dtype": args.dtype,
        "attn": args.attn,
        "n_layer": args.n_layer,
        "n_embd": args.n_embd,
        "n_head": args.n_head,
        "vocab": args.vocab,
        "seq_len": T,
        "batch": B,
        "steps": args.steps,
        "warmup": args.warmup,
        "torch": torch.__version__,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

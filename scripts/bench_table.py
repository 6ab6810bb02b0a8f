#!/usr/bin/env python3
"""The GPU benchmark's tables, from the JSON lines of `lantern bench`, `lantern bench-kernels`
and scripts/bench_torch_gpt.py (any number of files, in any order; for each implementation the
last line wins), and optionally the per-kernel CSV of Nsight Compute. Standard library only: it
runs on a GPU node without Rust (bundle/run.sh calls it) and anywhere else.

  python3 scripts/bench_table.py results/bench.jsonl [--ncu results/ncu_step.csv]
                                  [--ktrace results/ktrace.csv]

Prints Markdown tables: the training step side by side (tokens/s, step time, MFU, peak memory)
with the ratios Lantern / PyTorch eager and Lantern / torch.compile; Lantern's per-phase
profile; the kernel micro-benchmarks against the device copy; and, from the ncu CSV, where
one step's device time goes (matmuls, Lantern's kernels, candle's other kernels) and the gaps
between kernels (the unprofiled median step time minus the summed kernel time); from a
ktrace CSV (scripts/ktrace: CUPTI's records of one step per program, with GPU timestamps),
the same split for every traced program side by side, with the time the GPU sat idle inside
the step measured directly (the step's span minus the union of its kernels and copies).

Exit status 1 when the input holds no benchmark line at all.
"""
import argparse
import csv
import json
import re
import sys

TRAIN_IMPLS = [
    ("lantern", "Lantern"),
    # `lantern bench --attention composite`: the same step with candle matmuls around the
    # masked softmax instead of the fused attention kernels.
    ("lantern-composite-attention", "Lantern, composite attention"),
    ("pytorch-eager", "PyTorch eager"),
    ("pytorch-compile", "PyTorch torch.compile"),
]

# Lantern's own kernels (kernels/*.cu, extern "C" names).
OURS = re.compile(
    r"^(adamw_(f32|bf16|f16)|cross_entropy_(fwd|bwd)_\w+|cross_entropy_sum_rows"
    r"|gelu_(erf|tanh)_(fwd|bwd)_\w+|grad_norm_finish|grad_(scale|sumsq)_chunks"
    r"|layer_norm_(fwd|bwd_dx|bwd_dwdb_partial|bwd_dwdb_final)_\w+"
    r"|rms_norm_(fwd|bwd_dx|bwd_dw_partial|bwd_dw_final)_\w+"
    r"|rope_(fwd|bwd)_\w+"
    r"|softmax_(masked_)?(fwd|bwd)_\w+"
    r"|attention_(fwd|bwd_dkdv|bwd_dq)_\w+_hd\d+|attention_bwd_d_\w+"
    r"|bias_(add|gelu_tanh|gelu_erf)_(fwd|bwd_partial)_\w+|bias_bwd_final_\w+"
    r"|embedding_(fwd|bwd)_\w+)$"
)
# cuBLAS / cuBLASLt matrix products on Hopper and earlier.
MATMUL = re.compile(r"gemm|nvjet|cutlass|xmma|cublas|splitk|gemv", re.IGNORECASE)


def read_lines(paths):
    rows = []
    for p in paths:
        try:
            f = open(p, encoding="utf-8")
        except OSError as e:
            print(f"bench_table: cannot read {p}: {e}", file=sys.stderr)
            continue
        with f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    print(f"bench_table: {p}:{n}: not JSON ({e}); skipped", file=sys.stderr)
                    continue
                if isinstance(obj, dict) and "impl" in obj:
                    rows.append(obj)
    return rows


def fmt(x, spec, missing="-"):
    return missing if x is None else format(x, spec)


def gib(b):
    return None if b is None else b / 2**30


def training_table(rows):
    last = {}
    for r in rows:
        impl = r["impl"]
        if impl == "lantern" and r.get("attention") == "composite":
            impl = "lantern-composite-attention"
        if impl in dict(TRAIN_IMPLS):
            last[impl] = r
    if not last:
        return False
    any_r = next(iter(last.values()))
    print(
        f"## Training step: GPT {any_r.get('n_layer')}x{any_r.get('n_embd')} "
        f"({any_r.get('n_head')} heads), vocab {any_r.get('vocab')}, T={any_r.get('seq_len')}, "
        f"batch {any_r.get('batch')}, {any_r.get('dtype')}, device {any_r.get('device')}\n"
    )
    keys = ("batch", "seq_len", "dtype", "vocab", "n_layer", "n_embd")
    for impl, r in last.items():
        diff = [k for k in keys if r.get(k) != any_r.get(k)]
        if diff:
            print(f"WARNING: {impl} differs from the others in {', '.join(diff)}\n")
    peaks = {r.get("peak_tflops") for r in last.values() if r.get("peak_tflops")}
    fpt = {r.get("flops_per_token") for r in last.values() if r.get("flops_per_token")}
    formula = any_r.get("flops_formula", "6N+12LHQT per token")
    print(
        f"MFU: {formula}; FLOPs/token "
        f"{', '.join(f'{x / 1e6:.1f} M' for x in sorted(fpt)) or '-'}; peak "
        f"{', '.join(f'{p:g}' for p in sorted(peaks)) or '-'} TFLOP/s"
        f"{' (' + any_r['peak_name'] + ')' if any_r.get('peak_name') else ''}.\n"
    )
    print("| implementation | tokens/s | step ms (median) | MFU | peak memory GiB | memory measured as |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for impl, name in TRAIN_IMPLS:
        r = last.get(impl)
        if r is None:
            if not impl.startswith("lantern-"):
                print(f"| {name} | (no result) | | | | |")
            continue
        mfu = r.get("mfu")
        print(
            f"| {name} | {fmt(r.get('tokens_per_s'), ',.0f')} | {fmt(r.get('step_ms_median'), '.1f')} "
            f"| {fmt(None if mfu is None else 100 * mfu, '.1f')}{'%' if mfu is not None else ''} "
            f"| {fmt(gib(r.get('peak_mem_bytes')), '.2f')} | {r.get('peak_mem_method') or '-'} |"
        )
    measured = [r for r in rows if r["impl"] == "device-peak" and r.get("matmul_tflops")]
    if measured:
        m = measured[-1]["matmul_tflops"]
        print(f"\nMFU against the measured dense bf16 matmul rate of this GPU, {m:g} TFLOP/s "
              f"(scripts/matmul_peak.py: 8192³ torch.matmul on random values):")
        for impl, name in TRAIN_IMPLS:
            r = last.get(impl)
            if r and r.get("achieved_tflops"):
                print(f"- {name}: {100 * r['achieved_tflops'] / m:.1f}%")
    ours = last.get("lantern", {}).get("tokens_per_s")
    print()
    for impl, name in TRAIN_IMPLS[1:]:
        if impl.startswith("lantern") and impl not in last:
            continue
        theirs = last.get(impl, {}).get("tokens_per_s")
        if ours and theirs:
            print(f"ratio Lantern / {name}: {ours / theirs:.3f}")
        else:
            print(f"ratio Lantern / {name}: - (missing result)")
    print()
    prof = last.get("lantern", {}).get("profile")
    if prof:
        step = last["lantern"].get("step_ms_median")
        print(f"### Lantern step phases (median of {prof['steps']} synchronized steps)\n")
        print("| phase | ms | share of the phases |")
        print("| --- | ---: | ---: |")
        total = prof["sum_ms"] or float("nan")
        for key, name in [
            ("forward_ms", "forward + loss"),
            ("backward_ms", "backward"),
            ("grads_ms", "gradient collection, norm, clipping"),
            ("optimizer_ms", "optimizer (+ working-copy refresh)"),
        ]:
            print(f"| {name} | {prof[key]:.1f} | {100 * prof[key] / total:.1f}% |")
        print(f"| sum of phases | {total:.1f} | |")
        if step:
            print(f"| unsynchronized step (median) | {step:.1f} | |")
        print()
    return True


def kernel_table(rows):
    ks = [r for r in rows if r["impl"] == "lantern-kernels" and "gb_per_s" in r]
    if not ks:
        return False
    # One run's lines: keep the last run (the copy reference starts each run).
    starts = [i for i, r in enumerate(ks) if r["kernel"] == "copy_d2d"]
    if starts:
        ks = ks[starts[-1]:]
    copy = ks[0]["gb_per_s"] if ks[0]["kernel"] == "copy_d2d" else None
    print(f"## Kernels (device {ks[0].get('device')}; copy reference {fmt(copy, ',.0f')} GB/s)\n")
    print("| kernel | shape | dtype | ms (median) | GB/s | of copy | TFLOP/s | note |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | --- |")
    for r in ks:
        oc = r.get("of_copy")
        print(
            f"| {r['kernel']} | {'x'.join(map(str, r.get('shape', [])))} | {r.get('dtype')} "
            f"| {r['ms']:.4f} | {r['gb_per_s']:,.0f} | {fmt(None if oc is None else 100 * oc, '.0f')}% "
            f"| {fmt(r.get('tflop_s'), '.1f')} | {r.get('note', '')} |"
        )
    sp = [r for r in rows if r["impl"] == "lantern-kernels" and r.get("kernel") == "adamw_speedup"]
    if sp:
        s = sp[-1]
        print(
            f"\nAdamW on {s['params']:,} parameters: fused {s['fused_ms']:.3f} ms, "
            f"candle composite {s['candle_composite_ms']:.3f} ms, speedup {s['speedup']:.2f}x"
        )
    print()
    return True


def kernel_base(name):
    """A kernel's name without its parameter list and a leading `void `."""
    base = name.split("(")[0].strip()
    return base[5:] if base.startswith("void ") else base


def longest_table(title, launches, top):
    """The `top` kernels by summed time; launches: (name, category, ns) per launch."""
    by = {}
    for name, cat, ns in launches:
        key = (name.split("(")[0][:90], cat)
        n, t = by.get(key, (0, 0))
        by[key] = (n + 1, t + ns)
    print(f"\n{title}:\n")
    print("| kernel | category | launches | ms |")
    print("| --- | --- | ---: | ---: |")
    for (key, cat), (n, t) in sorted(by.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"| `{key}` | {cat} | {n} | {t / 1e6:.2f} |")


def classify(name):
    base = kernel_base(name)
    if OURS.match(base):
        return "lantern kernels"
    if MATMUL.search(name):
        return "matmul (cuBLAS)"
    return "candle kernels (elementwise, copies, reductions)"


def read_ncu(path):
    """(kernel name, ns) per launch from `ncu --csv --page raw --print-units base`."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [l for l in f if l.startswith('"')]
    rdr = list(csv.reader(lines))
    head = next((i for i, r in enumerate(rdr) if "Kernel Name" in r), None)
    if head is None:
        raise ValueError("no 'Kernel Name' header (was ncu run with --csv --page raw?)")
    cols = rdr[head]
    name_i = cols.index("Kernel Name")
    dur_i = next((i for i, c in enumerate(cols) if c.startswith("gpu__time_duration")), None)
    if dur_i is None:
        raise ValueError("no gpu__time_duration column")
    scale = 1.0
    out = []
    for r in rdr[head + 1:]:
        if len(r) <= max(name_i, dur_i):
            continue
        if not r[0].strip().isdigit():
            unit = r[dur_i].strip().lower()
            scale = {"nsecond": 1.0, "ns": 1.0, "usecond": 1e3, "us": 1e3, "msecond": 1e6,
                     "ms": 1e6, "second": 1e9, "s": 1e9}.get(unit, scale)
            continue
        try:
            v = float(r[dur_i].replace(",", ""))
        except ValueError:
            continue
        out.append((r[name_i], v * scale))
    return out


def ncu_table(path, rows):
    try:
        ks = read_ncu(path)
    except (OSError, ValueError) as e:
        print(f"## Step profile: none ({path}: {e})\n")
        return
    if not ks:
        print(f"## Step profile: none ({path} holds no kernel)\n")
        return
    by = {}
    for name, ns in ks:
        c = classify(name)
        n, t = by.get(c, (0, 0.0))
        by[c] = (n + 1, t + ns)
    total_ms = sum(t for _, t in by.values()) / 1e6
    lan = [r for r in rows if r["impl"] == "lantern"]
    step = lan[-1].get("step_ms_median") if lan else None
    print(f"## Where one Lantern step's time goes (Nsight Compute, {len(ks)} kernel launches)\n")
    print("| category | launches | ms | share of the step |")
    print("| --- | ---: | ---: | ---: |")
    denom = step if step else total_ms
    for c in ["matmul (cuBLAS)", "lantern kernels", "candle kernels (elementwise, copies, reductions)"]:
        n, t = by.get(c, (0, 0.0))
        print(f"| {c} | {n} | {t / 1e6:.1f} | {100 * t / 1e6 / denom:.1f}% |")
    if step:
        gap = step - total_ms
        print(f"| gaps between kernels (step − kernels) | | {gap:.1f} | {100 * gap / step:.1f}% |")
        print(f"| step (median, unprofiled) | | {step:.1f} | 100% |")
    else:
        print(f"| kernels in total | | {total_ms:.1f} | 100% |")
    longest_table(
        "Longest kernels (summed over the step)",
        [(name, classify(name.split("(")[0][:90]), ns) for name, ns in ks],
        15,
    )
    print()


# Attention kernels of either side: ours (kernels/attention.cu), PyTorch's flash / cuDNN /
# memory-efficient SDPA kernels.
ATTENTION = re.compile(r"^attention_|flash|fmha|sdpa|attention|mha_", re.IGNORECASE)
TRACE_CATS = [
    "matmul (cuBLAS)",
    "attention",
    "Lantern's other kernels",
    "other kernels (elementwise, copies, reductions; Triton under torch.compile)",
    "memcpy / memset",
]


def trace_category(kind, name):
    if kind != "kernel":
        return TRACE_CATS[4]
    base = kernel_base(name)
    if ATTENTION.search(base):
        return TRACE_CATS[1]
    if OURS.match(base):
        return TRACE_CATS[2]
    if MATMUL.search(name):
        return TRACE_CATS[0]
    return TRACE_CATS[3]


def read_ktrace(path):
    """{label: [(kind, start_ns, end_ns, name)]} of each label's last profiled range."""
    runs = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if line.startswith("#") or not line.strip():
                continue
            parts = line.rstrip("\n").split(",", 7)
            if len(parts) != 8:
                print(f"bench_table: {path}:{n}: not a ktrace row; skipped", file=sys.stderr)
                continue
            label, rng, kind, start, end, _stream, _bytes, name = parts
            try:
                rng, start, end = int(rng), int(start), int(end)
            except ValueError:
                print(f"bench_table: {path}:{n}: not a ktrace row; skipped", file=sys.stderr)
                continue
            last = runs.get(label)
            if last is None or rng > last[0]:
                runs[label] = (rng, [])
            elif rng < last[0]:
                continue
            runs[label][1].append((kind, start, end, name))
    return {label: recs for label, (_, recs) in runs.items() if recs}


def busy_ns(recs):
    """Time covered by at least one record (the union of their intervals)."""
    total, cur_s, cur_e = 0, None, None
    for _, s, e, _ in sorted(recs, key=lambda r: r[1]):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def gaps_table(stats):
    """Where Lantern's traced step spends more GPU time than PyTorch's (torch.compile's if
    traced, else eager's): each category's difference, and the idle time's, largest first."""
    if "lantern" not in stats:
        return
    other = next((l for l in ("pytorch-compile", "pytorch-eager") if l in stats), None)
    if other is None:
        return
    ours, theirs = stats["lantern"], stats[other]
    diffs = [(c, (ours[0][c][1] - theirs[0][c][1]) / 1e6) for c in TRACE_CATS]
    diffs.append(("GPU idle inside the step",
                  ((ours[1] - ours[2]) - (theirs[1] - theirs[2])) / 1e6))
    span = (ours[1] - theirs[1]) / 1e6
    print(f"\n### Largest gaps: Lantern against {other} (ms per step, positive = Lantern slower)\n")
    print("Categories can overlap in time (kernels on two streams, copies under kernels), so the")
    print("differences need not add up to the span's.\n")
    print("| rank | where | Lantern − " + other + " ms |")
    print("| ---: | --- | ---: |")
    for i, (c, d) in enumerate(sorted(diffs, key=lambda cd: -cd[1]), 1):
        print(f"| {i} | {c} | {d:+.2f} |")
    print(f"| | step span | {span:+.2f} |")


def ktrace_table(path, rows):
    try:
        runs = read_ktrace(path)
    except OSError as e:
        print(f"## Kernel trace: none ({path}: {e})\n")
        return False
    if not runs:
        print(f"## Kernel trace: none ({path} holds no record of a profiled range)\n")
        return False
    labels = list(runs)
    step_ms = {r["impl"]: r.get("step_ms_median") for r in rows if "step_ms_median" in r}
    print("## Where one step's GPU time goes (CUPTI kernel trace, one step each)\n")
    print("ms of GPU time per category (launches). Idle: the GPU ran nothing while the step's")
    print("span lasted (launch gaps, host work, synchronizations).\n")
    print("| category | " + " | ".join(labels) + " |")
    print("| --- |" + " ---: |" * len(labels))
    stats = {}
    for label in labels:
        recs = runs[label]
        by = {c: [0, 0] for c in TRACE_CATS}
        for kind, s_, e_, name in recs:
            c = by[trace_category(kind, name)]
            c[0] += 1
            c[1] += e_ - s_
        span = max(r[2] for r in recs) - min(r[1] for r in recs)
        stats[label] = (by, span, busy_ns(recs))
    for c in TRACE_CATS:
        cells = [f"{stats[l][0][c][1] / 1e6:.2f} ({stats[l][0][c][0]})" for l in labels]
        print(f"| {c} | " + " | ".join(cells) + " |")
    print("| GPU busy (union of the above) | "
          + " | ".join(f"{stats[l][2] / 1e6:.2f}" for l in labels) + " |")
    print("| GPU idle inside the step | "
          + " | ".join(f"{(stats[l][1] - stats[l][2]) / 1e6:.2f} "
                       f"({100 * (stats[l][1] - stats[l][2]) / max(stats[l][1], 1):.0f}%)"
                       for l in labels) + " |")
    print("| step span (first start to last end) | "
          + " | ".join(f"{stats[l][1] / 1e6:.2f}" for l in labels) + " |")
    print("| step, unprofiled median (bench.jsonl) | "
          + " | ".join(fmt(step_ms.get(l), ".2f") for l in labels) + " |")
    gaps_table(stats)
    for label in labels:
        longest_table(
            f"Longest kernels of {label} (summed over the step)",
            [(name, trace_category(kind, name.split("(")[0][:90]), e_ - s_)
             for kind, s_, e_, name in runs[label]],
            12,
        )
    print()
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", help="JSON-lines files")
    ap.add_argument("--ncu", help="ncu --csv --page raw output of one profiled step")
    ap.add_argument("--ktrace", help="scripts/ktrace CSV: one profiled step of each program")
    a = ap.parse_args()
    rows = read_lines(a.files)
    shown = training_table(rows)
    shown = kernel_table(rows) or shown
    if a.ncu:
        ncu_table(a.ncu, rows)
    if a.ktrace:
        ktrace_table(a.ktrace, rows)
    if not shown:
        print("bench_table: no benchmark lines in " + ", ".join(a.files), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The GPU's dense bf16 matrix rate as PyTorch reaches it: torch.matmul of two 8192 x 8192
bf16 matrices of normal random values (zeros would run faster), 3 warm-up products, then the
median of 5 rounds of 10, each round timed with CUDA events. One JSON line on stdout:
  {"impl": "device-peak", "matmul_tflops": ..., "n": 8192, "device_name": ..., ...}
bundle/run.sh runs it, and scripts/bench_table.py reports MFU against it next to the nominal
989 TFLOP/s. Needs a CUDA device.
"""
import json
import statistics
import sys

import torch


def main():
    if not torch.cuda.is_available():
        sys.exit("matmul_peak: no CUDA device")
    n = 8192
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=g)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=g)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    rates = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            a @ b
        end.record()
        end.synchronize()
        secs = start.elapsed_time(end) / 1e3
        rates.append(10 * 2 * n**3 / secs / 1e12)
    print(json.dumps({
        "impl": "device-peak",
        "matmul_tflops": round(statistics.median(rates), 1),
        "rounds_tflops": [round(r, 1) for r in rates],
        "n": n,
        "dtype": "bf16",
        "device_name": torch.cuda.get_device_name(),
        "torch": torch.__version__,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

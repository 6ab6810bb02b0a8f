#!/usr/bin/env python3
"""Golden learning rates from transformers' own schedulers, for tests/tests/schedule_parity.rs:
constant, linear, cosine with min LR, warmup-stable-decay, polynomial (powers 1 and 2),
cosine with hard restarts (1 and 3 cycles) and inverse square root (default and explicit time
scale), each on three (lr, min_lr, warmup, total, decay) settings.

    .venv-ref/bin/python scripts/make_schedule_golden.py   # writes tests/golden/schedules.json

For each case the LR multiplier of the scheduler's lambda at every step 0..total+2 is recorded
(times the base LR). Lantern's `Schedule::lr_at(step)` must give the same values.
"""
import json
import pathlib

import torch
import transformers
from transformers import optimization as opt

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests/golden/schedules.json"


def lrs(make, lr, total):
    p = torch.nn.Parameter(torch.zeros(1))
    o = torch.optim.SGD([p], lr=lr)
    sched = make(o)
    return [lr * sched.lr_lambdas[0](s) for s in range(total + 3)]


def main():
    cases = []
    for lr, min_lr, warmup, total, decay in [(1e-3, 1e-4, 10, 100, 20), (6e-4, 6e-5, 0, 37, 5), (3e-3, 0.0, 7, 50, 50)]:
        common = dict(lr=lr, min_lr=min_lr, warmup_steps=warmup, total_steps=total, decay_steps=decay)
        cases.append(dict(kind="constant", **common,
                          lrs=lrs(lambda o: opt.get_constant_schedule_with_warmup(o, warmup), lr, total)))
        cases.append(dict(kind="linear", **common,
                          lrs=lrs(lambda o: opt.get_linear_schedule_with_warmup(o, warmup, total), lr, total)))
        cases.append(dict(kind="cosine", **common,
                          lrs=lrs(lambda o: opt.get_cosine_with_min_lr_schedule_with_warmup(
                              o, warmup, total, min_lr=min_lr), lr, total)))
        cases.append(dict(kind="wsd", **common,
                          lrs=lrs(lambda o: opt.get_wsd_schedule(
                              o, warmup, decay, num_training_steps=total, min_lr_ratio=min_lr / lr), lr, total)))
        # The end LR of the polynomial is min_lr; its power, the restarts and the time scale
        # are recorded with each case.
        for power in [1.0, 2.0]:
            cases.append(dict(kind="polynomial", power=power, **common,
                              lrs=lrs(lambda o: opt.get_polynomial_decay_schedule_with_warmup(
                                  o, warmup, total, lr_end=min_lr, power=power), lr, total)))
        for cycles in [1, 3]:
            cases.append(dict(kind="cosine_with_restarts", num_cycles=cycles, **common,
                              lrs=lrs(lambda o: opt.get_cosine_with_hard_restarts_schedule_with_warmup(
                                  o, warmup, total, num_cycles=cycles), lr, total)))
        for timescale in [None, 25]:
            cases.append(dict(kind="inverse_sqrt", timescale=timescale, **common,
                              lrs=lrs(lambda o: opt.get_inverse_sqrt_schedule(o, warmup, timescale=timescale),
                                      lr, total)))
    OUT.write_text(json.dumps({"transformers": transformers.__version__, "cases": cases}, indent=1))
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()

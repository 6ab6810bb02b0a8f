#!/usr/bin/env python3
"""Golden optimizer trajectories from torch.optim, for tests/tests/optim_parity.rs.

    PY=$(bash scripts/ref_env.sh | tail -1)
    $PY scripts/make_optim_golden.py        # writes tests/golden/optimizers.json

Three parameters with fixed values -- `w` 4x3 and `t` 2x2x2 (the weight-decay group, rank >= 2)
and `b` of length 3 (the no-decay group) -- are updated for 20 steps by each optimizer case, in
float32 with foreach=False, from a fixed sequence of float32 gradients drawn here and stored in
the file. The learning rate changes every step (a schedule sets `param_group["lr"]` before each
step), and `b` has no gradient (`p.grad = None`) at steps 4 and 11, which torch skips: its value,
buffers and own step count stay put. The parameters after every step are recorded.

The trajectories stored are torch's float32 ones: Lantern's optimizers run in float32, and the
same formulas in the same operation order agree with them to rounding, whereas float32 against
float64 differs by the accumulated float32 rounding itself. The script also runs each case in
float64 and prints how far float32 is from it, as a sense of scale.
"""
import json
import pathlib

import torch

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests/golden/optimizers.json"
STEPS = 20
NO_GRAD = {"b": [4, 11]}  # 0-based steps where the parameter has no gradient

CASES = [
    ("sgd_plain", "sgd", 0.1, dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.01)),
    ("sgd_momentum_dampening", "sgd", 0.05,
     dict(momentum=0.9, dampening=0.3, nesterov=False, weight_decay=0.02)),
    ("sgd_nesterov", "sgd", 0.05, dict(momentum=0.8, dampening=0.0, nesterov=True, weight_decay=0.05)),
    ("adagrad", "adagrad", 0.1,
     dict(lr_decay=0.05, weight_decay=0.02, initial_accumulator_value=0.1, eps=1e-10)),
    ("rmsprop_plain", "rmsprop", 0.01,
     dict(alpha=0.99, eps=1e-8, weight_decay=0.01, momentum=0.0, centered=False)),
    ("rmsprop_centered_momentum", "rmsprop", 0.01,
     dict(alpha=0.9, eps=1e-8, weight_decay=0.02, momentum=0.9, centered=True)),
    ("adamw", "adamw", 0.01, dict(beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)),
    ("adamw_small_beta1", "adamw", 0.02, dict(beta1=0.3, beta2=0.999, eps=1e-6, weight_decay=0.05)),
]


def initial_params():
    g = torch.Generator().manual_seed(20261124)
    return {
        "w": torch.randn(4, 3, generator=g),
        "b": torch.randn(3, generator=g),
        "t": torch.randn(2, 2, 2, generator=g),
    }


def gradients(params):
    """grads[step][name]: a float32 tensor, or None where the parameter gets no gradient."""
    g = torch.Generator().manual_seed(7)
    out = []
    for step in range(STEPS):
        row = {}
        for name, p in params.items():
            # Scales that vary by step keep the adaptive optimizers' denominators honest.
            scale = 0.5 + 0.1 * (step % 7)
            grad = torch.randn(p.shape, generator=g) * scale
            row[name] = None if step in NO_GRAD.get(name, []) else grad
        out.append(row)
    return out


def lr_at(base, step):
    return base * (1.0 - 0.03 * step)


def make_optimizer(kind, decay_params, no_decay_params, lr, hp):
    hp = dict(hp)
    wd = hp.pop("weight_decay")
    groups = [
        {"params": decay_params, "weight_decay": wd},
        {"params": no_decay_params, "weight_decay": 0.0},
    ]
    common = dict(lr=lr, foreach=False, maximize=False)
    if kind == "sgd":
        return torch.optim.SGD(groups, **common, **hp)
    if kind == "adagrad":
        return torch.optim.Adagrad(groups, **common, **hp)
    if kind == "rmsprop":
        return torch.optim.RMSprop(groups, **common, **hp)
    if kind == "adamw":
        return torch.optim.AdamW(groups, **common, betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"],
                                 amsgrad=False)
    raise ValueError(kind)


def run(kind, base_lr, hp, init, grads, dtype):
    params = {n: torch.nn.Parameter(v.clone().to(dtype)) for n, v in init.items()}
    opt = make_optimizer(kind, [params["w"], params["t"]], [params["b"]], base_lr, hp)
    trajectory = []
    for step in range(STEPS):
        for group in opt.param_groups:
            group["lr"] = lr_at(base_lr, step)
        for n, p in params.items():
            g = grads[step][n]
            p.grad = None if g is None else g.clone().to(dtype)
        opt.step()
        trajectory.append({n: p.detach().clone() for n, p in params.items()})
    return trajectory


def flat(t):
    return [float(x) for x in t.reshape(-1).tolist()]


def main():
    torch.use_deterministic_algorithms(True)
    init = initial_params()
    grads = gradients(init)
    cases = []
    for name, kind, base_lr, hp in CASES:
        f32 = run(kind, base_lr, hp, init, grads, torch.float32)
        f64 = run(kind, base_lr, hp, init, grads, torch.float64)
        worst = max(
            ((a[n].double() - b[n]).abs() / b[n].abs().clamp_min(1e-3)).max().item()
            for a, b in zip(f32, f64) for n in a
        )
        print(f"{name:28s} float32 vs float64 after up to {STEPS} steps: max rel {worst:.2e}")
        cases.append(dict(
            name=name, optimizer=kind, hyper=hp,
            lrs=[lr_at(base_lr, s) for s in range(STEPS)],
            params=[{n: flat(t) for n, t in step.items()} for step in f32],
        ))
    doc = dict(
        torch=torch.__version__,
        note="made by scripts/make_optim_golden.py; float32 torch.optim trajectories",
        steps=STEPS,
        decay_group=["w", "t"],
        no_grad_steps=NO_GRAD,
        params=[dict(name=n, shape=list(v.shape), init=flat(v)) for n, v in init.items()],
        grads=[{n: (None if g is None else flat(g)) for n, g in row.items()} for row in grads],
        cases=cases,
    )
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()

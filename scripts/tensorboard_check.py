#!/usr/bin/env python3
"""Read a run's TensorBoard event files with TensorBoard itself and compare every series with
metrics.jsonl.

    python scripts/tensorboard_check.py RUN_DIR

TensorBoard's EventAccumulator (purging orphaned steps, as the TensorBoard UI does) loads
RUN_DIR/tensorboard; each (kind, key) of metrics.jsonl below must come back as the scalar
`kind/key` with the same steps and values (f32). Exits non-zero on any difference.
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

SERIES = [("train", "loss"), ("train", "lr"), ("train", "grad_norm"), ("val", "val_loss")]


def main():
    run = sys.argv[1]
    acc = EventAccumulator(run + "/tensorboard", size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    print(f"{len(tags)} scalar tags in {run}/tensorboard")
    recs = [json.loads(l) for l in open(run + "/metrics.jsonl")]
    bad = 0
    for kind, key in SERIES:
        want = [(r["step"], r[key]) for r in recs if r.get("kind") == kind and key in r]
        got = [(e.step, e.value) for e in acc.Scalars(f"{kind}/{key}")]
        same = len(want) == len(got) and all(
            a == b and abs(x - y) <= 1e-6 * max(1.0, abs(x)) for (a, x), (b, y) in zip(want, got))
        bad += not same
        print(f"{'ok  ' if same else 'FAIL'} {kind}/{key}: {len(got)} points (metrics.jsonl {len(want)}), "
              f"steps {got[0][0] if got else '-'}..{got[-1][0] if got else '-'}")
    print("all series match" if not bad else "SOME SERIES DIFFER")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

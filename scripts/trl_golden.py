"""What the TRL golden scripts share (make_dpo_golden.py, make_kto_golden.py,
make_reward_golden.py): the training recipe every golden run uses, and the run itself — an
evaluation before training, then `steps` optimizer steps each followed by an evaluation.

Run the scripts with the reference venv (scripts/ref_env.sh); this module is imported by them
from the scripts folder.
"""


def recipe(steps, lr):
    """TRL config settings beyond each trainer's own: `steps` steps at the constant learning
    rate `lr`, AdamW (0.9, 0.999, 1e-8) without weight decay, clipping at 1.0, a log line and an
    evaluation every step, no checkpoints, fp32 on the CPU."""
    return dict(
        max_steps=steps, learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        max_grad_norm=1.0, optim="adamw_torch", logging_steps=1, eval_strategy="steps",
        eval_steps=1, save_strategy="no", report_to=[], bf16=False, fp16=False,
        gradient_checkpointing=False, use_cpu=True, seed=0)


def prepared_examples(trainer, keep):
    """The training and validation examples the trainer prepared, their `keep` fields."""
    return {
        split: [{k: e[k] for k in keep if k in e} for e in ds]
        for split, ds in (("train", trainer.train_dataset), ("validation", trainer.eval_dataset))
    }


def evaluate_and_train(trainer, steps):
    """The evaluations (before training, then after each step) and the training losses."""
    first = trainer.evaluate()
    trainer.train()
    evals = [first] + [r for r in trainer.state.log_history if "eval_loss" in r]
    train_losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert len(evals) == steps + 1 and len(train_losses) == steps, (evals, train_losses)
    return evals, train_losses

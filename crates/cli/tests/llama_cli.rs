//! Llama (`LlamaForCausalLM`) pretraining through `lantern train` on real text: the loss falls,
//! resume is byte-identical, activation checkpointing gives the stored run's losses, two ranks
//! train as one process, and the checkpoint generates, scores and exports as a transformers
//! Llama folder that `model.init_from` reads back.

mod common;
use common::*;
use std::path::Path;

/// From scratch the first validation loss is a uniform guess over the 512 tokens (ln 512 ≈
/// 6.24, within 0.3); after 200 steps it is at least 1.5 nats lower (the GPT of the same size
/// gets there too); the checkpoint is a `LlamaForCausalLM` folder.
#[test]
fn llama_loss_falls_on_real_text_and_its_checkpoint_is_a_transformers_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("fall");
    let out = train_ok(&llama_config(tmp.path(), &run, ""), &[]);
    assert!(out.contains("trained 200 steps"), "{out}");
    let val = metric_values(&run, "val", "val_loss");
    assert!((val[0] - 512f64.ln()).abs() < 0.3, "first val loss {val:?}");
    let last = *val.last().unwrap();
    assert!(last < val[0] - 1.5, "val loss did not fall enough: {val:?}");

    let ckpt = newest_checkpoint(&run);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");
    assert_eq!(config["model_type"], "llama");
    assert_eq!(
        (
            config["hidden_size"].as_u64(),
            config["num_key_value_heads"].as_u64(),
            config["intermediate_size"].as_u64(),
            config["tie_word_embeddings"].as_bool(),
        ),
        (Some(64), Some(2), Some(160), Some(false))
    );

    // Export: HF names, the head untied, the checkpoint's weights; then generation and
    // perplexity from the export and from the run folder agree.
    let hf = tmp.path().join("hf");
    let said = lantern_ok(&["export", "--model", &s(&run), "--out", &s(&hf)]);
    assert!(said.contains("LlamaForCausalLM"), "{said}");
    let exported = read_f32_tensors(&hf.join("model.safetensors"));
    let names: Vec<&str> = exported.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "model.embed_tokens.weight",
        "model.layers.1.self_attn.k_proj.weight",
        "model.layers.1.mlp.gate_proj.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.norm.weight",
        "lm_head.weight",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert_eq!(exported, read_f32_tensors(&ckpt.join("model.safetensors")));
    let gen = |model: &Path| {
        let out = lantern(&[
            "generate",
            "--model",
            &s(model),
            "--prompt",
            "The computer",
            "--max-new-tokens",
            "40",
            "--temperature",
            "0",
            "--ignore-eot",
        ]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let text = gen(&run);
    assert!(text.starts_with("--- sample 1 ---\nThe computer"), "{text}");
    assert_eq!(text, gen(&hf), "the export generates the checkpoint's text");
    let raw = workspace_root().join("data/raw/fortunes/science");
    let score = |model: &Path| {
        let out = lantern_ok(&[
            "score",
            "--model",
            &s(model),
            "--file",
            &s(&raw),
            "--stride",
            "16",
            "--json",
        ]);
        serde_json::from_str::<serde_json::Value>(out.lines().last().unwrap()).unwrap()
    };
    let (a, b) = (score(&run), score(&hf));
    assert_eq!(a["nll_sum"], b["nll_sum"]);
    let ppl = a["perplexity"].as_f64().unwrap();
    assert!(ppl.is_finite() && ppl < 512.0, "{a}");

    // A language model has no task head to evaluate: the fine-tuning commands say so.
    let e = lantern_err(&[
        "eval",
        "--checkpoint",
        &s(&hf),
        "--data",
        &s(&tmp.path().join("none.jsonl")),
    ]);
    assert!(
        e.contains("config.json") && e.contains("LlamaForCausalLM language model"),
        "{e}"
    );

    // Continued pretraining from the export: its first evaluation is the checkpoint's last.
    let cont = tmp.path().join("cont");
    let cfg = llama_config(tmp.path(), &cont, "");
    train_ok(
        &cfg,
        &[
            &format!("model.init_from={}", s(&hf)),
            "train.max_steps=1",
            "train.lr=0",
            "train.eval_every=1",
        ],
    );
    let first = metric_values(&cont, "val", "val_loss")[0];
    assert!(
        (first - last).abs() < 1e-4 * last,
        "init_from the export: val loss {first}, the run ended at {last}"
    );
}

/// Stopped at step 10 and resumed, a run ends byte-identical to one that never stopped; with
/// activation checkpointing the losses are the stored run's.
#[test]
fn llama_resume_is_byte_identical_and_recompute_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let sets = ["train.max_steps=20", "train.eval_every=10"];
    let straight = tmp.path().join("straight");
    train_ok(&llama_config(tmp.path(), &straight, ""), &sets);
    let split = tmp.path().join("split");
    let cfg = llama_config(tmp.path(), &split, "");
    let c = s(&cfg);
    let run = |more: &[&str]| {
        let mut args = vec!["train", "--config", &c, "--quiet"];
        for x in sets {
            args.extend(["--set", x]);
        }
        args.extend(more);
        lantern_ok(&args);
    };
    run(&["--stop-after", "10"]);
    run(&["--resume"]);
    let (a, b) = (newest_checkpoint(&straight), newest_checkpoint(&split));
    assert!(b.ends_with("step-00000020"));
    for f in ["model.safetensors", "optimizer.safetensors", "config.json"] {
        assert!(
            std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
            "{f} differs after stop and resume"
        );
    }

    let recomputed = tmp.path().join("recomputed");
    train_ok(
        &llama_config(tmp.path(), &recomputed, "activation_checkpointing = true"),
        &sets,
    );
    let (x, y) = (
        metric_values(&straight, "train", "loss"),
        metric_values(&recomputed, "train", "loss"),
    );
    assert_eq!(x.len(), 20);
    for (p, q) in x.iter().zip(&y) {
        assert!((p - q).abs() < 1e-5 * p, "losses {x:?} vs {y:?}");
    }
}

/// Runs 6 steps as `lantern <prefix> train ...` with batch `b` × `acc` micro-batches; returns
/// the final weights and the per-step losses.
fn short_run(
    tmp: &Path,
    name: &str,
    prefix: &[&str],
    (b, acc): (usize, usize),
) -> (Vec<(String, Vec<f32>)>, Vec<f64>) {
    let dir = tmp.join(name);
    let cfg = llama_config(tmp, &dir, &format!("grad_accum = {acc}"));
    let (cfg, batch) = (s(&cfg), format!("train.batch_size={b}"));
    let mut args: Vec<&str> = prefix.to_vec();
    args.extend([
        "train",
        "--config",
        &cfg,
        "--quiet",
        "--set",
        &batch,
        "--set",
        "train.max_steps=6",
    ]);
    lantern_ok(&args);
    (
        read_f32_tensors(&newest_checkpoint(&dir).join("model.safetensors")),
        metric_values(&dir, "train", "loss"),
    )
}

/// Two ranks × batch 2 × 2 micro-batches train as one process with batch 4 × 2.
#[test]
fn llama_on_two_ranks_matches_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let launch = ["launch", "--nproc-per-node", "2", "--backend", "mpi", "--"];
    let (wa, la) = short_run(tmp.path(), "two", &launch, (2, 2));
    let (wb, lb) = short_run(tmp.path(), "one", &[], (4, 2));
    for (x, y) in la.iter().zip(&lb) {
        assert!((x - y).abs() < 1e-4 * y, "losses {la:?} vs {lb:?}");
    }
    for ((name, x), (_, y)) in wa.iter().zip(&wb) {
        let r = rel_l2(x, y);
        assert!(r < 1e-4, "{name} differs: rel {r}");
    }
}

#[test]
fn settings_of_other_families_are_refused_with_their_key() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("bad");
    let cfg = s(&llama_config(tmp.path(), &run, ""));
    for (set, want) in [
        ("model.dropout=0.1", "model.dropout"),
        ("model.mlm_probability=0.2", "model.mlm_probability"),
        ("model.n_kv_head=3", "num_key_value_heads"),
    ] {
        let e = lantern_err(&["train", "--config", &cfg, "--set", set]);
        assert!(e.contains(want), "--set {set}: {e}");
    }
    let gpt = s(&tiny_config(tmp.path(), &tmp.path().join("gpt"), ""));
    let e = lantern_err(&["train", "--config", &gpt, "--set", "model.n_kv_head=2"]);
    assert!(e.contains("model.n_kv_head") && e.contains("llama"), "{e}");
    assert!(!run.join("checkpoints").exists());
}

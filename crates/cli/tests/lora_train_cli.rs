//! LoRA in `lantern train` (peft's `CAUSAL_LM`; BERT's masked LM in mlm_cli.rs): a GPT-2 or
//! Llama pretrained by `lantern train`
//! goes on learning the same text through low-rank adapters, everything else frozen. The
//! checkpoints hold the merged model (which `generate` and `export` read as any) and peft's
//! adapter files; a resume continues byte for byte; two ranks train as one process with twice
//! the batch; bad settings are refused by name.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    read_f32_tensors(path).into_iter().collect()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `lantern train --config cfg --quiet --set ...` (`launch`: on two MPI ranks).
fn train(cfg: &Path, sets: &[&str], extra: &[&str], launch: bool) -> String {
    let mut args: Vec<&str> = Vec::new();
    if launch {
        args.extend(["launch", "--nproc-per-node", "2", "--backend", "mpi", "--"]);
    }
    let cfg = s(cfg);
    args.extend(["train", "--config", &cfg, "--quiet"]);
    for kv in sets {
        args.extend(["--set", kv]);
    }
    args.extend(extra);
    lantern_ok(&args)
}

fn val_losses(run: &Path) -> Vec<f64> {
    metric_values(run, "val", "val_loss")
}

/// The tiny GPT of `tiny_config` pretrained for 40 steps: the model LoRA starts from.
fn pretrained_gpt(root: &Path) -> PathBuf {
    let run = root.join("gpt");
    train_ok(&tiny_config(root, &run, ""), &[]);
    newest_checkpoint(&run)
}

const GPT_LORA: &str = "[lora]\nr = 4\nalpha = 8\ntarget_modules = [\"c_attn\", \"c_fc\"]";

#[test]
fn lora_continues_a_gpt2_and_resumes_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let base = pretrained_gpt(root);
    let from = format!("model.init_from={}", s(&base));
    let cfg = |name: &str, extra: &str| {
        let run = root.join(name);
        (
            tiny_config(root, &run, &format!("{extra}\n{GPT_LORA}")),
            run,
        )
    };
    // `tiny_config`'s [train] ends where `extra` goes; [lora] then closes it.
    let (learn, run) = cfg("lora", "");
    train(&learn, &[&from, "train.lr=1e-2"], &[], false);
    let v = val_losses(&run);
    assert!(
        v.last().unwrap() < v.first().unwrap(),
        "the adapters lower the validation loss: {v:?}"
    );
    // The first line: r·(in + out) per adapted layer, c_attn 4·(32 + 96) and c_fc
    // 4·(32 + 128), two layers, nothing else trained.
    let out = lantern(&[
        "train",
        "--config",
        &s(&cfg("lora-count", "").0),
        "--set",
        &from,
        "--set",
        "train.max_steps=1",
    ]);
    assert!(out.status.success());
    // Progress goes to stderr.
    let verbose = String::from_utf8_lossy(&out.stderr);
    let trained = 2 * (4 * (32 + 96) + 4 * (32 + 128));
    assert!(
        verbose.contains("LoRA r=4 alpha=8 (scale 2) on c_attn, c_fc")
            && verbose.contains(&format!(": {trained} of ")),
        "{verbose}"
    );

    // peft's files (CAUSAL_LM, nothing trained in full, the pretrained folder as the base).
    let ckpt = newest_checkpoint(&run);
    let c = json(&ckpt.join("adapter/adapter_config.json"));
    assert_eq!(c["peft_type"], "LORA");
    assert_eq!(c["task_type"], "CAUSAL_LM");
    assert_eq!(c["target_modules"], serde_json::json!(["c_attn", "c_fc"]));
    assert_eq!(c["fan_in_fan_out"], true);
    assert_eq!(c["modules_to_save"], Value::Null);
    assert_eq!(c["base_model_name_or_path"], s(&base));
    let adapters = tensors(&ckpt.join("adapter/adapter_model.safetensors"));
    assert_eq!(adapters.len(), 2 * 2 * 2, "{:?}", adapters.keys());
    let n: usize = adapters.values().map(Vec::len).sum();
    assert_eq!(n, trained);
    // The merged model: frozen tensors to the bit, adapted ones W0 + 2·(B·A)ᵀ; the optimizer
    // state is the adapters' alone.
    let merged = read_f32_tensors(&ckpt.join("model.safetensors"));
    let adapted = assert_lora_merge(
        &merged,
        &tensors(&base.join("model.safetensors")),
        &adapters,
        (4, 2.0, true),
        &[],
    );
    assert_eq!(adapted.len(), 2 * 2, "{adapted:?}");
    let opt = tensors(&ckpt.join("optimizer.safetensors"));
    let n_opt: usize = opt.values().map(Vec::len).sum();
    assert_eq!(
        n_opt,
        2 * trained,
        "AdamW's two moments of the adapters: {:?}",
        opt.keys()
    );

    // `--adapter` merges the adapter into the pretrained model as peft's merge_and_unload:
    // generate, score and export give what the checkpoint's merged model gives.
    let adapter_dir = s(&ckpt.join("adapter"));
    let text = root.join("text.txt");
    std::fs::write(&text, "To be, or not to be, that is the question.\n").unwrap();
    let text_s = s(&text);
    let score = |model: &Path, adapter: bool| {
        let model_s = s(model);
        let mut args = vec!["score", "--model", &model_s, "--file", &text_s, "--json"];
        if adapter {
            args.extend(["--adapter", adapter_dir.as_str()]);
        }
        lantern_ok(&args)
    };
    assert_eq!(score(&base, true), score(&ckpt, false));
    let sample = |model: &Path, adapter: bool| {
        let model_s = s(model);
        let mut args = vec![
            "generate", "--model", &model_s, "--prompt", "The ", "--seed", "3",
        ];
        args.extend(["--max-new-tokens", "12"]);
        if adapter {
            args.extend(["--adapter", adapter_dir.as_str()]);
        }
        lantern_ok(&args)
    };
    assert_eq!(sample(&base, true), sample(&ckpt, false));
    let merged_hf = root.join("merged-hf");
    lantern_ok(&[
        "export",
        "--model",
        &s(&base),
        "--adapter",
        &adapter_dir,
        "--out",
        &s(&merged_hf),
    ]);
    assert!(
        std::fs::read(merged_hf.join("model.safetensors")).unwrap()
            == std::fs::read(ckpt.join("model.safetensors")).unwrap(),
        "export --adapter is the checkpoint's merged model"
    );
    assert!(merged_hf
        .join("adapter/adapter_model.safetensors")
        .is_file());
    // Applying a LoRA checkpoint's own adapter over it again (it holds it merged) is refused,
    // in `score` as in `train`.
    let e = lantern_err(&[
        "score",
        "--model",
        &s(&ckpt),
        "--adapter",
        &adapter_dir,
        "--text",
        "x",
    ]);
    assert!(e.contains("already holds the adapter"), "{e}");
    let twice = format!("model.init_from={}", s(&ckpt));
    let e = lantern_err(&[
        "train",
        "--config",
        &s(&cfg("twice", "").0),
        "--set",
        &twice,
        "--set",
        &format!("lora.adapter={adapter_dir}"),
    ]);
    assert!(e.contains("already holds the adapter"), "{e}");
    // A missing adapter folder is named.
    let e = lantern_err(&[
        "score",
        "--model",
        &s(&base),
        "--adapter",
        &s(&root.join("nowhere")),
        "--text",
        "x",
    ]);
    assert!(
        e.contains("nowhere") && e.contains("adapter_config.json"),
        "{e}"
    );

    // Activation checkpointing recomputes the same steps, the adapters' dropout masks
    // included; that dropout changes the steps.
    let mut losses = Vec::new();
    for (name, ac, p) in [
        ("kept", "false", "0.1"),
        ("recomputed", "true", "0.1"),
        ("no-lora-dropout", "false", "0.0"),
    ] {
        let (c, r) = cfg(name, "");
        let set = format!("train.activation_checkpointing={ac}");
        let drop = format!("lora.dropout={p}");
        train(&c, &[&from, &set, &drop, "train.max_steps=6"], &[], false);
        losses.push(metric_values(&r, "train", "loss"));
    }
    assert_eq!(losses[0], losses[1]);
    assert_ne!(losses[0], losses[2]);

    // A run started from the adapter (peft's is_trainable reload) begins where this one ended;
    // settings that contradict the adapter's are refused.
    let adapter = format!("lora.adapter={}", s(&ckpt.join("adapter")));
    let (again, again_run) = cfg("again", "");
    train(&again, &[&from, &adapter, "train.max_steps=1"], &[], false);
    assert_eq!(val_losses(&again_run)[0], *v.last().unwrap());
    let e = lantern_err(&[
        "train",
        "--config",
        &s(&again),
        "--set",
        &from,
        "--set",
        &adapter,
        "--set",
        "lora.r=8",
    ]);
    assert!(
        e.contains("lora.r = 8") && e.contains("adapter_config.json"),
        "{e}"
    );

    // The checkpoint generates and exports as any; the export carries the adapter.
    let sample = lantern_ok(&[
        "generate",
        "--model",
        &s(&run),
        "--prompt",
        "The ",
        "--max-new-tokens",
        "8",
        "--seed",
        "1",
    ]);
    assert!(sample.contains("sample 1"), "{sample}");
    let hf = root.join("lora-hf");
    lantern_ok(&["export", "--model", &s(&run), "--out", &s(&hf)]);
    for file in [
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
    ] {
        assert_eq!(
            std::fs::read(hf.join(file)).unwrap(),
            std::fs::read(ckpt.join(file)).unwrap(),
            "{file}"
        );
    }

    // Cut short and resumed, in bf16 (the working copies refreshed from the adapters) with
    // the adapters' dropout, as one uninterrupted run: merged model, adapters and optimizer
    // to the byte.
    let sets = [
        from.as_str(),
        "train.precision=\"bf16\"",
        "lora.dropout=0.1",
    ];
    let (whole, whole_run) = cfg("whole", "");
    train(&whole, &sets, &[], false);
    let (cut, cut_run) = cfg("cut", "");
    train(&cut, &sets, &["--stop-after", "20"], false);
    train(&cut, &sets, &["--resume"], false);
    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "adapter/adapter_model.safetensors",
    ] {
        let (a, b) = (newest_checkpoint(&whole_run), newest_checkpoint(&cut_run));
        assert!(b.ends_with("step-00000040"));
        assert!(
            std::fs::read(a.join(file)).unwrap() == std::fs::read(b.join(file)).unwrap(),
            "{file} differs after the resume"
        );
    }
    let c = json(&newest_checkpoint(&cut_run).join("adapter/adapter_config.json"));
    assert_eq!(c["lora_dropout"], 0.1);
    // A resume with other settings, without LoRA, or over another pretrained model, is
    // refused naming the state file.
    let resume_err = |cfg: &Path, sets: &[&str]| {
        let cfg = s(cfg);
        let mut args = vec!["train", "--config", &cfg, "--quiet", "--resume"];
        for kv in sets {
            args.extend(["--set", kv]);
        }
        lantern_err(&args)
    };
    let e = resume_err(&cut, &[&from, "lora.r=8", "train.max_steps=60"]);
    assert!(
        e.contains("trainer_state.json") && e.contains("LoRA"),
        "{e}"
    );
    // (Its own folder: the config file is named after the run folder.)
    let plain_dir = root.join("plain");
    std::fs::create_dir_all(&plain_dir).unwrap();
    let plain = tiny_config(&plain_dir, &cut_run, "");
    let e = resume_err(&plain, &[&from, "train.max_steps=60"]);
    assert!(e.contains("no [lora]"), "{e}");
    let other = format!(
        "model.init_from={}",
        s(&root.join("gpt/checkpoints/step-00000020"))
    );
    let e = resume_err(&cut, &[&other, "lora.dropout=0.1", "train.max_steps=60"]);
    assert!(e.contains("another pretrained model"), "{e}");

    // Settings LoRA cannot take, each named.
    let (bad, _) = cfg("bad", "");
    for (set, want) in [
        ("lora.dropout=1.0", "lora.dropout"),
        ("lora.r=0", "lora.r"),
        ("lora.rank=4", "rank"),
        ("lora.target_modules=[\"c_atn\"]", "c_attn, c_fc, c_proj"),
        ("lora.target_modules=[\"wte\"]", "not a linear layer"),
    ] {
        let e = lantern_err(&["train", "--config", &s(&bad), "--set", &from, "--set", set]);
        assert!(e.contains(want), "{set}: {e}");
    }
    let e = lantern_err(&["train", "--config", &s(&bad)]);
    assert!(e.contains("model.init_from"), "{e}");
}

/// The tensors of a bf16 safetensors file, widened to f32 (exactly).
fn bf16_tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::BF16, "{n}");
            let f = v.data().chunks_exact(2);
            let f = f.map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16));
            (n, f.collect())
        })
        .collect()
}

/// A GPT-2 published in bf16 (`export --dtype bf16`, as most published models are) adapted
/// in bf16, where its frozen weights are held once (the working copy's variables): a run cut
/// short and resumed is the uninterrupted one to the byte, and the checkpoint's merged model
/// holds the published frozen weights exactly, in fp32.
#[test]
fn lora_over_a_bf16_model_holds_it_once_and_resumes_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let hf = root.join("hf16");
    let base = s(&pretrained_gpt(root));
    lantern_ok(&[
        "export",
        "--model",
        &base,
        "--out",
        &s(&hf),
        "--dtype",
        "bf16",
    ]);
    let from = format!("model.init_from={}", s(&hf));
    let sets = [from.as_str(), "train.precision=\"bf16\""];
    let cfg = |name: &str| {
        let run = root.join(name);
        (tiny_config(root, &run, GPT_LORA), run)
    };
    let (whole, whole_run) = cfg("whole");
    train(&whole, &sets, &[], false);
    let (cut, cut_run) = cfg("cut");
    train(&cut, &sets, &["--stop-after", "20"], false);
    train(&cut, &sets, &["--resume"], false);
    let (a, b) = (newest_checkpoint(&whole_run), newest_checkpoint(&cut_run));
    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "adapter/adapter_model.safetensors",
    ] {
        assert!(
            std::fs::read(a.join(file)).unwrap() == std::fs::read(b.join(file)).unwrap(),
            "{file} differs after the resume"
        );
    }
    let published = bf16_tensors(&hf.join("model.safetensors"));
    let merged = tensors(&a.join("model.safetensors"));
    let mut frozen = 0;
    for (name, want) in &published {
        let targeted = name.contains("c_attn.weight") || name.contains("c_fc.weight");
        if let (false, Some(got)) = (targeted, merged.get(name)) {
            assert!(got == want, "{name} is not the published weight");
            frozen += 1;
        }
    }
    assert!(frozen > 10, "only {frozen} frozen tensors compared");
    // The adapters moved the targets away from the published weights.
    let name = "transformer.h.0.mlp.c_fc.weight";
    assert!(merged[name] != published[name]);
}

/// Llama with `"all-linear"`: every projection of every block adapted, the untied `lm_head`
/// and the embedding frozen; two ranks with batch 4 train as one process with batch 8.
#[test]
fn lora_adapts_every_linear_layer_of_a_llama_on_two_ranks_as_on_one() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let pre = root.join("llama");
    train_ok(
        &llama_config(root, &pre, ""),
        &["train.max_steps=40", "checkpoint.every=40"],
    );
    let base = newest_checkpoint(&pre);
    let from = format!("model.init_from={}", s(&base));
    let lora = "[lora]\nr = 4\nalpha = 8\nuse_rslora = true\ntarget_modules = \"all-linear\"";
    let mut runs = Vec::new();
    for (ranks, batch) in [(2, 4), (1, 8)] {
        let run = root.join(format!("lora-{ranks}"));
        let cfg = llama_config(root, &run, lora);
        let b = format!("train.batch_size={batch}");
        let sets = [
            from.as_str(),
            &b,
            "train.max_steps=10",
            "train.eval_every=10",
        ];
        train(&cfg, &sets, &[], ranks == 2);
        runs.push(run);
    }
    let (two, one) = (&runs[0], &runs[1]);
    let (l2, l1) = (
        metric_values(two, "train", "loss"),
        metric_values(one, "train", "loss"),
    );
    assert_eq!(l2.len(), 10);
    for (a, b) in l2.iter().zip(&l1) {
        assert!((a - b).abs() <= 1e-5 * b.abs(), "loss {a} vs {b}");
    }
    let adapter =
        |run: &Path| tensors(&newest_checkpoint(run).join("adapter/adapter_model.safetensors"));
    let (a2, a1) = (adapter(two), adapter(one));
    assert_eq!(a2.keys().collect::<Vec<_>>(), a1.keys().collect::<Vec<_>>());
    for (k, v) in &a2 {
        let r = rel_l2(v, &a1[k]);
        assert!(r <= 1e-5, "{k}: relative difference {r}");
    }

    let ckpt = newest_checkpoint(one);
    let c = json(&ckpt.join("adapter/adapter_config.json"));
    // peft's expansion of "all-linear": every adapted module by its full name, sorted.
    let mut want = Vec::new();
    for layer in 0..2 {
        for m in [
            "mlp.down_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "self_attn.k_proj",
        ]
        .into_iter()
        .chain(["self_attn.o_proj", "self_attn.q_proj", "self_attn.v_proj"])
        {
            want.push(format!("model.layers.{layer}.{m}"));
        }
    }
    assert_eq!(c["target_modules"], serde_json::json!(want));
    assert_eq!(c["use_rslora"], true);
    assert_eq!(c["fan_in_fan_out"], false);
    // Seven projections in each of two blocks; rsLoRA's scale alpha/√r = 4.
    assert_eq!(a1.len(), 7 * 2 * 2);
    let adapted = assert_lora_merge(
        &read_f32_tensors(&ckpt.join("model.safetensors")),
        &tensors(&base.join("model.safetensors")),
        &a1,
        (4, 4.0, false),
        &[],
    );
    assert_eq!(adapted.len(), 7 * 2);
    assert!(!adapted
        .iter()
        .any(|n| n.contains("lm_head") || n.contains("embed")));

    // The output layer is not a target, even by name.
    let e = lantern_err(&[
        "train",
        "--config",
        &s(&llama_config(root, &root.join("bad"), lora)),
        "--set",
        &from,
        "--set",
        "lora.target_modules=[\"lm_head\"]",
    ]);
    assert!(e.contains("lm_head") && e.contains("output layer"), "{e}");
}

/// Adapters peft made (tests/golden/lora_gpt2_lm, lora_llama_lm: `scripts/make_lora_golden.py`)
/// applied by `lantern score --adapter` over their transformers base: peft's causal-LM loss.
#[test]
fn peft_adapters_score_through_the_cli_as_peft_computed() {
    let golden = workspace_root().join("tests/golden");
    for (base, adapter) in [
        ("gpt2_tiny", "lora_gpt2_lm"),
        ("llama_tiny", "lora_llama_lm"),
    ] {
        let out = lantern_ok(&[
            "score",
            "--model",
            &s(&golden.join(base)),
            "--adapter",
            &s(&golden.join(adapter).join("adapter")),
            "--tokens",
            &s(&golden.join(base).join("inputs.json")),
            "--json",
        ]);
        let got: Value = serde_json::from_str(out.trim()).unwrap();
        let want = tensors(&golden.join(adapter).join("expected.safetensors"))["loss"][0];
        let nll = got["mean_nll"].as_f64().unwrap();
        assert!(
            (nll - want as f64).abs() <= 1e-5,
            "{adapter}: mean NLL {nll}, peft's loss {want}"
        );
    }
}

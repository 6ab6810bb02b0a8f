//! BERT masked-LM pretraining through `lantern prepare --tokenizer wordpiece` and `lantern
//! train`: the loss falls on real text, resume and accumulation are exact, and the checkpoint
//! is a BertForMaskedLM folder that exports and loads as one.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Three fortune categories prepared once per test binary with a 512-token WordPiece
/// vocabulary (BERT's specials first).
fn wordpiece_data() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let raw = workspace_root().join("data/raw/fortunes");
        assert!(
            raw.is_dir(),
            "{} is missing: run `bash scripts/fetch_fortunes.sh`",
            raw.display()
        );
        let out = workspace_root()
            .join("target/test-data")
            .join(format!("fortunes-wp512-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let mut args = vec!["prepare".to_string()];
        for cat in ["computers", "science", "work"] {
            args.extend(["--input".into(), s(&raw.join(cat))]);
        }
        args.extend([
            "--out".into(),
            s(&out),
            "--tokenizer".into(),
            "wordpiece".into(),
            "--vocab-size".into(),
            "512".into(),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let said = lantern_ok(&refs);
        assert!(said.contains("wordpiece vocab 512"), "{said}");
        out
    })
    .clone()
}

/// A small bert-tiny variant (2 layers, hidden 64, 2 heads, 32-token samples).
fn bert_config(dir: &Path, run_dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[model]
preset = "bert-tiny"
n_embd = 64
n_head = 2
n_layer = 2
intermediate_size = 256
n_positions = 32
dropout = 0.1

[data]
dir = "{data}"

[train]
batch_size = 16
seq_len = 32
max_steps = 300
lr = 3e-3
warmup_steps = 10
eval_every = 50
eval_batches = 8
log_every = 50
{extra}

[checkpoint]
every = 100
keep = 5

[run]
dir = "{run}"
"#,
        data = s(&wordpiece_data()),
        run = s(run_dir),
    );
    write_config(dir, "bert", run_dir, &text)
}

/// Criterion: from scratch, the first validation MLM loss is that of a uniform guess
/// (ln 512 ≈ 6.24, within 0.3); after 300 steps it is at least 0.6 nats lower, and lower than
/// at step 50 (the model gets past predicting token frequencies); the train loss averaged over
/// each quarter of the run falls from quarter to quarter.
#[test]
fn mlm_loss_falls_on_real_text() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("fall");
    let out = train_ok(&bert_config(tmp.path(), &run, ""), &[]);
    assert!(out.contains("trained 300 steps"), "{out}");
    let val = metric_values(&run, "val", "val_loss");
    assert_eq!(val.len(), 7, "{val:?}");
    let uniform = 512f64.ln();
    assert!((val[0] - uniform).abs() < 0.3, "first val loss {val:?}");
    let last = *val.last().unwrap();
    assert!(last < val[0] - 0.6, "val loss did not fall enough: {val:?}");
    assert!(
        last < val[1] - 0.05,
        "val loss stalled after step 50: {val:?}"
    );
    let train = metric_values(&run, "train", "loss");
    assert_eq!(train.len(), 300);
    let quarters: Vec<f64> = train
        .chunks(75)
        .map(|c| c.iter().sum::<f64>() / 75.0)
        .collect();
    assert!(
        quarters.windows(2).all(|w| w[1] < w[0]),
        "smoothed train loss does not fall: {quarters:?}"
    );
}

fn exact_resume(accum: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let extra = format!("grad_accum = {accum}");
    let sets = [
        "--set",
        "train.max_steps=20",
        "--set",
        "train.eval_every=10",
    ];
    let train = |cfg: &Path, more: &[&str]| {
        let cfg = s(cfg);
        let mut args = vec!["train", "--config", &cfg, "--quiet"];
        args.extend(sets);
        args.extend(more);
        lantern_ok(&args);
    };
    let straight = tmp.path().join("straight");
    train(&bert_config(tmp.path(), &straight, &extra), &[]);

    let split = tmp.path().join("split");
    let cfg = bert_config(tmp.path(), &split, &extra);
    train(&cfg, &["--stop-after", "10"]);
    assert!(newest_checkpoint(&split).ends_with("step-00000010"));
    train(&cfg, &["--resume"]);

    let (a, b) = (newest_checkpoint(&straight), newest_checkpoint(&split));
    assert!(b.ends_with("step-00000020"));
    for f in ["model.safetensors", "optimizer.safetensors", "config.json"] {
        let (x, y) = (
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
        );
        assert!(
            x == y,
            "{f} differs after stop and resume (grad_accum {accum})"
        );
    }
    // The metrics of the resumed run continue those of the uninterrupted one exactly.
    assert_eq!(
        metric_values(&straight, "train", "loss"),
        metric_values(&split, "train", "loss")
    );
    assert_eq!(
        metric_values(&straight, "val", "val_loss"),
        metric_values(&split, "val", "val_loss")
    );
}

#[test]
fn mlm_resume_is_byte_identical() {
    exact_resume(1);
}

#[test]
fn mlm_resume_is_byte_identical_with_accumulation() {
    exact_resume(2);
}

/// Runs 8 steps of the small config without dropout, as `lantern <prefix> train ...`; returns
/// the final weights and the per-step train losses.
fn short_run(
    tmp: &Path,
    name: &str,
    prefix: &[&str],
    (b, acc): (usize, usize),
) -> (Vec<(String, Vec<f32>)>, Vec<f64>) {
    let dir = tmp.join(name);
    let cfg = bert_config(tmp, &dir, &format!("grad_accum = {acc}"));
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
        "model.dropout=0.0",
        "--set",
        "train.max_steps=8",
    ]);
    lantern_ok(&args);
    (
        read_f32_tensors(&newest_checkpoint(&dir).join("model.safetensors")),
        metric_values(&dir, "train", "loss"),
    )
}

/// Two runs took the same steps: losses and weights agree to float summation order.
fn assert_same_training(
    (wa, la): &(Vec<(String, Vec<f32>)>, Vec<f64>),
    (wb, lb): &(Vec<(String, Vec<f32>)>, Vec<f64>),
) {
    assert_eq!(la.len(), lb.len());
    for (x, y) in la.iter().zip(lb) {
        assert!(
            (x - y).abs() < 1e-4 * y.abs(),
            "step losses {la:?} vs {lb:?}"
        );
    }
    assert_eq!(wa.len(), wb.len());
    for ((name, x), (_, y)) in wa.iter().zip(wb) {
        // The key bias adds q·b_k to every score of a query alike, which softmax ignores: its
        // true gradient is 0, what it gets is rounding noise, and Adam scales noise to full
        // steps. Its values say nothing about how the step was split.
        if name.ends_with("attention.self.key.bias") {
            continue;
        }
        let r = rel_l2(x, y);
        assert!(r < 1e-4, "{name} differs: rel {r}");
    }
}

/// The loss is normalised by the chosen tokens of the whole step, and the samples are masked
/// by their global index: 4 micro-batches of 4 give the update of one batch of 16.
#[test]
fn mlm_accumulation_matches_a_large_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let a = short_run(tmp.path(), "b4x4", &[], (4, 4));
    let b = short_run(tmp.path(), "b16x1", &[], (16, 1));
    assert_same_training(&a, &b);
}

/// Two ranks choose different numbers of tokens; the step's loss is the mean over the chosen
/// tokens of both, so 2 ranks x batch 4 x 2 micro-batches train exactly as one process with
/// batch 8 x 2 (the same global samples, masked the same way).
#[test]
fn mlm_on_two_ranks_matches_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let launch = ["launch", "--nproc-per-node", "2", "--backend", "mpi", "--"];
    let two = short_run(tmp.path(), "two", &launch, (4, 2));
    let one = short_run(tmp.path(), "one", &[], (8, 2));
    assert_same_training(&two, &one);
}

#[test]
fn mlm_checkpoint_exports_and_loads_as_bert_for_masked_lm() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("export");
    train_ok(&bert_config(tmp.path(), &run, ""), &["train.max_steps=5"]);
    let ckpt = newest_checkpoint(&run);
    let hf = tmp.path().join("hf");
    let said = lantern_ok(&["export", "--model", &s(&ckpt), "--out", &s(&hf)]);
    assert!(said.contains("BertForMaskedLM"), "{said}");
    // The run folder names its newest checkpoint, as for GPT.
    let from_run = tmp.path().join("hf-from-run");
    lantern_ok(&["export", "--model", &s(&run), "--out", &s(&from_run)]);
    assert_eq!(
        std::fs::read(from_run.join("model.safetensors")).unwrap(),
        std::fs::read(hf.join("model.safetensors")).unwrap()
    );

    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForMaskedLM");
    assert_eq!(config["model_type"], "bert");
    assert_eq!(
        (
            config["hidden_size"].as_u64(),
            config["vocab_size"].as_u64()
        ),
        (Some(64), Some(512))
    );
    // transformers' tokenizer settings: BERT's, from the WordPiece tokenizer.
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert_eq!(t["tokenizer_class"], "BertTokenizer");
    assert_eq!(
        (&t["pad_token"], &t["mask_token"]),
        (&"[PAD]".into(), &"[MASK]".into())
    );
    assert_eq!(t["model_max_length"], config["max_position_embeddings"]);
    // HF names, the tied decoder not written, weights equal to the checkpoint's.
    let exported = read_f32_tensors(&hf.join("model.safetensors"));
    let names: Vec<&str> = exported.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "bert.embeddings.word_embeddings.weight",
        "bert.encoder.layer.1.attention.self.query.weight",
        "bert.encoder.layer.1.output.LayerNorm.bias",
        "cls.predictions.transform.dense.weight",
        "cls.predictions.bias",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(!names
        .iter()
        .any(|n| n.contains("decoder") || n.contains("pooler")));
    assert_eq!(exported, read_f32_tensors(&ckpt.join("model.safetensors")));

    // Lantern's BERT loading accepts the export: encode texts with it.
    let input = tmp.path().join("texts.jsonl");
    std::fs::write(
        &input,
        "{\"text\": \"A computer lets you make more mistakes faster.\"}\n",
    )
    .unwrap();
    let enc = tmp.path().join("enc.safetensors");
    lantern_ok(&[
        "encode",
        "--model",
        &s(&hf),
        "--input",
        &s(&input),
        "--out",
        &s(&enc),
    ]);
    let hidden = read_f32_tensors(&enc);
    let (_, h) = hidden
        .iter()
        .find(|(n, _)| n == "last_hidden_state")
        .expect("last_hidden_state");
    assert!(!h.is_empty() && h.iter().all(|x| x.is_finite()));

    // GPT commands say what the folder is instead of failing on its shapes.
    let e = lantern_err(&["generate", "--model", &s(&ckpt)]);
    assert!(e.contains("BERT masked-LM checkpoint"), "{e}");

    // The pretrained encoder starts a fine-tune, with a fresh pooler and classifier (a
    // BertForMaskedLM has neither), as transformers does.
    let mut labelled = String::new();
    for i in 0..24 {
        let (text, label) = if i % 2 == 0 {
            ("Computers make mistakes faster.", "computers")
        } else {
            ("Science is what we know.", "science")
        };
        labelled += &format!("{{\"text\": \"{text} {i}\", \"label\": \"{label}\"}}\n");
    }
    std::fs::write(tmp.path().join("labelled.jsonl"), labelled).unwrap();
    let ft = tmp.path().join("ft");
    let ft_cfg = tmp.path().join("ft.toml");
    std::fs::write(
        &ft_cfg,
        format!(
            "[run]\ndir = {:?}\n[model]\ninit_from = {:?}\n[data]\ntrain = {:?}\n\
             validation = {:?}\nmax_length = 16\n[train]\nbatch_size = 8\nepochs = 1\n",
            ft,
            run, // the pretraining run folder: its newest checkpoint
            tmp.path().join("labelled.jsonl"),
            tmp.path().join("labelled.jsonl"),
        ),
    )
    .unwrap();
    let said = lantern_ok(&["finetune", "--config", &s(&ft_cfg)]);
    assert!(
        said.contains("newly initialised") && said.contains("bert.pooler.dense.weight"),
        "{said}"
    );
    assert!(ft.join("model/config.json").is_file(), "{said}");
}

#[test]
fn bert_on_a_bpe_dataset_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("bpe");
    let cfg = bert_config(tmp.path(), &run, "");
    let data = format!("data.dir=\"{}\"", s(&prepared_data()));
    let e = lantern_err(&["train", "--config", &s(&cfg), "--quiet", "--set", &data]);
    assert!(
        e.contains("tokenizer.json") && e.contains("[CLS]") && e.contains("--tokenizer wordpiece"),
        "{e}"
    );
    // BERT settings on a GPT run are refused by name.
    let e = lantern_err(&["train", "--config", &s(&cfg), "--set", "model.arch=\"gpt\""]);
    assert!(
        e.contains("model.intermediate_size") && e.contains("gpt"),
        "{e}"
    );
}

/// run_mlm's continued pretraining of a RoBERTa, a DistilBERT and a ModernBERT checkpoint:
/// `lantern prepare` with the model's own tokenizer, `lantern train` from the folder; the
/// validation loss falls, the checkpoints are the family's masked LM (its names, its
/// config.json), and a fine-tune starts from the run.
#[test]
fn roberta_distilbert_and_modernbert_checkpoints_continue_pretraining() {
    use lantern_models::bert::Family;
    let tmp = tempfile::tempdir().unwrap();
    let raw = workspace_root().join("data/raw/fortunes");
    let roberta_tok = workspace_root().join("tests/golden/roberta_tiny/tokenizer/tokenizer.json");
    let wp_tok = wordpiece_data().join("tokenizer.json");
    for (name, family, tokenizer, class, names, tok_class) in [
        (
            "roberta",
            Family::Roberta,
            &roberta_tok,
            "RobertaForMaskedLM",
            [
                "roberta.encoder.layer.0.attention.self.query.weight",
                "lm_head.layer_norm.weight",
            ],
            "RobertaTokenizer",
        ),
        (
            "distilbert",
            Family::DistilBert,
            &wp_tok,
            "DistilBertForMaskedLM",
            [
                "distilbert.transformer.layer.0.ffn.lin1.weight",
                "vocab_projector.bias",
            ],
            "BertTokenizer",
        ),
        (
            "modernbert",
            Family::ModernBert,
            &wp_tok,
            "ModernBertForMaskedLM",
            ["model.layers.1.attn.Wqkv.weight", "decoder.bias"],
            "BertTokenizer",
        ),
    ] {
        let folder = family_folder(tmp.path(), &format!("{name}-base"), family, tokenizer);
        let data = tmp.path().join(format!("{name}-data"));
        lantern_ok(&[
            "prepare",
            "--input",
            &s(&raw.join("science")),
            "--out",
            &s(&data),
            "--tokenizer",
            &s(tokenizer),
        ]);
        let run = tmp.path().join(format!("{name}-run"));
        let cfg = tmp.path().join(format!("{name}.toml"));
        let text = format!(
            "[model]\npreset = \"bert-tiny\"\ninit_from = {:?}\n[data]\ndir = {:?}\n[train]\n\
             batch_size = 16\nseq_len = 32\nmax_steps = 80\nlr = 3e-3\nwarmup_steps = 5\n\
             eval_every = 40\neval_batches = 4\nlog_every = 40\n[checkpoint]\nevery = 40\n\
             [run]\ndir = {:?}\n",
            s(&folder),
            s(&data),
            s(&run)
        );
        std::fs::write(&cfg, text).unwrap();
        train_ok(&cfg, &[]);
        let val = metric_values(&run, "val", "val_loss");
        assert!(
            val.len() >= 2 && val[val.len() - 1] < val[0] - 0.3,
            "{name}: {val:?}"
        );
        if family == Family::ModernBert {
            // With adapters: the fused Wqkv is the default target; the prediction head and
            // the decoder (its bias; its weight tied to the token embeddings) train in full.
            let lora_run = tmp.path().join("modernbert-lora");
            let lora_cfg = tmp.path().join("modernbert-lora.toml");
            let text = std::fs::read_to_string(&cfg).unwrap();
            let text = text.replace(&format!("{:?}", s(&run)), &format!("{:?}", s(&lora_run)));
            std::fs::write(&lora_cfg, format!("{text}[lora]\nr = 4\n")).unwrap();
            train_ok(&lora_cfg, &["train.max_steps=40"]);
            let v = metric_values(&lora_run, "val", "val_loss");
            assert!(v.iter().all(|x| x.is_finite()) && v[0] != v[1], "{v:?}");
            let adapter = newest_checkpoint(&lora_run).join("adapter");
            let c: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(c["target_modules"], serde_json::json!(["Wqkv"]));
            assert_eq!(c["modules_to_save"], serde_json::json!(["head", "decoder"]));
            let tensors: std::collections::BTreeMap<String, Vec<f32>> =
                read_f32_tensors(&adapter.join("adapter_model.safetensors"))
                    .into_iter()
                    .collect();
            let folder_tensors: std::collections::BTreeMap<String, Vec<f32>> =
                read_f32_tensors(&folder.join("model.safetensors"))
                    .into_iter()
                    .collect();
            assert_eq!(
                tensors["base_model.model.decoder.weight"],
                folder_tensors["model.embeddings.tok_embeddings.weight"]
            );
            assert!(tensors.contains_key("base_model.model.model.layers.1.attn.Wqkv.lora_A.weight"));
        }
        let ckpt = newest_checkpoint(&run);
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(ckpt.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["architectures"][0], class, "{name}");
        assert_eq!(config["model_type"], family.model_type());
        let tensors = read_f32_tensors(&ckpt.join("model.safetensors"));
        for want in names {
            assert!(tensors.iter().any(|(n, _)| n == want), "{name}: {want}");
        }
        // transformers' tokenizer settings, by what the tokenizer is: RoBERTa's byte-level
        // BPE with <s> </s> <pad> <mask> (512 of its 514 positions), or BERT's WordPiece.
        let tok_cfg = std::fs::read(ckpt.join("tokenizer_config.json")).unwrap();
        let t: serde_json::Value = serde_json::from_slice(&tok_cfg).unwrap();
        assert_eq!(t["tokenizer_class"], tok_class, "{name}");
        let (pad, mask, max) = match name {
            "roberta" => (
                "<pad>",
                "<mask>",
                config["max_position_embeddings"].as_u64().unwrap() - 2,
            ),
            _ => (
                "[PAD]",
                "[MASK]",
                config["max_position_embeddings"].as_u64().unwrap(),
            ),
        };
        assert_eq!(
            (&t["pad_token"], &t["mask_token"]),
            (&pad.into(), &mask.into()),
            "{name}"
        );
        assert_eq!(t["model_max_length"], max, "{name}");
        // The run is a starting point for fine-tuning, as its folder was.
        let labelled = tmp.path().join(format!("{name}-labelled.jsonl"));
        let lines: String = (0..24)
            .map(|i| {
                let (text, label) = match i % 2 {
                    0 => ("the cat sleeps near the dog", "animal"),
                    _ => ("the rocket flies past the moon", "machine"),
                };
                format!("{{\"text\": \"{text} {i}\", \"label\": \"{label}\"}}\n")
            })
            .collect();
        std::fs::write(&labelled, lines).unwrap();
        let ft = tmp.path().join(format!("{name}-ft.toml"));
        let text = format!(
            "[run]\ndir = {:?}\n[model]\ninit_from = {:?}\n[data]\ntrain = {:?}\n\
             validation = {:?}\nmax_length = 24\n[train]\nepochs = 1\nbatch_size = 8\n",
            s(&tmp.path().join(format!("{name}-ft"))),
            s(&run),
            s(&labelled),
            s(&labelled),
        );
        std::fs::write(&ft, text).unwrap();
        let out = lantern_ok(&["finetune", "--config", &s(&ft), "--quiet"]);
        assert!(out.contains("exported"), "{name}: {out}");
        // The checkpoint fine-tuned from is the authority for the tokenizer's settings.
        let ft_model = tmp.path().join(format!("{name}-ft/model"));
        let ft_cfg = std::fs::read(ft_model.join("tokenizer_config.json")).unwrap();
        assert!(ft_cfg == tok_cfg, "{name}");
    }
}

/// `[lora]` over a BERT masked LM (continued MLM pretraining with adapters): the query and
/// value projections adapted, the MLM head (`cls.*`) trained in full as peft's
/// `modules_to_save`, every other tensor frozen to the bit.
#[test]
fn lora_continues_masked_lm_pretraining() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let pre = root.join("pre");
    train_ok(&bert_config(root, &pre, ""), &["train.max_steps=100"]);
    let base = newest_checkpoint(&pre);
    let run = root.join("lora");
    let cfg = bert_config(root, &run, "[lora]\nr = 4\nalpha = 8");
    let from = format!("model.init_from={}", s(&base));
    train_ok(
        &cfg,
        &[
            &from,
            "train.lr=1e-3",
            "train.max_steps=60",
            "train.eval_every=60",
        ],
    );
    // (Continued on the text it was pretrained on, this tiny model's validation loss moves by
    // noise, with every weight trained as with adapters: the checks are of what trains.)
    let v = metric_values(&run, "val", "val_loss");
    assert!(v.iter().all(|x| x.is_finite()) && v[0] != v[1], "{v:?}");

    let ckpt = newest_checkpoint(&run);
    let c: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ckpt.join("adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(c["task_type"], serde_json::Value::Null);
    assert_eq!(c["modules_to_save"], serde_json::json!(["cls"]));
    assert_eq!(c["target_modules"], serde_json::json!(["query", "value"]));
    let map = |p: &Path| -> std::collections::BTreeMap<String, Vec<f32>> {
        read_f32_tensors(p).into_iter().collect()
    };
    let merged = read_f32_tensors(&ckpt.join("model.safetensors"));
    let head: Vec<&str> = merged
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| n.starts_with("cls."))
        .collect();
    assert!(!head.is_empty());
    let adapted = assert_lora_merge(
        &merged,
        &map(&base.join("model.safetensors")),
        &map(&ckpt.join("adapter/adapter_model.safetensors")),
        (4, 2.0, false),
        &head,
    );
    assert_eq!(adapted.len(), 2 * 2, "{adapted:?}");
    // peft's file holds every tensor of `cls`, the output layer's tied weight and bias as
    // copies; loading it back (`lora.adapter`) checks them and starts where the run ended.
    let adapter = map(&ckpt.join("adapter/adapter_model.safetensors"));
    let merged: std::collections::BTreeMap<String, Vec<f32>> = merged.into_iter().collect();
    assert_eq!(
        adapter["base_model.model.cls.predictions.decoder.weight"],
        merged["bert.embeddings.word_embeddings.weight"]
    );
    assert_eq!(
        adapter["base_model.model.cls.predictions.decoder.bias"],
        merged["cls.predictions.bias"]
    );
    let again = root.join("again");
    let cfg = bert_config(root, &again, "[lora]");
    let from_adapter = format!("lora.adapter={}", s(&ckpt.join("adapter")));
    train_ok(&cfg, &[&from, &from_adapter, "train.max_steps=1"]);
    assert_eq!(metric_values(&again, "val", "val_loss")[0], v[1]);
}

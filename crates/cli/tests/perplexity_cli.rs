//! `lantern score --file`: the sliding-window perplexity of a text file against transformers
//! (tests/golden/perplexity, made by scripts/make_perplexity_golden.py), and its refusals.

mod common;
use common::*;
use std::path::{Path, PathBuf};

fn golden() -> PathBuf {
    workspace_root().join("tests/golden/perplexity")
}

/// tests/golden/gpt2_tiny (vocabulary 96, context 32) with the golden character tokenizer.
fn model_dir(tmp: &Path) -> PathBuf {
    let dir = tmp.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    let tiny = workspace_root().join("tests/golden/gpt2_tiny");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(tiny.join(f), dir.join(f)).unwrap();
    }
    std::fs::copy(golden().join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    dir
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn score_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["score", "--json", "--device", "cpu"];
    all.extend_from_slice(args);
    let out = lantern_ok(&all);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs()
}

#[test]
fn file_perplexity_matches_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let model = s(&model_dir(tmp.path()));
    let text = s(&golden().join("text.txt"));
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden().join("expected.json")).unwrap())
            .unwrap();
    let bytes = expected["bytes"].as_u64().unwrap();
    for case in expected["cases"].as_array().unwrap() {
        // null: the command's defaults (the model's 32 tokens, stride = max length).
        let (l, st) = (case["max_length"].as_u64(), case["stride"].as_u64());
        for batch in ["1", "3", "8"] {
            let mut args = vec!["--model", &model, "--file", &text, "--batch", batch];
            let (l_s, st_s) = (l.map(|x| x.to_string()), st.map(|x| x.to_string()));
            if let (Some(l), Some(st)) = (&l_s, &st_s) {
                args.extend(["--max-length", l, "--stride", st]);
            }
            let got = score_json(&args);
            let what = format!("L {l:?} S {st:?} batch {batch}: {got}");
            for key in ["tokens_scored", "windows"] {
                assert_eq!(got[key], case[key], "{key} of {what}");
            }
            assert_eq!(got["bytes"].as_u64(), Some(bytes), "{what}");
            assert_eq!(got["input_tokens"], expected["input_tokens"], "{what}");
            for key in ["nll_sum", "mean_nll", "perplexity", "bits_per_byte"] {
                let (g, w) = (got[key].as_f64().unwrap(), case[key].as_f64().unwrap());
                assert!(close(g, w, 1e-5), "{key}: {g} vs transformers {w} ({what})");
            }
        }
    }
}

#[test]
fn file_text_and_tokens_are_scored_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let model = s(&model_dir(tmp.path()));
    let text = std::fs::read_to_string(golden().join("text.txt")).unwrap();
    let file = s(&golden().join("text.txt"));
    // The golden tokenizer is one token a character: "\n" is 0, ASCII 32..126 are 1..95.
    let ids: Vec<u32> = text
        .chars()
        .map(|c| if c == '\n' { 0 } else { c as u32 - 31 })
        .collect();
    let toks = tmp.path().join("tokens.json");
    std::fs::write(&toks, serde_json::json!({ "input_ids": [ids] }).to_string()).unwrap();
    let w = ["--max-length", "24", "--stride", "10"];
    let from_file = score_json(&[&["--model", &model, "--file", &file][..], &w].concat());
    let from_text = score_json(&[&["--model", &model, "--text", &text][..], &w].concat());
    let from_ids = score_json(&[&["--model", &model, "--tokens", &s(&toks)][..], &w].concat());
    assert_eq!(from_file["tokens_scored"], ids.len() - 1);
    for other in [&from_text, &from_ids] {
        assert_eq!(other["tokens_scored"], from_file["tokens_scored"]);
        assert_eq!(other["windows"], from_file["windows"]);
        assert_eq!(other["nll_sum"], from_file["nll_sum"]);
    }
    assert_eq!(from_text["bytes"], from_file["bytes"]);
    assert!(from_ids["bytes"].is_null() && from_ids["bits_per_byte"].is_null());

    // Two rows of --tokens are two sequences: their sums add up.
    let (a, b) = ids.split_at(250);
    std::fs::write(
        &toks,
        serde_json::json!({ "input_ids": [a, b] }).to_string(),
    )
    .unwrap();
    let two = score_json(&[&["--model", &model, "--tokens", &s(&toks)][..], &w].concat());
    assert_eq!(two["tokens_scored"], ids.len() - 2);
    assert_eq!(two["sequences"], 2);

    // The line of text says the same.
    let line = lantern_ok(
        &[
            &[
                "score", "--device", "cpu", "--model", &model, "--file", &file,
            ][..],
            &w,
        ]
        .concat(),
    );
    let ppl = from_file["perplexity"].as_f64().unwrap();
    assert!(line.contains(&format!("perplexity {ppl:.3}")), "{line}");
    assert!(
        line.contains("bits per byte") && line.contains("windows"),
        "{line}"
    );
}

#[test]
fn dump_writes_one_forward_of_a_short_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let model = s(&model_dir(tmp.path()));
    let toks = tmp.path().join("tokens.json");
    let rows: Vec<Vec<u32>> = (0..2)
        .map(|r| (0..20).map(|i| (i * 7 + r * 5) % 96).collect())
        .collect();
    std::fs::write(&toks, serde_json::json!({ "input_ids": rows }).to_string()).unwrap();
    let dump = tmp.path().join("out.safetensors");
    let got = score_json(&[
        "--model",
        &model,
        "--tokens",
        &s(&toks),
        "--dump",
        &s(&dump),
    ]);
    let bytes = std::fs::read(&dump).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("logits").unwrap().shape(), [2, 20, 96]);
    let loss = st.tensor("loss").unwrap();
    let loss = f32::from_le_bytes(loss.data()[..4].try_into().unwrap()) as f64;
    // One window a row, every token but the first scored: the mean is the forward's loss.
    assert_eq!(got["tokens_scored"], 38);
    let mean = got["mean_nll"].as_f64().unwrap();
    assert!(close(mean, loss, 1e-5), "{mean} vs {loss}");

    // A file longer than one window cannot be dumped as one forward.
    let file = s(&golden().join("text.txt"));
    let e = lantern_err(&[
        "score",
        "--model",
        &model,
        "--file",
        &file,
        "--dump",
        &s(&dump),
    ]);
    assert!(e.contains("--dump") && e.contains("--max-length 32"), "{e}");
}

#[test]
fn bad_inputs_and_settings_are_refused_with_their_name() {
    let tmp = tempfile::tempdir().unwrap();
    let model = s(&model_dir(tmp.path()));
    let file = s(&golden().join("text.txt"));
    let score_err = |extra: &[&str]| {
        let mut args = vec!["score", "--device", "cpu", "--model", &model];
        args.extend_from_slice(extra);
        lantern_err(&args)
    };

    let missing = s(&tmp.path().join("no-such.txt"));
    let e = score_err(&["--file", &missing]);
    assert!(e.contains(&missing), "{e}");
    let e = score_err(&["--file", &s(tmp.path())]);
    assert!(e.contains(&s(tmp.path())), "{e}");

    let latin1 = tmp.path().join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9 au lait").unwrap();
    let e = score_err(&["--file", &s(&latin1)]);
    assert!(e.contains(&s(&latin1)) && e.contains("UTF-8"), "{e}");

    for (name, content) in [("empty.txt", ""), ("one.txt", "x")] {
        let p = tmp.path().join(name);
        std::fs::write(&p, content).unwrap();
        let e = score_err(&["--file", &s(&p)]);
        assert!(e.contains(&s(&p)) && e.contains("at least 2"), "{e}");
    }

    let e = score_err(&["--file", &file, "--max-length", "16", "--stride", "17"]);
    assert!(
        e.contains("--stride 17") && e.contains("larger than the max length 16"),
        "{e}"
    );
    let e = score_err(&["--file", &file, "--max-length", "64"]);
    assert!(
        e.contains("--max-length 64") && e.contains("n_positions 32"),
        "{e}"
    );
    let e = score_err(&["--file", &file, "--stride", "0"]);
    assert!(e.contains("--stride 0"), "{e}");
    let e = score_err(&["--file", &file, "--max-length", "1"]);
    assert!(
        e.contains("--max-length 1") && e.contains("at least 2"),
        "{e}"
    );
    let e = score_err(&["--file", &file, "--batch", "0"]);
    assert!(e.contains("--batch 0"), "{e}");
    let e = score_err(&[]);
    assert!(e.contains("--file"), "{e}");
    let toks = tmp.path().join("t.json");
    std::fs::write(&toks, r#"{"input_ids": [[1, 2, 3], [4]]}"#).unwrap();
    let e = score_err(&["--tokens", &s(&toks)]);
    assert!(e.contains("row 1") && e.contains("at least 2"), "{e}");
}

/// A model transformers saved in shards (`model.safetensors.index.json` and
/// `model-0000N-of-00002.safetensors`, as it saves any model past its shard size) scores as the
/// single file does, and `export` writes it back as one file with the same bits.
#[test]
fn a_sharded_model_folder_loads_as_its_single_file() {
    use safetensors::tensor::TensorView;
    let tmp = tempfile::tempdir().unwrap();
    let golden = workspace_root().join("tests/golden/qwen3_tiny");
    let sharded = tmp.path().join("sharded");
    std::fs::create_dir_all(&sharded).unwrap();
    std::fs::copy(golden.join("config.json"), sharded.join("config.json")).unwrap();
    let bytes = std::fs::read(golden.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    let half = names.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (k, part) in [&names[..half], &names[half..]].into_iter().enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", k + 1);
        let views: Vec<(String, TensorView)> = part
            .iter()
            .map(|n| (n.to_string(), st.tensor(n).unwrap()))
            .collect();
        let out = safetensors::serialize(views, None).unwrap();
        std::fs::write(sharded.join(&file), out).unwrap();
        for n in part {
            weight_map.insert(n.to_string(), file.clone().into());
        }
    }
    let index =
        serde_json::json!({"metadata": {"total_size": bytes.len()}, "weight_map": weight_map});
    std::fs::write(
        sharded.join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let tokens = s(&golden.join("inputs.json"));
    let whole = score_json(&["--model", &s(&golden), "--tokens", &tokens]);
    let parts = score_json(&["--model", &s(&sharded), "--tokens", &tokens]);
    assert_eq!(whole, parts);
    let out = tmp.path().join("export");
    lantern_ok(&["export", "--model", &s(&sharded), "--out", &s(&out)]);
    let back = read_f32_tensors(&out.join("model.safetensors"));
    let orig = read_f32_tensors(&golden.join("model.safetensors"));
    assert_eq!(back, orig);
    // A shard gone: the index and the shard are named.
    std::fs::remove_file(sharded.join("model-00002-of-00002.safetensors")).unwrap();
    let e = lantern_err(&["score", "--model", &s(&sharded), "--tokens", &tokens]);
    assert!(
        e.contains("model.safetensors.index.json") && e.contains("model-00002-of-00002"),
        "{e}"
    );
}

/// A multimodal Gemma 3 folder (`Gemma3ForConditionalGeneration`, as the Gemma 3 4B and larger
/// are published) scores as its language model, with transformers' loss of the same tokens,
/// and exports as a text-only `Gemma3ForCausalLM` that scores the same.
#[test]
fn a_multimodal_gemma3_folder_scores_and_exports_as_its_language_model() {
    let tmp = tempfile::tempdir().unwrap();
    let golden = workspace_root().join("tests/golden/gemma3_mm");
    let tokens = s(&golden.join("inputs.json"));
    let mm = score_json(&["--model", &s(&golden), "--tokens", &tokens]);
    let want: f64 = {
        let bytes = std::fs::read(golden.join("expected.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let loss = st.tensor("loss").unwrap();
        f32::from_le_bytes(loss.data()[..4].try_into().unwrap()) as f64
    };
    let got = mm["mean_nll"].as_f64().unwrap();
    assert!(
        close(got, want, 1e-6),
        "mean NLL {got} vs transformers' {want}"
    );
    let out = tmp.path().join("export");
    let said = lantern_ok(&["export", "--model", &s(&golden), "--out", &s(&out)]);
    assert!(said.contains("Gemma3ForCausalLM"), "{said}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "gemma3_text");
    let text = score_json(&["--model", &s(&out), "--tokens", &tokens]);
    assert_eq!(mm, text);
    // The export holds the language model's tensors only, with transformers' text names.
    let names: Vec<String> = read_f32_tensors(&out.join("model.safetensors"))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.iter().all(|n| n.starts_with("model.")), "{names:?}");
}

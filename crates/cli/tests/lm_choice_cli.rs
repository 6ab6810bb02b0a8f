//! `lantern score --choices`: zero-shot multiple choice against transformers scoring the
//! same examples as lm-evaluation-harness does (tests/golden/lm_choice, made by
//! scripts/make_lm_choice_golden.py), in each record layout, and its refusals.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The golden Llama (a folder with its tokenizer) and the golden GPT-2 with that tokenizer.
fn models(tmp: &Path) -> [(&'static str, PathBuf); 2] {
    let gpt2 = tmp.join("gpt2");
    std::fs::create_dir_all(&gpt2).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(golden("dpo/gpt2-model").join(f), gpt2.join(f)).unwrap();
    }
    let llama = golden("sft/model");
    std::fs::copy(llama.join("tokenizer.json"), gpt2.join("tokenizer.json")).unwrap();
    [("llama", llama), ("gpt2", gpt2)]
}

#[test]
fn choices_score_as_transformers_in_every_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(golden("lm_choice").join("expected.json")).unwrap(),
    )
    .unwrap();
    let labels = &expected["labels"];
    let out = tmp.path().join("preds.jsonl");
    for (name, model) in models(tmp.path()) {
        for window in ["full", "24"] {
            let want = &expected["models"][format!("{name}-{window}")];
            for (layout, batch) in [
                ("swag.jsonl", "1"),
                ("hellaswag.jsonl", "3"),
                ("generic.csv", "8"),
            ] {
                let what = format!("{name}, window {window}, {layout}, batch {batch}");
                let (m, f, o) = (s(&model), s(&golden("lm_choice").join(layout)), s(&out));
                let mut args = vec!["score", "--json", "--device", "cpu", "--model", &m];
                args.extend(["--choices", &f, "--out", &o, "--batch", batch]);
                if window != "full" {
                    args.extend(["--max-length", window]);
                }
                let stdout = lantern_ok(&args);
                let got: Value = serde_json::from_str(stdout.trim()).unwrap();
                for key in ["acc", "acc_norm", "acc_per_token"] {
                    assert_eq!(got[key], want[key], "{key} of {what}");
                }
                assert_eq!(got["examples"], 8, "{what}");
                // The long context is cut at the models' 128 tokens; most at 24.
                let cut = got["truncated"].as_u64().unwrap();
                assert!(
                    if window == "full" { cut == 1 } else { cut >= 6 },
                    "{what}: {cut}"
                );
                let preds: Vec<Value> = std::fs::read_to_string(&out)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                let examples = want["examples"].as_array().unwrap();
                assert_eq!(preds.len(), examples.len(), "{what}");
                for (i, (p, e)) in preds.iter().zip(examples).enumerate() {
                    for key in ["tokens", "acc", "acc_norm", "acc_per_token"] {
                        assert_eq!(p[key], e[key], "{what}: example {i}'s {key}");
                    }
                    assert_eq!(p["label"], labels[i], "{what}");
                    let (got, want) = (floats(&p["loglik"]), floats(&e["loglik"]));
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (g - w).abs() <= 1e-4 + 1e-6 * w.abs(),
                            "{what}: example {i}: {got:?} vs transformers' {want:?}"
                        );
                    }
                }
            }
        }
    }
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn limit_and_text_output() {
    let tmp = tempfile::tempdir().unwrap();
    let model = s(&golden("sft/model"));
    let f = s(&golden("lm_choice").join("swag.jsonl"));
    let out = lantern_ok(&[
        "score",
        "--model",
        &model,
        "--choices",
        &f,
        "--limit",
        "3",
        "--device",
        "cpu",
    ]);
    assert!(
        out.contains("3 examples of 4 choices (3 labelled") && out.contains("| acc "),
        "{out}"
    );
    // An unlabelled file is scored, with no accuracy.
    let unlabelled = tmp.path().join("u.jsonl");
    std::fs::write(
        &unlabelled,
        "{\"ctx\": \"To thine own self\", \"endings\": [\"be true.\", \"be false.\"]}\n",
    )
    .unwrap();
    let out = lantern_ok(&[
        "score",
        "--model",
        &model,
        "--choices",
        &s(&unlabelled),
        "--device",
        "cpu",
    ]);
    assert!(
        out.contains("0 labelled") && out.contains("no labels"),
        "{out}"
    );
}

#[test]
fn hellaswag_reads_as_the_harness_reads_it_with_lm_eval() {
    let tmp = tempfile::tempdir().unwrap();
    let model = s(&golden("sft/model"));
    let write = |name: &str, rows: &[&str]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, rows.join("\n") + "\n").unwrap();
        s(&p)
    };
    // HellaSwag's records, and the texts lm-evaluation-harness's `hellaswag` task makes of
    // them (its `preprocess` and `ctx_b.capitalize()`, run in Python).
    let raw = write(
        "hs.jsonl",
        &[
        "{\"activity_label\": \"Fortunes\", \"ctx_a\": \"To thine own self [title] be true.\", \"ctx_b\": \"AND it must FOLLOW,\", \"ctx\": \"To thine own self [title] be true. AND it must FOLLOW,\", \"endings\": [\"as the night [step] the day,\", \"thou canst not then be false [header] to any man.\", \"as [x]the stars.\", \"a telescope.\"], \"label\": 1}",
        "{\"activity_label\": \"Work\", \"ctx_a\": \"By working faithfully eight hours a day, you\", \"ctx_b\": \"may [substeps] eventually\", \"ctx\": \"By working faithfully eight hours a day, you may [substeps] eventually\", \"endings\": [\"get to be boss and work twelve.\", \"find God.\", \"buy any [title] lavishes.\", \"be true.\"], \"label\": 0}",
        ],
    );
    let harness = write(
        "harness.jsonl",
        &[
        "{\"text\": \"Fortunes: To thine own self. be true. And it must follow,\", \"choices\": [\"as the night the day,\", \"thou canst not then be false to any man.\", \"as the stars.\", \"a telescope.\"], \"label\": 1}",
        "{\"text\": \"Work: By working faithfully eight hours a day, you May eventually\", \"choices\": [\"get to be boss and work twelve.\", \"find God.\", \"buy any. lavishes.\", \"be true.\"], \"label\": 0}",
        ],
    );
    let scores = |file: &str, extra: &[&str]| {
        let out = tmp.path().join("out.jsonl");
        let mut args = vec![
            "score",
            "--model",
            &model,
            "--choices",
            file,
            "--device",
            "cpu",
            "--out",
        ];
        let out_s = s(&out);
        args.push(&out_s);
        args.extend(extra);
        let stdout = lantern_ok(&args);
        if extra.contains(&"--json") {
            // The summary says how HellaSwag was read.
            let v: Value = serde_json::from_str(stdout.trim()).unwrap();
            assert_eq!(v["hellaswag"], "lm-eval", "{v}");
        }
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| floats(&serde_json::from_str::<Value>(l).unwrap()["loglik"]))
            .collect::<Vec<_>>()
    };
    let lm_eval = scores(&raw, &["--hellaswag", "lm-eval", "--json"]);
    assert_eq!(lm_eval, scores(&harness, &[]));
    // Raw (llm.c's reading) scores `ctx` and the endings as they are: other texts.
    assert_ne!(scores(&raw, &[]), lm_eval);
    // Only HellaSwag's records with their parts can read so.
    let e = lantern_err(&[
        "score",
        "--model",
        &model,
        "--choices",
        &harness,
        "--device",
        "cpu",
        "--hellaswag",
        "lm-eval",
    ]);
    assert!(e.contains("harness.jsonl") && e.contains("ctx_a"), "{e}");
}

#[test]
fn bad_choices_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let model = s(&golden("sft/model"));
    let write = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        s(&p)
    };
    let long = format!(
        "{{\"text\": \"a\", \"choices\": [\"{}\", \"b\"], \"label\": 0}}\n",
        "word ".repeat(200)
    );
    for (file, extra, want) in [
        (
            write(
                "missing-label.jsonl",
                "{\"text\": \"a\", \"choices\": [\"b\", \"c\"], \"label\": 5}\n",
            ),
            vec![],
            "line 1: label 5 is not a choice",
        ),
        (write("long.jsonl", &long), vec![], "line 1: choice 0 is"),
        (
            write(
                "ok.jsonl",
                "{\"text\": \"a b\", \"choices\": [\"b c\", \"c\"], \"label\": 0}\n",
            ),
            vec!["--max-length", "1"],
            "choice 0 is 2 tokens, longer than the model's window of 1",
        ),
        (
            write(
                "ok2.jsonl",
                "{\"text\": \"a\", \"choices\": [\"b\", \"c\"]}\n",
            ),
            vec!["--max-length", "129"],
            "--max-length 129: the model reads 1 to 128 tokens",
        ),
        (s(&tmp.path().join("none.jsonl")), vec![], "none.jsonl"),
    ] {
        let mut args = vec![
            "score",
            "--model",
            &model,
            "--choices",
            &file,
            "--device",
            "cpu",
        ];
        args.extend(extra);
        let e = lantern_err(&args);
        assert!(e.contains(want), "{file}: {e}");
        if !file.contains("ok2") && !file.contains("none") {
            assert!(e.contains(&file), "the message names the file: {e}");
        }
    }
    // --choices is not a text to score in windows.
    let f = s(&golden("lm_choice").join("swag.jsonl"));
    let e = lantern_err(&["score", "--model", &model, "--choices", &f, "--stride", "4"]);
    assert!(e.contains("--stride"), "{e}");
}

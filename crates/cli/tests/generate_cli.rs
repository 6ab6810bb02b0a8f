//! `lantern generate`'s sampling flags through the binary: --repetition-penalty and --top-p (their
//! exact rules are checked against transformers in `sampling.rs`'s tests), and clear errors.

mod common;
use common::*;
use std::path::PathBuf;
use std::sync::OnceLock;

/// A tiny run trained for a few steps (its newest checkpoint is what `generate` loads).
fn run_dir() -> &'static PathBuf {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = workspace_root()
            .join("target/test-data")
            .join(format!("generate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let run = dir.join("run");
        train_ok(&tiny_config(&dir, &run, ""), &["train.max_steps=10"]);
        run
    })
}

/// stdout and the ids of sample 1 (from the `--print-ids` line on stderr).
fn generate(extra: &[&str]) -> (String, Vec<u32>) {
    generate_from(&s(run_dir()), "The", 30, extra)
}

/// [`generate`] from `model` and `prompt`, `new` tokens.
fn generate_from(model: &str, prompt: &str, new: usize, extra: &[&str]) -> (String, Vec<u32>) {
    let new = new.to_string();
    let mut args = vec![
        "generate",
        "--model",
        model,
        "--prompt",
        prompt,
        "--max-new-tokens",
        &new,
        "--ignore-eot",
        "--seed",
        "5",
        "--print-ids",
    ];
    args.extend(extra);
    let out = lantern(&args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "lantern {args:?}:\n{err}");
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix("sample 1 ids: "))
        .unwrap_or_else(|| panic!("no ids line:\n{err}"));
    let ids = line
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .map(|x| x.parse().unwrap())
        .collect();
    (String::from_utf8_lossy(&out.stdout).to_string(), ids)
}

fn has_repeat(ids: &[u32]) -> bool {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v.windows(2).any(|w| w[0] == w[1])
}

#[test]
fn a_huge_repetition_penalty_keeps_greedy_from_repeating() {
    let (_, plain) = generate(&["--temperature", "0"]);
    assert_eq!(plain.len(), 30);
    assert!(
        has_repeat(&plain),
        "greedy repeats on this model: {plain:?}"
    );
    let (_, penalised) = generate(&["--temperature", "0", "--repetition-penalty", "1e9"]);
    assert_eq!(penalised.len(), 30);
    assert!(!has_repeat(&penalised), "{penalised:?}");
}

#[test]
fn a_tiny_top_p_is_greedy_and_the_defaults_change_nothing() {
    let (greedy, _) = generate(&["--temperature", "0"]);
    let (tiny, _) = generate(&["--temperature", "1.5", "--top-p", "1e-9"]);
    assert_eq!(tiny, greedy);
    let (sampled, _) = generate(&[]);
    let (explicit, _) = generate(&["--top-p", "1", "--repetition-penalty", "1"]);
    assert_eq!(explicit, sampled);
    let (nucleus, _) = generate(&["--top-p", "0.5"]);
    assert_ne!(nucleus, sampled, "top-p 0.5 changes what is drawn here");
}

#[test]
fn bad_sampling_flags_are_named_before_loading_the_model() {
    let missing = "/nonexistent/model";
    for (flag, value) in [
        ("--top-p", "0"),
        ("--top-p", "1.01"),
        ("--repetition-penalty", "0"),
        ("--repetition-penalty", "-1.2"),
    ] {
        let arg = format!("{flag}={value}");
        let e = lantern_err(&["generate", "--model", missing, &arg]);
        assert!(e.contains(&format!("{flag} {value}")), "{e}");
        assert!(
            !e.contains(missing),
            "checked before the model is read: {e}"
        );
    }
}

/// A Phi-3 folder with LongRoPE (`tests/golden/phi3_longrope`: original context 8): greedy
/// generation from an 8-token prompt passes the original context at its ninth token, where the
/// cache (keys rotated with the short factors) is dropped and the whole sequence runs again
/// with the long ones, as transformers' Phi-3 generation does: the same 16 tokens as
/// transformers generated.
#[test]
fn a_longrope_model_generates_transformers_tokens_past_its_original_context() {
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;
    let tmp = tempfile::tempdir().unwrap();
    let golden = workspace_root().join("tests/golden/phi3_longrope");
    let model = tmp.path().join("phi3");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(golden.join(f), model.join(f)).unwrap();
    }
    // One word per token id, so that the prompt is exactly the golden ids.
    let vocab = (0..96u32).map(|i| (format!("w{i}"), i)).collect();
    let wl = WordLevel::builder()
        .vocab(vocab)
        .unk_token("w0".into())
        .build()
        .unwrap();
    let mut tok = tokenizers::Tokenizer::new(wl);
    tok.with_pre_tokenizer(Some(Whitespace {}));
    tok.save(model.join("tokenizer.json"), false).unwrap();
    let inputs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden.join("inputs.json")).unwrap())
            .unwrap();
    let row: Vec<u32> = inputs["generated"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let prompt_len = inputs["prompt_len"].as_u64().unwrap() as usize;
    let prompt: Vec<String> = row[..prompt_len].iter().map(|i| format!("w{i}")).collect();
    let new = row.len() - prompt_len;
    let (_, ids) = generate_from(&s(&model), &prompt.join(" "), new, &["--temperature", "0"]);
    assert_eq!(ids, row[prompt_len..], "transformers' greedy tokens");
}

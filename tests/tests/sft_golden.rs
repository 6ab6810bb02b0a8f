//! Parity with TRL's `SFTTrainer` on golden files it wrote (`scripts/make_sft_golden.py`): a
//! tiny Llama with a BPE tokenizer that adds a BOS and a ChatML-style chat template, and, for
//! each of TRL's dataset layouts (`text`, `prompt-completion`, `messages`,
//! `conv-prompt-completion`), 12 training and 6 validation records of the fortunes' "who said
//! it" data.
//!
//! The examples `lantern train` builds from the records must be TRL's token for token (EOS
//! appended, special tokens, the chat template's text, where the completion starts, truncation
//! to `max_length` and the examples dropped for having nothing left to predict), with the loss
//! taken exactly where TRL's labels are not -100. Then six optimizer steps of `lantern train`
//! over all training examples as one batch (AdamW, constant learning rate, clipping) must give
//! the validation loss and token accuracy TRL's trainer gave before and after each step: the
//! loss is the mean over
//! the step's trained tokens, as transformers' `num_items_in_batch` makes it.
//!
//! Three more layouts pack those records (TRL's `packing`): best-fit decreasing, whose rows
//! TRL trains padding-free (positions restarting in each sequence, attention within it),
//! `bfd_split` and `wrapped`. Our rows must be TRL's, with its `seq_lengths`, and the losses
//! as above, on both attention paths (the composite one with the packing's mask, the fused one
//! bounded by the positions). One more trains with TRL's `loss_type = "dft"`, and one keeps
//! the end of examples longer than `max_length` (`truncation_mode = "keep_end"`: the prompt's
//! start cut, every completion kept).

use lantern_train::config::RunConfig;
use lantern_train::sft::SftSet;
use lantern_train::trainer::{train, TrainOptions};
use serde_json::Value;
use std::path::Path;

mod common;
use common::{floats, golden_dir, read_json, run_records, series, trl_recipe};

const LAYOUTS: [&str; 10] = [
    "text",
    "prompt-completion",
    "messages",
    "conv-prompt-completion",
    "messages-assistant",
    "prompt-completion-packed",
    "text-packed-split",
    "messages-packed-wrapped",
    "prompt-completion-dft",
    "prompt-completion-keep-end",
];

/// The run config of `layout`'s golden: its records, `batch` examples a step, TRL's recipe.
fn config(layout: &str, batch: usize, run: &Path, expected: &Value) -> RunConfig {
    config_with(layout, batch, run, expected, "auto")
}

/// [`config`] with `model.attention` set: `fused` runs packed rows through the fused
/// attention bounded by their positions, `composite` (the CPU's `auto`) through the packing's
/// mask.
fn config_with(
    layout: &str,
    batch: usize,
    run: &Path,
    expected: &Value,
    attention: &str,
) -> RunConfig {
    let g = golden_dir("sft");
    // Two-turn conversations, the loss on the assistant's turns (TRL's assistant_only_loss),
    // with the template that marks them given as a file (TRL's chat_template_path).
    let assistant = match layout {
        "messages-assistant" => format!(
            "assistant_only_loss = true\nchat_template = \"{}\"",
            g.join("generation.jinja").display()
        ),
        _ => String::new(),
    };
    let packing = match expected["packing"].as_str() {
        Some(s) => format!("packing = true\npacking_strategy = \"{s}\""),
        None => String::new(),
    };
    let loss_type = format!(
        "loss_type = \"{}\"\ntruncation_mode = \"{}\"",
        expected["loss_type"].as_str().unwrap(),
        expected["truncation_mode"].as_str().unwrap()
    );
    let text = format!(
        r#"
[model]
init_from = "{model}"
attention = "{attention}"
[data]
train = "{dir}/train.jsonl"
validation = "{dir}/validation.jsonl"
max_length = {max_length}
{assistant}
{packing}
{loss_type}
{recipe}"#,
        recipe = trl_recipe(batch, &expected["steps"], &expected["lr"], run),
        model = g.join("model").display(),
        dir = g.join(layout).display(),
        max_length = expected["max_length"],
    );
    RunConfig::parse(&text, layout, &[]).unwrap()
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// Whether TRL's prepared row `w` has a label the loss reads: not -100, and not the first
/// token of a sequence (the padding-free collator masks those).
fn trains(w: &Value) -> bool {
    let labels = ids(&w["labels"]);
    let mut starts = vec![false; labels.len()];
    let lengths = w.get("seq_lengths").map_or(vec![labels.len() as i64], ids);
    let mut at = 0;
    for l in lengths {
        starts[at as usize] = true;
        at += l;
    }
    labels
        .iter()
        .zip(&starts)
        .skip(1)
        .any(|(&l, &s)| l != -100 && !s)
}

#[test]
fn examples_are_trls_token_for_token() {
    let g = golden_dir("sft");
    let mut packed = 0;
    let tok_path = g.join("model/tokenizer.json");
    let tok = lantern_data::tokenizer::load_tokenizer(&tok_path).unwrap();
    for layout in LAYOUTS {
        let expected = read_json(&g.join(layout).join("expected.json"));
        let run = tempfile::tempdir().unwrap();
        let cfg = config(layout, 1, run.path(), &expected);
        // The trainer's own reading: EOS from tokenizer_config.json, the folder's template.
        let set = SftSet::load(&cfg, (&tok, &tok_path), None, (128, 4098), 1).unwrap();
        for (split, got) in [("train", &set.train), ("validation", &set.val)] {
            // TRL keeps packed rows with nothing to train on (they add no loss); we leave them
            // out.
            let want: Vec<&Value> = expected[split]
                .as_array()
                .unwrap()
                .iter()
                .filter(|w| trains(w))
                .collect();
            assert_eq!(got.len(), want.len(), "{layout} {split}: examples kept");
            for (i, (e, w)) in got.iter().zip(want).enumerate() {
                let want_ids = ids(&w["input_ids"]);
                let got_ids: Vec<i64> = e.ids.iter().map(|&x| x as i64).collect();
                assert_eq!(got_ids, want_ids, "{layout} {split} {i}: input_ids");
                let want_trained: Vec<bool> =
                    ids(&w["labels"]).iter().map(|&l| l != -100).collect();
                assert_eq!(e.trained, want_trained, "{layout} {split} {i}: labels");
                let want_lengths: Vec<usize> = match w.get("seq_lengths") {
                    Some(l) => ids(l).iter().map(|&x| x as usize).collect(),
                    None => vec![want_ids.len()],
                };
                assert_eq!(e.seq_lengths, want_lengths, "{layout} {split} {i}: lengths");
            }
        }
        if expected["packing"].is_string() {
            packed += 1;
            assert!(
                set.train.iter().any(|e| e.seq_lengths.len() > 1) || layout.ends_with("wrapped"),
                "{layout}: some row holds two sequences"
            );
        }
    }
    assert_eq!(packed, 3);
}

#[test]
fn full_batch_steps_give_trls_validation_loss_and_token_accuracy() {
    let g = golden_dir("sft");
    // Packed layouts on both attention paths.
    let runs = LAYOUTS.iter().flat_map(|&layout| {
        let packed = layout.contains("packed");
        ["auto", "fused"]
            .into_iter()
            .take(1 + packed as usize)
            .map(move |attention| (layout, attention))
    });
    for (layout, attention) in runs {
        let expected = read_json(&g.join(layout).join("expected.json"));
        // One step over every row (TRL's rows with nothing to train on are not ours).
        let n = expected["train"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| trains(w))
            .count();
        let run = tempfile::tempdir().unwrap();
        let cfg = config_with(layout, n, run.path(), &expected, attention);
        let layout = format!("{layout} ({attention} attention)");
        let summary = train(
            cfg,
            TrainOptions {
                quiet: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(summary.steps, expected["steps"].as_u64().unwrap());
        let recs = run_records(run.path());
        let want = floats(&expected["eval_loss"]);
        let want_acc = floats(&expected["eval_mean_token_accuracy"]);
        let got = series(&recs, "val", "val_loss");
        assert_eq!(got.len(), want.len(), "{layout}: evaluations");
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0f64, f64::max);
        eprintln!("{layout}: largest difference {worst:.2e} over {want:?}");
        // DFT's losses are ~1e-3 (each term weighted by a probability near 1 / vocab): a
        // relative bound there. Its evaluations are NLL here (TRL's are DFT's): its training
        // losses are compared, and every layout's are.
        let dft = expected["loss_type"] == "dft";
        let tol = |w: f64| if dft { 2e-6 * w.abs() } else { 2e-5 };
        for (s, (g, w)) in got.iter().zip(&want).enumerate().filter(|_| !dft) {
            assert!(
                (g - w).abs() < tol(*w),
                "{layout}: validation loss after step {s}: {g} vs TRL's {w}"
            );
        }
        let train_got = series(&recs, "train", "loss");
        let train_want = floats(&expected["train_loss"]);
        assert_eq!(train_got.len(), train_want.len(), "{layout}: logged steps");
        for (s, (g, w)) in train_got.iter().zip(&train_want).enumerate() {
            assert!(
                (g - w).abs() < tol(*w),
                "{layout}: training loss of step {}: {g} vs TRL's {w}",
                s + 1
            );
        }
        // The same predictions: a tie-free count of right argmaxes over the same targets.
        for (s, (g, w)) in series(&recs, "val", "val_accuracy")
            .iter()
            .zip(&want_acc)
            .enumerate()
        {
            assert!(
                (g - w).abs() < 1e-6,
                "{layout}: token accuracy after step {s}: {g} vs TRL's {w}"
            );
        }
        // Training moved the loss by far more than the tolerance.
        assert!(
            (want[0] - want[want.len() - 1]).abs() > 0.1 * want[0].abs().min(1.0),
            "{layout}: {want:?}"
        );
        assert!(want_acc.iter().any(|&a| a > 0.0), "{layout}: {want_acc:?}");
    }
}

/// Chat templates in the idioms of released models' templates render as transformers renders
/// them, and fail where it fails (the template's own `raise_exception` message included).
#[test]
fn chat_templates_render_as_transformers() {
    use lantern_data::chat::{ChatTemplate, Message};
    let g = golden_dir("sft");
    let tok_cfg = read_json(&g.join("model/tokenizer_config.json"));
    let rows = read_json(&g.join("templates.json"));
    let (mut checked, mut masks) = (0, 0);
    let tok = lantern_data::tokenizer::load_tokenizer(&g.join("model/tokenizer.json")).unwrap();
    for row in rows.as_array().unwrap() {
        let name = row["name"].as_str().unwrap();
        let t = ChatTemplate::new(row["template"].as_str().unwrap(), &tok_cfg, Path::new(name))
            .unwrap();
        for case in row["cases"].as_array().unwrap() {
            let msgs = Message::parse_list(case["messages"].as_str().unwrap()).unwrap();
            let gen = case["add_generation_prompt"].as_bool().unwrap();
            let tools = case["tools"]
                .as_str()
                .map(|x| lantern_data::chat::parse_json(x).unwrap());
            let got = t.render_with_spans(&msgs, tools.as_ref(), gen).map(|r| r.0);
            match (&case["text"], &case["error"]) {
                (Value::String(want), _) => {
                    assert_eq!(got.unwrap(), *want, "{name}, generation prompt {gen}");
                    // transformers' return_assistant_tokens_mask: the tokens the template's
                    // {% generation %} blocks wrote.
                    if let Some(want_mask) = case["assistant_masks"].as_array() {
                        let (text, spans) =
                            t.render_with_spans(&msgs, tools.as_ref(), gen).unwrap();
                        let enc = tok.encode_char_offsets(text.as_str(), false).unwrap();
                        let want_ids: Vec<u32> =
                            ids(&case["input_ids"]).iter().map(|&x| x as u32).collect();
                        assert_eq!(enc.get_ids(), want_ids.as_slice(), "{name}: input_ids");
                        let mask = lantern_data::sft::assistant_mask(enc.get_offsets(), &spans);
                        let want_mask: Vec<bool> =
                            want_mask.iter().map(|m| m.as_i64() == Some(1)).collect();
                        assert_eq!(mask, want_mask, "{name}, generation prompt {gen}: masks");
                        masks += 1;
                    }
                }
                (_, Value::String(err)) => {
                    let e = got.unwrap_err().to_string();
                    if err.contains("must alternate") {
                        assert!(e.contains(err.as_str()), "{name}: {e}");
                    }
                }
                _ => panic!("{name}: a case has text or an error"),
            }
            checked += 1;
        }
    }
    // Four conversations with and without the generation prompt, and one with tools.
    assert_eq!(checked, 7 * 9);
    assert_eq!(masks, 9, "every case of the {{% generation %}} template");
}

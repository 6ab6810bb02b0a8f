//! `lantern selfcheck` through the binary. Without a GPU, `--cpu` runs every check (the CPU
//! kernels against the composite candle ops, two CPU training runs against each other), and
//! the GPU mode must say plainly that there is no CUDA device.

mod common;
use common::*;

#[test]
fn cpu_mode_runs_every_check_and_passes() {
    let out = lantern_ok(&["selfcheck", "--cpu", "--steps", "3"]);
    for name in [
        "layer_norm",
        "rms_norm",
        "rope",
        "gelu_tanh",
        "gelu_erf",
        "geglu_erf",
        "softmax_causal",
        "softmax_padding",
        "cross_entropy_w",
        "adamw",
        "grad_norm",
        "train gpt-tiny",
        "train llama-tiny",
        "train llama-tiny recompute",
        "train gpt-tiny lora",
        "train llama-tiny lora",
        "finetune bert",
        "finetune bert tags",
        "finetune bert recompute",
        "finetune gpt2",
        "finetune gpt2 tags",
        "finetune gpt2 recompute",
        "finetune llama tags",
        "finetune bert lora",
        "finetune modernbert window",
        "finetune modernbert window tags recompute lora",
        "finetune gpt2 lora",
        "finetune llama tags lora",
        "finetune qwen2",
        "finetune mistral window tags recompute",
        "finetune qwen3 tags lora",
        "finetune gemma3 recompute lora",
        "finetune phi3 window tags recompute lora",
        "finetune gemma2 softcap recompute lora",
        "finetune olmo2 recompute lora",
        "finetune gemma tags",
        "finetune smollm3 nope lora",
        "comm single",
    ] {
        assert!(out.contains(name), "no {name} line in\n{out}");
    }
    for dtype in [" f32 ", " bf16 "] {
        assert!(out.contains(dtype), "no {dtype} line");
    }
    assert!(!out.contains("FAIL"), "{out}");
    let lines = out.lines().filter(|l| l.ends_with("pass")).count();
    assert!(lines > 200, "only {lines} checks ran");
    assert!(out.contains("selfcheck passed"), "{out}");
}

#[test]
fn cpu_mode_trains_on_prepared_data() {
    let data = prepared_data();
    let out = lantern_ok(&[
        "selfcheck",
        "--cpu",
        "--steps",
        "2",
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(
        out.contains("step 1 loss") && out.contains("(data)"),
        "{out}"
    );
}

#[test]
fn gpu_mode_without_a_gpu_says_so() {
    let err = lantern_err(&["selfcheck", "--steps", "0"]);
    assert!(err.contains("no CUDA device is available"), "{err}");
    let err = lantern_err(&["selfcheck", "--cpu", "--data", "/nonexistent/folder"]);
    assert!(err.contains("/nonexistent/folder"), "{err}");
}

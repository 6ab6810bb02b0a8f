//! `lantern bench` (training steps of a GPT, one JSON line) and `lantern bench-kernels` (the
//! memory-bound kernels and the optimizer against a device copy, one JSON line each).
//! docs/benchmarks.md describes the GPU run that uses both.

use anyhow::{bail, Context, Result};
use candle_core::DType;
use clap::Args;
use lantern_models::gpt::{param_shapes, AttentionImpl, GptConfig};
use lantern_train::bench::{bench_train_step, BenchOptions};
use lantern_train::lora::LoraSection;
use lantern_train::precision::Precision;

/// Exit status of a benchmark that ran out of device memory: the caller can try a smaller
/// batch (scripts/bundle.sh's run.sh halves it).
pub const EXIT_OOM: i32 = 3;

/// The GPT both commands size themselves after.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    #[arg(long, default_value_t = 4)]
    n_layer: usize,
    #[arg(long, default_value_t = 256)]
    n_embd: usize,
    #[arg(long, default_value_t = 4)]
    n_head: usize,
    #[arg(long, default_value_t = 2048)]
    vocab: usize,
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
}

impl ModelArgs {
    fn config(&self) -> Result<GptConfig> {
        let cfg = GptConfig {
            vocab_size: self.vocab,
            n_positions: self.seq_len,
            n_embd: self.n_embd,
            n_layer: self.n_layer,
            n_head: self.n_head,
            dropout: 0.0,
            layer_norm_epsilon: 1e-5,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Timed steps; the median is reported.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed steps first (module loading, cuBLAS heuristics, allocator warm-up).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// fp32, or the trainer's mixed precision: bf16/fp16 working copy, fp32 master weights
    /// and AdamW state (fp16 with the dynamic loss scaler).
    #[arg(long, default_value = "fp32", value_parser = parse_precision)]
    precision: Precision,
    /// Let fp32 matmuls use TF32 tensor cores on CUDA (`train.tf32`).
    #[arg(long)]
    tf32: bool,
    /// Also report per-phase times (forward, backward, gradients, optimizer) from this many
    /// extra steps that synchronize the device after each phase.
    #[arg(long, num_args = 0..=1, default_missing_value = "10", value_name = "STEPS")]
    profile: Option<usize>,
    /// Peak FLOP/s for MFU, in TFLOP/s (default on CUDA: 989, H100 SXM dense bf16; on the CPU
    /// no MFU unless given).
    #[arg(long)]
    peak_tflops: Option<f64>,
    /// Run one more step between cuProfilerStart and cuProfilerStop, for
    /// `ncu --profile-from-start off`.
    #[arg(long)]
    cuda_profiler_range: bool,
    /// Self-attention: auto (fused on CUDA, composite on the CPU), fused or composite, as
    /// `model.attention` in a run config.
    #[arg(long, default_value = "auto", value_parser = parse_attention)]
    attention: AttentionImpl,
    /// Recompute each block in the backward pass instead of keeping its activations
    /// (`train.activation_checkpointing`).
    #[arg(long)]
    activation_checkpointing: bool,
    /// Train LoRA adapters of this rank (alpha = the rank, no dropout) instead of every
    /// weight, as `[lora]` in `lantern train`.
    #[arg(long, value_name = "R")]
    lora_r: Option<usize>,
    /// The layers `--lora-r` adapts (peft's `target_modules`), comma-separated.
    #[arg(long, default_value = "c_attn", value_delimiter = ',')]
    lora_targets: Vec<String>,
}

fn parse_attention(s: &str) -> std::result::Result<AttentionImpl, String> {
    match s {
        "auto" => Ok(AttentionImpl::Auto),
        "fused" => Ok(AttentionImpl::Fused),
        "composite" => Ok(AttentionImpl::Composite),
        other => Err(format!("{other:?}: expected auto, fused or composite")),
    }
}

fn parse_precision(s: &str) -> std::result::Result<Precision, String> {
    match s {
        "fp32" | "f32" => Ok(Precision::Fp32),
        "bf16" => Ok(Precision::Bf16),
        "fp16" | "f16" => Ok(Precision::Fp16),
        other => Err(format!("{other:?}: expected fp32, bf16 or fp16")),
    }
}

/// Whether an error chain is the device running out of memory (cudarc's driver and cuBLAS
/// errors carry the CUDA names).
fn is_oom(e: &anyhow::Error) -> bool {
    let s = format!("{e:#}");
    ["OUT_OF_MEMORY", "out of memory", "ALLOC_FAILED"]
        .iter()
        .any(|k| s.contains(k))
}

/// Prints the error and exits with [`EXIT_OOM`] when it is an out-of-memory error.
fn exit_on_oom(r: Result<()>, what: &str) -> Result<()> {
    match r {
        Err(e) if is_oom(&e) => {
            eprintln!("error: out of device memory: {what}: {e:#}");
            std::process::exit(EXIT_OOM);
        }
        r => r,
    }
}

pub fn bench(a: BenchArgs) -> Result<()> {
    let what = format!("bench at batch {} x {}", a.batch, a.model.seq_len);
    exit_on_oom(bench_inner(a), &what)
}

fn bench_inner(a: BenchArgs) -> Result<()> {
    let cfg = a.model.config()?;
    let dev = lantern_train::device::parse_device(&a.device)?;
    lantern_train::device::set_tf32(&dev, a.tf32);
    let opts = BenchOptions {
        batch: a.batch,
        seq_len: a.model.seq_len,
        steps: a.steps,
        warmup: a.warmup,
        precision: a.precision,
        profile_steps: a.profile.unwrap_or(0),
        peak_flops: a.peak_tflops.map(|t| t * 1e12),
        profiler_range: a.cuda_profiler_range,
        attention: a.attention,
        activation_checkpointing: a.activation_checkpointing,
        lora: a.lora_r.map(|r| LoraSection {
            r,
            alpha: r as f64,
            dropout: 0.0,
            target_modules: Some(a.lora_targets.clone()),
            use_rslora: false,
            adapter: None,
        }),
    };
    let r = bench_train_step(&cfg, &opts, &dev)?;
    let mut j = serde_json::to_value(&r)?;
    let extra = serde_json::json!({
        "impl": "lantern",
        "device": a.device,
        "tf32": a.tf32,
        "n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "n_head": cfg.n_head,
        "vocab": cfg.vocab_size,
        "lora_r": a.lora_r,
        "threads": std::env::var("RAYON_NUM_THREADS").ok(),
        "peak_name": r.peak_tflops.map(|p| if a.peak_tflops.is_some() {
            format!("given: {p} TFLOP/s")
        } else {
            "H100 SXM dense bf16 (989 TFLOP/s)".to_string()
        }),
    });
    if let (Some(o), serde_json::Value::Object(e)) = (j.as_object_mut(), extra) {
        o.extend(e);
    }
    println!("{j}");
    Ok(())
}

#[derive(Args, Debug)]
pub struct KernelArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Rows of the activations (batch × seq_len).
    #[arg(long, default_value_t = 1024)]
    tokens: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Activation dtype: f32, or bf16 (CUDA only).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Elements of the device-to-device copy that sets the bandwidth reference (default:
    /// 256 Mi elements on CUDA, beyond any cache; 1 Mi on the CPU).
    #[arg(long)]
    copy_elems: Option<usize>,
    /// Timed rounds (the median is reported) of `inner` calls each.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    #[arg(long, default_value_t = 10)]
    inner: usize,
}

pub fn bench_kernels(a: KernelArgs) -> Result<()> {
    let what = format!("bench-kernels at {} tokens", a.tokens);
    exit_on_oom(bench_kernels_inner(a), &what)
}

fn bench_kernels_inner(a: KernelArgs) -> Result<()> {
    let cfg = a.model.config()?;
    let dev = lantern_train::device::parse_device(&a.device)?;
    let dtype = match a.dtype.as_str() {
        "f32" | "fp32" => DType::F32,
        "bf16" => DType::BF16,
        other => bail!("--dtype {other}: expected f32 or bf16"),
    };
    let kcfg = lantern_kernels::bench::KernelBenchConfig {
        tokens: a.tokens,
        seq_len: cfg.n_positions,
        n_embd: cfg.n_embd,
        n_head: cfg.n_head,
        vocab: cfg.vocab_size,
        dtype,
        param_shapes: param_shapes(&cfg).into_iter().map(|(_, s)| s).collect(),
        copy_elems: a
            .copy_elems
            .unwrap_or(if dev.is_cuda() { 256 << 20 } else { 1 << 20 }),
        rounds: a.rounds,
        inner: a.inner,
    };
    let results =
        lantern_kernels::bench::run_kernel_benches(&dev, &kcfg).context("kernel benchmarks")?;
    let copy_gbps = results.first().map(|r| r.gb_per_s);
    for r in &results {
        let mut j = serde_json::to_value(r)?;
        if let Some(o) = j.as_object_mut() {
            o.insert("impl".into(), "lantern-kernels".into());
            o.insert("device".into(), a.device.clone().into());
            o.insert("copy_gb_per_s".into(), copy_gbps.into());
        }
        println!("{j}");
    }
    // The fused optimizer against candle's composite one, on the same parameters.
    let ms = |k: &str| results.iter().find(|r| r.kernel == k).map(|r| r.ms);
    if let (Some(f), Some(c)) = (ms("adamw_fused"), ms("adamw_candle_composite")) {
        println!(
            "{}",
            serde_json::json!({
                "impl": "lantern-kernels", "kernel": "adamw_speedup",
                "params": param_shapes(&cfg).iter().map(|(_, s)| s.iter().product::<usize>()).sum::<usize>(),
                "fused_ms": f, "candle_composite_ms": c, "speedup": c / f,
            })
        );
    }
    Ok(())
}

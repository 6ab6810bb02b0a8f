//! Training-step benchmark: the same `train_step` the trainer runs, on seeded random tokens,
//! timed per step, in fp32 or the trainer's mixed precision (fp32 master weights and AdamW
//! state, a bf16/fp16 working copy refreshed by the optimizer step). The PyTorch baseline
//! (`scripts/bench_torch_gpt.py`) measures the same thing and reports the same fields.
//!
//! MFU follows shared/ANCHORS.md: training FLOPs per token 6·N + 12·L·H·Q·T (PaLM, nanoGPT; N
//! without the position embedding), divided by a stated peak (H100 SXM dense bf16, 989 TFLOP/s,
//! on CUDA by default).
//!
//! `profile` adds steps, after the timed ones, that synchronize the device after each phase
//! (forward, backward, gradient norm and clipping, optimizer) and report the median of each;
//! the synchronizations cost a little, so their sum is compared with the unsynchronized step.

use crate::config::TrainSection;
use crate::grads::StepGrads;
use crate::lora::{Base, Lora, LoraSection};
use crate::optim::{AdamWConfig, Optimizer, OptimizerConfig};
use crate::precision::{LossScaler, Precision};
use crate::recompute::Recomputed;
use crate::task::LossModel;
use crate::trainer::{to_batch, train_step, Batch, StepInputs};
use crate::{Error, Result};
use candle_core::{DType, Device};
use lantern_kernels::bench as kbench;
use lantern_kernels::Rng;
use lantern_models::decoder::DecoderConfig;
use lantern_models::gpt::{init_params, AttentionImpl, Gpt, GptConfig};
use lantern_models::{Mode, Params};
use std::time::Instant;

/// H100 SXM dense bf16 tensor-core peak (shared/ANCHORS.md; 1,979 is the sparse figure). The
/// H200 has the same compute, so the same peak.
pub const H100_BF16_DENSE_FLOPS: f64 = 989e12;

/// The dense bf16/fp16 tensor-core peak of a GPU known by the name its driver gives
/// (NVIDIA's data sheets, without sparsity), for the MFU of training logs; `None` for any
/// other. The H200 and H800 have the H100 SXM's tensor cores; the PCIe and NVL boards run
/// them at lower clocks.
pub fn known_peak_flops(gpu_name: &str) -> Option<f64> {
    let n = gpu_name.to_ascii_uppercase();
    let hopper = ["H100", "H200", "H800"].iter().any(|h| n.contains(h));
    if hopper && n.contains("PCIE") {
        Some(756e12)
    } else if hopper && n.contains("NVL") {
        Some(835e12)
    } else if hopper {
        Some(H100_BF16_DENSE_FLOPS)
    } else if n.contains("A100") || n.contains("A800") {
        Some(312e12)
    } else {
        None
    }
}

/// The FLOP count every MFU figure here uses, by name.
pub const FLOPS_FORMULA: &str = "6N+12LHQT per token (PaLM; N without position embeddings)";

/// Model FLOPs utilisation: achieved training FLOP/s over `peak_flops`.
pub fn mfu(flops_per_token: f64, tokens_per_s: f64, peak_flops: f64) -> f64 {
    flops_per_token * tokens_per_s / peak_flops
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub batch: usize,
    pub seq_len: usize,
    /// Timed steps (the median is reported) after `warmup` untimed ones.
    pub steps: usize,
    pub warmup: usize,
    pub precision: Precision,
    /// Per-phase times from this many extra synchronized steps (0: none).
    pub profile_steps: usize,
    /// Peak FLOP/s for MFU; `None`: 989 TFLOP/s on CUDA, no MFU on the CPU.
    pub peak_flops: Option<f64>,
    /// One more step inside `cuProfilerStart`/`cuProfilerStop`, for
    /// `ncu --profile-from-start off`.
    pub profiler_range: bool,
    /// Fused or composite attention (`model.attention`).
    pub attention: AttentionImpl,
    /// Recompute each block in the backward pass (`train.activation_checkpointing`).
    pub activation_checkpointing: bool,
    /// Train LoRA adapters of these settings, the rest frozen (`[lora]` of `lantern train`),
    /// instead of every weight.
    pub lora: Option<LoraSection>,
}

/// Median milliseconds of each phase of a step, from synchronized steps.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseProfile {
    pub steps: usize,
    /// Forward and loss.
    pub forward_ms: f64,
    pub backward_ms: f64,
    /// Collecting the gradients, their global norm and clipping.
    pub grads_ms: f64,
    /// The optimizer update (and in mixed precision the working-copy refresh).
    pub optimizer_ms: f64,
    /// The sum of the four medians.
    pub sum_ms: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    pub tokens_per_s: f64,
    pub step_ms_median: f64,
    pub step_ms_min: f64,
    pub step_ms_max: f64,
    pub steps: usize,
    pub warmup: usize,
    pub batch: usize,
    pub seq_len: usize,
    /// fp32 | bf16 | fp16.
    pub dtype: Precision,
    /// `model.attention` as given, and whether the fused op ran on this device.
    pub attention: AttentionImpl,
    pub attention_fused: bool,
    /// Whether each block was recomputed in the backward pass.
    pub activation_checkpointing: bool,
    /// All parameters (the tied lm_head counted once).
    pub params: usize,
    /// What the optimizer trains: `params`, or with LoRA the adapters.
    pub trained_params: usize,
    /// N of the MFU formula: without the position embedding.
    pub params_no_pos: usize,
    pub flops_per_token: f64,
    pub flops_formula: &'static str,
    pub achieved_tflops: f64,
    pub peak_tflops: Option<f64>,
    pub mfu: Option<f64>,
    /// Mean loss of the last timed step (random tokens: about ln V).
    pub final_loss: f64,
    /// Peak device memory, and how it was measured; `None` on the CPU.
    pub peak_mem_bytes: Option<u64>,
    pub peak_mem_method: Option<&'static str>,
    /// The driver's used memory (total − free) after each step, the largest seen.
    pub driver_used_max_bytes: Option<u64>,
    pub profile: Option<PhaseProfile>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn random_batch(rng: &mut Rng, vocab: usize, b: usize, t: usize, dev: &Device) -> Result<Batch> {
    let mut draw = || -> Vec<u32> { (0..b * t).map(|_| rng.below(vocab as u64) as u32).collect() };
    let (ids, tgt) = (draw(), draw());
    to_batch(&ids, &tgt, b, t, dev)
}

/// Times training steps of `cfg` at batch × seq_len on `device` (see the module header).
pub fn bench_train_step(cfg: &GptConfig, o: &BenchOptions, device: &Device) -> Result<BenchResult> {
    let (b, t) = (o.batch, o.seq_len);
    if b == 0 || t == 0 || o.steps == 0 {
        return Err(Error::Config(format!(
            "bench: batch, seq_len and steps must be positive (got {b}, {t}, {})",
            o.steps
        )));
    }
    if t > cfg.n_positions {
        return Err(Error::Config(format!(
            "bench: seq_len {t} exceeds the model's n_positions {}",
            cfg.n_positions
        )));
    }
    if o.peak_flops.is_some_and(|p| !(p > 0.0 && p.is_finite())) {
        return Err(Error::Config(format!(
            "bench: the peak FLOP/s must be positive, got {:?}",
            o.peak_flops
        )));
    }
    let mem_method = kbench::reset_peak_memory(device)?;
    let mut driver_used_max: Option<u64> = None;
    let mut sample_driver = |dev: &Device| -> Result<()> {
        if let Some(u) = kbench::driver_used_memory(dev)? {
            driver_used_max = Some(driver_used_max.map_or(u, |m| m.max(u)));
        }
        Ok(())
    };

    if o.profile_steps > 0 && o.lora.is_some() {
        return Err(Error::Config(
            "the per-phase profile times the full-training step: profile without LoRA".into(),
        ));
    }
    if o.profile_steps > 0 && o.activation_checkpointing {
        return Err(Error::Config(
            "the per-phase profile times forward and backward apart, which activation \
             checkpointing interleaves: profile without it"
                .into(),
        ));
    }
    let mut rng = Rng::new(0);
    let master = init_params(cfg, &mut rng, device, DType::F32)?;
    let work = match o.precision {
        Precision::Fp32 => None,
        p => Some(master.to(device, p.dtype())?),
    };
    // LoRA: the model reads the adapters' view of the store, the optimizer trains them.
    let lora = match &o.lora {
        Some(spec) => Some(Lora::new(
            spec,
            Base::CausalLm(&DecoderConfig::Gpt(cfg.clone())),
            (&master, work.as_ref()),
            &[],
            &mut rng,
        )?),
        None => None,
    };
    let view = lora.as_ref().map(Lora::view);
    let params = view.as_ref().or(work.as_ref()).unwrap_or(&master);
    let trained = lora.as_ref().map_or(&master, |l| l.master());
    let model = Gpt::new(cfg, params)?.with_attention(o.attention);
    // The step's model: the same GPT, with its blocks recomputed in the backward when asked.
    let recomputed = match o.activation_checkpointing {
        true => Some(Recomputed(
            Gpt::new(cfg, params)?.with_attention(o.attention),
        )),
        false => None,
    };
    let step_model: &dyn LossModel = match &recomputed {
        Some(r) => r,
        None => &model,
    };
    let mut opt = Optimizer::new(OptimizerConfig::AdamW(AdamWConfig::default()), trained)?;
    let defaults = TrainSection::default();
    let mut scaler = (o.precision == Precision::Fp16).then(|| {
        LossScaler::new(
            defaults.loss_scale_init,
            defaults.loss_scale_growth,
            defaults.loss_scale_backoff,
            defaults.loss_scale_interval,
        )
    });
    let mut times = Vec::with_capacity(o.steps);
    let mut final_loss = f64::NAN;
    let mut step = 0u64;
    let run_step = |opt: &mut Optimizer,
                    scaler: Option<&mut LossScaler>,
                    batch: &Batch,
                    step: u64|
     -> Result<f64> {
        let out = train_step(
            &StepInputs {
                model: step_model,
                params,
                master: trained,
                batches: std::slice::from_ref(batch),
                micro_batches: 1,
                lr: 3e-4,
                grad_clip: 1.0,
                dropout_seed: 0,
                step,
                check_integrity: false,
                poison_grad: false,
                lora: lora.as_ref(),
            },
            opt,
            scaler,
        )?;
        Ok(out.loss)
    };
    for i in 0..o.warmup + o.steps {
        let batch = random_batch(&mut rng, cfg.vocab_size, b, t, device)?;
        device.synchronize()?;
        let t0 = Instant::now();
        let loss = run_step(&mut opt, scaler.as_mut(), &batch, step)?;
        // Kernels are asynchronous on a GPU: wait for the optimizer update before stopping.
        device.synchronize()?;
        let dt = t0.elapsed().as_secs_f64();
        step += 1;
        sample_driver(device)?;
        if i >= o.warmup {
            times.push(dt * 1e3);
            final_loss = loss;
        }
    }
    let peak_mem = match mem_method {
        Some(kbench::MemoryMethod::PoolUsedHigh) => kbench::peak_memory(device)?,
        Some(kbench::MemoryMethod::DriverSampled) => driver_used_max,
        None => None,
    };

    let profile = if o.profile_steps > 0 {
        let inp = ProfileInputs {
            model: &model,
            params,
            master: &master,
        };
        Some(profile_phases(
            &inp,
            &mut opt,
            o.profile_steps,
            &mut || random_batch(&mut rng, cfg.vocab_size, b, t, device),
            device,
        )?)
    } else {
        None
    };
    if o.profiler_range {
        let batch = random_batch(&mut rng, cfg.vocab_size, b, t, device)?;
        kbench::profiler_range(device, true)?;
        let r = run_step(&mut opt, scaler.as_mut(), &batch, step);
        kbench::profiler_range(device, false)?;
        r?;
    }

    let (min, max) = (
        times.iter().copied().fold(f64::INFINITY, f64::min),
        times.iter().copied().fold(0f64, f64::max),
    );
    let step_ms = median(&mut times);
    let tokens_per_s = (b * t) as f64 / (step_ms * 1e-3);
    // The benchmark's model is built for seq_len: its position table is what N leaves out.
    let flops_per_token = cfg.flops_per_token(t);
    let params_all = cfg.num_params();
    let peak = o
        .peak_flops
        .or(device.is_cuda().then_some(H100_BF16_DENSE_FLOPS));
    Ok(BenchResult {
        tokens_per_s,
        step_ms_median: step_ms,
        step_ms_min: min,
        step_ms_max: max,
        steps: o.steps,
        warmup: o.warmup,
        batch: b,
        seq_len: t,
        dtype: o.precision,
        attention: o.attention,
        activation_checkpointing: o.activation_checkpointing,
        // The model takes the fused op and the op has a kernel for these heads.
        attention_fused: model.fused_attention(device, true)
            && lantern_kernels::ops::causal_attention_kernel_on(device, cfg.head_dim()),
        params: params_all,
        trained_params: trained.num_elements(),
        params_no_pos: params_all - cfg.n_positions * cfg.n_embd,
        flops_per_token,
        flops_formula: FLOPS_FORMULA,
        achieved_tflops: flops_per_token * tokens_per_s / 1e12,
        peak_tflops: peak.map(|p| p / 1e12),
        mfu: peak.map(|p| mfu(flops_per_token, tokens_per_s, p)),
        final_loss,
        peak_mem_bytes: peak_mem,
        peak_mem_method: peak_mem.and(mem_method).map(|m| m.name()),
        driver_used_max_bytes: driver_used_max,
        profile,
    })
}

struct ProfileInputs<'a> {
    model: &'a Gpt,
    params: &'a Params,
    master: &'a Params,
}

/// The phases of [`train_step`] for one micro-batch in a world of one without loss scaling,
/// each followed by a device synchronization: the same calls in the same order (forward and
/// loss, backward, gradient collection, norm and clipping, optimizer), timed apart.
fn profile_phases(
    inp: &ProfileInputs<'_>,
    opt: &mut Optimizer,
    steps: usize,
    next_batch: &mut dyn FnMut() -> Result<Batch>,
    device: &Device,
) -> Result<PhaseProfile> {
    let mut ph: [Vec<f64>; 4] = Default::default();
    for _ in 0..steps {
        let batch = next_batch()?;
        device.synchronize()?;
        let mut lap = {
            let mut t0 = Instant::now();
            move |i: usize, ph: &mut [Vec<f64>; 4]| -> Result<()> {
                device.synchronize()?;
                ph[i].push(t0.elapsed().as_secs_f64() * 1e3);
                t0 = Instant::now();
                Ok(())
            }
        };
        let mut rng = Rng::new(0);
        let loss = (inp.model.loss_sum(&batch, Mode::Train(&mut rng))? / batch.n_targets as f64)?;
        lap(0, &mut ph)?;
        let store = loss.backward()?;
        lap(1, &mut ph)?;
        let mut grads = StepGrads::new(inp.params.len());
        grads.accumulate(inp.params, &store)?;
        drop(store);
        let norm = grads.global_norm()?;
        grads.clip(norm, 1.0)?;
        lap(2, &mut ph)?;
        opt.step_mixed(inp.master, &grads.grads, 3e-4, inp.params)?;
        lap(3, &mut ph)?;
        if !loss.to_scalar::<f32>()?.is_finite() {
            return Err(Error::Device(
                "bench --profile: the loss became non-finite".into(),
            ));
        }
    }
    let [f, b, g, o] = ph.map(|mut v| median(&mut v));
    Ok(PhaseProfile {
        steps,
        forward_ms: f,
        backward_ms: b,
        grads_ms: g,
        optimizer_ms: o,
        sum_ms: f + b + g + o,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GPT-2 124M with the vocabulary padded to 50304, counted by hand:
    /// per block 12·C² + 13·C = 7,087,872 (two LayerNorms 4C, qkv 3C² + 3C, attention
    /// projection C² + C, MLP 4C² + 4C and 4C² + C); wte 50304·768 = 38,633,472;
    /// wpe 1024·768 = 786,432; ln_f 1,536. N = all but wpe = 123,689,472.
    /// FLOPs/token = 6·N + 12·L·H·Q·T = 742,136,832 + 12·12·12·64·1024 (113,246,208).
    #[test]
    fn known_gpus_have_their_data_sheet_peaks_and_others_none() {
        let cases = [
            ("NVIDIA H100 80GB HBM3", Some(989e12)),
            ("NVIDIA H200", Some(989e12)),
            ("NVIDIA GH200 480GB", Some(989e12)),
            ("NVIDIA H100 PCIe", Some(756e12)),
            ("NVIDIA H100 NVL", Some(835e12)),
            ("NVIDIA A100-SXM4-80GB", Some(312e12)),
            ("NVIDIA GeForce RTX 4090", None),
            ("Tesla V100-SXM2-16GB", None),
        ];
        for (name, peak) in cases {
            assert_eq!(known_peak_flops(name), peak, "{name}");
        }
    }

    #[test]
    fn mfu_of_gpt2_124m_matches_a_hand_computation() {
        let cfg = GptConfig::preset("gpt2-124m", 50304).unwrap();
        assert_eq!(cfg.num_params(), 124_475_904);
        assert_eq!(cfg.num_params() - 1024 * 768, 123_689_472);
        let fpt = cfg.flops_per_token(1024);
        assert_eq!(fpt, 855_383_040.0);
        // 100k tokens/s on an H100: 85.5 TFLOP/s achieved, 8.65% of 989.
        let m = mfu(fpt, 100_000.0, H100_BF16_DENSE_FLOPS);
        assert!((m - 0.086_489_69).abs() < 1e-7, "{m}");
    }

    fn tiny() -> GptConfig {
        GptConfig {
            vocab_size: 64,
            n_positions: 16,
            n_embd: 16,
            n_layer: 2,
            n_head: 2,
            dropout: 0.0,
            layer_norm_epsilon: 1e-5,
        }
    }

    fn opts(precision: Precision) -> BenchOptions {
        BenchOptions {
            attention: AttentionImpl::Auto,
            batch: 2,
            seq_len: 16,
            steps: 3,
            warmup: 1,
            precision,
            profile_steps: 2,
            peak_flops: Some(1e12),
            profiler_range: true,
            activation_checkpointing: false,
            lora: None,
        }
    }

    /// With LoRA the step trains the adapters alone (r·(in + out) per c_attn), in each
    /// precision; profiling it is refused.
    #[test]
    fn bench_with_lora_trains_the_adapters() {
        for p in [Precision::Fp32, Precision::Bf16] {
            let mut o = opts(p);
            (o.profile_steps, o.profiler_range) = (0, false);
            o.lora = Some(toml::from_str("r = 2").unwrap());
            let r = bench_train_step(&tiny(), &o, &Device::Cpu).unwrap();
            assert_eq!(r.trained_params, 2 * 2 * (16 + 48));
            assert!((r.final_loss - 64f64.ln()).abs() < 0.5, "{}", r.final_loss);
            o.profile_steps = 2;
            let e = bench_train_step(&tiny(), &o, &Device::Cpu).unwrap_err();
            assert!(e.to_string().contains("without LoRA"), "{e}");
        }
    }

    /// The step with each block recomputed trains the same: the same losses up to the last
    /// bits of the tied embeddings' summed gradient; profiling it is refused.
    #[test]
    fn bench_with_activation_checkpointing_trains_alike() {
        let mut o = opts(Precision::Fp32);
        (o.profile_steps, o.profiler_range) = (0, false);
        let plain = bench_train_step(&tiny(), &o, &Device::Cpu).unwrap();
        o.activation_checkpointing = true;
        let r = bench_train_step(&tiny(), &o, &Device::Cpu).unwrap();
        assert!(r.activation_checkpointing && !plain.activation_checkpointing);
        assert!(
            (r.final_loss - plain.final_loss).abs() <= 1e-5 * plain.final_loss,
            "{} vs {}",
            r.final_loss,
            plain.final_loss
        );
        o.profile_steps = 2;
        let e = bench_train_step(&tiny(), &o, &Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("activation checkpointing"), "{e}");
    }

    #[test]
    fn bench_reports_every_field_in_each_precision() {
        for p in [Precision::Fp32, Precision::Bf16, Precision::Fp16] {
            let r = bench_train_step(&tiny(), &opts(p), &Device::Cpu).unwrap();
            assert_eq!((r.batch, r.seq_len, r.steps, r.dtype), (2, 16, 3, p));
            assert!(r.step_ms_min <= r.step_ms_median && r.step_ms_median <= r.step_ms_max);
            assert!((r.tokens_per_s - 32.0 / (r.step_ms_median * 1e-3)).abs() < 1e-6);
            assert_eq!(r.params - r.params_no_pos, 16 * 16);
            let m = r.mfu.unwrap();
            assert!((m - r.flops_per_token * r.tokens_per_s / 1e12).abs() < 1e-12);
            // Random tokens over 64 ids: the loss starts near ln 64 = 4.16.
            assert!(
                (r.final_loss - 64f64.ln()).abs() < 0.5,
                "{p:?}: {}",
                r.final_loss
            );
            assert!(r.peak_mem_bytes.is_none() && r.peak_mem_method.is_none());
            let pr = r.profile.unwrap();
            assert_eq!(pr.steps, 2);
            let parts = pr.forward_ms + pr.backward_ms + pr.grads_ms + pr.optimizer_ms;
            assert!(pr.forward_ms > 0.0 && (pr.sum_ms - parts).abs() < 1e-9);
        }
    }

    #[test]
    fn bad_options_are_errors() {
        let mut o = opts(Precision::Fp32);
        o.seq_len = 17;
        let e = bench_train_step(&tiny(), &o, &Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("n_positions"), "{e}");
        let mut o = opts(Precision::Fp32);
        o.peak_flops = Some(0.0);
        let e = bench_train_step(&tiny(), &o, &Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("peak"), "{e}");
    }
}

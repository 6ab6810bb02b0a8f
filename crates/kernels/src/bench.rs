//! Micro-benchmarks of the kernels the models and the trainer call, and the device measurements
//! the training benchmark needs: timing on the device's own clock, the peak of device memory,
//! and a profiler range for Nsight Compute.
//!
//! Every benchmark calls the same public op, or the same backward op that the forward's
//! recorded backward applies, as training does: never a copy of a kernel. Achieved bandwidth
//! counts the fewest bytes an op must move (each input read once, each output written once),
//! and is set against a device-to-device copy timed the same way (bytes read plus written), so
//! `of_copy` near 1 means the kernel runs at the memory's practical limit.

use crate::cpu::{
    bias_act::{BiasGeluBwd, BiasGrad},
    embedding::EmbeddingBwd,
    gated::{Gate, GateBwd},
    gelu::{Gelu, GeluBwd},
    gemv::{Gemv, WeightLayout},
    layer_norm::LayerNormBwd,
    rms_norm::RmsNormBwd,
    rope::RopeBwd,
    softmax::MaskedSoftmaxBwd,
};
use crate::{adamw_update, grad_norm, ops, scale_grads, AdamWHyper, Rng};
use candle_core::{DType, Device, Error, Result, Tensor, Var};
use candle_nn::Optimizer as _;

/// Per-call device time of an op: the median over rounds, and the fastest round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub ms_median: f64,
    pub ms_min: f64,
}

/// Times `f` on `device`: `warmup` untimed calls, then `rounds` rounds of `inner` calls each
/// (`f` gets the call's index, to rotate among input sets). On CUDA, device events recorded on
/// candle's stream bracket each round, so the host's enqueueing of call k+1 overlaps the
/// device's execution of call k and only device time is counted; on the CPU a host clock does.
pub fn time_op(
    device: &Device,
    warmup: usize,
    rounds: usize,
    inner: usize,
    mut f: impl FnMut(usize) -> Result<()>,
) -> Result<Timing> {
    if rounds == 0 || inner == 0 {
        return Err(Error::msg("time_op: rounds and inner must be at least 1"));
    }
    let mut k = 0usize;
    for _ in 0..warmup {
        f(k)?;
        k += 1;
    }
    device.synchronize()?;
    let mut per_call = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let ms = round_ms(device, || {
            for _ in 0..inner {
                f(k)?;
                k += 1;
            }
            Ok(())
        })?;
        per_call.push(ms / inner as f64);
    }
    per_call.sort_by(f64::total_cmp);
    Ok(Timing {
        ms_median: per_call[per_call.len() / 2],
        ms_min: per_call[0],
    })
}

/// Milliseconds the device spends on `body` (which only enqueues work on a GPU).
fn round_ms(device: &Device, body: impl FnOnce() -> Result<()>) -> Result<f64> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        use candle_core::cuda::cudarc::driver::sys::CUevent_flags;
        use candle_core::cuda::WrapErr;
        let stream = d.cuda_stream();
        let start = stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .w()?;
        body()?;
        let end = stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .w()?;
        return Ok(start.elapsed_ms(&end).w()? as f64);
    }
    let t0 = std::time::Instant::now();
    body()?;
    device.synchronize()?;
    Ok(t0.elapsed().as_secs_f64() * 1e3)
}

/// How device memory was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryMethod {
    /// The high-water mark of bytes in use in the device's default stream-ordered memory pool,
    /// which every candle tensor is allocated from when the device supports pools (cudarc then
    /// uses `cuMemAllocAsync`). Like `torch.cuda.max_memory_allocated`: tensors only, not the
    /// CUDA context nor cuBLAS's workspace.
    PoolUsedHigh,
    /// The device has no memory pools: only the driver's used memory (total − free) sampled by
    /// the caller, which includes the context and memory held by other processes.
    DriverSampled,
}

impl MemoryMethod {
    pub fn name(self) -> &'static str {
        match self {
            MemoryMethod::PoolUsedHigh => "cuda mempool used high-water mark (tensors only)",
            MemoryMethod::DriverSampled => {
                "driver used memory (total - free) sampled after each step (includes the context)"
            }
        }
    }
}

/// Resets the peak of [`peak_memory`] to the memory in use now. `None` off CUDA.
pub fn reset_peak_memory(device: &Device) -> Result<Option<MemoryMethod>> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        return cuda_mem::reset(d);
    }
    let _ = device;
    Ok(None)
}

/// The peak bytes in use since the last [`reset_peak_memory`], when the device can tell
/// ([`MemoryMethod::PoolUsedHigh`]); `None` otherwise. Synchronizes the device first, so that
/// every allocation enqueued so far is counted.
pub fn peak_memory(device: &Device) -> Result<Option<u64>> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        device.synchronize()?;
        return cuda_mem::peak(d);
    }
    let _ = device;
    Ok(None)
}

/// The driver's view: bytes of device memory in use (total − free), `None` off CUDA.
pub fn driver_used_memory(device: &Device) -> Result<Option<u64>> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        use candle_core::cuda::WrapErr;
        let (free, total) = d.cuda_stream().context().mem_get_info().w()?;
        return Ok(Some(total.saturating_sub(free) as u64));
    }
    let _ = device;
    Ok(None)
}

/// The GPU's name as its driver gives it (`"NVIDIA H100 80GB HBM3"`); `None` off CUDA.
pub fn gpu_name(device: &Device) -> Result<Option<String>> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        use candle_core::cuda::WrapErr;
        return Ok(Some(d.cuda_stream().context().name().w()?));
    }
    let _ = device;
    Ok(None)
}

/// Starts (`on`) or stops the collection of an attached CUDA profiler (`cuProfilerStart` /
/// `cuProfilerStop`), so that `ncu --profile-from-start off` records only what lies between.
/// Does nothing off CUDA.
pub fn profiler_range(device: &Device, on: bool) -> Result<()> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        use candle_core::cuda::cudarc::driver::{profiler_start, profiler_stop};
        use candle_core::cuda::WrapErr;
        device.synchronize()?;
        d.cuda_stream().context().bind_to_thread().w()?;
        return if on {
            profiler_start()
        } else {
            profiler_stop()
        }
        .w();
    }
    let _ = (device, on);
    Ok(())
}

#[cfg(feature = "cuda")]
mod cuda_mem {
    use super::MemoryMethod;
    use crate::cuda::device::{pool_u64, set_pool_u64, Attr};
    use candle_core::cuda::CudaDevice;
    use candle_core::Result;

    pub(super) fn reset(d: &CudaDevice) -> Result<Option<MemoryMethod>> {
        // The high-water mark can only be set to zero, which restarts it from the bytes in use.
        Ok(Some(
            match set_pool_u64(d, Attr::CU_MEMPOOL_ATTR_USED_MEM_HIGH, 0)? {
                true => MemoryMethod::PoolUsedHigh,
                false => MemoryMethod::DriverSampled,
            },
        ))
    }

    pub(super) fn peak(d: &CudaDevice) -> Result<Option<u64>> {
        pool_u64(d, Attr::CU_MEMPOOL_ATTR_USED_MEM_HIGH)
    }
}

/// The sizes the kernel benchmarks run at: a GPT's activations for `tokens` = batch × seq_len.
#[derive(Debug, Clone)]
pub struct KernelBenchConfig {
    pub tokens: usize,
    pub seq_len: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub vocab: usize,
    /// Activation dtype: F32, or BF16 on CUDA.
    pub dtype: DType,
    /// Shapes of the parameters the optimizer benchmarks update (a whole model's).
    pub param_shapes: Vec<Vec<usize>>,
    /// Elements of the device-to-device copy that sets the bandwidth reference.
    pub copy_elems: usize,
    pub rounds: usize,
    pub inner: usize,
}

/// One measured kernel: the fewest bytes it must move and the device time per call.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelResult {
    pub kernel: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    pub ms: f64,
    pub ms_min: f64,
    pub bytes: u64,
    pub gb_per_s: f64,
    /// This kernel's GB/s over the copy's (filled by [`run_kernel_benches`]).
    pub of_copy: Option<f64>,
    /// Achieved TFLOP/s, for the compute-bound ops (attention).
    pub tflop_s: Option<f64>,
    pub note: &'static str,
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        _ => "other",
    }
}

/// Independent input sets to rotate among so that the working set exceeds the caches (H100 and
/// H200 have 50–60 MB of L2): otherwise repeated calls on one buffer time the cache.
fn rotation(bytes_per_call: u64) -> usize {
    const TARGET: u64 = 256 << 20;
    TARGET.div_ceil(bytes_per_call.max(1)).clamp(1, 4) as usize
}

/// Normal random inputs. On a GPU drawn there (cuRAND): the largest inputs hold about a
/// billion elements, which a host generator would take many seconds to fill. Timings need
/// non-constant data, not a reproducible one.
fn randn(rng: &mut Rng, shape: &[usize], std: f64, dtype: DType, dev: &Device) -> Result<Tensor> {
    if dev.is_cpu() {
        let n: usize = shape.iter().product();
        return Tensor::from_vec(rng.normal_vec(n, std), shape, dev)?.to_dtype(dtype);
    }
    Tensor::randn(0f32, std as f32, shape, dev)?.to_dtype(dtype)
}

/// `sets` independent inputs of `shape` (see [`rotation`]).
fn randn_sets(
    rng: &mut Rng,
    sets: usize,
    shape: &[usize],
    std: f64,
    dtype: DType,
    dev: &Device,
) -> Result<Vec<Tensor>> {
    (0..sets)
        .map(|_| randn(rng, shape, std, dtype, dev))
        .collect()
}

/// Runs every kernel benchmark on `dev`; the first result is the copy reference.
pub fn run_kernel_benches(dev: &Device, cfg: &KernelBenchConfig) -> Result<Vec<KernelResult>> {
    let dt = cfg.dtype;
    if dev.is_cpu() && dt != DType::F32 {
        return Err(Error::msg(format!(
            "bench-kernels: the CPU kernels run in f32; got {dt:?} (bf16 runs on CUDA only)"
        )));
    }
    if !matches!(dt, DType::F32 | DType::BF16) {
        return Err(Error::msg(format!(
            "bench-kernels: dtype {dt:?}: the kernels take f32 or bf16"
        )));
    }
    let (n, c, t, h, v) = (cfg.tokens, cfg.n_embd, cfg.seq_len, cfg.n_head, cfg.vocab);
    if n == 0 || c == 0 || t == 0 || h == 0 || v == 0 || n % t != 0 {
        return Err(Error::msg(format!(
            "bench-kernels: need positive sizes and tokens a multiple of seq_len; got tokens {n}, \
             seq_len {t}, n_embd {c}, n_head {h}, vocab {v}"
        )));
    }
    let b = n / t;
    let s = dt.size_in_bytes() as u64;
    let mut rng = Rng::new(7);
    let mut out = Vec::new();
    let timed = |warmup: usize, f: &mut dyn FnMut(usize) -> Result<()>| {
        time_op(dev, warmup, cfg.rounds, cfg.inner, f)
    };
    let mut push = |kernel: &str, shape: &[usize], dtype: DType, bytes: u64, tm: Timing, note| {
        out.push(KernelResult {
            kernel: kernel.to_string(),
            shape: shape.to_vec(),
            dtype: dtype_name(dtype).to_string(),
            ms: tm.ms_median,
            ms_min: tm.ms_min,
            bytes,
            gb_per_s: bytes as f64 / (tm.ms_median * 1e-3) / 1e9,
            of_copy: None,
            tflop_s: None,
            note,
        });
    };

    // The reference: a device-to-device copy of one contiguous buffer (`Tensor::copy` clones
    // the storage: cuMemcpyDtoDAsync on CUDA), counting bytes read plus written.
    {
        let x = randn(&mut rng, &[cfg.copy_elems.max(1)], 1.0, dt, dev)?;
        let tm = timed(2, &mut |_| x.copy().map(drop))?;
        let bytes = 2 * x.elem_count() as u64 * s;
        push(
            "copy_d2d",
            x.dims(),
            dt,
            bytes,
            tm,
            "reference: read + write",
        );
    }

    // LayerNorm over (N, C): forward reads x and writes y; backward reads x and dy and writes
    // dx (the per-column dw, db are C values).
    {
        let bytes_fwd = 2 * (n * c) as u64 * s;
        let sets = rotation(bytes_fwd);
        let xs = randn_sets(&mut rng, sets, &[n, c], 1.0, dt, dev)?;
        let w = randn(&mut rng, &[c], 1.0, dt, dev)?;
        let bias = randn(&mut rng, &[c], 1.0, dt, dev)?;
        let dys = randn_sets(&mut rng, sets, &[n, c], 1.0, dt, dev)?;
        let tm = timed(2, &mut |k| {
            ops::layer_norm(&xs[k % sets], &w, &bias, 1e-5).map(drop)
        })?;
        push("layer_norm_fwd", &[n, c], dt, bytes_fwd, tm, "");
        let op = LayerNormBwd { eps: 1e-5 };
        let tm = timed(2, &mut |k| {
            xs[k % sets]
                .apply_op3_no_bwd(&w, &dys[k % sets], &op)
                .map(drop)
        })?;
        push(
            "layer_norm_bwd",
            &[n, c],
            dt,
            3 * (n * c) as u64 * s,
            tm,
            "",
        );
    }

    // RMSNorm (Llama's) over (N, C): as LayerNorm, forward reads x and writes y; backward
    // reads x and dy and writes dx (the per-column dw is C values).
    {
        let bytes_fwd = 2 * (n * c) as u64 * s;
        let sets = rotation(bytes_fwd);
        let xs = randn_sets(&mut rng, sets, &[n, c], 1.0, dt, dev)?;
        let w = randn(&mut rng, &[c], 1.0, dt, dev)?;
        let dys = randn_sets(&mut rng, sets, &[n, c], 1.0, dt, dev)?;
        let tm = timed(2, &mut |k| ops::rms_norm(&xs[k % sets], &w, 1e-5).map(drop))?;
        push("rms_norm_fwd", &[n, c], dt, bytes_fwd, tm, "");
        let op = RmsNormBwd { eps: 1e-5 };
        let tm = timed(2, &mut |k| {
            xs[k % sets]
                .apply_op3_no_bwd(&w, &dys[k % sets], &op)
                .map(drop)
        })?;
        push("rms_norm_bwd", &[n, c], dt, 3 * (n * c) as u64 * s, tm, "");
    }

    // RoPE (Llama's) over the queries (B, T, H, hd), hd = C / H, with tables (T, hd): forward
    // reads x and the tables and writes y; backward reads dy and the tables and writes dx.
    // Skipped where hd is odd (no RoPE there).
    let hd = c / h;
    if c.is_multiple_of(h) && hd.is_multiple_of(2) {
        let shape = [b, t, h, hd];
        let bytes = (2 * (n * c) + 2 * (t * hd)) as u64 * s;
        let sets = rotation(bytes);
        let xs = randn_sets(&mut rng, sets, &shape, 1.0, dt, dev)?;
        let cos = randn(&mut rng, &[t, hd], 1.0, dt, dev)?;
        let sin = randn(&mut rng, &[t, hd], 1.0, dt, dev)?;
        let dys = randn_sets(&mut rng, sets, &shape, 1.0, dt, dev)?;
        let tm = timed(2, &mut |k| ops::rope(&xs[k % sets], &cos, &sin).map(drop))?;
        push("rope_fwd", &shape, dt, bytes, tm, "");
        let tm = timed(2, &mut |k| {
            dys[k % sets]
                .apply_op3_no_bwd(&cos, &sin, &RopeBwd)
                .map(drop)
        })?;
        push("rope_bwd", &shape, dt, bytes, tm, "");
    }

    // SwiGLU over a Llama MLP's (N, 4C) gate and up: the fused op against candle's SiLU and
    // product (forward), and the fused backward (g, u, dy → dg, du) against the composite's
    // recorded backward of both.
    {
        let shape = [n, 4 * c];
        let elems = (n * 4 * c) as u64;
        let sets = rotation(4 * elems * s);
        let gs = randn_sets(&mut rng, sets, &shape, 1.0, dt, dev)?;
        let us = randn_sets(&mut rng, sets, &shape, 1.0, dt, dev)?;
        let dys = randn_sets(&mut rng, sets, &shape, 1.0, dt, dev)?;
        let tm = timed(2, &mut |k| {
            ops::swiglu(&gs[k % sets], &us[k % sets]).map(drop)
        })?;
        push("swiglu_fwd", &shape, dt, 3 * elems * s, tm, "fused");
        let tm = timed(2, &mut |k| {
            crate::reference::swiglu(&gs[k % sets], &us[k % sets]).map(drop)
        })?;
        push(
            "swiglu_fwd_candle",
            &shape,
            dt,
            3 * elems * s,
            tm,
            "candle silu, then the product",
        );
        let op = GateBwd(Gate::Silu);
        let tm = timed(2, &mut |k| {
            gs[k % sets]
                .apply_op3_no_bwd(&us[k % sets], &dys[k % sets], &op)
                .map(drop)
        })?;
        push(
            "swiglu_bwd",
            &shape,
            dt,
            5 * elems * s,
            tm,
            "fused: dg and du",
        );
        // The composite's forward and recorded backward together (candle has no backward
        // alone), to set against swiglu_fwd + swiglu_bwd.
        let tm = timed(2, &mut |k| {
            let (g, u) = (
                candle_core::Var::from_tensor(&gs[k % sets])?,
                candle_core::Var::from_tensor(&us[k % sets])?,
            );
            let y = crate::reference::swiglu(g.as_tensor(), u.as_tensor())?;
            (y * &dys[k % sets])?.sum_all()?.backward().map(drop)
        })?;
        push(
            "swiglu_fwd_bwd_candle",
            &shape,
            dt,
            8 * elems * s,
            tm,
            "candle silu and product, then their recorded backward (and a product and sum)",
        );
    }

    // GELU (tanh form, GPT-2's) over the MLP's (N, 4C), alone and with c_fc's bias.
    {
        let shape = [n, 4 * c];
        let elems = (n * 4 * c) as u64;
        let sets = rotation(3 * elems * s);
        let xs = randn_sets(&mut rng, sets, &shape, 1.0, dt, dev)?;
        let dys = randn_sets(&mut rng, sets, &shape, 1.0, dt, dev)?;
        let tm = timed(2, &mut |k| ops::gelu_tanh(&xs[k % sets]).map(drop))?;
        push("gelu_tanh_fwd", &shape, dt, 2 * elems * s, tm, "");
        let op = GeluBwd(Gelu::Tanh);
        let tm = timed(2, &mut |k| {
            xs[k % sets].apply_op2_no_bwd(&dys[k % sets], &op).map(drop)
        })?;
        push("gelu_tanh_bwd", &shape, dt, 3 * elems * s, tm, "");

        // c_fc's bias and GELU, fused, against the model's former path (candle's broadcast
        // add, then the GELU kernel; backward: the GELU kernel, then candle's sum over the rows
        // for the bias), and the bias gradient alone against candle's row sum.
        let bias = randn(&mut rng, &[4 * c], 1.0, dt, dev)?;
        let tm = timed(2, &mut |k| {
            ops::bias_gelu_tanh(&xs[k % sets], &bias).map(drop)
        })?;
        push("bias_gelu_tanh_fwd", &shape, dt, 2 * elems * s, tm, "fused");
        let tm = timed(2, &mut |k| {
            ops::gelu_tanh(&xs[k % sets].broadcast_add(&bias)?).map(drop)
        })?;
        push(
            "bias_gelu_tanh_fwd_candle_add",
            &shape,
            dt,
            2 * elems * s,
            tm,
            "candle broadcast_add, then the GELU kernel",
        );
        let op = BiasGeluBwd(Gelu::Tanh);
        let tm = timed(2, &mut |k| {
            xs[k % sets]
                .apply_op3_no_bwd(&bias, &dys[k % sets], &op)
                .map(drop)
        })?;
        push(
            "bias_gelu_tanh_bwd",
            &shape,
            dt,
            3 * elems * s,
            tm,
            "fused: dz and db",
        );
        let op = GeluBwd(Gelu::Tanh);
        let tm = timed(2, &mut |k| {
            let z = xs[k % sets].broadcast_add(&bias)?;
            z.apply_op2_no_bwd(&dys[k % sets], &op)?
                .sum_keepdim(0)
                .map(drop)
        })?;
        push(
            "bias_gelu_tanh_bwd_candle_sum",
            &shape,
            dt,
            3 * elems * s,
            tm,
            "candle add (the saved z), the GELU kernel, candle's row sum",
        );
        let tm = timed(2, &mut |k| {
            dys[k % sets].apply_op1_no_bwd(&BiasGrad).map(drop)
        })?;
        push(
            "bias_grad",
            &shape,
            dt,
            elems * s,
            tm,
            "sum over rows in f32",
        );
        let tm = timed(2, &mut |k| dys[k % sets].sum_keepdim(0).map(drop))?;
        push(
            "bias_grad_candle_sum",
            &shape,
            dt,
            elems * s,
            tm,
            "candle sum over dim 0",
        );
    }

    // The token embedding (V, C) at N ids: lookup, and the backward that sums each row's
    // gradient, ours (positions grouped by id on the host) against candle's index_add.
    {
        let table = randn(&mut rng, &[v, c], 1.0, dt, dev)?;
        let ids: Vec<u32> = (0..n).map(|_| rng.below(v as u64) as u32).collect();
        let ids = Tensor::from_vec(ids, n, dev)?;
        let dy = randn(&mut rng, &[n, c], 1.0, dt, dev)?;
        let io = (n * c) as u64 * s;
        let tm = timed(2, &mut |_| ops::embedding(&table, &ids, None).map(drop))?;
        push(
            "embedding_fwd",
            &[n, c],
            dt,
            2 * io,
            tm,
            "ids checked on the host",
        );
        let tm = timed(2, &mut |_| table.embedding(&ids).map(drop))?;
        push(
            "embedding_fwd_candle",
            &[n, c],
            dt,
            2 * io,
            tm,
            "candle index_select",
        );
        let op = EmbeddingBwd {
            vocab: v,
            padding_idx: None,
        };
        let bytes = io + (v * c) as u64 * s;
        let tm = timed(2, &mut |_| ids.apply_op2_no_bwd(&dy, &op).map(drop))?;
        push(
            "embedding_bwd",
            &[v, c],
            dt,
            bytes,
            tm,
            "zeroed table + grouped rows",
        );
        let tm = timed(2, &mut |_| {
            table.zeros_like()?.index_add(&ids, &dy, 0).map(drop)
        })?;
        push(
            "embedding_bwd_candle",
            &[v, c],
            dt,
            bytes,
            tm,
            "candle zeros + index_add",
        );
    }

    // Causal softmax over the attention scores (B, H, T, T), the (T, T) mask broadcast (read
    // through stride 0, from cache after the first head: not counted).
    {
        let shape = [b, h, t, t];
        let elems = (b * h * t * t) as u64;
        let sets = rotation(2 * elems * s);
        let scale = 1.0 / ((c / h) as f64).sqrt();
        let mask = ops::causal_mask(t, dev)?.to_dtype(dt)?;
        let ss = randn_sets(&mut rng, sets, &shape, 1.0, dt, dev)?;
        let tm = timed(2, &mut |k| {
            ops::masked_softmax(&ss[k % sets], scale, Some(&mask)).map(drop)
        })?;
        push("softmax_causal_fwd", &shape, dt, 2 * elems * s, tm, "");
        let ys = ss
            .iter()
            .map(|x| ops::masked_softmax(x, scale, Some(&mask)))
            .collect::<Result<Vec<_>>>()?;
        drop(ss);
        let dys = randn_sets(&mut rng, sets, &shape, 1.0, dt, dev)?;
        let op = MaskedSoftmaxBwd { scale };
        let tm = timed(2, &mut |k| {
            ys[k % sets].apply_op2_no_bwd(&dys[k % sets], &op).map(drop)
        })?;
        push("softmax_bwd", &shape, dt, 3 * elems * s, tm, "");
    }

    // Causal attention from c_attn's (B, T, 3C) output to c_proj's (B, T, C) input: the fused
    // op against the model's composite path (matmuls around the softmax kernel, with the
    // (B, H, T, T) scores), forward alone and forward + backward through autograd as training
    // runs them. FLOPs of the causal forward: 4·B·H·T²·hd / 2 (two products over half the
    // score matrix); the backward does 2.5 times that (five products, as FlashAttention-2
    // counts). Bytes: the fused op's minimum, qkv read and y written (and dqkv, dy, y with
    // the backward).
    let mut attention = Vec::new();
    {
        let hd = c / h;
        let shape = [b, t, 3 * c];
        let scale = 1.0 / (hd as f64).sqrt();
        let fwd_flops = 2.0 * (b * h * t * t * hd) as f64;
        let io = (b * t * c) as u64 * s;
        let qkv = Var::from_tensor(&randn(&mut rng, &shape, 1.0, dt, dev)?)?;
        let dy = randn(&mut rng, &[b, t, c], 1.0, dt, dev)?;
        let mask = ops::causal_mask(t, dev)?.to_dtype(dt)?;
        let composite = |x: &Tensor| -> Result<Tensor> {
            let qkv = x.reshape((b, t, 3, h, hd))?.permute((2, 0, 3, 1, 4))?; // (3, B, H, T, hd)
            let (q, k, v) = (
                qkv.get(0)?.contiguous()?,
                qkv.get(1)?.contiguous()?,
                qkv.get(2)?.contiguous()?,
            );
            let att = ops::masked_softmax(&q.matmul(&k.t()?)?, scale, Some(&mask))?; // (B, H, T, T)
            att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, c))
        };
        let fused = |x: &Tensor| ops::causal_attention(x, h, scale);
        let impls: [(&str, &AttentionFn); 2] = [
            ("attention_fused", &fused),
            ("attention_composite", &composite),
        ];
        for (name, f) in impls {
            let tm = timed(2, &mut |_| f(qkv.as_tensor()).map(drop))?;
            attention.push((format!("{name}_fwd"), tm, 4 * io, fwd_flops));
            let tm = timed(2, &mut |_| {
                (f(qkv.as_tensor())? * &dy)?.sum_all()?.backward().map(drop)
            })?;
            attention.push((format!("{name}_fwd_bwd"), tm, 11 * io, 3.5 * fwd_flops));
        }
        for (name, tm, bytes, _) in &attention {
            push(
                name,
                &shape,
                dt,
                *bytes,
                *tm,
                "TFLOP/s: causal forward 4BHT²hd/2, backward 2.5x",
            );
        }
    }

    // Cross-entropy over the logits (N, V): the forward reads them once; forward + backward
    // through autograd (as the trainer runs it: the backward reuses the forward's saved
    // log-sum-exp) reads them twice and writes dlogits once.
    {
        let shape = [n, v];
        let elems = (n * v) as u64;
        let logits = randn(&mut rng, &shape, 2.0, dt, dev)?;
        let targets: Vec<u32> = (0..n).map(|_| rng.below(v as u64) as u32).collect();
        let targets = Tensor::from_vec(targets, n, dev)?;
        let tm = timed(2, &mut |_| {
            ops::cross_entropy_sum(&logits, &targets, None).map(drop)
        })?;
        push(
            "cross_entropy_fwd",
            &shape,
            dt,
            elems * s + 4 * n as u64,
            tm,
            "",
        );
        let var = Var::from_tensor(&logits)?;
        drop(logits);
        let tm = timed(2, &mut |_| {
            ops::cross_entropy_sum(var.as_tensor(), &targets, None)?
                .backward()
                .map(drop)
        })?;
        push(
            "cross_entropy_fwd_bwd",
            &shape,
            dt,
            3 * elems * s + 8 * n as u64,
            tm,
            "autograd: forward, then backward from the saved log-sum-exp",
        );
    }

    // Generation's linear layers, M = 1, 4 and 8 rows (one token a step; M > 4 runs candle's
    // matmul in the models, `ops::GEMV_MAX_ROWS`): x (M, C) times a (C, 4C) weight (GPT-2's
    // c_fc, Conv1D layout) and times the transpose of a (4C, C) one (a torch Linear weight, as
    // Llama's gate and up), by the GEMV kernel against candle's matmul (gemm). Bytes: the
    // weight read once, x read and y written. Weight sets rotate over 512 MiB, beyond the
    // last-level cache, as a whole model's weights do in generation. CPU only.
    if dev.is_cpu() {
        let (kk, nn) = (c, 4 * c);
        let wbytes = (kk * nn) as u64 * s;
        let sets = (512u64 << 20).div_ceil(wbytes).clamp(1, 64) as usize;
        // The same storage read as (K, N) or as (N, K): both random.
        let ws = randn_sets(&mut rng, sets, &[kk, nn], 0.02, dt, dev)?;
        let wts = ws
            .iter()
            .map(|w| w.reshape((nn, kk)))
            .collect::<Result<Vec<_>>>()?;
        for m in [1, 4, 8] {
            let x = randn(&mut rng, &[m, kk], 1.0, dt, dev)?;
            let bytes = wbytes + (m * (kk + nn)) as u64 * s;
            let cases: [(&str, &Gemv, &[Tensor]); 2] = [
                (
                    "in_out",
                    &Gemv {
                        layout: WeightLayout::InOut,
                    },
                    &ws,
                ),
                (
                    "out_in",
                    &Gemv {
                        layout: WeightLayout::OutIn,
                    },
                    &wts,
                ),
            ];
            for (name, op, w) in cases {
                let tm = timed(2, &mut |k| x.apply_op2_no_bwd(&w[k % sets], op).map(drop))?;
                push(
                    &format!("gemv_{name}_m{m}"),
                    &[m, kk, nn],
                    dt,
                    bytes,
                    tm,
                    "GEMV kernel",
                );
                let tm = timed(2, &mut |k| {
                    let wk = &w[k % sets];
                    match op.layout {
                        WeightLayout::InOut => x.matmul(wk),
                        WeightLayout::OutIn => x.matmul(&wk.t()?),
                    }
                    .map(drop)
                })?;
                push(
                    &format!("gemv_{name}_m{m}_candle"),
                    &[m, kk, nn],
                    dt,
                    bytes,
                    tm,
                    "candle matmul (gemm)",
                );
            }
        }
    }

    optimizer_benches(dev, cfg, &mut rng, &mut push)?;

    let copy = out[0].gb_per_s;
    for r in &mut out {
        r.of_copy = Some(r.gb_per_s / copy);
        if let Some((_, tm, _, flops)) = attention.iter().find(|a| a.0 == r.kernel) {
            r.tflop_s = Some(flops / (tm.ms_median * 1e-3) / 1e12);
        }
    }
    Ok(out)
}

type AttentionFn<'a> = dyn Fn(&Tensor) -> Result<Tensor> + 'a;

type Push<'a> = dyn FnMut(&str, &[usize], DType, u64, Timing, &'static str) + 'a;

/// AdamW over a whole model's parameters (f32 master weights, moments and gradients), fused
/// (one launch per tensor, as the trainer's optimizer calls it) against candle's op-by-op
/// `candle_nn::AdamW`; the global gradient norm and the in-place gradient scaling of clipping.
fn optimizer_benches(
    dev: &Device,
    cfg: &KernelBenchConfig,
    rng: &mut Rng,
    push: &mut Push<'_>,
) -> Result<()> {
    let numel: usize = cfg
        .param_shapes
        .iter()
        .map(|s| s.iter().product::<usize>())
        .sum();
    if numel == 0 {
        return Ok(());
    }
    let total = [numel];
    let np = numel as u64;
    let f32s = |rng: &mut Rng, std: f64| -> Result<Vec<Tensor>> {
        cfg.param_shapes
            .iter()
            .map(|sh| randn(rng, sh, std, DType::F32, dev))
            .collect()
    };
    let params = f32s(rng, 0.02)?;
    let grads = f32s(rng, 1e-3)?;
    let zeros = || -> Result<Vec<Tensor>> { params.iter().map(|p| p.zeros_like()).collect() };
    let (ms, vs) = (zeros()?, zeros()?);
    let work: Vec<Tensor> = params
        .iter()
        .map(|p| p.to_dtype(DType::BF16))
        .collect::<Result<_>>()?;
    let hyper = |step: usize| AdamWHyper {
        lr: 3e-4,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        step: step as u64 + 1,
    };
    // Reads g, p, m, v and writes p, m, v (f32): 28 bytes a parameter; the bf16 working copy
    // adds 2.
    let tm = time_op(dev, 2, cfg.rounds, cfg.inner.min(5), |k| {
        for i in 0..params.len() {
            adamw_update(&params[i], &grads[i], &ms[i], &vs[i], None, &hyper(k))?;
        }
        Ok(())
    })?;
    push(
        "adamw_fused",
        &total,
        DType::F32,
        28 * np,
        tm,
        "one launch per tensor, as the trainer",
    );
    let tm = time_op(dev, 2, cfg.rounds, cfg.inner.min(5), |k| {
        for i in 0..params.len() {
            adamw_update(
                &params[i],
                &grads[i],
                &ms[i],
                &vs[i],
                Some(&work[i]),
                &hyper(k),
            )?;
        }
        Ok(())
    })?;
    push(
        "adamw_fused_bf16_work",
        &total,
        DType::F32,
        30 * np,
        tm,
        "also writes the bf16 working copy (mixed precision)",
    );
    drop((ms, vs, work));

    // candle's composite AdamW on the same sizes. Its GradStore can only come out of a
    // backward pass: sum(p · g) has gradient g for every p.
    let vars: Vec<Var> = params.iter().map(Var::from_tensor).collect::<Result<_>>()?;
    let mut dot = Tensor::zeros((), DType::F32, dev)?;
    for (p, g) in vars.iter().zip(&grads) {
        dot = (dot + (p.as_tensor() * g)?.sum_all()?)?;
    }
    let store = dot.backward()?;
    drop(dot);
    let mut opt = candle_nn::AdamW::new(
        vars.clone(),
        candle_nn::ParamsAdamW {
            lr: 3e-4,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        },
    )?;
    let tm = time_op(dev, 2, cfg.rounds, cfg.inner.min(5), |_| opt.step(&store))?;
    push(
        "adamw_candle_composite",
        &total,
        DType::F32,
        28 * np,
        tm,
        "candle_nn::AdamW, op by op; bytes counted as the fused kernel's minimum",
    );
    drop((opt, store, vars, params));

    let refs: Vec<&Tensor> = grads.iter().collect();
    let tm = time_op(dev, 2, cfg.rounds, cfg.inner, |_| {
        grad_norm(&refs, 1.0).map(drop)
    })?;
    push(
        "grad_norm",
        &total,
        DType::F32,
        4 * np,
        tm,
        "one launch over every tensor; the result is read back",
    );
    // Factors alternate around 1 so the gradients stay in range however often it runs.
    let tm = time_op(dev, 2, cfg.rounds, cfg.inner, |k| {
        scale_grads(&refs, if k % 2 == 0 { 0.5 } else { 2.0 })
    })?;
    push(
        "grad_scale",
        &total,
        DType::F32,
        8 * np,
        tm,
        "in place, one launch over every tensor",
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_benches_run_on_small_cpu_shapes() {
        let cfg = KernelBenchConfig {
            tokens: 32,
            seq_len: 16,
            n_embd: 8,
            n_head: 2,
            vocab: 50,
            dtype: DType::F32,
            param_shapes: vec![vec![50, 8], vec![8], vec![3, 8, 8]],
            copy_elems: 4096,
            rounds: 2,
            inner: 2,
        };
        let r = run_kernel_benches(&Device::Cpu, &cfg).unwrap();
        let names: Vec<&str> = r.iter().map(|r| r.kernel.as_str()).collect();
        assert_eq!(names[0], "copy_d2d");
        for k in [
            "layer_norm_fwd",
            "layer_norm_bwd",
            "rms_norm_fwd",
            "rms_norm_bwd",
            "rope_fwd",
            "rope_bwd",
            "gelu_tanh_fwd",
            "gelu_tanh_bwd",
            "softmax_causal_fwd",
            "softmax_bwd",
            "cross_entropy_fwd",
            "cross_entropy_fwd_bwd",
            "attention_fused_fwd",
            "attention_fused_fwd_bwd",
            "attention_composite_fwd",
            "attention_composite_fwd_bwd",
            "adamw_fused",
            "adamw_candle_composite",
            "grad_norm",
            "grad_scale",
        ] {
            assert!(names.contains(&k), "{k} missing from {names:?}");
        }
        // RMSNorm over (tokens, n_embd) = (32, 8) in f32: x read and y written; x, dy read
        // and dx written.
        let row = |k: &str| r.iter().find(|r| r.kernel == k).unwrap();
        assert_eq!(row("rms_norm_fwd").shape, [32, 8]);
        assert_eq!(row("rms_norm_fwd").bytes, 2 * 32 * 8 * 4);
        assert_eq!(row("rms_norm_bwd").bytes, 3 * 32 * 8 * 4);
        // RoPE over (B, T, H, hd) = (2, 16, 2, 4) with (16, 4) tables: x (or dy) read, y (or
        // dx) written, both tables read.
        assert_eq!(row("rope_fwd").shape, [2, 16, 2, 4]);
        assert_eq!(row("rope_fwd").bytes, (2 * 32 * 8 + 2 * 16 * 4) * 4);
        assert_eq!(row("rope_bwd").bytes, (2 * 32 * 8 + 2 * 16 * 4) * 4);
        let softmax = r.iter().find(|r| r.kernel == "softmax_bwd").unwrap();
        assert_eq!(softmax.shape, [2, 2, 16, 16]);
        assert_eq!(softmax.bytes, 3 * 2 * 2 * 16 * 16 * 4);
        // (B, T, 3C) = (2, 16, 24); hd 4: forward 2·B·H·T²·hd FLOPs.
        let att = r
            .iter()
            .find(|r| r.kernel == "attention_fused_fwd")
            .unwrap();
        assert_eq!(att.shape, [2, 16, 24]);
        let flops = 2.0 * (2 * 2 * 16 * 16 * 4) as f64;
        let want = flops / (att.ms * 1e-3) / 1e12;
        assert!(
            (att.tflop_s.unwrap() - want).abs() <= 1e-9 * want,
            "{att:?}"
        );
        let adamw = r.iter().find(|r| r.kernel == "adamw_fused").unwrap();
        assert_eq!(adamw.bytes, 28 * (400 + 8 + 192));
        for r in &r {
            assert!(r.ms > 0.0 && r.gb_per_s.is_finite(), "{r:?}");
            assert!(r.of_copy.is_some_and(|x| x > 0.0), "{r:?}");
        }
    }

    #[test]
    fn bad_sizes_are_errors() {
        let cfg = KernelBenchConfig {
            tokens: 30,
            seq_len: 16,
            n_embd: 8,
            n_head: 2,
            vocab: 50,
            dtype: DType::F32,
            param_shapes: vec![],
            copy_elems: 16,
            rounds: 1,
            inner: 1,
        };
        let e = run_kernel_benches(&Device::Cpu, &cfg).unwrap_err();
        assert!(e.to_string().contains("multiple of seq_len"), "{e}");
        let cfg = KernelBenchConfig {
            tokens: 32,
            dtype: DType::BF16,
            ..cfg
        };
        let e = run_kernel_benches(&Device::Cpu, &cfg).unwrap_err();
        assert!(e.to_string().contains("CUDA only"), "{e}");
    }

    #[test]
    fn timing_counts_every_call_and_memory_is_absent_on_the_cpu() {
        let mut calls = Vec::new();
        let t = time_op(&Device::Cpu, 2, 3, 4, |k| {
            calls.push(k);
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, (0..14).collect::<Vec<_>>());
        assert!(t.ms_min <= t.ms_median);
        assert!(time_op(&Device::Cpu, 0, 0, 1, |_| Ok(())).is_err());
        assert_eq!(reset_peak_memory(&Device::Cpu).unwrap(), None);
        assert_eq!(peak_memory(&Device::Cpu).unwrap(), None);
        assert_eq!(driver_used_memory(&Device::Cpu).unwrap(), None);
        profiler_range(&Device::Cpu, true).unwrap();
    }
}

//! Lantern's CUDA kernels (`kernels/*.cu`), compiled as C++ against a CUDA emulation shim
//! (`include/cuda_emu.h`) and run on the CPU, so that `cargo test` checks the GPU kernels'
//! source against the CPU references on a machine without a GPU. Each function here launches
//! the kernels with the grid and block of the Rust launcher in `lantern-kernels`' `cuda`
//! module (mirrored in `cpp/<file>.cpp`), on host buffers.
//!
//! What it catches: wrong indexing, reductions, masking, tile edges, barriers missing or in
//! divergent code (a deadlock aborts with the threads named), shuffle misuse, and the
//! arithmetic itself (IEEE single precision, explicit fma only). What it cannot: timing,
//! memory coalescing, occupancy, or the hardware's unspecified orders (tensor-core
//! accumulation order, float atomics).
//!
//! Every function checks its slice lengths first and panics with the name of the buffer
//! that is too short: these are test helpers, and a wrong length is a bug in the test.

use half::{bf16, f16};

/// The kernels' storage types, each with its instantiation of every kernel.
pub trait Float: Copy + Default + 'static {
    #[doc(hidden)]
    const K: Kernels<Self>;
    const NAN: Self;
}

/// The `_f32` or `_bf16` instantiations of the emulated kernels.
#[doc(hidden)]
pub struct Kernels<T> {
    softmax_fwd: unsafe extern "C" fn(*const T, *mut T, i32, i32, f32),
    softmax_masked_fwd:
        unsafe extern "C" fn(*const T, *const T, *const ffi::MaskIndex, *mut T, i32, i32, f32),
    softmax_bwd: unsafe extern "C" fn(*const T, *const T, *mut T, i32, i32, f32),
    layer_norm_fwd: unsafe extern "C" fn(*const T, *const T, *const T, *mut T, i32, i32, f32),
    layer_norm_bwd: unsafe extern "C" fn(*const T, *const T, *const T, *mut T, i32, i32, f32),
    rms_norm_fwd: unsafe extern "C" fn(*const T, *const T, *mut T, i32, i32, f32),
    rms_norm_bwd: unsafe extern "C" fn(*const T, *const T, *const T, *mut T, i32, i32, f32),
    /// Forward, then backward.
    rope: [RopeFn<T>; 2],
    gelu_fwd: [unsafe extern "C" fn(*const T, *mut T, usize); 2],
    gelu_bwd: [unsafe extern "C" fn(*const T, *const T, *mut T, usize); 2],
    /// SiLU, the tanh GELU, the erf GELU.
    gated_fwd: [unsafe extern "C" fn(*const T, *const T, *mut T, usize); 3],
    gated_bwd: [unsafe extern "C" fn(*const T, *const T, *const T, *mut T, usize); 3],
    dropout: unsafe extern "C" fn(*const T, *mut T, usize, u64, u64, f32, f32),
    ce_fwd: CeFwd<T>,
    ce_bwd: CeBwd<T>,
    bias_act_fwd: unsafe extern "C" fn(i32, *const T, *const T, *mut T, i32, i32),
    bias_act_bwd: unsafe extern "C" fn(i32, *const T, *const T, *const T, *mut T, i32, i32),
    embedding_fwd: unsafe extern "C" fn(*const T, *const u32, *mut T, i32, i32, i32),
    embedding_bwd: EmbBwd<T>,
}
type RopeFn<T> = unsafe extern "C" fn(*const T, *const T, *const T, *mut T, i32, i32, i32, i32);
type EmbBwd<T> =
    unsafe extern "C" fn(*const u32, *const u32, *const u32, *const T, *mut T, i32, i32);
type CeFwd<T> =
    unsafe extern "C" fn(*const T, *const u32, *const f32, i32, i32, *mut f32, *mut f32, *mut u32);
type CeBwd<T> = unsafe extern "C" fn(
    *const T,
    *const u32,
    *const f32,
    *const f32,
    *mut T,
    *mut T,
    f32,
    i32,
    i32,
);

impl Float for f32 {
    const NAN: f32 = f32::NAN;
    const K: Kernels<f32> = Kernels {
        softmax_fwd: ffi::emu_softmax_fwd_f32,
        softmax_masked_fwd: ffi::emu_softmax_masked_fwd_f32,
        softmax_bwd: ffi::emu_softmax_bwd_f32,
        layer_norm_fwd: ffi::emu_layer_norm_fwd_f32,
        layer_norm_bwd: ffi::emu_layer_norm_bwd_f32,
        rms_norm_fwd: ffi::emu_rms_norm_fwd_f32,
        rms_norm_bwd: ffi::emu_rms_norm_bwd_f32,
        rope: [ffi::emu_rope_fwd_f32, ffi::emu_rope_bwd_f32],
        gelu_fwd: [ffi::emu_gelu_tanh_fwd_f32, ffi::emu_gelu_erf_fwd_f32],
        gelu_bwd: [ffi::emu_gelu_tanh_bwd_f32, ffi::emu_gelu_erf_bwd_f32],
        gated_fwd: [
            ffi::emu_gated_silu_fwd_f32,
            ffi::emu_gated_gelu_tanh_fwd_f32,
            ffi::emu_gated_gelu_erf_fwd_f32,
        ],
        gated_bwd: [
            ffi::emu_gated_silu_bwd_f32,
            ffi::emu_gated_gelu_tanh_bwd_f32,
            ffi::emu_gated_gelu_erf_bwd_f32,
        ],
        dropout: ffi::emu_dropout_f32,
        ce_fwd: ffi::emu_cross_entropy_fwd_f32,
        ce_bwd: ffi::emu_cross_entropy_bwd_f32,
        bias_act_fwd: ffi::emu_bias_act_fwd_f32,
        bias_act_bwd: ffi::emu_bias_act_bwd_f32,
        embedding_fwd: ffi::emu_embedding_fwd_f32,
        embedding_bwd: ffi::emu_embedding_bwd_f32,
    };
}

impl Float for bf16 {
    const NAN: bf16 = bf16::NAN;
    const K: Kernels<bf16> = Kernels {
        softmax_fwd: ffi::emu_softmax_fwd_bf16,
        softmax_masked_fwd: ffi::emu_softmax_masked_fwd_bf16,
        softmax_bwd: ffi::emu_softmax_bwd_bf16,
        layer_norm_fwd: ffi::emu_layer_norm_fwd_bf16,
        layer_norm_bwd: ffi::emu_layer_norm_bwd_bf16,
        rms_norm_fwd: ffi::emu_rms_norm_fwd_bf16,
        rms_norm_bwd: ffi::emu_rms_norm_bwd_bf16,
        rope: [ffi::emu_rope_fwd_bf16, ffi::emu_rope_bwd_bf16],
        gelu_fwd: [ffi::emu_gelu_tanh_fwd_bf16, ffi::emu_gelu_erf_fwd_bf16],
        gelu_bwd: [ffi::emu_gelu_tanh_bwd_bf16, ffi::emu_gelu_erf_bwd_bf16],
        gated_fwd: [
            ffi::emu_gated_silu_fwd_bf16,
            ffi::emu_gated_gelu_tanh_fwd_bf16,
            ffi::emu_gated_gelu_erf_fwd_bf16,
        ],
        gated_bwd: [
            ffi::emu_gated_silu_bwd_bf16,
            ffi::emu_gated_gelu_tanh_bwd_bf16,
            ffi::emu_gated_gelu_erf_bwd_bf16,
        ],
        dropout: ffi::emu_dropout_bf16,
        ce_fwd: ffi::emu_cross_entropy_fwd_bf16,
        ce_bwd: ffi::emu_cross_entropy_bwd_bf16,
        bias_act_fwd: ffi::emu_bias_act_fwd_bf16,
        bias_act_bwd: ffi::emu_bias_act_bwd_bf16,
        embedding_fwd: ffi::emu_embedding_fwd_bf16,
        embedding_bwd: ffi::emu_embedding_bwd_bf16,
    };
}

fn need(what: &str, len: usize, want: usize) {
    assert!(
        len >= want,
        "{what}: {len} elements, the launch needs {want}"
    );
}

mod ffi {
    use half::{bf16, f16};

    /// `MaskIndex` of softmax.cu.
    #[repr(C)]
    pub struct MaskIndex {
        pub dims: [i64; 4],
        pub strides: [i64; 4],
        pub start: i64,
    }

    /// `AdamWArgs` of adamw.cu: the scalars the Rust launcher passes, same `#[repr(C)]` type.
    pub use lantern_kernels::adamw::Scalars as AdamWArgs;

    extern "C" {
        pub fn emu_softmax_fwd_f32(s: *const f32, y: *mut f32, rows: i32, c: i32, scale: f32);
        pub fn emu_softmax_fwd_bf16(s: *const bf16, y: *mut bf16, rows: i32, c: i32, scale: f32);
        pub fn emu_softmax_masked_fwd_f32(
            s: *const f32,
            mask: *const f32,
            mi: *const MaskIndex,
            y: *mut f32,
            rows: i32,
            c: i32,
            scale: f32,
        );
        pub fn emu_softmax_masked_fwd_bf16(
            s: *const bf16,
            mask: *const bf16,
            mi: *const MaskIndex,
            y: *mut bf16,
            rows: i32,
            c: i32,
            scale: f32,
        );
        pub fn emu_softmax_bwd_f32(
            y: *const f32,
            dy: *const f32,
            ds: *mut f32,
            rows: i32,
            c: i32,
            scale: f32,
        );
        pub fn emu_softmax_bwd_bf16(
            y: *const bf16,
            dy: *const bf16,
            ds: *mut bf16,
            rows: i32,
            c: i32,
            scale: f32,
        );
        pub fn emu_layer_norm_fwd_f32(
            x: *const f32,
            w: *const f32,
            b: *const f32,
            y: *mut f32,
            rows: i32,
            c: i32,
            eps: f32,
        );
        pub fn emu_layer_norm_fwd_bf16(
            x: *const bf16,
            w: *const bf16,
            b: *const bf16,
            y: *mut bf16,
            rows: i32,
            c: i32,
            eps: f32,
        );
        pub fn emu_layer_norm_bwd_f32(
            x: *const f32,
            w: *const f32,
            dy: *const f32,
            out: *mut f32,
            rows: i32,
            c: i32,
            eps: f32,
        );
        pub fn emu_layer_norm_bwd_bf16(
            x: *const bf16,
            w: *const bf16,
            dy: *const bf16,
            out: *mut bf16,
            rows: i32,
            c: i32,
            eps: f32,
        );
        pub fn emu_rms_norm_fwd_f32(
            x: *const f32,
            w: *const f32,
            y: *mut f32,
            rows: i32,
            c: i32,
            eps: f32,
        );
        pub fn emu_rms_norm_fwd_bf16(
            x: *const bf16,
            w: *const bf16,
            y: *mut bf16,
            rows: i32,
            c: i32,
            eps: f32,
        );
        pub fn emu_rms_norm_bwd_f32(
            x: *const f32,
            w: *const f32,
            dy: *const f32,
            out: *mut f32,
            rows: i32,
            c: i32,
            eps: f32,
        );
        pub fn emu_rms_norm_bwd_bf16(
            x: *const bf16,
            w: *const bf16,
            dy: *const bf16,
            out: *mut bf16,
            rows: i32,
            c: i32,
            eps: f32,
        );
        pub fn emu_rope_fwd_f32(
            x: *const f32,
            cos: *const f32,
            sin: *const f32,
            y: *mut f32,
            rows: i32,
            half: i32,
            heads: i32,
            seq: i32,
        );
        pub fn emu_rope_fwd_bf16(
            x: *const bf16,
            cos: *const bf16,
            sin: *const bf16,
            y: *mut bf16,
            rows: i32,
            half: i32,
            heads: i32,
            seq: i32,
        );
        pub fn emu_rope_bwd_f32(
            dy: *const f32,
            cos: *const f32,
            sin: *const f32,
            dx: *mut f32,
            rows: i32,
            half: i32,
            heads: i32,
            seq: i32,
        );
        pub fn emu_rope_bwd_bf16(
            dy: *const bf16,
            cos: *const bf16,
            sin: *const bf16,
            dx: *mut bf16,
            rows: i32,
            half: i32,
            heads: i32,
            seq: i32,
        );
        pub fn emu_gelu_tanh_fwd_f32(x: *const f32, y: *mut f32, n: usize);
        pub fn emu_gelu_tanh_fwd_bf16(x: *const bf16, y: *mut bf16, n: usize);
        pub fn emu_gelu_erf_fwd_f32(x: *const f32, y: *mut f32, n: usize);
        pub fn emu_gelu_erf_fwd_bf16(x: *const bf16, y: *mut bf16, n: usize);
        pub fn emu_gelu_tanh_bwd_f32(x: *const f32, dy: *const f32, dx: *mut f32, n: usize);
        pub fn emu_gelu_tanh_bwd_bf16(x: *const bf16, dy: *const bf16, dx: *mut bf16, n: usize);
        pub fn emu_gelu_erf_bwd_f32(x: *const f32, dy: *const f32, dx: *mut f32, n: usize);
        pub fn emu_gelu_erf_bwd_bf16(x: *const bf16, dy: *const bf16, dx: *mut bf16, n: usize);
        pub fn emu_gated_silu_fwd_f32(g: *const f32, u: *const f32, y: *mut f32, n: usize);
        pub fn emu_gated_silu_fwd_bf16(g: *const bf16, u: *const bf16, y: *mut bf16, n: usize);
        pub fn emu_gated_gelu_tanh_fwd_f32(g: *const f32, u: *const f32, y: *mut f32, n: usize);
        pub fn emu_gated_gelu_tanh_fwd_bf16(g: *const bf16, u: *const bf16, y: *mut bf16, n: usize);
        pub fn emu_gated_gelu_erf_fwd_f32(g: *const f32, u: *const f32, y: *mut f32, n: usize);
        pub fn emu_gated_gelu_erf_fwd_bf16(g: *const bf16, u: *const bf16, y: *mut bf16, n: usize);
        pub fn emu_gated_silu_bwd_f32(
            g: *const f32,
            u: *const f32,
            dy: *const f32,
            dgu: *mut f32,
            n: usize,
        );
        pub fn emu_gated_silu_bwd_bf16(
            g: *const bf16,
            u: *const bf16,
            dy: *const bf16,
            dgu: *mut bf16,
            n: usize,
        );
        pub fn emu_gated_gelu_tanh_bwd_f32(
            g: *const f32,
            u: *const f32,
            dy: *const f32,
            dgu: *mut f32,
            n: usize,
        );
        pub fn emu_gated_gelu_tanh_bwd_bf16(
            g: *const bf16,
            u: *const bf16,
            dy: *const bf16,
            dgu: *mut bf16,
            n: usize,
        );
        pub fn emu_gated_gelu_erf_bwd_f32(
            g: *const f32,
            u: *const f32,
            dy: *const f32,
            dgu: *mut f32,
            n: usize,
        );
        pub fn emu_gated_gelu_erf_bwd_bf16(
            g: *const bf16,
            u: *const bf16,
            dy: *const bf16,
            dgu: *mut bf16,
            n: usize,
        );
        pub fn emu_dropout_f32(
            x: *const f32,
            y: *mut f32,
            n: usize,
            seed: u64,
            counter: u64,
            p: f32,
            scale: f32,
        );
        pub fn emu_dropout_bf16(
            x: *const bf16,
            y: *mut bf16,
            n: usize,
            seed: u64,
            counter: u64,
            p: f32,
            scale: f32,
        );
        #[allow(clippy::too_many_arguments)]
        pub fn emu_cross_entropy_fwd_f32(
            x: *const f32,
            t: *const u32,
            w: *const f32,
            n: i32,
            v: i32,
            loss: *mut f32,
            lse: *mut f32,
            bad: *mut u32,
        );
        #[allow(clippy::too_many_arguments)]
        pub fn emu_cross_entropy_fwd_bf16(
            x: *const bf16,
            t: *const u32,
            w: *const f32,
            n: i32,
            v: i32,
            loss: *mut f32,
            lse: *mut f32,
            bad: *mut u32,
        );
        #[allow(clippy::too_many_arguments)]
        pub fn emu_cross_entropy_bwd_f32(
            x: *const f32,
            t: *const u32,
            w: *const f32,
            lse: *const f32,
            dx: *mut f32,
            dw: *mut f32,
            g: f32,
            n: i32,
            v: i32,
        );
        #[allow(clippy::too_many_arguments)]
        pub fn emu_cross_entropy_bwd_bf16(
            x: *const bf16,
            t: *const u32,
            w: *const f32,
            lse: *const f32,
            dx: *mut bf16,
            dw: *mut bf16,
            g: f32,
            n: i32,
            v: i32,
        );
        pub fn emu_adamw_f32(
            p: *mut f32,
            g: *const f32,
            m: *mut f32,
            v: *mut f32,
            a: *const AdamWArgs,
            n: usize,
        );
        pub fn emu_adamw_bf16(
            p: *mut f32,
            g: *const f32,
            m: *mut f32,
            v: *mut f32,
            work: *mut bf16,
            a: *const AdamWArgs,
            n: usize,
        );
        pub fn emu_adamw_f16(
            p: *mut f32,
            g: *const f32,
            m: *mut f32,
            v: *mut f32,
            work: *mut f16,
            a: *const AdamWArgs,
            n: usize,
        );
        pub fn emu_bias_act_fwd_f32(
            act: i32,
            x: *const f32,
            b: *const f32,
            y: *mut f32,
            rows: i32,
            n: i32,
        );
        pub fn emu_bias_act_fwd_bf16(
            act: i32,
            x: *const bf16,
            b: *const bf16,
            y: *mut bf16,
            rows: i32,
            n: i32,
        );
        pub fn emu_bias_act_bwd_f32(
            act: i32,
            x: *const f32,
            b: *const f32,
            dy: *const f32,
            out: *mut f32,
            rows: i32,
            n: i32,
        );
        pub fn emu_bias_act_bwd_bf16(
            act: i32,
            x: *const bf16,
            b: *const bf16,
            dy: *const bf16,
            out: *mut bf16,
            rows: i32,
            n: i32,
        );
        pub fn emu_embedding_fwd_f32(
            table: *const f32,
            ids: *const u32,
            y: *mut f32,
            n: i32,
            c: i32,
            vocab: i32,
        );
        pub fn emu_embedding_bwd_f32(
            ids: *const u32,
            starts: *const u32,
            positions: *const u32,
            dy: *const f32,
            d_table: *mut f32,
            buckets: i32,
            c: i32,
        );
        pub fn emu_embedding_fwd_bf16(
            table: *const bf16,
            ids: *const u32,
            y: *mut bf16,
            n: i32,
            c: i32,
            vocab: i32,
        );
        pub fn emu_embedding_bwd_bf16(
            ids: *const u32,
            starts: *const u32,
            positions: *const u32,
            dy: *const bf16,
            d_table: *mut bf16,
            buckets: i32,
            c: i32,
        );
        pub fn emu_grad_sumsq(ptrs: *const u64, lens: *const u64, chunks: i32, unscale: f32)
            -> f64;
        pub fn emu_grad_scale(ptrs: *const u64, lens: *const u64, chunks: i32, factor: f32);
    }
}

/// The emulator's own test kernels (`cpp/emulator_selftest.cpp`, used by tests/emulator.rs).
#[doc(hidden)]
pub mod selftest {
    extern "C" {
        pub fn emu_selftest_shuffles(out: *mut i32);
        pub fn emu_selftest_divergent_shuffle(out: *mut f32);
        pub fn emu_selftest_block_sums(x: *const f32, out: *mut f32);
        pub fn emu_selftest_wmma_matmul(a: *const half::bf16, b: *const half::bf16, c: *mut f32);
        pub fn emu_selftest_neighbour_read(out: *mut i32);
        pub fn emu_selftest_warp_ahead(out: *mut i32);
    }
}

/// The order in which the emulator runs a grid's blocks, a block's warps and a warp's threads.
/// A GPU promises none of them, so a kernel is right only if it gives the same result in any
/// order. Each warp runs as far as it can alone, up to a `__syncthreads`, before the next one
/// starts; so for any two accesses to the same memory by different threads with no barrier
/// of theirs between (a race), one order runs one first and the other order the other, and
/// a race whose outcome matters gives different results in the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Blocks and threads in index order (the default).
    Index = 0,
    /// Blocks and threads in reverse index order.
    Reverse = 1,
}

impl Order {
    pub const ALL: [Order; 2] = [Order::Index, Order::Reverse];
}

extern "C" {
    fn emu_set_order(order: i32) -> i32;
}

/// Runs `f` with this thread's launches in `order`, and restores the previous order after it,
/// panic or not. Launches run on the thread that makes them, so tests running in parallel
/// each keep their own order.
pub fn with_order<R>(order: Order, f: impl FnOnce() -> R) -> R {
    struct Restore(i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: sets a thread-local integer of the runtime; no launch is in flight on
            // this thread while `f` is not running.
            unsafe { emu_set_order(self.0) };
        }
    }
    // SAFETY: as above; launches read the order only when they start.
    let _restore = Restore(unsafe { emu_set_order(order as i32) });
    f()
}

/// Runs `f` once in each [`Order`], naming the order on stderr first so that a failure's
/// captured output says which one failed.
pub fn in_every_order(f: impl Fn()) {
    for order in Order::ALL {
        eprintln!("emulator order: {order:?}");
        with_order(order, &f);
    }
}

/// An output buffer as the launchers' `alloc_out` leaves it under `lantern selfcheck`'s
/// poisoning: all NaN, so that an element the kernel never writes fails the comparison (the
/// tests require finite outputs) instead of passing as a zero.
fn unwritten<T: Float>(n: usize) -> Vec<T> {
    vec![T::NAN; n]
}

fn int(n: usize) -> i32 {
    i32::try_from(n).expect("size fits the kernels' int")
}

/// softmax.cu forward: y = softmax(s * scale) over rows of length `c`.
pub fn softmax_fwd<T: Float>(s: &[T], c: usize, scale: f32) -> Vec<T> {
    let rows = s.len() / c;
    let mut y = unwritten::<T>(rows * c);
    // SAFETY: s and y hold rows * c elements; the kernel touches only those (one block per row).
    unsafe { (T::K.softmax_fwd)(s.as_ptr(), y.as_mut_ptr(), int(rows), int(c), scale) };
    y
}

/// A broadcast additive mask for [`softmax_masked_fwd`]: the mask's storage and, outermost
/// first, up to four (dim, element stride) pairs of the scores' shape (stride 0 broadcasts).
pub struct Mask<'a, T> {
    pub data: &'a [T],
    pub dims: Vec<usize>,
    pub strides: Vec<usize>,
}

/// softmax.cu masked forward: y = softmax(s * scale + mask).
pub fn softmax_masked_fwd<T: Float>(s: &[T], mask: &Mask<'_, T>, scale: f32) -> Vec<T> {
    let nd = mask.dims.len();
    assert!(nd <= 4 && nd == mask.strides.len(), "mask rank");
    let c = *mask.dims.last().expect("rank >= 1");
    let rows = s.len() / c;
    assert_eq!(
        rows,
        mask.dims[..nd - 1].iter().product::<usize>(),
        "mask dims vs scores"
    );
    let reach = mask
        .dims
        .iter()
        .zip(&mask.strides)
        .map(|(d, s)| (d - 1) * s)
        .sum::<usize>();
    need("mask", mask.data.len(), reach + 1);
    let mut mi = ffi::MaskIndex {
        dims: [1; 4],
        strides: [0; 4],
        start: 0,
    };
    for k in 0..nd {
        mi.dims[4 - nd + k] = mask.dims[k] as i64;
        mi.strides[4 - nd + k] = mask.strides[k] as i64;
    }
    let mut y = unwritten::<T>(rows * c);
    // SAFETY: s and y hold rows * c elements; every mask index the strides reach is below
    // `reach + 1` (checked above).
    unsafe {
        (T::K.softmax_masked_fwd)(
            s.as_ptr(),
            mask.data.as_ptr(),
            &mi,
            y.as_mut_ptr(),
            int(rows),
            int(c),
            scale,
        )
    };
    y
}

/// softmax.cu backward: ds = scale * y * (dy - sum(dy * y)).
pub fn softmax_bwd<T: Float>(y: &[T], dy: &[T], c: usize, scale: f32) -> Vec<T> {
    need("dy", dy.len(), y.len());
    let rows = y.len() / c;
    let mut ds = unwritten::<T>(rows * c);
    // SAFETY: y, dy and ds hold rows * c elements.
    unsafe {
        (T::K.softmax_bwd)(
            y.as_ptr(),
            dy.as_ptr(),
            ds.as_mut_ptr(),
            int(rows),
            int(c),
            scale,
        )
    };
    ds
}

/// layer_norm.cu forward over rows of length `c = w.len()`.
pub fn layer_norm_fwd<T: Float>(x: &[T], w: &[T], b: &[T], eps: f32) -> Vec<T> {
    let c = w.len();
    need("bias", b.len(), c);
    let rows = x.len() / c;
    let mut y = unwritten::<T>(rows * c);
    // SAFETY: x and y hold rows * c elements, w and b hold c.
    unsafe {
        (T::K.layer_norm_fwd)(
            x.as_ptr(),
            w.as_ptr(),
            b.as_ptr(),
            y.as_mut_ptr(),
            int(rows),
            int(c),
            eps,
        )
    };
    y
}

/// layer_norm.cu backward (all three kernels): (dx, dw, db).
pub fn layer_norm_bwd<T: Float>(x: &[T], w: &[T], dy: &[T], eps: f32) -> (Vec<T>, Vec<T>, Vec<T>) {
    let c = w.len();
    need("dy", dy.len(), x.len());
    let rows = x.len() / c;
    let mut out = unwritten::<T>((rows + 2) * c);
    // SAFETY: x and dy hold rows * c elements, w holds c, out (rows + 2) * c as the launcher
    // lays out dx, dw, db; the scratch buffers are the wrapper's own.
    unsafe {
        (T::K.layer_norm_bwd)(
            x.as_ptr(),
            w.as_ptr(),
            dy.as_ptr(),
            out.as_mut_ptr(),
            int(rows),
            int(c),
            eps,
        )
    };
    let db = out.split_off((rows + 1) * c);
    let dw = out.split_off(rows * c);
    (out, dw, db)
}

/// rms_norm.cu forward over rows of length `c = w.len()`.
pub fn rms_norm_fwd<T: Float>(x: &[T], w: &[T], eps: f32) -> Vec<T> {
    let c = w.len();
    let rows = x.len() / c;
    let mut y = unwritten::<T>(rows * c);
    // SAFETY: x and y hold rows * c elements, w holds c.
    unsafe {
        (T::K.rms_norm_fwd)(
            x.as_ptr(),
            w.as_ptr(),
            y.as_mut_ptr(),
            int(rows),
            int(c),
            eps,
        )
    };
    y
}

/// rms_norm.cu backward (all three kernels): (dx, dw).
pub fn rms_norm_bwd<T: Float>(x: &[T], w: &[T], dy: &[T], eps: f32) -> (Vec<T>, Vec<T>) {
    let c = w.len();
    need("dy", dy.len(), x.len());
    let rows = x.len() / c;
    let mut out = unwritten::<T>((rows + 1) * c);
    // SAFETY: x and dy hold rows * c elements, w holds c, out (rows + 1) * c as the launcher
    // lays out dx, dw; the scratch buffers are the wrapper's own.
    unsafe {
        (T::K.rms_norm_bwd)(
            x.as_ptr(),
            w.as_ptr(),
            dy.as_ptr(),
            out.as_mut_ptr(),
            int(rows),
            int(c),
            eps,
        )
    };
    let dw = out.split_off(rows * c);
    (out, dw)
}

/// rope.cu over x (B, T, `heads`, `d`) with the tables cos, sin (T, `d`): the forward, or with
/// `backward` the backward formulas (x is then dy, and the result dx).
pub fn rope<T: Float>(
    x: &[T],
    cos: &[T],
    sin: &[T],
    heads: usize,
    d: usize,
    backward: bool,
) -> Vec<T> {
    assert!(
        d > 0 && d.is_multiple_of(2),
        "rope: head dim {d} must be even"
    );
    let seq = cos.len() / d;
    need("sin", sin.len(), seq * d);
    let rows = x.len() / d;
    assert!(
        rows == 0 || (heads > 0 && seq > 0),
        "rope: no heads or no table rows"
    );
    let mut y = unwritten::<T>(rows * d);
    // SAFETY: x and y hold rows * d elements, cos and sin seq * d; the kernel reads table row
    // (row / heads) % seq < seq.
    unsafe {
        (T::K.rope[backward as usize])(
            x.as_ptr(),
            cos.as_ptr(),
            sin.as_ptr(),
            y.as_mut_ptr(),
            int(rows),
            int(d / 2),
            int(heads),
            int(seq),
        )
    };
    y
}

/// GELU form: index into the kernel tables.
#[derive(Debug, Clone, Copy)]
pub enum Gelu {
    Tanh = 0,
    Erf = 1,
}

/// gelu.cu forward.
pub fn gelu_fwd<T: Float>(kind: Gelu, x: &[T]) -> Vec<T> {
    let mut y = unwritten::<T>(x.len());
    // SAFETY: x and y hold n elements.
    unsafe { (T::K.gelu_fwd[kind as usize])(x.as_ptr(), y.as_mut_ptr(), x.len()) };
    y
}

/// dropout.cu: x times the mask of draws `counter..` of `seed` (dropped below `p`, else
/// `scale`); the backward is the same launch on the gradient.
pub fn dropout<T: Float>(x: &[T], seed: u64, counter: u64, p: f32, scale: f32) -> Vec<T> {
    let mut y = unwritten::<T>(x.len());
    // SAFETY: x and y hold n elements.
    unsafe { (T::K.dropout)(x.as_ptr(), y.as_mut_ptr(), x.len(), seed, counter, p, scale) };
    y
}

/// gelu.cu backward: dx = dy * gelu'(x).
pub fn gelu_bwd<T: Float>(kind: Gelu, x: &[T], dy: &[T]) -> Vec<T> {
    need("dy", dy.len(), x.len());
    let mut dx = unwritten::<T>(x.len());
    // SAFETY: x, dy and dx hold n elements.
    unsafe { (T::K.gelu_bwd[kind as usize])(x.as_ptr(), dy.as_ptr(), dx.as_mut_ptr(), x.len()) };
    dx
}

/// The gate's activation of gated.cu: index into the kernel tables.
#[derive(Debug, Clone, Copy)]
pub enum Gate {
    Silu = 0,
    GeluTanh = 1,
    GeluErf = 2,
}

/// gated.cu forward: y = act(g) * u.
pub fn gated_fwd<T: Float>(gate: Gate, g: &[T], u: &[T]) -> Vec<T> {
    need("u", u.len(), g.len());
    let mut y = unwritten::<T>(g.len());
    // SAFETY: g, u and y hold n elements.
    unsafe { (T::K.gated_fwd[gate as usize])(g.as_ptr(), u.as_ptr(), y.as_mut_ptr(), g.len()) };
    y
}

/// gated.cu backward: (dg, du) = (dy * u * act'(g), dy * act(g)).
pub fn gated_bwd<T: Float>(gate: Gate, g: &[T], u: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
    let n = g.len();
    need("u", u.len(), n);
    need("dy", dy.len(), n);
    let mut out = unwritten::<T>(2 * n);
    // SAFETY: g, u and dy hold n elements, out 2n (dg, then du).
    unsafe {
        (T::K.gated_bwd[gate as usize])(g.as_ptr(), u.as_ptr(), dy.as_ptr(), out.as_mut_ptr(), n)
    };
    let du = out.split_off(n);
    (out, du)
}

/// bias_act.cu forward: act(x + b) over rows of `n = b.len()`; `act` None is the plain add.
pub fn bias_act_fwd<T: Float>(act: Option<Gelu>, x: &[T], b: &[T]) -> Vec<T> {
    let n = b.len();
    let rows = x.len() / n;
    let mut y = unwritten::<T>(rows * n);
    // SAFETY: x and y hold rows * n elements, b holds n.
    unsafe {
        (T::K.bias_act_fwd)(
            act_code(act),
            x.as_ptr(),
            b.as_ptr(),
            y.as_mut_ptr(),
            int(rows),
            int(n),
        )
    };
    y
}

/// bias_act.cu backward (both kernels): (dz, db), dz empty without an activation (it is dy).
pub fn bias_act_bwd<T: Float>(act: Option<Gelu>, x: &[T], b: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
    let n = b.len();
    let rows = dy.len() / n;
    if act.is_some() {
        need("x", x.len(), rows * n);
    }
    let dz_len = if act.is_some() { rows * n } else { 0 };
    let mut out = unwritten::<T>(dz_len + n);
    // SAFETY: dy holds rows * n elements, b n, x rows * n when read (with an activation), and
    // out dz_len + n as the launcher lays out dz and db.
    unsafe {
        (T::K.bias_act_bwd)(
            act_code(act),
            x.as_ptr(),
            b.as_ptr(),
            dy.as_ptr(),
            out.as_mut_ptr(),
            int(rows),
            int(n),
        )
    };
    let db = out.split_off(dz_len);
    (out, db)
}

/// The `act` argument of the bias_act wrappers.
fn act_code(act: Option<Gelu>) -> i32 {
    act.map_or(0, |g| g as i32 + 1)
}

/// embedding.cu forward: the rows of `table` (rows of `c`) at `ids`.
pub fn embedding_fwd<T: Float>(table: &[T], ids: &[u32], c: usize) -> Vec<T> {
    let vocab = table.len() / c.max(1);
    let mut y = unwritten::<T>(ids.len() * c);
    // SAFETY: table holds vocab * c elements, ids n, y n * c; ids past the table are not read
    // (the kernel writes NaN for them).
    unsafe {
        (T::K.embedding_fwd)(
            table.as_ptr(),
            ids.as_ptr(),
            y.as_mut_ptr(),
            int(ids.len()),
            int(c),
            int(vocab),
        )
    };
    y
}

/// embedding.cu backward: d table (vocab, c) from the positions grouped as the launcher groups
/// them ([`lantern_kernels::cpu::embedding::Buckets`], ids checked there).
pub fn embedding_bwd<T: Float>(
    ids: &[u32],
    dy: &[T],
    vocab: usize,
    c: usize,
    padding_idx: Option<u32>,
) -> Vec<T> {
    need("dy", dy.len(), ids.len() * c);
    let b = lantern_kernels::cpu::embedding::Buckets::new(ids, vocab, padding_idx)
        .expect("ids within the table");
    // Zeroed, as the launcher's `alloc_zeros`: rows of ids that never occur stay 0.
    let mut dt = vec![T::default(); vocab * c];
    // SAFETY: the buckets index positions < ids.len() (dy rows) and ids < vocab (dt rows);
    // starts has buckets + 1 entries.
    unsafe {
        (T::K.embedding_bwd)(
            b.ids.as_ptr(),
            b.starts.as_ptr(),
            b.positions.as_ptr(),
            dy.as_ptr(),
            dt.as_mut_ptr(),
            int(b.ids.len()),
            int(c),
        )
    };
    dt
}

/// cross_entropy.cu forward: (summed loss, per-row logsumexp, first out-of-range row).
pub fn cross_entropy_fwd<T: Float>(
    x: &[T],
    t: &[u32],
    w: Option<&[f32]>,
    v: usize,
) -> (f32, Vec<f32>, Option<usize>) {
    let n = t.len();
    need("logits", x.len(), n * v);
    if let Some(w) = w {
        need("weights", w.len(), n);
    }
    let (mut loss, mut lse, mut bad) = (f32::NAN, vec![f32::NAN; n], 0u32);
    // SAFETY: x holds n * v elements, t and lse n, w (when given) n; loss and bad are scalars.
    unsafe {
        (T::K.ce_fwd)(
            x.as_ptr(),
            t.as_ptr(),
            w.map_or(std::ptr::null(), |w| w.as_ptr()),
            int(n),
            int(v),
            &mut loss,
            lse.as_mut_ptr(),
            &mut bad,
        )
    };
    let bad = (bad != u32::MAX).then(|| bad as usize - 1);
    (loss, lse, bad)
}

/// cross_entropy.cu backward: dlogits (n * v) and, when `weight_grad`, dweights (n).
pub fn cross_entropy_bwd<T: Float>(
    x: &[T],
    t: &[u32],
    w: Option<&[f32]>,
    lse: Option<&[f32]>,
    g: f32,
    v: usize,
    weight_grad: bool,
) -> (Vec<T>, Option<Vec<T>>) {
    let n = t.len();
    need("logits", x.len(), n * v);
    for (what, s) in [("weights", w), ("lse", lse)] {
        if let Some(s) = s {
            need(what, s.len(), n);
        }
    }
    let mut dx = unwritten::<T>(n * v);
    let mut dw = unwritten::<T>(if weight_grad { n } else { 0 });
    // SAFETY: x and dx hold n * v elements; t, w, lse and dw (when given) hold n.
    unsafe {
        (T::K.ce_bwd)(
            x.as_ptr(),
            t.as_ptr(),
            w.map_or(std::ptr::null(), |w| w.as_ptr()),
            lse.map_or(std::ptr::null(), |l| l.as_ptr()),
            dx.as_mut_ptr(),
            if weight_grad {
                dw.as_mut_ptr()
            } else {
                std::ptr::null_mut()
            },
            g,
            int(n),
            int(v),
        )
    };
    (dx, weight_grad.then_some(dw))
}

/// The low-precision working copy adamw.cu writes beside the fp32 master weights.
pub enum Work<'a> {
    None,
    Bf16(&'a mut [bf16]),
    F16(&'a mut [f16]),
}

/// adamw.cu: one step over p, m, v in place (and the working copy).
pub fn adamw(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    work: Work<'_>,
    hyper: &lantern_kernels::AdamWHyper,
) {
    let n = p.len();
    for (what, len) in [("grad", g.len()), ("m", m.len()), ("v", v.len())] {
        need(what, len, n);
    }
    let args = hyper.scalars().expect("valid AdamW step");
    let (pp, gp, mp, vp) = (p.as_mut_ptr(), g.as_ptr(), m.as_mut_ptr(), v.as_mut_ptr());
    // SAFETY: p, g, m, v (and the working copy, checked below) hold n elements.
    unsafe {
        match work {
            Work::None => ffi::emu_adamw_f32(pp, gp, mp, vp, &args, n),
            Work::Bf16(w) => {
                need("work", w.len(), n);
                ffi::emu_adamw_bf16(pp, gp, mp, vp, w.as_mut_ptr(), &args, n)
            }
            Work::F16(w) => {
                need("work", w.len(), n);
                ffi::emu_adamw_f16(pp, gp, mp, vp, w.as_mut_ptr(), &args, n)
            }
        }
    }
}

/// Cuts the tensors into (address, length) chunks of at most `chunk` elements, as the Rust
/// launcher does with device pointers (CHUNK = 65536 there).
fn chunks(grads: &[&[f32]], chunk: usize) -> (Vec<u64>, Vec<u64>) {
    let (mut ptrs, mut lens) = (vec![], vec![]);
    for g in grads {
        for start in (0..g.len()).step_by(chunk) {
            ptrs.push(g[start..].as_ptr() as u64);
            lens.push(chunk.min(g.len() - start) as u64);
        }
    }
    (ptrs, lens)
}

/// grad_norm.cu: the global sum of squares of `grads * unscale`, in chunks of `chunk`.
pub fn grad_sumsq(grads: &[&[f32]], unscale: f32, chunk: usize) -> f64 {
    let (ptrs, lens) = chunks(grads, chunk);
    if ptrs.is_empty() {
        return 0.0;
    }
    // SAFETY: each (pointer, length) pair is a live slice of `grads`, borrowed for the call.
    unsafe { ffi::emu_grad_sumsq(ptrs.as_ptr(), lens.as_ptr(), int(ptrs.len()), unscale) }
}

/// grad_norm.cu: every gradient multiplied by `factor` in place.
pub fn grad_scale(grads: &mut [&mut [f32]], factor: f32, chunk: usize) {
    let views: Vec<&[f32]> = grads.iter().map(|g| &**g).collect();
    let (ptrs, lens) = chunks(&views, chunk);
    if ptrs.is_empty() {
        return;
    }
    // SAFETY: as above, and the slices are borrowed mutably by the caller for the call, so
    // nothing else reads them while the kernel writes.
    unsafe { ffi::emu_grad_scale(ptrs.as_ptr(), lens.as_ptr(), int(ptrs.len()), factor) };
}

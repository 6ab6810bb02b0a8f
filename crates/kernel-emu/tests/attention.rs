//! kernels/attention.cu on the CUDA emulator against the CPU attention of `lantern-kernels`
//! (`attention_fwd_ref`, `attention_bwd_ref`): forward y and logsumexp, backward dqkv, f32 and
//! bf16, head dims 32, 64 and 128, at lengths below, at and across the 64-row tiles; and packed
//! rows (positions restarting per sequence), with sequences shorter than, across and longer
//! than a tile.

use half::bf16;
// The emulated kernels' wrappers (cpp/attention.cpp) are declared below.
use lantern_kernel_emu as emu;
use lantern_kernels::cpu::attention::{attention_bwd_ref, attention_fwd_ref, Dims};
use lantern_kernels::Rng;

type Fwd<T> = unsafe extern "C" fn(*const T, *const u32, *mut T, *mut f32, i32, i32, i32, f32);
type Bwd<T> = unsafe extern "C" fn(
    *const T,
    *const u32,
    *const T,
    *const T,
    *const f32,
    *mut f32,
    *mut T,
    i32,
    i32,
    i32,
    f32,
);

macro_rules! decl {
    ($($fwd:ident, $bwd:ident, $t:ty;)*) => {
        extern "C" {
            $(
                #[allow(clippy::too_many_arguments)]
                fn $fwd(
                    qkv: *const $t,
                    pos: *const u32,
                    y: *mut $t,
                    lse: *mut f32,
                    b: i32,
                    t: i32,
                    h: i32,
                    scale: f32,
                );
                #[allow(clippy::too_many_arguments)]
                fn $bwd(
                    qkv: *const $t,
                    pos: *const u32,
                    y: *const $t,
                    dy: *const $t,
                    lse: *const f32,
                    dd: *mut f32,
                    dqkv: *mut $t,
                    b: i32,
                    t: i32,
                    h: i32,
                    scale: f32,
                );
            )*
        }
    };
}
decl! {
    emu_attention_fwd_f32_hd32, emu_attention_bwd_f32_hd32, f32;
    emu_attention_fwd_f32_hd64, emu_attention_bwd_f32_hd64, f32;
    emu_attention_fwd_f32_hd128, emu_attention_bwd_f32_hd128, f32;
    emu_attention_fwd_bf16_hd32, emu_attention_bwd_bf16_hd32, bf16;
    emu_attention_fwd_bf16_hd64, emu_attention_bwd_bf16_hd64, bf16;
    emu_attention_fwd_bf16_hd128, emu_attention_bwd_bf16_hd128, bf16;
}

/// A storage type of the kernels, its kernels by head dim, and the tolerance against the f32
/// CPU version.
trait Elem: Copy + Default {
    const FWD_TOL: f64;
    const BWD_TOL: f64;
    fn from(v: f32) -> Self;
    fn to(self) -> f32;
    fn kernels(hd: usize) -> (Fwd<Self>, Bwd<Self>);
}

impl Elem for f32 {
    // Same inputs, sums in another order.
    const FWD_TOL: f64 = 1e-5;
    const BWD_TOL: f64 = 1e-5;
    fn from(v: f32) -> Self {
        v
    }
    fn to(self) -> f32 {
        self
    }
    fn kernels(hd: usize) -> (Fwd<Self>, Bwd<Self>) {
        match hd {
            32 => (emu_attention_fwd_f32_hd32, emu_attention_bwd_f32_hd32),
            64 => (emu_attention_fwd_f32_hd64, emu_attention_bwd_f32_hd64),
            128 => (emu_attention_fwd_f32_hd128, emu_attention_bwd_f32_hd128),
            _ => panic!("no kernel for hd {hd}"),
        }
    }
}

impl Elem for bf16 {
    // The kernels round P and dS to bf16 for the tensor-core products (as FlashAttention
    // does), and the output once; the CPU keeps them in f32. Seen: at most 2.6e-3 forward,
    // 4.2e-3 backward.
    const FWD_TOL: f64 = 1e-2;
    const BWD_TOL: f64 = 1e-2;
    fn from(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn to(self) -> f32 {
        self.to_f32()
    }
    fn kernels(hd: usize) -> (Fwd<Self>, Bwd<Self>) {
        match hd {
            32 => (emu_attention_fwd_bf16_hd32, emu_attention_bwd_bf16_hd32),
            64 => (emu_attention_fwd_bf16_hd64, emu_attention_bwd_bf16_hd64),
            128 => (emu_attention_fwd_bf16_hd128, emu_attention_bwd_bf16_hd128),
            _ => panic!("no kernel for hd {hd}"),
        }
    }
}

/// max |a - b| / max |b|; a NaN or infinity in `a` fails. The scale has a floor of 1
/// (inputs and gradients are of order 1): at T = 1, dq and dk are zero up to rounding.
fn check(what: &str, a: &[f32], b: &[f32], tol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    assert!(
        a.iter().all(|x| x.is_finite()),
        "{what}: non-finite kernel output"
    );
    let scale = b.iter().fold(0f64, |m, &x| m.max(x.abs() as f64)).max(1.0);
    let diff = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    assert!(
        diff <= tol * scale,
        "{what}: max abs diff {diff:.3e} > {tol:.0e} * {scale:.3e}"
    );
}

/// Random values rounded to T: the kernel's input and the same values in f32 for the CPU.
fn data<T: Elem>(rng: &mut Rng, n: usize) -> (Vec<T>, Vec<f32>) {
    let h: Vec<T> = rng.normal_vec(n, 1.0).into_iter().map(T::from).collect();
    let f = h.iter().map(|x| x.to()).collect();
    (h, f)
}

/// One comparison. With `shift`, qkv and dy start one element into their buffers, so that
/// they are not 16-byte aligned and the kernels take their element-wise load path.
fn case<T: Elem>(rng: &mut Rng, b: usize, t: usize, h: usize, hd: usize, shift: bool) {
    packed_case::<T>(rng, (b, t, h, hd), shift, None);
}

/// [`case`], for packed rows when `positions` is given.
fn packed_case<T: Elem>(
    rng: &mut Rng,
    (b, t, h, hd): (usize, usize, usize, usize),
    shift: bool,
    positions: Option<&[u32]>,
) {
    let d = Dims { b, t, h, hd };
    let pos_ptr = positions.map_or(std::ptr::null(), |p| {
        assert_eq!(p.len(), b * t, "positions length");
        p.as_ptr()
    });
    let c = h * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let what = format!(
        "{} B={b} T={t} H={h} hd={hd} shift={shift} packed={}",
        std::any::type_name::<T>(),
        positions.is_some()
    );
    let off = shift as usize;
    let (fwd, bwd) = T::kernels(hd);
    let (qkv, qkv_f) = data::<T>(rng, b * t * 3 * c);
    let qkv_buf: Vec<T> = [vec![T::default(); off], qkv.clone()].concat();
    let qkv_ptr = qkv_buf[off..].as_ptr();
    let (y_ref, lse_ref) = attention_fwd_ref::<f32>(&qkv_f, d, scale as f64, positions);
    // Poisoned outputs: an element the kernels fail to write stays NaN and fails the check.
    let mut y = vec![T::from(f32::NAN); b * t * c];
    let mut lse = vec![f32::NAN; b * h * t];
    // SAFETY: qkv holds B*T*3C elements, y B*T*C and lse B*H*T, the sizes the launch covers.
    unsafe {
        fwd(
            qkv_ptr,
            pos_ptr,
            y.as_mut_ptr(),
            lse.as_mut_ptr(),
            b as i32,
            t as i32,
            h as i32,
            scale,
        )
    };
    let y_k: Vec<f32> = y.iter().map(|v| v.to()).collect();
    check(&format!("fwd y {what}"), &y_k, &y_ref, T::FWD_TOL);
    check(&format!("fwd lse {what}"), &lse, &lse_ref, 1e-5);

    // The backward takes the CPU forward's y (rounded to T) and lse, so only it is compared.
    let y_in: Vec<T> = y_ref.iter().map(|&v| T::from(v)).collect();
    let y_in_f: Vec<f32> = y_in.iter().map(|v| v.to()).collect();
    let (dy, dy_f) = data::<T>(rng, b * t * c);
    let dy_buf: Vec<T> = [vec![T::default(); off], dy.clone()].concat();
    let g_ref =
        attention_bwd_ref::<f32>(&qkv_f, &y_in_f, &dy_f, &lse_ref, d, scale as f64, positions);
    let mut dd = vec![f32::NAN; b * h * t];
    let mut g = vec![T::from(f32::NAN); b * t * 3 * c];
    // SAFETY: qkv and dqkv hold B*T*3C elements, y and dy B*T*C, lse and dd B*H*T.
    unsafe {
        bwd(
            qkv_ptr,
            pos_ptr,
            y_in.as_ptr(),
            dy_buf[off..].as_ptr(),
            lse_ref.as_ptr(),
            dd.as_mut_ptr(),
            g.as_mut_ptr(),
            b as i32,
            t as i32,
            h as i32,
            scale,
        )
    };
    let g_k: Vec<f32> = g.iter().map(|v| v.to()).collect();
    // dq, dk and dv separately: each has its own scale, and a bug in one must not hide under
    // another's larger values.
    for (part, name) in ["dq", "dk", "dv"].iter().enumerate() {
        let pick = |v: &[f32]| -> Vec<f32> {
            v.chunks_exact(3 * c)
                .flat_map(|row| row[part * c..(part + 1) * c].to_vec())
                .collect()
        };
        check(
            &format!("bwd {name} {what}"),
            &pick(&g_k),
            &pick(&g_ref),
            T::BWD_TOL,
        );
    }
}

fn all<T: Elem>(seed: u64) {
    let mut rng = Rng::new(seed);
    for hd in [32, 64] {
        for t in [1, 33, 64, 130] {
            case::<T>(&mut rng, 2, t, 2, hd, false);
        }
    }
    case::<T>(&mut rng, 1, 70, 1, 128, false);
    case::<T>(&mut rng, 2, 67, 2, 32, true);
    // Packed rows: short sequences within a tile, sequences across tile edges, one longer
    // than a tile starting mid-tile (its queries' keys begin tiles before their own), and a
    // row of one sequence (the plain causal case through the packed path).
    for (lengths, t, hd, shift) in [
        (&[&[1usize, 5, 2, 9][..], &[40, 3]][..], 48, 32, false),
        (&[&[10, 60, 30], &[64, 66]], 130, 64, false),
        (&[&[3, 100, 27]], 130, 32, true),
        (&[&[70]], 70, 128, false),
    ] {
        let b = lengths.len();
        let pos = lantern_kernels::packed_positions(lengths, t);
        packed_case::<T>(&mut rng, (b, t, 2, hd), shift, Some(&pos));
    }
}

#[test]
fn attention_f32_matches_the_cpu_op() {
    emu::in_every_order(|| {
        all::<f32>(61);
    });
}

#[test]
fn attention_bf16_matches_the_cpu_op() {
    emu::in_every_order(|| {
        all::<bf16>(62);
    });
}

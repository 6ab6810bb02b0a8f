//! Rotary position embedding (Su et al. 2021, "RoFormer"), as transformers'
//! `apply_rotary_pos_emb` applies it to Llama's queries and keys: for x (B, T, H, D) and tables
//! cos, sin (T, D) whose row t belongs to position t (or (B·T, D), a row per token: the
//! positions of packed sequences, which restart in each one),
//!   y = x * cos + rotate_half(x) * sin,   rotate_half(x) = cat(-x[.., D/2..], x[.., ..D/2]).
//! With the halves written out (x1 = x[.., ..D/2], c1 = cos[t, ..D/2], and so on):
//!   y1 = x1 c1 - x2 s1,   y2 = x2 c2 + x1 s2.
//! The backward is the transpose of that linear map:
//!   dx = dy * cos + rotate_half_T(dy * sin),   rotate_half_T(g) = cat(g[.., D/2..], -g[.., ..D/2]),
//!   dx1 = dy1 c1 + dy2 s2,   dx2 = dy2 c2 - dy1 s1.
//! For real tables (cos and sin of `cat(angles, angles)`) the two halves of each table are equal
//! and the backward is the rotation by the opposite angles; the formulas above hold for any
//! tables, and the tests use random ones so that a half read from the wrong side shows.
//!
//! The tables are constants (computed from the positions, not trained): the op returns no
//! gradient for them. Each (row, pair) is independent: no reduction, so the result does not
//! depend on the split over threads. Each output element is two products and one sum or
//! difference, each rounded once, in the order written above, which the CUDA kernel and
//! candle's composite ops (`reference::rope`) follow too.

use super::{float_dtype, for_row_blocks, simd_kernel, slice, with_float, Real};
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::WithDType;
use candle_core::{CpuStorage, CustomOp3, Error, Layout, Result, Shape, Tensor};

/// Forward: (x (B, T, H, D), cos (T, D), sin (T, D)) -> y (B, T, H, D).
#[derive(Debug, Clone, Copy)]
pub struct Rope;

/// Backward: (dy (B, T, H, D), cos (T, D), sin (T, D)) -> dx (B, T, H, D).
#[derive(Debug, Clone, Copy)]
pub struct RopeBwd;

/// The sizes the kernels need from x's shape (B, T, H, D).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RopeDims {
    /// The tables' rows: T (row t for every row of x at index t) or B·T (a row per token).
    /// Either way row `(r / H) % seq` belongs to row r of x seen as (B·T·H, D).
    pub seq: usize,
    /// H: heads per position.
    pub heads: usize,
    /// D: the head dimension, even.
    pub head_dim: usize,
}

/// Checks x (`what`: "x" or "dy") to be (B, T, H, D) with D even and positive, and both tables
/// to be (T, D) or (B·T, D), the same.
pub fn rope_dims(op: &str, what: &str, x: &Shape, cos: &Shape, sin: &Shape) -> Result<RopeDims> {
    let &[b, t, heads, head_dim] = x.dims() else {
        return Err(Error::msg(format!(
            "{op}: {what} must be (B, T, H, D), got {x:?}"
        )));
    };
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        return Err(Error::msg(format!(
            "{op}: {what} is {x:?}: the head dimension D must be even and positive"
        )));
    }
    let seq = cos.dims().first().copied().unwrap_or(0);
    for (name, table) in [("cos", cos), ("sin", sin)] {
        let rows_ok = seq == t || (seq == b * t && seq > 0);
        if !rows_ok || table.dims() != [seq, head_dim] {
            return Err(Error::msg(format!(
                "{op}: {what} is {x:?}, so {name} must be (T, D) = ({t}, {head_dim}) or \
                 (B·T, D) = ({}, {head_dim}), and the other table the same; {name} is {table:?}",
                b * t
            )));
        }
    }
    Ok(RopeDims {
        seq,
        heads,
        head_dim,
    })
}

simd_kernel! {
/// The forward (`backward` false) or backward (`backward` true) formulas of the module header
/// over rows of D elements; row r of x is position `(r / heads) % seq`.
fn rotate<T: Real>(
    x: &[T],
    cos: &[T],
    sin: &[T],
    heads: usize,
    d: usize,
    backward: bool,
) -> Vec<T> {
    let half = d / 2;
    let seq = cos.len() / d;
    let mut y = vec![T::ZERO; x.len()];
    for_row_blocks(&mut y, d, d, |row0, out| {
        for (r, yr) in out.chunks_exact_mut(d).enumerate() {
            let row = row0 + r;
            let pos = (row / heads) % seq;
            let xr = &x[row * d..][..d];
            let (c, s) = (&cos[pos * d..][..d], &sin[pos * d..][..d]);
            let (x1, x2) = (&xr[..half], &xr[half..][..half]);
            let (c1, c2) = (&c[..half], &c[half..][..half]);
            let (s1, s2) = (&s[..half], &s[half..][..half]);
            let (y1, y2) = yr.split_at_mut(half);
            let y2 = &mut y2[..half];
            if backward {
                for i in 0..half {
                    y1[i] = x1[i] * c1[i] + x2[i] * s2[i];
                    y2[i] = x2[i] * c2[i] - x1[i] * s1[i];
                }
            } else {
                for i in 0..half {
                    y1[i] = x1[i] * c1[i] - x2[i] * s1[i];
                    y2[i] = x2[i] * c2[i] + x1[i] * s2[i];
                }
            }
        }
    });
    y
}
}

/// The shared `cpu_fwd` of both ops: they differ only in the formulas.
fn cpu_rotate(
    op: &str,
    what: &str,
    (s_x, l_x): (&CpuStorage, &Layout),
    (s_cos, l_cos): (&CpuStorage, &Layout),
    (s_sin, l_sin): (&CpuStorage, &Layout),
    backward: bool,
) -> Result<(CpuStorage, Shape)> {
    let dims = rope_dims(op, what, l_x.shape(), l_cos.shape(), l_sin.shape())?;
    let y = with_float!(float_dtype(s_x, op)?, T => {
        T::to_cpu_storage_owned(rotate::<T>(
            slice(s_x, l_x, op, what)?,
            slice(s_cos, l_cos, op, "cos")?,
            slice(s_sin, l_sin, op, "sin")?,
            dims.heads,
            dims.head_dim,
            backward,
        ))
    });
    Ok((y, l_x.shape().clone()))
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "lantern-rope"
    }

    fn cpu_fwd(
        &self,
        s_x: &CpuStorage,
        l_x: &Layout,
        s_cos: &CpuStorage,
        l_cos: &Layout,
        s_sin: &CpuStorage,
        l_sin: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu_rotate(
            self.name(),
            "x",
            (s_x, l_x),
            (s_cos, l_cos),
            (s_sin, l_sin),
            false,
        )
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s_x: &CudaStorage,
        l_x: &Layout,
        s_cos: &CudaStorage,
        l_cos: &Layout,
        s_sin: &CudaStorage,
        l_sin: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dims = rope_dims(self.name(), "x", l_x.shape(), l_cos.shape(), l_sin.shape())?;
        crate::cuda::rope::rotate(false, dims, (s_x, l_x), (s_cos, l_cos), (s_sin, l_sin))
    }

    /// dx only: the tables are constants and get no gradient (`None`).
    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = dy.contiguous()?.apply_op3_no_bwd(cos, sin, &RopeBwd)?;
        Ok((Some(dx), None, None))
    }
}

impl CustomOp3 for RopeBwd {
    fn name(&self) -> &'static str {
        "lantern-rope-bwd"
    }

    fn cpu_fwd(
        &self,
        s_dy: &CpuStorage,
        l_dy: &Layout,
        s_cos: &CpuStorage,
        l_cos: &Layout,
        s_sin: &CpuStorage,
        l_sin: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu_rotate(
            self.name(),
            "dy",
            (s_dy, l_dy),
            (s_cos, l_cos),
            (s_sin, l_sin),
            true,
        )
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s_dy: &CudaStorage,
        l_dy: &Layout,
        s_cos: &CudaStorage,
        l_cos: &Layout,
        s_sin: &CudaStorage,
        l_sin: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dims = rope_dims(
            self.name(),
            "dy",
            l_dy.shape(),
            l_cos.shape(),
            l_sin.shape(),
        )?;
        crate::cuda::rope::rotate(true, dims, (s_dy, l_dy), (s_cos, l_cos), (s_sin, l_sin))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::{ops, reference, Rng};
    use candle_core::{DType, Device, Tensor, Var};

    /// x (B, T, H, D) and random tables (T, D): not cos and sin of angles, so that the two
    /// halves of a table row differ and a kernel that reads the wrong half fails.
    fn inputs(rng: &mut Rng, shape: &[usize], dtype: DType) -> (Tensor, Tensor, Tensor) {
        let (t, d) = (shape[1], shape[3]);
        (
            randn(rng, shape, 1.5, dtype),
            randn(rng, &[t, d], 1.0, dtype),
            randn(rng, &[t, d], 1.0, dtype),
        )
    }

    /// Real tables: cos and sin of `p * theta^(-2i/D)` for positions `start..start + t`,
    /// each half the same (Llama's).
    fn tables(start: usize, t: usize, d: usize, dtype: DType) -> (Tensor, Tensor) {
        let (mut c, mut s) = (Vec::new(), Vec::new());
        for p in start..start + t {
            let angles: Vec<f64> = (0..d / 2)
                .map(|i| p as f64 * 10_000f64.powf(-2.0 * i as f64 / d as f64))
                .collect();
            for _ in 0..2 {
                c.extend(angles.iter().map(|a| a.cos()));
                s.extend(angles.iter().map(|a| a.sin()));
            }
        }
        let t = |v: Vec<f64>| {
            Tensor::from_vec(v, (t, d), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        };
        (t(c), t(s))
    }

    /// One pair of each row (D = 2), odd halves, Llama head dims, a single position, and more
    /// rows than one parallel task.
    const SHAPES: [&[usize]; 8] = [
        &[1, 1, 1, 2],
        &[2, 3, 1, 4],
        &[2, 5, 3, 6],
        &[1, 7, 2, 66],
        &[3, 4, 4, 64],
        &[1, 1, 12, 128],
        &[2, 40, 6, 64],
        &[1, 300, 2, 32],
    ];

    #[test]
    fn matches_reference_forward_and_backward_f32() {
        let mut rng = Rng::new(31);
        for shape in SHAPES {
            let (x, cos, sin) = inputs(&mut rng, shape, DType::F32);
            compare_with_reference(
                &mut rng,
                &[x],
                &[true],
                |v| ops::rope(&v[0], &cos, &sin),
                |v| reference::rope(&v[0], &cos, &sin),
                1e-6,
            );
        }
    }

    #[test]
    fn matches_reference_forward_and_backward_f64() {
        let mut rng = Rng::new(32);
        for shape in SHAPES {
            let (x, cos, sin) = inputs(&mut rng, shape, DType::F64);
            compare_with_reference(
                &mut rng,
                &[x],
                &[true],
                |v| ops::rope(&v[0], &cos, &sin),
                |v| reference::rope(&v[0], &cos, &sin),
                1e-12,
            );
        }
    }

    /// Tables of a row per token (packed sequences, whose positions restart): the kernel and
    /// the reference agree forward and backward, and each row of x is turned as it is alone
    /// with the (T, D) tables of its own positions.
    #[test]
    fn tables_of_a_row_per_token() {
        let mut rng = Rng::new(39);
        let (b, t, h, d) = (3, 7, 2, 8);
        let (cos, sin) = tables(0, t, d, DType::F32);
        // Row 0: one sequence; row 1: 3 + 4; row 2: 2 + 2 + 3.
        let positions: Vec<u32> = [
            vec![0, 1, 2, 3, 4, 5, 6],
            vec![0, 1, 2, 0, 1, 2, 3],
            vec![0, 1, 0, 1, 0, 1, 2],
        ]
        .concat();
        let pos = Tensor::from_slice(&positions, b * t, &Device::Cpu).unwrap();
        let (pc, ps) = (
            cos.index_select(&pos, 0).unwrap(),
            sin.index_select(&pos, 0).unwrap(),
        );
        let x = randn(&mut rng, &[b, t, h, d], 1.0, DType::F32);
        compare_with_reference(
            &mut rng,
            std::slice::from_ref(&x),
            &[true],
            |v| ops::rope(&v[0], &pc, &ps),
            |v| reference::rope(&v[0], &pc, &ps),
            1e-6,
        );
        let all = ops::rope(&x, &pc, &ps).unwrap();
        for r in 0..b {
            let p = pos.narrow(0, r * t, t).unwrap();
            let (c, s) = (
                cos.index_select(&p, 0).unwrap(),
                sin.index_select(&p, 0).unwrap(),
            );
            let one = ops::rope(&x.narrow(0, r, 1).unwrap(), &c, &s).unwrap();
            let got = all.narrow(0, r, 1).unwrap();
            let diff = (got - one).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "row {r}");
        }
    }

    #[test]
    fn finite_differences_f64() {
        let mut rng = Rng::new(33);
        for shape in [&[1, 1, 1, 2][..], &[2, 3, 2, 6], &[1, 4, 3, 10]] {
            let (x, cos, sin) = inputs(&mut rng, shape, DType::F64);
            grad_check(&mut rng, &[x], &[true], |v| ops::rope(&v[0], &cos, &sin));
        }
    }

    /// Twice, on 1 and 3 threads, and with the baseline code instead of the AVX2/FMA code: the
    /// same bits, over more rows than one parallel task.
    #[test]
    fn bit_identical_across_runs_thread_counts_and_simd() {
        let mut rng = Rng::new(34);
        for shape in [&[4, 128, 8, 64][..], &[3, 37, 5, 66]] {
            let (x, cos, sin) = inputs(&mut rng, shape, DType::F32);
            assert_deterministic(&mut rng, &[x], |v| ops::rope(&v[0], &cos, &sin));
        }
    }

    /// With real tables each pair (i, i + D/2) turns by its angle: norms are kept, and the
    /// backward, the rotation back, returns x from y.
    #[test]
    fn real_tables_rotate_pairs_and_the_backward_turns_them_back() {
        let mut rng = Rng::new(35);
        let x = randn(&mut rng, &[2, 9, 3, 16], 1.0, DType::F64);
        let (cos, sin) = tables(5, 9, 16, DType::F64);
        let y = ops::rope(&x, &cos, &sin).unwrap();
        let norms = |t: &Tensor| {
            let h = t.narrow(3, 0, 8).unwrap().sqr().unwrap();
            (h + t.narrow(3, 8, 8).unwrap().sqr().unwrap()).unwrap()
        };
        assert_close(&norms(&y), &norms(&x), 1e-14, "pair norms");
        let back = y.apply_op3_no_bwd(&cos, &sin, &super::RopeBwd).unwrap();
        assert_close(&back, &x, 1e-14, "backward of the forward");
        // Position 0 (cos 1, sin 0) leaves x as it is.
        let (c0, s0) = tables(0, 1, 16, DType::F64);
        let x0 = x.narrow(1, 0, 1).unwrap();
        let y0 = ops::rope(&x0, &c0, &s0).unwrap();
        assert_close(&y0, &x0, 0.0, "position 0");
    }

    /// cos and sin are constants: tracked or not, backward gives them no gradient.
    #[test]
    fn tables_get_no_gradient() {
        let mut rng = Rng::new(36);
        let (x, cos, sin) = inputs(&mut rng, &[2, 3, 2, 4], DType::F32);
        let (vx, vc, vs) = (
            Var::from_tensor(&x).unwrap(),
            Var::from_tensor(&cos).unwrap(),
            Var::from_tensor(&sin).unwrap(),
        );
        let y = ops::rope(vx.as_tensor(), vc.as_tensor(), vs.as_tensor()).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        assert!(g.get(vx.as_tensor()).is_some());
        assert!(g.get(vc.as_tensor()).is_none());
        assert!(g.get(vs.as_tensor()).is_none());
    }

    #[test]
    fn strided_input_and_bf16_f16() {
        let mut rng = Rng::new(37);
        let (x, cos, sin) = inputs(&mut rng, &[2, 5, 3, 8], DType::F32);
        // (B, H, T, D) made (B, T, H, D) by a transpose, as attention code often holds it.
        let xt = x.transpose(1, 2).unwrap().contiguous().unwrap();
        let xt = xt.transpose(1, 2).unwrap();
        assert!(!xt.is_contiguous());
        let a = ops::rope(&xt, &cos, &sin).unwrap();
        let b = reference::rope(&x, &cos, &sin).unwrap();
        assert_close(&a, &b, 0.0, "strided");
        for dtype in [DType::BF16, DType::F16] {
            let (xb, cb, sb) = (
                x.to_dtype(dtype).unwrap(),
                cos.to_dtype(dtype).unwrap(),
                sin.to_dtype(dtype).unwrap(),
            );
            let a = ops::rope(&xb, &cb, &sb).unwrap();
            assert_eq!(a.dtype(), dtype);
            let b = reference::rope(&xb, &cb, &sb).unwrap();
            assert_close(&a, &b, 0.0, &format!("{dtype:?}"));
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut rng = Rng::new(38);
        let x = randn(&mut rng, &[2, 3, 2, 4], 1.0, DType::F32);
        let t = randn(&mut rng, &[3, 4], 1.0, DType::F32);
        let cases = [
            (
                x.clone(),
                randn(&mut rng, &[4, 3], 1.0, DType::F32),
                "cos must be (T, D) = (3, 4) or (B·T, D) = (6, 4), and the other table the \
                 same; cos is [4, 3]",
            ),
            (
                x.reshape((6, 2, 4)).unwrap(),
                t.clone(),
                "x must be (B, T, H, D), got [6, 2, 4]",
            ),
            (
                randn(&mut rng, &[2, 3, 2, 5], 1.0, DType::F32),
                randn(&mut rng, &[3, 5], 1.0, DType::F32),
                "must be even",
            ),
        ];
        for (x, cos, want) in cases {
            let e = ops::rope(&x, &cos, &cos).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
            let e = reference::rope(&x, &cos, &cos).unwrap_err();
            assert!(e.to_string().contains(want), "reference: {e}");
        }
        let e = ops::rope(&x, &t, &randn(&mut rng, &[2, 4], 1.0, DType::F32)).unwrap_err();
        assert!(e.to_string().contains("; sin is [2, 4]"), "{e}");
    }
}

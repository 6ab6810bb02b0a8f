//! Tests of the change to the backward pass listed in PATCHES.md: a node's first gradient
//! contribution is stored as it is instead of being added to zeros, and `backward` then gives
//! every gradient left in the store a contiguous storage of its own, from offset 0; and an
//! operand that leads to no variable gets no gradient from a matmul or an index-select.
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor, Var};

fn same_storage(a: &Tensor, b: &Tensor) -> bool {
    let (sa, _) = a.storage_and_layout();
    let (sb, _) = b.storage_and_layout();
    std::ptr::eq(&*sa, &*sb)
}

fn owned(g: &Tensor) -> bool {
    g.is_contiguous() && g.layout().start_offset() == 0
}

#[test]
fn the_operands_of_an_add_get_gradients_of_their_own() -> Result<()> {
    let dev = Device::Cpu;
    let x = Var::new(&[1f32, 2., 3.], &dev)?;
    let y = Var::new(&[4f32, 5., 6.], &dev)?;
    // Both operands of the add receive the same gradient tensor; clipping or an all-reduce
    // done in place on one must not change the other.
    let loss = ((x.as_tensor() + y.as_tensor())? * 2.0)?.sum_all()?;
    let grads = loss.backward()?;
    let (gx, gy) = (grads.get(&x).unwrap(), grads.get(&y).unwrap());
    assert!(!same_storage(gx, gy));
    assert_eq!(gx.to_vec1::<f32>()?, [2., 2., 2.]);
    assert_eq!(gy.to_vec1::<f32>()?, [2., 2., 2.]);
    Ok(())
}

#[test]
fn gradients_through_views_are_contiguous() -> Result<()> {
    let dev = Device::Cpu;
    let x = Var::new(&[[1f32, 2., 3.], [4., 5., 6.]], &dev)?;
    let w = Tensor::new(&[[1f32, 10.], [100., 1000.], [0.5, 0.25]], &dev)?;
    // The transpose's backward hands back a transposed view; the sum's, a broadcast one.
    let loss = (x.as_tensor().t()? * &w)?.sum_all()?;
    let grads = loss.backward()?;
    let gx = grads.get(&x).unwrap();
    assert!(owned(gx));
    assert_eq!(gx.to_vec2::<f32>()?, [[1., 100., 0.5], [10., 1000., 0.25]]);

    let s = Var::new(&[1f32, 2.], &dev)?;
    let grads = s.as_tensor().sum_all()?.backward()?;
    let gs = grads.get(&s).unwrap();
    assert!(owned(gs));
    assert_eq!(gs.to_vec1::<f32>()?, [1., 1.]);
    Ok(())
}

/// The identity, with a backward that returns the gradient in a chosen, unusual way.
struct Identity(Bwd);

#[derive(Clone, Copy)]
enum Bwd {
    /// A view into a larger tensor, at a non-zero offset.
    Offset,
    /// A tensor with one element too many.
    WrongShape,
}

impl CustomOp1 for Identity {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (a, b) = l.contiguous_offsets().unwrap();
        let v = s.as_slice::<f32>()?[a..b].to_vec();
        Ok((CpuStorage::F32(v), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let n = grad_res.elem_count();
        let padded = Tensor::cat(&[&grad_res.zeros_like()?, grad_res, grad_res], 0)?;
        Ok(Some(match self.0 {
            Bwd::Offset => padded.narrow(0, 1, n)?,
            Bwd::WrongShape => padded.narrow(0, 0, n + 1)?,
        }))
    }
}

#[test]
fn a_gradient_that_is_a_view_at_an_offset_is_copied() -> Result<()> {
    let x = Var::new(&[1f32, 2., 3.], &Device::Cpu)?;
    let y = x.as_tensor().apply_op1(Identity(Bwd::Offset))?;
    let grads = (y * 3.0)?.sum_all()?.backward()?;
    let gx = grads.get(&x).unwrap();
    assert!(owned(gx));
    assert_eq!(gx.to_vec1::<f32>()?, [0., 0., 3.]);
    Ok(())
}

#[test]
fn a_gradient_of_the_wrong_shape_is_an_error() -> Result<()> {
    let x = Var::new(&[1f32, 2., 3.], &Device::Cpu)?;
    let y = x.as_tensor().apply_op1(Identity(Bwd::WrongShape))?;
    let err = y.sum_all()?.backward().unwrap_err().to_string();
    assert!(err.contains("gradient of shape"), "{err}");
    Ok(())
}

/// Patch 6: an operand that leads to no variable gets no gradient from a matmul or an
/// index-select, and the operands that do get the gradients they always had.
#[test]
fn a_frozen_operand_gets_no_gradient_and_the_others_are_unchanged() -> Result<()> {
    let dev = Device::Cpu;
    let w0 = [[0.5f32, -1.0, 2.0], [1.5, 0.25, -0.75]];
    let x0 = [[1f32, 2.0], [3.0, -4.0]];
    // x (2, 2) @ w (2, 3), then an embedding lookup of rows of the product.
    let loss_of = |x: &Tensor, w: &Tensor| -> Result<Tensor> {
        let y = x.matmul(w)?; // (2, 3)
        let ids = Tensor::new(&[1u32, 0, 1], &dev)?;
        (y.index_select(&ids, 0)?.sqr()?).sum_all()
    };
    // Both variables: the reference gradients.
    let (x, w) = (Var::new(&x0, &dev)?, Var::new(&w0, &dev)?);
    let both = loss_of(x.as_tensor(), w.as_tensor())?.backward()?;
    // w a constant (a frozen weight): x's gradient is the same, w gets none.
    let (xv, wc) = (Var::new(&x0, &dev)?, Tensor::new(&w0, &dev)?);
    let g = loss_of(xv.as_tensor(), &wc)?.backward()?;
    assert_eq!(
        g.get(&xv).unwrap().to_vec2::<f32>()?,
        both.get(&x).unwrap().to_vec2::<f32>()?
    );
    assert!(g.get(&wc).is_none());
    // x a constant (an input): w's gradient is the same, x gets none.
    let (xc, wv) = (Tensor::new(&x0, &dev)?, Var::new(&w0, &dev)?);
    let g = loss_of(&xc, wv.as_tensor())?.backward()?;
    assert_eq!(
        g.get(&wv).unwrap().to_vec2::<f32>()?,
        both.get(&w).unwrap().to_vec2::<f32>()?
    );
    assert!(g.get(&xc).is_none());
    // An embedding table that is a constant gets no gradient; one that is a variable does.
    let table = Tensor::new(&w0, &dev)?;
    let scale = Var::new(&[2f32], &dev)?;
    let ids = Tensor::new(&[1u32, 1], &dev)?;
    let rows = table
        .index_select(&ids, 0)?
        .broadcast_mul(scale.as_tensor())?;
    let g = rows.sum_all()?.backward()?;
    assert!(g.get(&table).is_none());
    let gs = g.get(&scale).unwrap().to_vec1::<f32>()?[0];
    assert_eq!(gs, 2.0 * (1.5 + 0.25 - 0.75));
    Ok(())
}

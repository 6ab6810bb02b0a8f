//! Helpers of the unit tests.

use candle_core::{DType, Tensor};

/// Largest |a - b| over two tensors of the same shape, compared in f32.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    let (a, b) = (
        a.to_dtype(DType::F32).unwrap(),
        b.to_dtype(DType::F32).unwrap(),
    );
    let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
    d.max(0).unwrap().to_scalar::<f32>().unwrap()
}

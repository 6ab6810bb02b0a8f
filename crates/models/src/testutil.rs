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

/// A packed batch's logits against each sequence's alone: row 0 packs sequences of 5 and 7
/// tokens and 3 of padding, row 1 one sequence of 15. `packed` runs ids (B, T) with a
/// [`crate::Packing`], `alone` ids (1, n) unpacked; both return logits (B, T, V).
pub fn check_packed(
    packed: impl Fn(&Tensor, &crate::Packing) -> Tensor,
    alone: impl Fn(&Tensor) -> Tensor,
    vocab: u32,
    tol: f32,
) {
    use candle_core::Device;
    let dev = Device::Cpu;
    let seq =
        |n: usize, mul: u32| -> Vec<u32> { (0..n as u32).map(|i| (i * mul + 3) % vocab).collect() };
    let (a, b, c) = (seq(5, 7), seq(7, 11), seq(15, 13));
    let row0 = [a.clone(), b.clone(), vec![0; 3]].concat();
    let ids = Tensor::from_vec([row0, c.clone()].concat(), (2, 15), &dev).unwrap();
    let p = crate::Packing::new(&[vec![5, 7], vec![15]], 15, &dev).unwrap();
    let got = packed(&ids, &p);
    for (row, start, s) in [(0, 0, &a), (0, 5, &b), (1, 0, &c)] {
        let want = alone(&Tensor::from_slice(s, (1, s.len()), &dev).unwrap());
        let part = got
            .narrow(0, row, 1)
            .unwrap()
            .narrow(1, start, s.len())
            .unwrap();
        let d = max_diff(&part, &want);
        assert!(d < tol, "row {row}, sequence at {start}: differs by {d}");
    }
}

//! Lantern patches 2 and 3 (PATCHES.md). 2: a batched matmul with at least one product per
//! thread runs whole products on the threads. Every product must have the bits that the same
//! product gets on its own (gemm's split over threads), for every layout the batched path
//! takes. 3: the output is not zeroed before gemm writes it, so every element must be written.
//! Its own test binary: it sets RAYON_NUM_THREADS, which candle reads at each matmul.

use candle_core::{Device, Result, Tensor};

/// Three threads for candle's matmul (it reads RAYON_NUM_THREADS at each call), set once
/// before either test multiplies anything.
fn three_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::env::set_var("RAYON_NUM_THREADS", "3"));
}

fn bits(t: &Tensor) -> Result<Vec<u32>> {
    Ok(t.flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .map(|x| x.to_bits())
        .collect())
}

#[test]
fn each_product_of_a_batch_has_the_bits_it_has_alone() -> Result<()> {
    // Three threads: batches of 1 and 2 take the loop of gemm-parallel products, larger ones
    // the per-thread products.
    three_threads();
    let dev = Device::Cpu;
    for (b, m, n, k) in [
        (1, 5, 7, 3),
        (2, 64, 64, 32),
        (3, 17, 9, 33),
        (7, 64, 32, 64),
        (12, 33, 70, 19),
    ] {
        let a = Tensor::randn(0f32, 1.0, (b, m, k), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (b, k, n), &dev)?;
        let wt = Tensor::randn(0f32, 1.0, (b, n, k), &dev)?; // used as (b, k, n) through .t()
        let at = Tensor::randn(0f32, 1.0, (b, k, m), &dev)?; // used as (b, m, k) through .t()
                                                             // Each product alone takes the same layout as in the batch: gemm's bits depend on it.
        type Pick<'a> = &'a dyn Fn(usize) -> Result<Tensor>;
        let cases: [(Tensor, Tensor, Pick, Pick, &str); 3] = [
            (
                a.clone(),
                w.clone(),
                &|i| a.get(i),
                &|i| w.get(i),
                "contiguous",
            ),
            (
                a.clone(),
                wt.t()?,
                &|i| a.get(i),
                &|i| wt.get(i)?.t(),
                "transposed rhs",
            ),
            (
                at.t()?,
                w.clone(),
                &|i| at.get(i)?.t(),
                &|i| w.get(i),
                "transposed lhs",
            ),
        ];
        for (lhs, rhs, lhs_i, rhs_i, what) in cases {
            let got = lhs.matmul(&rhs)?;
            assert_eq!(got.dims(), &[b, m, n]);
            for i in 0..b {
                let alone = lhs_i(i)?.matmul(&rhs_i(i)?)?;
                assert_eq!(
                    bits(&got.get(i)?)?,
                    bits(&alone)?,
                    "{what}: product {i} of ({b}, {m}, {k}) x ({b}, {k}, {n})"
                );
            }
        }
        // Four dimensions, as attention's (B, H, T, hd) products are.
        let q = a.reshape((1, b, m, k))?;
        let kk = wt.reshape((1, b, n, k))?;
        let s = q.matmul(&kk.t()?)?;
        for i in 0..b {
            let alone = a.get(i)?.matmul(&wt.get(i)?.t()?)?;
            assert_eq!(bits(&s.get(0)?.get(i)?)?, bits(&alone)?, "4-d product {i}");
        }
    }
    Ok(())
}

/// Exact products of small integers against a triple loop, with the allocator's free memory
/// filled with NaN first: an element that gemm did not write would keep garbage. Also the
/// empty sum (k = 0), which gives zeros without gemm.
#[test]
fn every_element_of_the_output_is_written() -> Result<()> {
    three_threads();
    let dev = Device::Cpu;
    let ints = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7 + seed * 13) % 11) as f32 - 5.0)
            .collect()
    };
    for (b, m, n, k) in [
        (1, 33, 70, 19),
        (2, 64, 64, 32),
        (5, 9, 17, 3),
        (4, 0, 3, 2),
        (3, 4, 5, 0),
    ] {
        // Freed NaN buffers of the output's size, for the allocator to hand out again.
        for _ in 0..4 {
            drop(vec![f32::NAN; b * m * n + 64]);
        }
        let (a, w) = (ints(b * m * k, 1), ints(b * k * n, 2));
        let got = Tensor::from_vec(a.clone(), (b, m, k), &dev)?
            .matmul(&Tensor::from_vec(w.clone(), (b, k, n), &dev)?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut want = vec![0f32; b * m * n];
        for s in 0..b {
            for i in 0..m {
                for j in 0..n {
                    want[(s * m + i) * n + j] = (0..k)
                        .map(|p| a[(s * m + i) * k + p] * w[(s * k + p) * n + j])
                        .sum();
                }
            }
        }
        assert_eq!(got, want, "({b}, {m}, {k}) x ({b}, {k}, {n})");
    }
    Ok(())
}

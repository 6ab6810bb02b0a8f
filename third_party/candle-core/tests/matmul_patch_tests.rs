//! Lantern patch 2 (PATCHES.md): a batched matmul with at least one product per thread runs
//! whole products on the threads. Every product must have the bits that the same product gets
//! on its own (gemm's split over threads), for every layout the batched path takes.
//! Its own test binary: it sets RAYON_NUM_THREADS, which candle reads at each matmul.

use candle_core::{Device, Result, Tensor};

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
    std::env::set_var("RAYON_NUM_THREADS", "3");
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

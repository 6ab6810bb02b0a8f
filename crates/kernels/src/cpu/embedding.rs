//! Embedding lookup, `y[p] = table[ids[p]]`, with a deterministic backward that sums each
//! table row's gradient in the compute dtype (f32 for bf16 storage).
//!
//! candle's `embedding` is `index_select`, whose backward is `index_add`: on CUDA one thread per
//! column walks all N positions in turn (768 threads for a GPT-2 batch of 16384 tokens), and
//! every addition rounds to the storage dtype, so a frequent token's row of a bf16 table sums
//! hundreds of gradients in 8 bits of mantissa. Here the positions are grouped by id first
//! ([`Buckets`], a counting sort on the host: the ids of a batch are a few KB), and each
//! distinct id's row is the sum of its positions' gradients in position order. Rows of ids
//! not in the batch are zero. `padding_idx` (as `torch.nn.Embedding`'s) leaves that row's
//! gradient zero, as transformers' BERT embeddings do for the pad token.

use super::{float_dtype, for_row_blocks, simd_kernel, slice, with_float, Real};
use candle_core::backend::BackendStorage;
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::WithDType;
use candle_core::{CpuStorage, CustomOp2, DType, Error, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Forward: (table (V, C), ids (N) u32) -> (N, C).
#[derive(Debug, Clone, Copy)]
pub struct Embedding {
    /// A row whose gradient stays zero (`torch.nn.Embedding`'s `padding_idx`).
    pub padding_idx: Option<u32>,
}

/// Backward: (ids (N) u32, dy (N, C)) -> d table (vocab, C).
#[derive(Debug, Clone, Copy)]
pub struct EmbeddingBwd {
    pub vocab: usize,
    pub padding_idx: Option<u32>,
}

/// The positions of a batch grouped by id: distinct id `ids[k]` was looked up at
/// `positions[starts[k]..starts[k + 1]]`, in ascending order. `ids` ascend too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buckets {
    pub ids: Vec<u32>,
    pub starts: Vec<u32>,
    pub positions: Vec<u32>,
}

impl Buckets {
    /// Groups `ids` (one per position) by value with a counting sort, leaving out
    /// `skip`. An id `>= vocab` is an error naming its position.
    pub fn new(ids: &[u32], vocab: usize, skip: Option<u32>) -> Result<Self> {
        check_ids(ids, vocab)?;
        let mut count = vec![0u32; vocab + 1];
        for &id in ids {
            if Some(id) != skip {
                count[id as usize + 1] += 1;
            }
        }
        // count[v] becomes the first slot of id v: an exclusive prefix sum.
        for v in 0..vocab {
            count[v + 1] += count[v];
        }
        let mut positions = vec![0u32; count[vocab] as usize];
        let (mut distinct, mut starts) = (Vec::new(), Vec::new());
        for v in 0..vocab {
            if count[v + 1] > count[v] {
                distinct.push(v as u32);
                starts.push(count[v]);
            }
        }
        starts.push(count[vocab]);
        let mut next = count;
        for (p, &id) in ids.iter().enumerate() {
            if Some(id) != skip {
                positions[next[id as usize] as usize] = p as u32;
                next[id as usize] += 1;
            }
        }
        Ok(Self {
            ids: distinct,
            starts,
            positions,
        })
    }
}

/// Every id below `vocab`, else an error that names the first one that is not.
pub(crate) fn check_ids(ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().position(|&id| id as usize >= vocab) {
        None => Ok(()),
        Some(p) => Err(Error::msg(format!(
            "embedding: token id {} at position {p} is >= the table's {vocab} rows",
            ids[p]
        ))),
    }
}

/// The table's (V, C) and the number of ids, checked.
pub(crate) fn dims(op: &str, l_table: &Layout, l_ids: &Layout) -> Result<(usize, usize, usize)> {
    let (v, c) = l_table.shape().dims2().map_err(|_| {
        Error::msg(format!(
            "{op}: the table is {:?}, not (V, C)",
            l_table.shape()
        ))
    })?;
    let n = l_ids.shape().elem_count();
    if l_ids.shape().rank() != 1 {
        return Err(Error::msg(format!(
            "{op}: ids are {:?}, not (N)",
            l_ids.shape()
        )));
    }
    Ok((v, c, n))
}

/// dy's (N, C) for the backward, checked against the number of ids.
pub(crate) fn bwd_dims(op: &str, l_ids: &Layout, l_dy: &Layout) -> Result<(usize, usize)> {
    let (n, c) = l_dy.shape().dims2()?;
    let ids = l_ids.shape().elem_count();
    if ids != n {
        return Err(Error::msg(format!(
            "{op}: {ids} ids, dy is {:?}",
            l_dy.shape()
        )));
    }
    Ok((n, c))
}

fn ids_u32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [u32]> {
    if s.dtype() != DType::U32 {
        return Err(Error::msg(format!(
            "{op}: ids must be u32, got {:?}",
            s.dtype()
        )));
    }
    slice(s, l, op, "ids")
}

fn fwd<T: Real>(table: &[T], ids: &[u32], c: usize) -> Vec<T> {
    let mut y = vec![T::ZERO; ids.len() * c];
    for_row_blocks(&mut y, c, c, |row0, out| {
        for (r, yr) in out.chunks_exact_mut(c).enumerate() {
            let id = ids[row0 + r] as usize;
            yr.copy_from_slice(&table[id * c..][..c]);
        }
    });
    y
}

simd_kernel! {
fn bwd<T: Real>(b: &Buckets, dy: &[T], vocab: usize, c: usize) -> Vec<T> {
    // Each distinct id's row in a compact buffer, in parallel, then placed in the table.
    let mut rows = vec![T::ZERO; b.ids.len() * c];
    let sum_rows = |(k, row): (usize, &mut [T])| {
        for &p in &b.positions[b.starts[k] as usize..b.starts[k + 1] as usize] {
            for (acc, &g) in row.iter_mut().zip(&dy[p as usize * c..][..c]) {
                *acc += g;
            }
        }
    };
    if dy.len() > super::PAR_MIN_ELEMS {
        rows.par_chunks_mut(c).enumerate().for_each(sum_rows);
    } else {
        rows.chunks_mut(c).enumerate().for_each(sum_rows);
    }
    let mut out = vec![T::ZERO; vocab * c];
    for (&id, row) in b.ids.iter().zip(rows.chunks_exact(c)) {
        out[id as usize * c..][..c].copy_from_slice(row);
    }
    out
}
}

impl CustomOp2 for Embedding {
    fn name(&self) -> &'static str {
        "lantern-embedding"
    }

    fn cpu_fwd(
        &self,
        s_t: &CpuStorage,
        l_t: &Layout,
        s_ids: &CpuStorage,
        l_ids: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (v, c, n) = dims(op, l_t, l_ids)?;
        let ids = ids_u32(s_ids, l_ids, op)?;
        check_ids(ids, v)?;
        let y = with_float!(float_dtype(s_t, op)?, T => {
            T::to_cpu_storage_owned(fwd::<T>(slice(s_t, l_t, op, "table")?, ids, c))
        });
        Ok((y, Shape::from((n, c))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s_t: &CudaStorage,
        l_t: &Layout,
        s_ids: &CudaStorage,
        l_ids: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (v, c, n) = dims(self.name(), l_t, l_ids)?;
        crate::cuda::embedding::fwd((s_t, l_t), (s_ids, l_ids), v, c, n)
    }

    fn bwd(
        &self,
        table: &Tensor,
        ids: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let op = EmbeddingBwd {
            vocab: table.dim(0)?,
            padding_idx: self.padding_idx,
        };
        let dt = ids.apply_op2_no_bwd(&dy.contiguous()?, &op)?;
        Ok((Some(dt), None))
    }
}

impl CustomOp2 for EmbeddingBwd {
    fn name(&self) -> &'static str {
        "lantern-embedding-bwd"
    }

    fn cpu_fwd(
        &self,
        s_ids: &CpuStorage,
        l_ids: &Layout,
        s_dy: &CpuStorage,
        l_dy: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (_, c) = bwd_dims(op, l_ids, l_dy)?;
        let ids = ids_u32(s_ids, l_ids, op)?;
        let buckets = Buckets::new(ids, self.vocab, self.padding_idx)?;
        let dt = with_float!(float_dtype(s_dy, op)?, T => {
            T::to_cpu_storage_owned(bwd::<T>(&buckets, slice(s_dy, l_dy, op, "dy")?, self.vocab, c))
        });
        Ok((dt, Shape::from((self.vocab, c))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s_ids: &CudaStorage,
        l_ids: &Layout,
        s_dy: &CudaStorage,
        l_dy: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (_, c) = bwd_dims(self.name(), l_ids, l_dy)?;
        crate::cuda::embedding::bwd(self, (s_ids, l_ids), (s_dy, l_dy), c)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::Buckets;
    use crate::{ops, reference, Rng};
    use candle_core::{DType, Device, Tensor, Var};

    fn ids(rng: &mut Rng, n: usize, vocab: usize) -> Tensor {
        // Skewed: about half the positions hit the first few ids, as frequent tokens do.
        let v: Vec<u32> = (0..n)
            .map(|_| match rng.below(2) {
                0 => rng.below(4.min(vocab as u64)) as u32,
                _ => rng.below(vocab as u64) as u32,
            })
            .collect();
        Tensor::from_vec(v, n, &Device::Cpu).unwrap()
    }

    #[test]
    fn buckets_group_positions_by_id_in_order() {
        let b = Buckets::new(&[3, 1, 3, 0, 1, 3], 5, None).unwrap();
        assert_eq!(b.ids, vec![0, 1, 3]);
        assert_eq!(b.starts, vec![0, 1, 3, 6]);
        assert_eq!(b.positions, vec![3, 1, 4, 0, 2, 5]);
        let b = Buckets::new(&[3, 1, 3, 0, 1, 3], 5, Some(3)).unwrap();
        assert_eq!(
            (b.ids, b.starts, b.positions),
            (vec![0, 1], vec![0, 1, 3], vec![3, 1, 4])
        );
        let e = Buckets::new(&[1, 5, 2], 5, None).unwrap_err().to_string();
        assert!(
            e.contains("token id 5 at position 1 is >= the table's 5 rows"),
            "{e}"
        );
    }

    #[test]
    fn matches_reference_forward_and_backward() {
        let mut rng = Rng::new(41);
        for (n, v, c) in [(1, 1, 1), (7, 5, 3), (300, 50, 33), (64, 1000, 8)] {
            let table = randn(&mut rng, &[v, c], 1.0, DType::F32);
            let ids = ids(&mut rng, n, v);
            let xs = [table, ids];
            // Sums in position order, as index_add does: identical in f32, not merely close.
            compare_with_reference(
                &mut rng,
                &xs,
                &[true, false],
                |x| ops::embedding(&x[0], &x[1], None),
                |x| reference::embedding(&x[0], &x[1], None),
                0.0,
            );
            compare_with_reference(
                &mut rng,
                &xs,
                &[true, false],
                |x| ops::embedding(&x[0], &x[1], Some(1.min(v as u32 - 1))),
                |x| reference::embedding(&x[0], &x[1], Some(1.min(v as u32 - 1))),
                0.0,
            );
        }
    }

    #[test]
    fn finite_differences_f64() {
        let mut rng = Rng::new(42);
        let table = randn(&mut rng, &[6, 4], 1.0, DType::F64);
        let ids = ids(&mut rng, 9, 6);
        grad_check(&mut rng, &[table, ids], &[true, false], |x| {
            ops::embedding(&x[0], &x[1], None)
        });
    }

    #[test]
    fn bit_identical_across_runs_and_thread_counts() {
        let mut rng = Rng::new(43);
        let table = randn(&mut rng, &[500, 64], 1.0, DType::F32);
        let ids = ids(&mut rng, 2000, 500);
        assert_deterministic(&mut rng, &[table, ids], |x| {
            ops::embedding(&x[0], &x[1], None)
        });
    }

    #[test]
    fn padding_row_gets_no_gradient_and_bf16_rows_sum_in_f32() {
        let dev = Device::Cpu;
        let table = Var::from_tensor(&Tensor::ones((3, 2), DType::BF16, &dev).unwrap()).unwrap();
        // 4096 lookups of id 1 and one of the padding id 2.
        let mut v = vec![1u32; 4096];
        v.push(2);
        let ids = Tensor::from_vec(v, 4097, &dev).unwrap();
        let y = ops::embedding(table.as_tensor(), &ids, Some(2)).unwrap();
        assert_eq!(y.dims(), [4097, 2]);
        // Upstream gradient 1 + 2^-7: summed exactly, 4096 of them are 4128, which bf16 holds.
        let r = Tensor::full(1.0f32 + 1.0 / 128.0, (4097, 2), &dev).unwrap();
        let loss = (y.to_dtype(DType::F32).unwrap() * r)
            .unwrap()
            .sum_all()
            .unwrap();
        let g = loss.backward().unwrap();
        let dt: Vec<Vec<f32>> = g
            .get(table.as_tensor())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(dt, vec![vec![0.0; 2], vec![4128.0; 2], vec![0.0; 2]]);
    }

    #[test]
    fn an_id_past_the_table_is_an_error() {
        let table = Tensor::zeros((4, 2), DType::F32, &Device::Cpu).unwrap();
        let ids = Tensor::from_vec(vec![0u32, 4], 2, &Device::Cpu).unwrap();
        let e = ops::embedding(&table, &ids, None).unwrap_err().to_string();
        assert!(e.contains("token id 4 at position 1"), "{e}");
    }
}

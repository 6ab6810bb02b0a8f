//! Bucketed all-reduce: many gradients, a few large collectives.
//!
//! GPT-2 124M has ~150 parameter tensors, many of them 768-element biases and norms. One
//! collective per tensor pays the per-call latency (microseconds on NVLink, far more over MPI
//! and TCP) ~150 times a step and sends messages too small to reach the link's bandwidth. Like
//! PyTorch DDP we pack consecutive tensors into flat fp32 buckets of about 25 MiB, reduce each
//! bucket once and unpack. Callers pass gradients in the order they become ready (the reverse
//! of the forward order), which is the order an overlapped version would reduce them in.

use crate::{Communicator, Error, ReduceOp, Result};
use candle_core::{DType, Tensor};

/// PyTorch DDP's default `bucket_cap_mb`.
pub const DEFAULT_BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// One tensor's place in a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Index into the caller's tensor list.
    pub tensor: usize,
    /// First element in the bucket, and element count.
    pub offset: usize,
    pub len: usize,
}

/// Which tensors go into which bucket: decided from the sizes alone, so it is the same on every
/// rank (a precondition of the collectives matching up) and testable without a world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketPlan {
    pub buckets: Vec<Vec<Slot>>,
}

impl BucketPlan {
    /// Greedy in order: a tensor joins the current bucket while it fits in `bucket_bytes` of
    /// fp32; a tensor larger than a bucket gets one of its own; empty tensors are skipped.
    pub fn new(numels: &[usize], bucket_bytes: usize) -> Self {
        let cap = (bucket_bytes / 4).max(1);
        let mut buckets: Vec<Vec<Slot>> = Vec::new();
        let mut fill = 0;
        for (i, &n) in numels.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let start_new = match buckets.last() {
                None => true,
                Some(_) => fill + n > cap,
            };
            if start_new {
                buckets.push(Vec::new());
                fill = 0;
            }
            let b = buckets.last_mut().expect("a bucket was just pushed");
            b.push(Slot {
                tensor: i,
                offset: fill,
                len: n,
            });
            fill += n;
        }
        Self { buckets }
    }
}

/// All-reduces `tensors` (any shapes, f32 or bf16, on the communicator's device) through
/// fp32 buckets and returns the reduced tensors with the original shapes and dtypes.
pub fn all_reduce_bucketed(
    comm: &Communicator,
    tensors: &[Tensor],
    op: ReduceOp,
    bucket_bytes: usize,
) -> Result<Vec<Tensor>> {
    if bucket_bytes < 4 {
        return Err(Error::Buffer {
            op: "bucketed all_reduce",
            msg: format!("bucket size {bucket_bytes} bytes holds no f32"),
        });
    }
    let numels: Vec<usize> = tensors.iter().map(Tensor::elem_count).collect();
    let plan = BucketPlan::new(&numels, bucket_bytes);
    let mut out: Vec<Option<Tensor>> = vec![None; tensors.len()];
    let n_buckets = plan.buckets.len();
    for (b, slots) in plan.buckets.iter().enumerate() {
        // (sum of numels,): a fresh tensor that owns its storage, so reducing it in place
        // touches nothing else.
        let flat: Vec<Tensor> = slots
            .iter()
            .map(|s| tensors[s.tensor].flatten_all()?.to_dtype(DType::F32))
            .collect::<candle_core::Result<_>>()?;
        let bucket = Tensor::cat(&flat, 0)?;
        let label = format!("{} of bucket {}/{n_buckets}", op.name(), b + 1);
        comm.all_reduce_labeled(&bucket, op, &label)?;
        for s in slots {
            let t = &tensors[s.tensor];
            out[s.tensor] = Some(
                bucket
                    .narrow(0, s.offset, s.len)?
                    .reshape(t.shape())?
                    .to_dtype(t.dtype())?,
            );
        }
    }
    // Empty tensors took no part: they come back as they were.
    Ok(out
        .into_iter()
        .zip(tensors)
        .map(|(o, t)| o.unwrap_or_else(|| t.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn slot(tensor: usize, offset: usize, len: usize) -> Slot {
        Slot {
            tensor,
            offset,
            len,
        }
    }

    #[test]
    fn plan_packs_in_order_and_isolates_large_tensors() {
        // 40-byte buckets = 10 floats.
        let plan = BucketPlan::new(&[4, 6, 3, 25, 0, 2, 9], 40);
        assert_eq!(
            plan.buckets,
            vec![
                vec![slot(0, 0, 4), slot(1, 4, 6)],
                vec![slot(2, 0, 3)],
                vec![slot(3, 0, 25)],
                vec![slot(5, 0, 2)],
                vec![slot(6, 0, 9)],
            ]
        );
    }

    #[test]
    fn single_world_round_trips_shapes_and_dtypes() {
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 12., &dev)
            .unwrap()
            .reshape((3, 4))
            .unwrap();
        let b = Tensor::arange(0f32, 5., &dev)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let out = all_reduce_bucketed(
            &Communicator::single(),
            &[a.clone(), b.clone()],
            ReduceOp::Avg,
            16,
        )
        .unwrap();
        assert_eq!(out[0].dims(), &[3, 4]);
        assert_eq!(
            out[0].to_vec2::<f32>().unwrap(),
            a.to_vec2::<f32>().unwrap()
        );
        assert_eq!(out[1].dtype(), DType::BF16);
        assert_eq!(
            out[1]
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            vec![0., 1., 2., 3., 4.]
        );
    }
}

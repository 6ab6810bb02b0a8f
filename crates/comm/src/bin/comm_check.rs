//! Runs the collectives in a real multi-process MPI world and checks every result against the
//! value each rank can compute on its own. Started by the tests under `mpirun`:
//!
//!   mpirun -np 2 lantern-comm-check collectives   every collective; prints `rank R/N: ... passed`
//!   mpirun -np 2 lantern-comm-check timeout       rank 1 never joins; rank 0 must time out
//!
//! Exits 1 with a message naming the failed check.

use candle_core::{DType, Device, Tensor};
use half::bf16;
use lantern_comm::{all_reduce_bucketed, env, BackendKind, CommOptions, Communicator, ReduceOp};
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let r = match mode.as_str() {
        "collectives" => collectives(),
        "timeout" => timeout(),
        other => Err(format!("unknown mode {other:?}: collectives or timeout").into()),
    };
    if let Err(e) = r {
        eprintln!("comm check failed: {e}");
        std::process::exit(1);
    }
}

fn join() -> Res<Communicator> {
    let opts = CommOptions::from_env(&env::process_env())?;
    Ok(Communicator::from_env(
        BackendKind::Mpi,
        &Device::Cpu,
        &opts,
    )?)
}

/// A value each rank can compute for any rank: multiples of 0.25 in [-2, 2], exact in bf16,
/// so sums and halves over a few ranks are exact too.
fn value(rank: usize, tensor: usize, i: usize) -> f32 {
    ((rank * 7 + tensor * 13 + i * 31) % 17) as f32 * 0.25 - 2.0
}

fn sum_over_ranks(n: usize, tensor: usize, i: usize) -> f32 {
    (0..n).map(|r| value(r, tensor, i)).sum()
}

fn check(name: &str, got: &[f32], want: impl Fn(usize) -> f32) -> Res<()> {
    for (i, &g) in got.iter().enumerate() {
        if g != want(i) {
            return Err(format!("{name}: element {i} is {g}, expected {}", want(i)).into());
        }
    }
    Ok(())
}

fn collectives() -> Res<()> {
    let comm = join()?;
    let (r, n) = (comm.rank(), comm.world_size());
    if n < 2 {
        return Err(format!("expected a world of at least 2, got {n}").into());
    }
    let len = 1000;
    let mut checks = 0;

    // Host f32, sum and average.
    for (t, op) in [(0, ReduceOp::Sum), (1, ReduceOp::Avg)] {
        let mut buf: Vec<f32> = (0..len).map(|i| value(r, t, i)).collect();
        comm.all_reduce_f32(&mut buf, op)?;
        let div = if op == ReduceOp::Avg { n as f32 } else { 1.0 };
        check(&format!("host f32 {op:?}"), &buf, |i| {
            sum_over_ranks(n, t, i) / div
        })?;
        checks += 1;
    }

    // Host bf16.
    let mut buf: Vec<bf16> = (0..len).map(|i| bf16::from_f32(value(r, 2, i))).collect();
    comm.all_reduce_bf16(&mut buf, ReduceOp::Sum)?;
    let wide: Vec<f32> = buf.iter().map(|x| x.to_f32()).collect();
    check("host bf16 Sum", &wide, |i| sum_over_ranks(n, 2, i))?;
    checks += 1;

    // Tensors (f32 and bf16, sum and average), in place.
    for (t, dtype, op) in [
        (3, DType::F32, ReduceOp::Sum),
        (4, DType::F32, ReduceOp::Avg),
        (5, DType::BF16, ReduceOp::Sum),
        (6, DType::BF16, ReduceOp::Avg),
    ] {
        let data: Vec<f32> = (0..len).map(|i| value(r, t, i)).collect();
        let x = Tensor::from_vec(data, (10, 100), &Device::Cpu)?.to_dtype(dtype)?;
        comm.all_reduce(&x, op)?;
        let got: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let div = if op == ReduceOp::Avg { n as f32 } else { 1.0 };
        check(&format!("tensor {dtype:?} {op:?}"), &got, |i| {
            sum_over_ranks(n, t, i) / div
        })?;
        checks += 1;
    }

    // Broadcast from the last rank: host f32 and a bf16 tensor.
    let root = n - 1;
    let mut buf: Vec<f32> = (0..len).map(|i| value(r, 7, i)).collect();
    comm.broadcast_f32(&mut buf, root)?;
    check("host f32 broadcast", &buf, |i| value(root, 7, i))?;
    let x = Tensor::from_vec(
        (0..len).map(|i| value(r, 8, i)).collect::<Vec<f32>>(),
        len,
        &Device::Cpu,
    )?
    .to_dtype(DType::BF16)?;
    comm.broadcast(&x, root)?;
    check(
        "tensor bf16 broadcast",
        &x.to_dtype(DType::F32)?.to_vec1()?,
        |i| value(root, 8, i),
    )?;
    checks += 2;

    // Barrier: rank 0 arrives late; every other rank must have waited for it.
    let late = Duration::from_millis(1000);
    if r == 0 {
        std::thread::sleep(late);
    }
    let t0 = Instant::now();
    comm.barrier()?;
    let waited = t0.elapsed();
    if r != 0 && waited < late / 2 {
        return Err(format!("barrier returned after {waited:?}, before rank 0 arrived").into());
    }
    checks += 1;

    // Bucketed all-reduce of gradient-like tensors (mixed shapes and dtypes, 1 KiB buckets so
    // that some share a bucket and one spans its own) equals per-tensor reduction.
    let shapes: [&[usize]; 6] = [&[16, 8], &[8], &[300], &[3, 5, 7], &[1], &[64, 2]];
    let grads: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(t, s)| {
            let numel: usize = s.iter().product();
            let data: Vec<f32> = (0..numel).map(|i| value(r, 10 + t, i)).collect();
            let x = Tensor::from_vec(data, *s, &Device::Cpu)?;
            if t % 2 == 1 {
                x.to_dtype(DType::BF16)
            } else {
                Ok(x)
            }
        })
        .collect::<candle_core::Result<_>>()?;
    let bucketed = all_reduce_bucketed(&comm, &grads, ReduceOp::Avg, 1024)?;
    for (t, (g, b)) in grads.iter().zip(&bucketed).enumerate() {
        if b.dims() != g.dims() || b.dtype() != g.dtype() {
            return Err(format!(
                "bucketed tensor {t}: {:?} {:?}, expected {:?} {:?}",
                b.dims(),
                b.dtype(),
                g.dims(),
                g.dtype()
            )
            .into());
        }
        let single = g.copy()?;
        comm.all_reduce(&single, ReduceOp::Avg)?;
        let want: Vec<f32> = single.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let got: Vec<f32> = b.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        check(&format!("bucketed tensor {t} vs per-tensor"), &got, |i| {
            want[i]
        })?;
        check(&format!("bucketed tensor {t} vs expected"), &got, |i| {
            sum_over_ranks(n, 10 + t, i) / n as f32
        })?;
    }
    checks += 1;

    println!("rank {r}/{n}: {checks} collective checks passed");
    Ok(())
}

/// Rank 1 never reaches the collective; the others must time out (the test sets
/// LANTERN_COMM_TIMEOUT) rather than wait for it.
fn timeout() -> Res<()> {
    let comm = join()?;
    if comm.rank() == 1 {
        std::thread::sleep(Duration::from_secs(120));
        return Err("rank 1 outlived the others' timeout".into());
    }
    comm.set_step(7);
    let mut buf = vec![1f32; 16];
    comm.all_reduce_f32(&mut buf, ReduceOp::Sum)?;
    Err("the all-reduce returned although rank 1 never joined".into())
}

//! The emulator's own semantics: warp shuffles, 2-D blocks, shared memory across blocks, the
//! deadlock report for a shuffle in divergent code, and the run orders that expose races.

use lantern_kernel_emu::selftest::{
    emu_selftest_block_sums, emu_selftest_divergent_shuffle, emu_selftest_neighbour_read,
    emu_selftest_shuffles, emu_selftest_warp_ahead, emu_selftest_wmma_matmul,
};
use lantern_kernel_emu::{with_order, Order};
use std::process::Command;

#[test]
fn warp_shuffles_follow_cuda() {
    let mut out = vec![0i32; 2 * 32 * 4];
    // SAFETY: the kernel writes 2 * 32 * 4 ints.
    unsafe { emu_selftest_shuffles(out.as_mut_ptr()) };
    for y in 0..2i32 {
        for lane in 0..32i32 {
            let o = &out[((y * 32 + lane) * 4) as usize..][..4];
            let v = |l: i32| l * 10 + y;
            let down = if lane + 3 < 32 { lane + 3 } else { lane };
            let up = if lane >= 2 { lane - 2 } else { lane };
            assert_eq!(o, [v(lane ^ 5), v(down), v(up), v(7)], "y {y} lane {lane}");
        }
    }
}

#[test]
fn blocks_reduce_their_own_rows_in_shared_memory() {
    let x: Vec<f32> = (0..192).map(|i| i as f32).collect();
    let mut out = [0f32; 3];
    // SAFETY: 3 blocks of 64 read x (192) and write out (3).
    unsafe { emu_selftest_block_sums(x.as_ptr(), out.as_mut_ptr()) };
    let want: Vec<f32> = (0..3).map(|b| x[b * 64..][..64].iter().sum()).collect();
    assert_eq!(out.to_vec(), want);
}

/// Run in a child process (the emulator aborts): the report names the barrier each thread
/// waits at.
#[test]
fn a_shuffle_in_divergent_code_is_reported_as_a_deadlock() {
    if std::env::var_os("LANTERN_EMU_DEADLOCK_CHILD").is_some() {
        let mut out = [0f32; 32];
        // SAFETY: the kernel writes 32 floats (it aborts before that).
        unsafe { emu_selftest_divergent_shuffle(out.as_mut_ptr()) };
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let o = Command::new(exe)
        .args([
            "--exact",
            "a_shuffle_in_divergent_code_is_reported_as_a_deadlock",
            "--nocapture",
        ])
        .env("LANTERN_EMU_DEADLOCK_CHILD", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the child should abort");
    assert!(err.contains("deadlock in block (0, 0, 0)"), "{err}");
    assert!(err.contains("thread (0, 0, 0): a warp barrier"), "{err}");
    assert!(err.contains("thread (16, 0, 0): __syncthreads"), "{err}");
}

#[test]
fn wmma_tiles_multiply_like_a_matmul() {
    use half::bf16;
    // Small integers: exact in bf16 and in every float sum, so the comparison is exact.
    let a: Vec<bf16> = (0..32 * 48)
        .map(|i| bf16::from_f32((i % 7) as f32 - 3.0))
        .collect();
    // b is column-major (48 x 32): element (k, j) at j * 48 + k.
    let b: Vec<bf16> = (0..32 * 48)
        .map(|i| bf16::from_f32((i % 5) as f32 - 2.0))
        .collect();
    let mut c = vec![0f32; 32 * 32];
    // SAFETY: a and b hold 32 * 48 elements, c 32 * 32.
    unsafe { emu_selftest_wmma_matmul(a.as_ptr(), b.as_ptr(), c.as_mut_ptr()) };
    for i in 0..32 {
        for j in 0..32 {
            let s: f32 = (0..48)
                .map(|k| a[i * 48 + k].to_f32() * b[j * 48 + k].to_f32())
                .sum();
            assert_eq!(c[i * 32 + j], 0.5 * s, "c[{i}][{j}]");
        }
    }
}

/// Two races, each hidden by one order and shown by the other: a thread reading its lower
/// neighbour's write with no barrier (index order hides it), and a warp overwriting what
/// another warp has still to read, with only a warp barrier between (reverse order hides it).
#[test]
fn races_show_in_one_of_the_two_orders() {
    let run = |order, kernel: unsafe extern "C" fn(*mut i32)| {
        let mut out = [0i32; 64];
        // SAFETY: both kernels write 64 ints.
        with_order(order, || unsafe { kernel(out.as_mut_ptr()) });
        out.to_vec()
    };
    let neighbours: Vec<i32> = (0..64).map(|i| (i - 1).max(0)).collect();
    assert_eq!(run(Order::Index, emu_selftest_neighbour_read), neighbours);
    let reverse = run(Order::Reverse, emu_selftest_neighbour_read);
    assert_eq!(reverse[0], 0);
    assert!(
        reverse[1..].iter().all(|&v| v == -1),
        "every read should come before its neighbour's write: {reverse:?}"
    );
    assert_eq!(run(Order::Reverse, emu_selftest_warp_ahead), vec![1; 64]);
    let index = run(Order::Index, emu_selftest_warp_ahead);
    assert_eq!(index[..32], [1; 32], "warp 0 reads before its own write");
    assert_eq!(index[32..], [2; 32], "warp 1 reads after warp 0's write");
    // The order is restored after `with_order`: the default is index order.
    let mut out = [0i32; 64];
    // SAFETY: the kernel writes 64 ints.
    unsafe { emu_selftest_neighbour_read(out.as_mut_ptr()) };
    assert_eq!(out.to_vec(), neighbours);
}

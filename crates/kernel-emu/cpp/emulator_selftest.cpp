// Kernels that check the emulator itself (tests/emulator.rs): warp shuffles and 2-D blocks
// against values worked out by hand, and a divergent shuffle that must abort as a deadlock.
#include "prelude.h"

// block (32, 2): out[y][lane] = xor-, down-, up- and broadcast-shuffles of lane * 10 + y.
__global__ void shuffles(int* out) {
  const int lane = threadIdx.x, y = threadIdx.y;
  const int v = lane * 10 + y;
  int* o = out + (y * 32 + lane) * 4;
  o[0] = __shfl_xor_sync(0xffffffffu, v, 5);
  o[1] = __shfl_down_sync(0xffffffffu, v, 3);
  o[2] = __shfl_up_sync(0xffffffffu, v, 2);
  o[3] = __shfl_sync(0xffffffffu, v, 7);
}
extern "C" void emu_selftest_shuffles(int* out) {
  emu::launch(dim3(1), dim3(32, 2), shuffles, out);
}

// Lanes 0..15 shuffle while lanes 16..31 wait at __syncthreads: undefined on a GPU, a
// deadlock report here.
__global__ void divergent_shuffle(float* out) {
  float v = (float)threadIdx.x;
  if (threadIdx.x < 16)
    v = __shfl_xor_sync(0xffffffffu, v, 1);
  else
    __syncthreads();
  out[threadIdx.x] = v;
}
extern "C" void emu_selftest_divergent_shuffle(float* out) {
  emu::launch(dim3(1), dim3(32), divergent_shuffle, out);
}

// A block-wide reduction through shared memory across 3 blocks of 64: blocks run in turn and
// each sees its own values (static shared memory is reused, never stale across barriers).
__global__ void block_sums(const float* x, float* out) {
  __shared__ float s[64];
  s[threadIdx.x] = x[blockIdx.x * 64 + threadIdx.x];
  __syncthreads();
  for (int k = 32; k > 0; k >>= 1) {
    if ((int)threadIdx.x < k) s[threadIdx.x] += s[threadIdx.x + k];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = s[0];
}
extern "C" void emu_selftest_block_sums(const float* x, float* out) {
  emu::launch(dim3(3), dim3(64), block_sums, x, out);
}

// A race that index order hides: each thread reads its lower neighbour's slot with no barrier
// after the writes. In index order the neighbour has always written first; in reverse order
// it has not, and the read sees the slot's earlier contents (-1 here).
__global__ void neighbour_read(int* out) {
  __shared__ int s[64];
  s[threadIdx.x] = -1;
  __syncthreads();
  s[threadIdx.x] = (int)threadIdx.x;
  // (the missing __syncthreads)
  out[threadIdx.x] = threadIdx.x > 0 ? s[threadIdx.x - 1] : 0;
}
extern "C" void emu_selftest_neighbour_read(int* out) {
  emu::launch(dim3(1), dim3(64), neighbour_read, out);
}

// A race that lockstep hides: after the barrier every thread reads s, and thread 0 then
// overwrites it with no __syncthreads between, only a warp barrier. Run warp by warp in index
// order, warp 0 gets past its warp barrier and writes before warp 1 reads (it sees 2); in
// reverse order warp 1 reads first and every thread sees 1.
__global__ void warp_ahead(int* out) {
  __shared__ int s;
  if (threadIdx.x == 0) s = 1;
  __syncthreads();
  const int seen = s;
  __syncwarp();
  if (threadIdx.x == 0) s = 2;  // (the missing __syncthreads before it)
  out[threadIdx.x] = seen;
}
extern "C" void emu_selftest_warp_ahead(int* out) {
  emu::launch(dim3(1), dim3(64), warp_ahead, out);
}

// C (32x32, float) = A (32x48, bf16, row-major) * B (48x32, bf16, column-major) with WMMA:
// four warps, one 16x16 tile of C each, three k-steps; the tile goes through shared memory
// and is scaled by 0.5 per element on the way (an elementwise op on the fragment).
__global__ void wmma_matmul(const bf16* a, const bf16* b, float* c) {
  using namespace nvcuda;
  __shared__ float tile[4][16 * 16];
  const int warp = threadIdx.x / 32, ti = warp / 2, tj = warp % 2;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.f);
  for (int k = 0; k < 48; k += 16) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;
    wmma::load_matrix_sync(fa, a + ti * 16 * 48 + k, 48);
    wmma::load_matrix_sync(fb, b + tj * 16 * 48 + k, 48);
    wmma::mma_sync(acc, fa, fb, acc);
  }
  for (int i = 0; i < acc.num_elements; i++) acc.x[i] *= 0.5f;
  wmma::store_matrix_sync(tile[warp], acc, 16, wmma::mem_row_major);
  const int lane = threadIdx.x % 32;
  for (int e = lane; e < 256; e += 32)
    c[(ti * 16 + e / 16) * 32 + tj * 16 + e % 16] = tile[warp][e];
}
extern "C" void emu_selftest_wmma_matmul(const bf16* a, const bf16* b, float* c) {
  emu::launch(dim3(1), dim3(128), wmma_matmul, a, b, c);
}

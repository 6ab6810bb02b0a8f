// Embedding lookup and its backward (CPU reference: crates/kernels/src/cpu/embedding.rs).
//
// The backward takes the positions grouped by id on the host (`Buckets`: distinct ids, their
// first slots, the positions in ascending order): one block column per distinct id sums its
// positions' dy rows in that order, in float, and writes the id's row once. No atomics, so the
// result does not depend on timing, and nothing walks all N positions per column as candle's
// index_add does. Rows of ids not in the batch are zeroed by the launcher beforehand.
#include "common.cuh"

// grid (ceil(c / 256), <= n), block (256): column blockIdx.x * 256 + tid of positions
// blockIdx.y, + gridDim.y, ... The launcher checked every id against `vocab`; an id past it
// would give a NaN row here rather than a read outside the table.
template <typename T>
__device__ void fwd(const T* table, const uint32_t* ids, T* y, int n, int c, int vocab) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= c) return;
  for (int p = blockIdx.y; p < n; p += gridDim.y) {
    const uint32_t id = ids[p];
    y[(size_t)p * c + col] = id < (uint32_t)vocab ? table[(size_t)id * c + col] : from_f<T>(NAN);
  }
}

// grid (buckets, ceil(c / 256)), block (256): d_table[ids[k]] = the sum over
// positions[starts[k] .. starts[k + 1]) of dy's rows, column blockIdx.y * 256 + tid.
template <typename T>
__device__ void bwd(const uint32_t* ids, const uint32_t* starts, const uint32_t* positions,
                    const T* dy, T* d_table, int c) {
  const int col = blockIdx.y * blockDim.x + threadIdx.x;
  if (col >= c) return;
  const int k = blockIdx.x;
  float acc = 0.f;
  for (uint32_t i = starts[k]; i < starts[k + 1]; i++) acc += to_f(dy[(size_t)positions[i] * c + col]);
  d_table[(size_t)ids[k] * c + col] = from_f<T>(acc);
}

#define INSTANTIATE(S, T)                                                                     \
  extern "C" __global__ void embedding_fwd_##S(const T* table, const uint32_t* ids, T* y,     \
                                               int n, int c, int vocab) {                     \
    fwd<T>(table, ids, y, n, c, vocab);                                                       \
  }                                                                                           \
  extern "C" __global__ void embedding_bwd_##S(const uint32_t* ids, const uint32_t* starts,   \
                                               const uint32_t* positions, const T* dy,        \
                                               T* d_table, int c) {                           \
    bwd<T>(ids, starts, positions, dy, d_table, c);                                           \
  }
INSTANTIATE(f32, float)
INSTANTIATE(bf16, __nv_bfloat16)

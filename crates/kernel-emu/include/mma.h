// nvcuda::wmma for the CUDA emulator: the warp-level matrix API over 16x16x16 tiles with
// bf16/half inputs and float accumulators (and 8-wide tf32 tiles), as used on sm_80+.
//
// Each emulated lane holds the whole tile in logical row-major order and does the whole
// product itself, so `num_elements` is the tile size rather than the GPU's per-lane share. A
// kernel that applies the same operation to every `x[i]` (scaling, conversion) behaves the
// same on both; one that assumes which lane holds which element does not, and is not portable
// anyway. Loads read memory when the lane calls them: as on the GPU, a tile other threads
// write must be published by __syncwarp/__syncthreads first. Stores write only a
// lane-strided share of the tile and end with a warp barrier, so reading the stored tile
// needs no further sync within the warp, which matches the GPU, where each lane stores its
// own fragment elements and the store is warp-synchronous.
#pragma once
#include "cuda_bf16.h"
#include "cuda_fp16.h"

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int rows = std::is_same<Use, matrix_b>::value ? K : M;
  static constexpr int cols = std::is_same<Use, matrix_a>::value ? K : N;
  static constexpr int num_elements = rows * cols;
  using element_type =
      typename std::conditional<std::is_same<T, precision::tf32>::value, float, T>::type;
  element_type x[num_elements];
  element_type& at(int r, int c) { return x[r * cols + c]; }
  const element_type& at(int r, int c) const { return x[r * cols + c]; }
};

template <typename Use, int M, int N, int K, typename T, typename L, typename V>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, const V& v) {
  for (int i = 0; i < f.num_elements; i++) f.x[i] = (typename fragment<Use, M, N, K, T, L>::element_type)v;
}

// matrix_a / matrix_b: the layout is part of the fragment type.
template <typename Use, int M, int N, int K, typename T, typename L, typename P>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const P* p, unsigned ldm) {
  static_assert(std::is_same<L, row_major>::value || std::is_same<L, col_major>::value,
                "matrix_a/matrix_b fragments name their layout");
  for (int r = 0; r < f.rows; r++)
    for (int c = 0; c < f.cols; c++) {
      const size_t i = std::is_same<L, row_major>::value ? (size_t)r * ldm + c : (size_t)c * ldm + r;
      f.at(r, c) = (typename fragment<Use, M, N, K, T, L>::element_type)(float)p[i];
    }
}

// Accumulators: the layout is given at the call.
template <int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T, void>& f, const T* p, unsigned ldm,
                             layout_t l) {
  for (int r = 0; r < M; r++)
    for (int c = 0; c < N; c++)
      f.at(r, c) = p[l == mem_row_major ? (size_t)r * ldm + c : (size_t)c * ldm + r];
}

template <int M, int N, int K, typename T>
inline void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T, void>& f, unsigned ldm,
                              layout_t l) {
  for (int i = emu::lane(); i < M * N; i += 32) {
    const int r = i / N, c = i % N;
    p[l == mem_row_major ? (size_t)r * ldm + c : (size_t)c * ldm + r] = f.at(r, c);
  }
  emu::syncwarp();
}

// d = a * b + c, products and sums in float (tensor cores keep at least float precision).
template <int M, int N, int K, typename TA, typename LA, typename TB, typename LB, typename TC>
inline void mma_sync(fragment<accumulator, M, N, K, TC, void>& d,
                     const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TB, LB>& b,
                     const fragment<accumulator, M, N, K, TC, void>& c) {
  fragment<accumulator, M, N, K, TC, void> out;
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      float s = (float)c.at(i, j);
      for (int k = 0; k < K; k++) s += (float)a.at(i, k) * (float)b.at(k, j);
      out.at(i, j) = (TC)s;
    }
  d = out;
}

}  // namespace wmma
}  // namespace nvcuda

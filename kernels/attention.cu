// Fused causal self-attention, FlashAttention-2 structure (Dao 2023), forward and a
// deterministic backward (CPU reference: crates/kernels/src/cpu/attention.rs, which states the
// formulas). qkv is (B, T, 3C) as c_attn writes it (q, k, v at columns 0, C, 2C; head h at
// h*HD within each), y and dy are (B, T, C), lse and D are (B, H, T) f32, dqkv is (B, T, 3C).
//
// Every kernel: grid (ceil(T / 64), H, B), 128 threads = 4 warps; warp w owns 16 rows of the
// block's 64 (query rows in the forward and dQ, key rows in dK/dV) and loops over tiles of
// the other side, staged in static shared memory by the whole block. Tile products are 16x16
// warp tiles (struct Mma): bf16 through WMMA (tensor cores, float accumulators), f32 through
// scalar FMA loops with a lane layout of our own. Nothing reads a WMMA fragment's elements
// by position: row-wise work (softmax, rescaling, the final store) goes through shared
// memory. No atomics: each output element is written by one thread after a fixed-order sum,
// so two runs give the same bits.
//
// Head dimensions 32, 64 and 128 are instantiated; the Rust side falls back to the composite
// op for others. T may be any length >= 1: rows past the end are loaded as zeros and masked.
//
// Packed rows: with `pos` (B, T) u32 (null: one sequence a row), each token's position within
// its own sequence, query i sees keys i - pos[i] ..= i only (a position past i reads as i).
// The forward and dQ start at the block's first visible key tile and warps skip tiles that
// hold none of their rows' keys; dK/dV skip query tiles that see none of the warp's keys.
// Nothing assumes the positions count up by one: any first key per query is honoured.
#include "common.cuh"
#include <mma.h>

namespace attn {

constexpr int WARPS = 4;
constexpr int ROWS = 16 * WARPS;  // rows of a block: one query (or key) tile
constexpr int THREADS = 32 * WARPS;
constexpr unsigned FULL = 0xffffffffu;
constexpr int NO_KEY = 0x7fffffff;  // past every key: the identity of a minimum of first keys
// Static shared memory per block must stay under 48 KiB; this leaves room for the row stats.
constexpr int SMEM_LIMIT = 46 * 1024;

// Shared bytes of the forward for a key tile of bk rows: K and V tiles, and per warp the f32
// scores and the probabilities in the storage type.
__host__ __device__ constexpr int fwd_smem(int bk, int hd, int sz) {
  return 2 * bk * hd * sz + WARPS * 16 * bk * (4 + sz);
}
// Of the backward kernels for an inner tile of bq rows: two tiles (Q and dO, or K and V),
// per warp two f32 score tiles (S, dP) and two in the storage type (P, dS), and three row
// statistics (lse, D, first key).
__host__ __device__ constexpr int bwd_smem(int bq, int hd, int sz) {
  return 2 * bq * hd * sz + WARPS * 16 * bq * (8 + 2 * sz) + 3 * bq * 4;
}
// The largest inner tile (64, 32 or 16 rows) that fits.
__host__ __device__ constexpr int fwd_tile(int hd, int sz) {
  return fwd_smem(64, hd, sz) <= SMEM_LIMIT ? 64 : fwd_smem(32, hd, sz) <= SMEM_LIMIT ? 32 : 16;
}
__host__ __device__ constexpr int bwd_tile(int hd, int sz) {
  return bwd_smem(64, hd, sz) <= SMEM_LIMIT ? 64 : bwd_smem(32, hd, sz) <= SMEM_LIMIT ? 32 : 16;
}

// The first key query i of row b sees: i - pos[b, i] (a position past i reads as i); 0
// without positions and for rows past the end.
__device__ __forceinline__ int first_key(const uint32_t* pos, int b, int t, int i) {
  if (!pos || i >= t) return 0;
  const uint32_t p = pos[(long long)b * t + i];
  return i - (int)min(p, (uint32_t)i);
}

__device__ __forceinline__ int warp_min_int(int v) {
  for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(FULL, v, o));
  return v;
}

// The smallest of the block's warps' `v` (each warp's lanes agree on theirs). The whole block
// calls it; `slot` is WARPS ints of shared memory.
__device__ __forceinline__ int block_min_int(int v, int* slot) {
  if ((threadIdx.x & 31) == 0) slot[threadIdx.x >> 5] = v;
  __syncthreads();
  int m = slot[0];
  for (int w = 1; w < WARPS; ++w) m = min(m, slot[w]);
  return m;
}

// 16x16 warp-tile products: C += A * B with A held in registers (a fragment), B read from
// shared memory (row-major) either as B or as B^T, C a float accumulator in registers.
template <typename T> struct Mma;

template <> struct Mma<__nv_bfloat16> {
  using A = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __nv_bfloat16,
                                   nvcuda::wmma::row_major>;
  using C = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>;
  // A from a row-major 16x16 tile at p (32-byte aligned, ldm a multiple of 8).
  static __device__ __forceinline__ void load_a(A& a, const __nv_bfloat16* p, int ldm) {
    nvcuda::wmma::load_matrix_sync(a, p, ldm);
  }
  // c += a * X, X the row-major 16x16 tile at p.
  static __device__ __forceinline__ void mma(C& c, const A& a, const __nv_bfloat16* p, int ldm) {
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __nv_bfloat16,
                           nvcuda::wmma::row_major>
        b;
    nvcuda::wmma::load_matrix_sync(b, p, ldm);
    nvcuda::wmma::mma_sync(c, a, b, c);
  }
  // c += a * X^T, X the row-major 16x16 tile at p (read as a column-major B).
  static __device__ __forceinline__ void mma_t(C& c, const A& a, const __nv_bfloat16* p, int ldm) {
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __nv_bfloat16,
                           nvcuda::wmma::col_major>
        b;
    nvcuda::wmma::load_matrix_sync(b, p, ldm);
    nvcuda::wmma::mma_sync(c, a, b, c);
  }
  static __device__ __forceinline__ void zero(C& c) { nvcuda::wmma::fill_fragment(c, 0.f); }
  // A uniform elementwise op: valid whatever the element-to-lane mapping.
  static __device__ __forceinline__ void scale(C& c, float s) {
    for (int i = 0; i < c.num_elements; ++i) c.x[i] *= s;
  }
  static __device__ __forceinline__ void store_c(float* p, const C& c, int ldm) {
    nvcuda::wmma::store_matrix_sync(p, c, ldm, nvcuda::wmma::mem_row_major);
  }
  static __device__ __forceinline__ void load_c(C& c, const float* p, int ldm) {
    nvcuda::wmma::load_matrix_sync(c, p, ldm, nvcuda::wmma::mem_row_major);
  }
};

// f32: lane l holds row l / 2, columns (l % 2) * 8 .. + 8 of an A or C tile; B is read from
// shared memory at each product. Only for tests and the selfcheck, not for speed.
template <> struct Mma<float> {
  struct A {
    float x[8];
  };
  using C = A;
  static __device__ __forceinline__ int row() { return (threadIdx.x & 31) >> 1; }
  static __device__ __forceinline__ int col0() { return (threadIdx.x & 1) * 8; }
  static __device__ __forceinline__ void load_a(A& a, const float* p, int ldm) {
    for (int i = 0; i < 8; ++i) a.x[i] = p[row() * ldm + col0() + i];
  }
  // c += a * B with B(k, n) = at(k, n); a's row is split over this lane and its neighbour.
  template <typename F>
  static __device__ __forceinline__ void mma_by(C& c, const A& a, F at) {
    const bool hi = threadIdx.x & 1;
    for (int k = 0; k < 8; ++k) {
      const float mine = a.x[k];
      const float other = __shfl_xor_sync(FULL, mine, 1);
      const float a_lo = hi ? other : mine;  // A(row, k)
      const float a_hi = hi ? mine : other;  // A(row, k + 8)
      for (int n = 0; n < 8; ++n) {
        c.x[n] = fmaf(a_lo, at(k, col0() + n), c.x[n]);
        c.x[n] = fmaf(a_hi, at(k + 8, col0() + n), c.x[n]);
      }
    }
  }
  static __device__ __forceinline__ void mma(C& c, const A& a, const float* p, int ldm) {
    mma_by(c, a, [&](int k, int n) { return p[k * ldm + n]; });
  }
  static __device__ __forceinline__ void mma_t(C& c, const A& a, const float* p, int ldm) {
    mma_by(c, a, [&](int k, int n) { return p[n * ldm + k]; });
  }
  static __device__ __forceinline__ void zero(C& c) {
    for (int i = 0; i < 8; ++i) c.x[i] = 0.f;
  }
  static __device__ __forceinline__ void scale(C& c, float s) {
    for (int i = 0; i < 8; ++i) c.x[i] *= s;
  }
  static __device__ __forceinline__ void store_c(float* p, const C& c, int ldm) {
    for (int i = 0; i < 8; ++i) p[row() * ldm + col0() + i] = c.x[i];
    __syncwarp();
  }
  static __device__ __forceinline__ void load_c(C& c, const float* p, int ldm) {
    for (int i = 0; i < 8; ++i) c.x[i] = p[row() * ldm + col0() + i];
  }
};

// 16 bytes moved as one load or store.
struct alignas(16) Chunk16 {
  unsigned int w[4];
};

// Loads `rows` rows of HD elements of one head, starting at row r0 of `src` (row stride
// `stride` elements), into the row-major tile dst (rows x HD); rows at or past t are zeros.
// The whole block calls it. When src and the row stride are 16-byte aligned (always, for
// tensors allocated by candle: C is a multiple of 32), in 16-byte chunks: a quarter or an
// eighth of the load instructions of element-wise copies.
template <typename T, int HD>
__device__ __forceinline__ void load_tile(T* dst, const T* src, long long stride, int r0, int rows,
                                          int t) {
  constexpr int V = 16 / sizeof(T);  // elements per chunk
  constexpr int CH = HD / V;         // chunks per row
  static_assert(HD % V == 0, "rows are whole chunks");
  const bool aligned =
      ((reinterpret_cast<unsigned long long>(src) | (unsigned long long)(stride * sizeof(T))) &
       15) == 0;  // the same for the whole block
  if (aligned) {
    for (int e = threadIdx.x; e < rows * CH; e += THREADS) {
      const int r = e / CH, c = e % CH;
      Chunk16 v = {{0u, 0u, 0u, 0u}};  // zero bits are 0.0 in float and bf16
      if (r0 + r < t) v = *reinterpret_cast<const Chunk16*>(src + (long long)(r0 + r) * stride + c * V);
      *reinterpret_cast<Chunk16*>(dst + r * HD + c * V) = v;
    }
    return;
  }
  for (int e = threadIdx.x; e < rows * HD; e += THREADS) {
    const int r = e / HD, c = e % HD;
    dst[e] = r0 + r < t ? src[(long long)(r0 + r) * stride + c] : from_f<T>(0.f);
  }
}

// The 16 rows r0.. (columns c*16..+16 of one head) as an A fragment, staged through the warp's
// 16x16 scratch tile `stage`; rows at or past t are zeros. The whole warp calls it.
template <typename T>
__device__ __forceinline__ void load_rows_a(typename Mma<T>::A& a, T* stage, const T* src,
                                            long long stride, int r0, int t) {
  const int lane = threadIdx.x & 31;
  for (int e = lane; e < 256; e += 32) {
    const int r = e >> 4, c = e & 15;
    stage[e] = r0 + r < t ? src[(long long)(r0 + r) * stride + c] : from_f<T>(0.f);
  }
  __syncwarp();
  Mma<T>::load_a(a, stage, 16);
  __syncwarp();
}

// Writes accumulator tile c (16 rows from r0, 16 columns) times row_mul[r] (or 1) to dst, rows
// below t only, staged through the warp's f32 scratch tile `stage`.
template <typename T>
__device__ __forceinline__ void store_rows(T* dst, long long stride, int r0, int t,
                                           const typename Mma<T>::C& c, float* stage,
                                           const float* row_mul) {
  const int lane = threadIdx.x & 31;
  Mma<T>::store_c(stage, c, 16);
  __syncwarp();
  for (int e = lane; e < 256; e += 32) {
    const int r = e >> 4, col = e & 15;
    const float v = row_mul ? stage[e] * row_mul[r] : stage[e];
    if (r0 + r < t) dst[(long long)(r0 + r) * stride + col] = from_f<T>(v);
  }
  __syncwarp();
}

template <typename T, int HD>
__device__ void fwd(const T* __restrict__ qkv, const uint32_t* __restrict__ pos, T* __restrict__ y,
                    float* __restrict__ lse, int t, int H, float scale) {
  using M = Mma<T>;
  constexpr int BK = fwd_tile(HD, sizeof(T));
  constexpr int NC = HD / 16;
  static_assert(fwd_smem(BK, HD, sizeof(T)) <= SMEM_LIMIT, "forward shared memory");
  __align__(32) __shared__ T Ks[BK * HD];
  __align__(32) __shared__ T Vs[BK * HD];
  __align__(32) __shared__ float Sw[WARPS][16 * BK];
  __align__(32) __shared__ T Pw[WARPS][16 * BK];
  __shared__ float row_v[WARPS][16];
  __shared__ int lo_slot[WARPS];

  const int tile = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int C = H * HD;
  const long long C3 = 3LL * C;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int q0 = tile * ROWS + warp * 16;  // this warp's first query row
  const T* base = qkv + (long long)b * t * C3 + h * HD;  // q of row 0 of sequence b, head h
  float* S = Sw[warp];
  T* P = Pw[warp];

  typename M::A qf[NC];
  for (int c = 0; c < NC; ++c) load_rows_a<T>(qf[c], P, base + c * 16, C3, q0, t);
  typename M::C o[NC];
  for (int c = 0; c < NC; ++c) M::zero(o[c]);

  // Lanes 2r and 2r+1 share query row r of the warp's 16, half of a tile's columns each.
  const int r = lane >> 1, half = lane & 1;
  const int i = q0 + r;
  const int lo_i = first_key(pos, b, t, i);  // row i's keys: lo_i ..= i
  const int lo_w = warp_min_int(lo_i);
  const int lo_b = block_min_int(lo_w, lo_slot);
  float m = -INFINITY, l = 0.f;
  const int q_end = min(t, (tile + 1) * ROWS);  // past the block's last query
  const int n_kt = (q_end + BK - 1) / BK;
  for (int kt = lo_b / BK; kt < n_kt; ++kt) {
    const int k0 = kt * BK;
    __syncthreads();  // the previous tile's readers are done
    load_tile<T, HD>(Ks, base + C, C3, k0, BK, t);
    load_tile<T, HD>(Vs, base + 2 * C, C3, k0, BK, t);
    __syncthreads();
    // Warp-uniform: past the end, every key of the tile in this warp's future, or before
    // all of its rows' sequences.
    if (q0 >= t || k0 > q0 + 15 || k0 + BK <= lo_w) continue;

    for (int n = 0; n < BK / 16; ++n) {  // S = Q K^T, (16, BK)
      typename M::C s;
      M::zero(s);
      for (int c = 0; c < NC; ++c) M::mma_t(s, qf[c], Ks + n * 16 * HD + c * 16, HD);
      M::store_c(S + n * 16, s, BK);
    }
    __syncwarp();

    // Online softmax.
    float sv[BK / 2];
    float mt = -INFINITY;
    for (int jj = 0; jj < BK / 2; ++jj) {
      const int j = half * (BK / 2) + jj;
      sv[jj] = k0 + j <= i && k0 + j >= lo_i ? S[r * BK + j] * scale : -INFINITY;
      mt = fmaxf(mt, sv[jj]);
    }
    mt = fmaxf(mt, __shfl_xor_sync(FULL, mt, 1));
    const float m_new = fmaxf(m, mt);
    // A row none of whose keys came yet (packed rows: its sequence starts in a later tile)
    // keeps m = -inf; its p and alpha are then exp(-inf) = 0, not exp(-inf + inf).
    const float m_ref = m_new == -INFINITY ? 0.f : m_new;
    float ps = 0.f;
    for (int jj = 0; jj < BK / 2; ++jj) {
      const float p = expf(sv[jj] - m_ref);
      P[r * BK + half * (BK / 2) + jj] = from_f<T>(p);
      ps += p;
    }
    ps += __shfl_xor_sync(FULL, ps, 1);  // a + b == b + a: both lanes get the same bits
    const float alpha = expf(m - m_ref);  // 0 on a row's first tile
    l = l * alpha + ps;
    m = m_new;
    if (half == 0) row_v[warp][r] = alpha;
    __syncwarp();

    // O = alpha * O + P V; the row-wise rescale goes through S as a 16x16 staging tile.
    for (int c = 0; c < NC; ++c) {
      M::store_c(S, o[c], 16);
      __syncwarp();
      for (int e = lane; e < 256; e += 32) S[e] *= row_v[warp][e >> 4];
      __syncwarp();
      M::load_c(o[c], S, 16);
      __syncwarp();
    }
    for (int kk = 0; kk < BK / 16; ++kk) {
      typename M::A pa;
      M::load_a(pa, P + kk * 16, BK);
      for (int c = 0; c < NC; ++c) M::mma(o[c], pa, Vs + kk * 16 * HD + c * 16, HD);
    }
  }
  if (q0 >= t) return;  // no barrier follows
  if (half == 0) row_v[warp][r] = 1.f / l;
  __syncwarp();
  T* yb = y + (long long)b * t * C + h * HD;
  for (int c = 0; c < NC; ++c) store_rows<T>(yb + c * 16, C, q0, t, o[c], S, row_v[warp]);
  if (half == 0 && i < t) lse[((long long)b * H + h) * t + i] = m + logf(l);
}

// D (B, H, T) = rowsum(dO * O) per head: one warp per (b, t, h), rows = B * T * H.
template <typename T>
__device__ void bwd_d(const T* __restrict__ y, const T* __restrict__ dy, float* __restrict__ dd,
                      int t, int H, int hd, long long rows) {
  const long long gw = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (gw >= rows) return;  // warp-uniform, no barrier follows
  const long long bt = gw / H;
  const int h = (int)(gw % H);
  const long long off = bt * H * hd + (long long)h * hd;
  float s = 0.f;
  for (int x = lane; x < hd; x += 32) s += to_f(y[off + x]) * to_f(dy[off + x]);
  s = warp_sum(s);
  if (lane == 0) dd[((bt / t) * H + h) * t + bt % t] = s;
}

// The two score tiles of a backward step for the warp's 16 rows against the BN rows staged in
// shared memory: S = A X^T and dP = G Y^T, each (16, BN) f32 row-major at S and dP. A and G are
// the warp's rows as HD / 16 fragments; X and Y are (BN, HD) row-major tiles. The whole warp
// calls it; on return every lane may read all of S and dP.
template <typename T, int HD, int BN>
__device__ __forceinline__ void score_tiles(float* S, const typename Mma<T>::A* a, const T* X,
                                            float* dP, const typename Mma<T>::A* g, const T* Y) {
  using M = Mma<T>;
  for (int n = 0; n < BN / 16; ++n) {
    typename M::C s, dp;
    M::zero(s);
    M::zero(dp);
    for (int c = 0; c < HD / 16; ++c) {
      M::mma_t(s, a[c], X + n * 16 * HD + c * 16, HD);
      M::mma_t(dp, g[c], Y + n * 16 * HD + c * 16, HD);
    }
    M::store_c(S + n * 16, s, BN);
    M::store_c(dP + n * 16, dp, BN);
  }
  __syncwarp();
}

// dK, dV for the block's 64 keys: loop over query tiles from the diagonal on.
template <typename T, int HD>
__device__ void bwd_dkdv(const T* __restrict__ qkv, const uint32_t* __restrict__ pos,
                         const T* __restrict__ dy, const float* __restrict__ lse,
                         const float* __restrict__ dd, T* __restrict__ dqkv, int t, int H,
                         float scale) {
  using M = Mma<T>;
  constexpr int BQ = bwd_tile(HD, sizeof(T));
  constexpr int NC = HD / 16;
  static_assert(bwd_smem(BQ, HD, sizeof(T)) <= SMEM_LIMIT, "dK/dV shared memory");
  __align__(32) __shared__ T Qs[BQ * HD];
  __align__(32) __shared__ T Gs[BQ * HD];  // dO
  __align__(32) __shared__ float Sw[WARPS][16 * BQ];
  __align__(32) __shared__ float dPw[WARPS][16 * BQ];
  __align__(32) __shared__ T Pw[WARPS][16 * BQ];
  __align__(32) __shared__ T dSw[WARPS][16 * BQ];
  __shared__ float Ls[BQ], Ds[BQ];
  __shared__ int Lo[BQ];  // each query's first key

  const int tile = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int C = H * HD;
  const long long C3 = 3LL * C;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int k0 = tile * ROWS + warp * 16;  // this warp's first key row
  const T* base = qkv + (long long)b * t * C3 + h * HD;
  const T* gbase = dy + (long long)b * t * C + h * HD;
  const long long stat = ((long long)b * H + h) * t;
  float* S = Sw[warp];
  float* dP = dPw[warp];
  T* P = Pw[warp];
  T* dS = dSw[warp];

  typename M::A kf[NC], vf[NC];
  for (int c = 0; c < NC; ++c) {
    load_rows_a<T>(kf[c], P, base + C + c * 16, C3, k0, t);
    load_rows_a<T>(vf[c], P, base + 2 * C + c * 16, C3, k0, t);
  }
  typename M::C dk[NC], dv[NC];
  for (int c = 0; c < NC; ++c) {
    M::zero(dk[c]);
    M::zero(dv[c]);
  }
  const int n_qt = (t + BQ - 1) / BQ;
  for (int qt = tile * ROWS / BQ; qt < n_qt; ++qt) {
    const int qs0 = qt * BQ;
    __syncthreads();
    load_tile<T, HD>(Qs, base, C3, qs0, BQ, t);
    load_tile<T, HD>(Gs, gbase, C, qs0, BQ, t);
    for (int e = threadIdx.x; e < BQ; e += THREADS) {
      Ls[e] = qs0 + e < t ? lse[stat + qs0 + e] : 0.f;
      Ds[e] = qs0 + e < t ? dd[stat + qs0 + e] : 0.f;
      Lo[e] = first_key(pos, b, t, qs0 + e);
    }
    __syncthreads();
    // Warp-uniform: past the end, or every query of the tile precedes this warp's keys.
    if (k0 >= t || qs0 + BQ - 1 < k0) continue;
    if (pos) {  // or every query's sequence starts after this warp's keys
      int lo = NO_KEY;
      for (int e = lane; e < BQ; e += 32) lo = min(lo, Lo[e]);
      if (warp_min_int(lo) > k0 + 15) continue;
    }

    score_tiles<T, HD, BQ>(S, kf, Qs, dP, vf, Gs);  // S^T = K Q^T, dP^T = V dO^T, (16, BQ)
    for (int e = lane; e < 16 * BQ; e += 32) {
      const int rr = e / BQ, j = e % BQ;
      const int key = k0 + rr, q = qs0 + j;
      const float p = (q >= key && q < t && key >= Lo[j]) ? expf(S[e] * scale - Ls[j]) : 0.f;
      P[e] = from_f<T>(p);
      dS[e] = from_f<T>(p * (dP[e] - Ds[j]));
    }
    __syncwarp();
    for (int kk = 0; kk < BQ / 16; ++kk) {  // dV += P^T dO, dK += dS^T Q
      typename M::A pa, sa;
      M::load_a(pa, P + kk * 16, BQ);
      M::load_a(sa, dS + kk * 16, BQ);
      for (int c = 0; c < NC; ++c) {
        M::mma(dv[c], pa, Gs + kk * 16 * HD + c * 16, HD);
        M::mma(dk[c], sa, Qs + kk * 16 * HD + c * 16, HD);
      }
    }
  }
  if (k0 >= t) return;  // no barrier follows
  T* out = dqkv + (long long)b * t * C3 + h * HD;
  for (int c = 0; c < NC; ++c) {
    M::scale(dk[c], scale);
    store_rows<T>(out + C + c * 16, C3, k0, t, dk[c], S, nullptr);
    store_rows<T>(out + 2 * C + c * 16, C3, k0, t, dv[c], S, nullptr);
  }
}

// dQ for the block's 64 queries: loop over key tiles up to the diagonal.
template <typename T, int HD>
__device__ void bwd_dq(const T* __restrict__ qkv, const uint32_t* __restrict__ pos,
                       const T* __restrict__ dy, const float* __restrict__ lse,
                       const float* __restrict__ dd, T* __restrict__ dqkv, int t, int H,
                       float scale) {
  using M = Mma<T>;
  constexpr int BK = bwd_tile(HD, sizeof(T));
  constexpr int NC = HD / 16;
  static_assert(bwd_smem(BK, HD, sizeof(T)) <= SMEM_LIMIT, "dQ shared memory");  // an upper bound
  __align__(32) __shared__ T Ks[BK * HD];
  __align__(32) __shared__ T Vs[BK * HD];
  __align__(32) __shared__ float Sw[WARPS][16 * BK];
  __align__(32) __shared__ float dPw[WARPS][16 * BK];
  __align__(32) __shared__ T dSw[WARPS][16 * BK];
  __shared__ float Lw[WARPS][16], Dw[WARPS][16];
  __shared__ int Low[WARPS][16];  // each query's first key
  __shared__ int lo_slot[WARPS];

  const int tile = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int C = H * HD;
  const long long C3 = 3LL * C;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int q0 = tile * ROWS + warp * 16;
  const T* base = qkv + (long long)b * t * C3 + h * HD;
  const T* gbase = dy + (long long)b * t * C + h * HD;
  const long long stat = ((long long)b * H + h) * t;
  float* S = Sw[warp];
  float* dP = dPw[warp];
  T* dS = dSw[warp];

  typename M::A qf[NC], gf[NC];
  for (int c = 0; c < NC; ++c) {
    load_rows_a<T>(qf[c], dS, base + c * 16, C3, q0, t);
    load_rows_a<T>(gf[c], dS, gbase + c * 16, C, q0, t);
  }
  if (lane < 16) {
    Lw[warp][lane] = q0 + lane < t ? lse[stat + q0 + lane] : 0.f;
    Dw[warp][lane] = q0 + lane < t ? dd[stat + q0 + lane] : 0.f;
    Low[warp][lane] = first_key(pos, b, t, q0 + lane);
  }
  __syncwarp();
  const int lo_w = warp_min_int(lane < 16 ? Low[warp][lane] : NO_KEY);
  const int lo_b = block_min_int(lo_w, lo_slot);
  typename M::C dq[NC];
  for (int c = 0; c < NC; ++c) M::zero(dq[c]);
  const int q_end = min(t, (tile + 1) * ROWS);
  const int n_kt = (q_end + BK - 1) / BK;
  for (int kt = lo_b / BK; kt < n_kt; ++kt) {
    const int k0 = kt * BK;
    __syncthreads();
    load_tile<T, HD>(Ks, base + C, C3, k0, BK, t);
    load_tile<T, HD>(Vs, base + 2 * C, C3, k0, BK, t);
    __syncthreads();
    if (q0 >= t || k0 > q0 + 15 || k0 + BK <= lo_w) continue;

    score_tiles<T, HD, BK>(S, qf, Ks, dP, gf, Vs);  // S = Q K^T, dP = dO V^T, (16, BK)
    for (int e = lane; e < 16 * BK; e += 32) {
      const int rr = e / BK, j = e % BK;
      const int q = q0 + rr, key = k0 + j;
      const float p = (key <= q && key >= Low[warp][rr] && q < t)
                          ? expf(S[e] * scale - Lw[warp][rr])
                          : 0.f;
      dS[e] = from_f<T>(p * (dP[e] - Dw[warp][rr]));
    }
    __syncwarp();
    for (int kk = 0; kk < BK / 16; ++kk) {  // dQ += dS K
      typename M::A sa;
      M::load_a(sa, dS + kk * 16, BK);
      for (int c = 0; c < NC; ++c) M::mma(dq[c], sa, Ks + kk * 16 * HD + c * 16, HD);
    }
  }
  if (q0 >= t) return;
  T* out = dqkv + (long long)b * t * C3 + h * HD;
  for (int c = 0; c < NC; ++c) {
    M::scale(dq[c], scale);
    store_rows<T>(out + c * 16, C3, q0, t, dq[c], S, nullptr);
  }
}

}  // namespace attn

#define ATTN_HD(S, T, HD)                                                                     \
  extern "C" __global__ void __launch_bounds__(attn::THREADS)                                 \
      attention_fwd_##S##_hd##HD(const T* qkv, const uint32_t* pos, T* y, float* lse, int t, \
                                 int h, float scale) {                                        \
    attn::fwd<T, HD>(qkv, pos, y, lse, t, h, scale);                                          \
  }                                                                                           \
  extern "C" __global__ void __launch_bounds__(attn::THREADS) attention_bwd_dkdv_##S##_hd##HD( \
      const T* qkv, const uint32_t* pos, const T* dy, const float* lse, const float* dd,      \
      T* dqkv, int t, int h, float scale) {                                                   \
    attn::bwd_dkdv<T, HD>(qkv, pos, dy, lse, dd, dqkv, t, h, scale);                          \
  }                                                                                           \
  extern "C" __global__ void __launch_bounds__(attn::THREADS) attention_bwd_dq_##S##_hd##HD(  \
      const T* qkv, const uint32_t* pos, const T* dy, const float* lse, const float* dd,      \
      T* dqkv, int t, int h, float scale) {                                                   \
    attn::bwd_dq<T, HD>(qkv, pos, dy, lse, dd, dqkv, t, h, scale);                            \
  }

#define ATTN(S, T)                                                                            \
  extern "C" __global__ void attention_bwd_d_##S(const T* y, const T* dy, float* dd, int t,   \
                                                 int h, int hd, long long rows) {             \
    attn::bwd_d<T>(y, dy, dd, t, h, hd, rows);                                                \
  }                                                                                           \
  ATTN_HD(S, T, 32)                                                                           \
  ATTN_HD(S, T, 64)                                                                           \
  ATTN_HD(S, T, 128)

ATTN(f32, float)
ATTN(bf16, __nv_bfloat16)

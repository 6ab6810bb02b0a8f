// The fiber scheduler behind cuda_emu.h: one ucontext fiber per thread of a block, switched
// cooperatively at barriers. See the header for the execution model.
#include <ucontext.h>

#include <memory>
#include <mutex>
#include <vector>

#include "cuda_emu.h"

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace emu {
namespace {

enum class State { Ready, AtBlock, AtWarp, Done };

// Room for the deepest kernel frame seen so far (WMMA tiles held whole per lane) with margin.
constexpr size_t kStack = 256 * 1024;

struct Fiber {
  ucontext_t ctx;
  State state;
  uint3 idx;
};

struct Launch {
  std::vector<Fiber> fibers;
  std::unique_ptr<char[]> stacks;
  ucontext_t scheduler;
  int current = 0;
  const std::function<void()>* body = nullptr;
  // Shuffle slots, one per thread, wide enough for any scalar.
  std::vector<unsigned char> slots;
};

Launch* g_launch = nullptr;
std::mutex g_lock;
// The order in which a grid's blocks, a block's warps and a warp's threads run: 0 index
// order, 1 all in reverse. Per calling thread, as launches run on their caller's thread.
thread_local int g_order = 0;

// The k-th of n in the calling thread's order.
size_t nth(size_t k, size_t n) { return g_order == 1 ? n - 1 - k : k; }

void yield_as(State s) {
  Launch& L = *g_launch;
  Fiber& f = L.fibers[L.current];
  f.state = s;
  swapcontext(&f.ctx, &L.scheduler);
}

void fiber_entry() {
  Launch& L = *g_launch;
  (*L.body)();
  L.fibers[L.current].state = State::Done;
  // Returning ends the fiber: uc_link resumes the scheduler.
}

[[noreturn]] void deadlock(const Launch& L) {
  fprintf(stderr,
          "cuda emulator: deadlock in block (%u, %u, %u): no thread can proceed. Threads and "
          "where they wait:\n",
          blockIdx.x, blockIdx.y, blockIdx.z);
  for (size_t i = 0; i < L.fibers.size(); i++) {
    const Fiber& f = L.fibers[i];
    const char* w = f.state == State::AtBlock ? "__syncthreads"
                    : f.state == State::AtWarp ? "a warp barrier (shuffle/__syncwarp/wmma store)"
                                               : "returned";
    fprintf(stderr, "  thread (%u, %u, %u): %s\n", f.idx.x, f.idx.y, f.idx.z, w);
  }
  abort();
}

void set_thread(const Fiber& f) { threadIdx = f.idx; }

// Runs warp `w` (fibers w0..w1) as far as it can go alone: its ready fibers, in the thread's
// order, each to its next barrier or its end, and again after each warp barrier that all its
// live fibers reach, until they wait at __syncthreads, have returned, or are stuck.
void run_warp(Launch& L, size_t w0, size_t w1) {
  for (;;) {
    for (size_t j = 0; j < w1 - w0; j++) {
      const size_t i = w0 + nth(j, w1 - w0);
      if (L.fibers[i].state != State::Ready) continue;
      L.current = (int)i;
      set_thread(L.fibers[i]);
      swapcontext(&L.scheduler, &L.fibers[i].ctx);
    }
    bool live = false, all_warp = true;
    for (size_t i = w0; i < w1; i++) {
      if (L.fibers[i].state == State::Done) continue;
      live = true;
      if (L.fibers[i].state != State::AtWarp) all_warp = false;
    }
    if (!live || !all_warp) return;
    for (size_t i = w0; i < w1; i++)
      if (L.fibers[i].state == State::AtWarp) L.fibers[i].state = State::Ready;
  }
}

// Runs a started block to its end: each warp in turn as far as it can go alone (so one warp
// gets ahead of the others by any number of warp barriers, as on a GPU), then past the
// __syncthreads all live threads wait at, until every thread has returned.
void run_block(Launch& L) {
  const size_t n = L.fibers.size(), warps = (n + 31) / 32;
  for (;;) {
    for (size_t k = 0; k < warps; k++) {
      const size_t w = nth(k, warps);
      run_warp(L, 32 * w, std::min(n, 32 * w + 32));
    }
    bool any_live = false, all_block = true;
    for (const Fiber& f : L.fibers) {
      if (f.state == State::Done) continue;
      any_live = true;
      if (f.state != State::AtBlock) all_block = false;
    }
    if (!any_live) return;
    if (!all_block) deadlock(L);
    for (Fiber& f : L.fibers)
      if (f.state == State::AtBlock) f.state = State::Ready;
  }
}

// A fresh fiber per thread of the block. Kept out of `run` so that getcontext, which behaves
// like setjmp, never shares a frame with the scheduler's loop variables.
__attribute__((noinline)) void start_block(Launch& L, dim3 block, size_t n) {
  for (size_t i = 0; i < n; i++) {
    Fiber& f = L.fibers[i];
    f.idx = uint3{(unsigned)(i % block.x), (unsigned)(i / block.x % block.y),
                  (unsigned)(i / ((size_t)block.x * block.y))};
    f.state = State::Ready;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = L.stacks.get() + i * kStack;
    f.ctx.uc_stack.ss_size = kStack;
    f.ctx.uc_link = &L.scheduler;
    makecontext(&f.ctx, fiber_entry, 0);
  }
}

}  // namespace

void syncthreads() { yield_as(State::AtBlock); }
void syncwarp() { yield_as(State::AtWarp); }

int lane() { return (int)((threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) & 31); }

void shfl(const void* mine, void* out, int src_lane, size_t bytes) {
  Launch& L = *g_launch;
  if (bytes > 8) {
    fprintf(stderr, "cuda emulator: shuffles of more than 8 bytes are not supported\n");
    abort();
  }
  const int me = L.current;
  const int src = (me & ~31) + src_lane;
  memcpy(&L.slots[8 * me], mine, bytes);
  syncwarp();
  const int from = src < (int)L.fibers.size() ? src : me;
  memcpy(out, &L.slots[8 * from], bytes);
  syncwarp();  // nobody overwrites a slot before every lane has read it
}

void run(dim3 grid, dim3 block, const std::function<void()>& body) {
  std::lock_guard<std::mutex> guard(g_lock);
  const size_t n = (size_t)block.x * block.y * block.z;
  if (n == 0 || n > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
      grid.z > 65535) {
    fprintf(stderr, "cuda emulator: invalid launch grid (%u, %u, %u) block (%u, %u, %u)\n",
            grid.x, grid.y, grid.z, block.x, block.y, block.z);
    abort();
  }
  Launch L;
  L.fibers.resize(n);
  // new char[] leaves the stacks untouched: the pages are only mapped as the fibers use them.
  L.stacks.reset(new char[n * kStack]);
  L.slots.assign(8 * n, 0);
  L.body = &body;
  g_launch = &L;
  gridDim = grid;
  blockDim = block;
  const size_t blocks = (size_t)grid.x * grid.y * grid.z;
  for (size_t k = 0; k < blocks; k++) {
    const size_t b = nth(k, blocks);
    blockIdx = uint3{(unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y),
                     (unsigned)(b / ((size_t)grid.x * grid.y))};
    start_block(L, block, n);
    run_block(L);
  }
  g_launch = nullptr;
}

}  // namespace emu

// Sets the calling thread's run order (0 index order, 1 reverse) and returns the previous one.
extern "C" int emu_set_order(int order) {
  const int prev = emu::g_order;
  emu::g_order = order;
  return prev;
}

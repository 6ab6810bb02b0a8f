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

// After every runnable fiber has run to a barrier or its end: release what can be released.
// Returns false when nothing is left to run.
bool release(Launch& L) {
  const int n = (int)L.fibers.size();
  bool any_live = false, all_block = true;
  for (const Fiber& f : L.fibers) {
    if (f.state == State::Done) continue;
    any_live = true;
    if (f.state != State::AtBlock) all_block = false;
  }
  if (!any_live) return false;
  if (all_block) {
    for (Fiber& f : L.fibers)
      if (f.state == State::AtBlock) f.state = State::Ready;
    return true;
  }
  bool released = false;
  for (int w0 = 0; w0 < n; w0 += 32) {
    const int w1 = std::min(n, w0 + 32);
    bool live = false, all_warp = true;
    for (int i = w0; i < w1; i++) {
      if (L.fibers[i].state == State::Done) continue;
      live = true;
      if (L.fibers[i].state != State::AtWarp) all_warp = false;
    }
    if (live && all_warp) {
      for (int i = w0; i < w1; i++)
        if (L.fibers[i].state == State::AtWarp) L.fibers[i].state = State::Ready;
      released = true;
    }
  }
  if (!released) deadlock(L);
  return true;
}

void set_thread(const Fiber& f) { threadIdx = f.idx; }

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
  for (unsigned bz = 0; bz < grid.z; bz++)
    for (unsigned by = 0; by < grid.y; by++)
      for (unsigned bx = 0; bx < grid.x; bx++) {
        blockIdx = uint3{bx, by, bz};
        start_block(L, block, n);
        do {
          for (size_t i = 0; i < n; i++) {
            if (L.fibers[i].state != State::Ready) continue;
            L.current = (int)i;
            set_thread(L.fibers[i]);
            swapcontext(&L.scheduler, &L.fibers[i].ctx);
          }
        } while (release(L));
      }
  g_launch = nullptr;
}

}  // namespace emu

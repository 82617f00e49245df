// A small SIMT emulator: runs CUDA kernel code, compiled as plain C++, on the CPU, so that kernels
// can be checked numerically on machines without a GPU (used by tests/cuda_host/attention_backward).
//
// Every CUDA thread of a block is a coroutine (ucontext) with its own stack. A thread runs until
// it reaches a synchronising operation (__syncthreads, or a warp collective: shuffle, ldmatrix,
// mma), then yields to the scheduler, which picks the next runnable thread at random (seeded), so
// missing barriers show up as wrong results across schedules. Blocks run one after another, in a
// shuffled order.
//
// Warp collectives: each lane deposits its inputs; the last lane of the participating mask to
// arrive computes every lane's outputs (the instruction's semantics, written from the PTX ISA in
// emulation/cuda/attention/sm80_primitives.cuh); all lanes then read their own. Lanes of one warp
// that arrive at different collectives at the same time are reported as divergence.
//
// cp.async: a copy either lands when issued or only when its group is waited for (both timings
// are run by the tests, so neither a read before the wait nor a copy racing a reader goes
// unnoticed). Shared memory is filled with 0xFF bytes (NaN in every float format) before each
// block, so reading what no one wrote shows up as NaN.
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

namespace emu {

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "emulation error: %s\n", what);
  std::abort();
}

enum class CopyTiming { kAtIssue, kAtWait };

struct Options {
  CopyTiming copy_timing = CopyTiming::kAtWait;
  uint64_t seed = 1;  // thread schedule and block order
};

struct Index3 {
  unsigned x = 0, y = 0, z = 0;
};

struct PendingCopy {
  unsigned char* dst;
  unsigned char bytes[16];
};

struct Thread {
  ucontext_t context{};
  std::unique_ptr<char[]> stack;
  Index3 thread_idx;
  bool done = false;
  // Blocked until *wait_generation differs from wait_value (nullptr: runnable).
  const uint64_t* wait_generation = nullptr;
  uint64_t wait_value = 0;
  std::vector<PendingCopy> open_group;
  std::vector<std::vector<PendingCopy>> committed_groups;  // oldest first
};

// One warp-collective rendezvous (per warp and lane mask).
struct CollectiveSlot {
  int arrived = 0;
  uint64_t generation = 0;
  int kind = -1;
  static constexpr int kBytes = 80;
  unsigned char in[32][kBytes];
  unsigned char out[32][kBytes];
};

struct Machine {
  Options options;
  std::mt19937_64 rng{1};
  ucontext_t scheduler{};
  std::vector<Thread> threads;
  Thread* current = nullptr;
  Index3 block_idx, block_dim, grid_dim;
  int barrier_arrived = 0;
  uint64_t barrier_generation = 0;
  std::vector<std::map<uint32_t, CollectiveSlot>> warps;
  unsigned char* shared = nullptr;
  size_t shared_size = 0;
  std::function<void()> body;
};

inline Machine& machine() {
  static Machine m;
  return m;
}

inline Thread& current_thread() { return *machine().current; }

inline void yield() {
  Machine& m = machine();
  Thread* self = m.current;
  if (swapcontext(&self->context, &m.scheduler) != 0) fail("swapcontext");
}

inline void block_until_changed(const uint64_t* generation) {
  Thread& t = current_thread();
  t.wait_generation = generation;
  t.wait_value = *generation;
  yield();
  t.wait_generation = nullptr;
}

inline int linear_thread() {
  const Machine& m = machine();
  const Index3& t = current_thread().thread_idx;
  return static_cast<int>(t.x + m.block_dim.x * (t.y + m.block_dim.y * t.z));
}

inline int lane_id() { return linear_thread() % 32; }

inline void sync_threads() {
  Machine& m = machine();
  if (++m.barrier_arrived == static_cast<int>(m.threads.size())) {
    m.barrier_arrived = 0;
    ++m.barrier_generation;
    return;
  }
  block_until_changed(&m.barrier_generation);
}

// Runs a warp collective over the lanes of `mask` (which must contain the caller's lane).
// combine(inputs, outputs, mask) fills outputs[lane] for every lane of the mask.
template <typename In, typename Out, typename Combine>
Out warp_collective(int kind, uint32_t mask, const In& input, Combine combine) {
  static_assert(sizeof(In) <= CollectiveSlot::kBytes && sizeof(Out) <= CollectiveSlot::kBytes, "slot size");
  Machine& m = machine();
  const int lane = lane_id();
  if (((mask >> lane) & 1u) == 0) fail("warp collective called by a lane outside its mask");
  CollectiveSlot& slot = m.warps[linear_thread() / 32][mask];
  if (slot.arrived == 0) {
    slot.kind = kind;
  } else if (slot.kind != kind) {
    fail("lanes of a warp reached different collectives (divergence)");
  }
  std::memcpy(slot.in[lane], &input, sizeof(In));
  if (++slot.arrived == __builtin_popcount(mask)) {
    std::array<In, 32> inputs{};
    std::array<Out, 32> outputs{};
    for (int l = 0; l < 32; ++l) {
      if ((mask >> l) & 1u) std::memcpy(&inputs[l], slot.in[l], sizeof(In));
    }
    combine(inputs, outputs, mask);
    for (int l = 0; l < 32; ++l) {
      if ((mask >> l) & 1u) std::memcpy(slot.out[l], &outputs[l], sizeof(Out));
    }
    slot.arrived = 0;
    ++slot.generation;
  } else {
    block_until_changed(&slot.generation);
  }
  Out result;
  std::memcpy(&result, slot.out[lane], sizeof(Out));
  return result;
}

// ---- cp.async ----

inline void land(const PendingCopy& c) { std::memcpy(c.dst, c.bytes, 16); }

inline void issue_cp_async(void* dst, const void* src, bool in_bounds) {
  Machine& m = machine();
  auto* d = static_cast<unsigned char*>(dst);
  if (d < m.shared || d + 16 > m.shared + m.shared_size) fail("cp.async destination outside shared memory");
  if (reinterpret_cast<uintptr_t>(dst) % 16 != 0 || reinterpret_cast<uintptr_t>(src) % 16 != 0) {
    fail("cp.async address not 16-byte aligned");
  }
  PendingCopy c{d, {}};
  if (in_bounds) std::memcpy(c.bytes, src, 16);
  if (m.options.copy_timing == CopyTiming::kAtIssue) {
    land(c);
  } else {
    current_thread().open_group.push_back(c);
  }
}

inline void commit_cp_async() {
  Thread& t = current_thread();
  t.committed_groups.push_back(std::move(t.open_group));
  t.open_group.clear();
}

inline void wait_cp_async(int pending) {
  Thread& t = current_thread();
  if (!t.open_group.empty()) fail("cp.async.wait_group with copies not yet committed");
  while (static_cast<int>(t.committed_groups.size()) > pending) {
    for (const PendingCopy& c : t.committed_groups.front()) land(c);
    t.committed_groups.erase(t.committed_groups.begin());
  }
}

// ---- Launch ----

inline void thread_entry() {
  Machine& m = machine();
  m.body();
  Thread& t = current_thread();
  if (!t.open_group.empty() || !t.committed_groups.empty()) fail("thread exited with cp.async copies in flight");
  t.done = true;
  // uc_link returns to the scheduler.
}

// A fresh coroutine for t that runs thread_entry and returns to the scheduler. Out of line:
// getcontext returns twice, which would oblige the caller's locals to live in memory.
[[gnu::noinline]] inline void prepare_context(Thread& t, size_t stack_bytes) {
  t.stack.reset(new char[stack_bytes]);
  if (getcontext(&t.context) != 0) fail("getcontext");
  t.context.uc_stack.ss_sp = t.stack.get();
  t.context.uc_stack.ss_size = stack_bytes;
  t.context.uc_link = &machine().scheduler;
  makecontext(&t.context, thread_entry, 0);
}

// Runs body() as every thread of every block of the grid. shared: the block's dynamic shared
// memory (poisoned before each block).
inline void launch(Index3 grid, Index3 block, unsigned char* shared, size_t shared_size, std::function<void()> body,
                   const Options& options) {
  Machine& m = machine();
  m.options = options;
  m.rng.seed(options.seed);
  m.grid_dim = grid;
  m.block_dim = block;
  m.shared = shared;
  m.shared_size = shared_size;
  m.body = std::move(body);
  const int threads = static_cast<int>(block.x * block.y * block.z);
  const int64_t blocks = static_cast<int64_t>(grid.x) * grid.y * grid.z;
  std::vector<int64_t> order(static_cast<size_t>(blocks));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), m.rng);
  constexpr size_t kStack = 256 * 1024;
  for (const int64_t linear_block : order) {
    m.block_idx = {static_cast<unsigned>(linear_block % grid.x), static_cast<unsigned>(linear_block / grid.x % grid.y),
                   static_cast<unsigned>(linear_block / grid.x / grid.y)};
    std::memset(shared, 0xFF, shared_size);
    m.threads.clear();
    m.threads.resize(static_cast<size_t>(threads));
    m.warps.assign(static_cast<size_t>((threads + 31) / 32), {});
    m.barrier_arrived = 0;
    for (int i = 0; i < threads; ++i) {
      Thread& t = m.threads[static_cast<size_t>(i)];
      t.thread_idx = {static_cast<unsigned>(i % block.x), static_cast<unsigned>(i / block.x % block.y),
                      static_cast<unsigned>(i / block.x / block.y)};
      prepare_context(t, kStack);
    }
    std::vector<int> runnable;
    while (true) {
      runnable.clear();
      bool all_done = true;
      for (int i = 0; i < threads; ++i) {
        const Thread& t = m.threads[static_cast<size_t>(i)];
        if (t.done) continue;
        all_done = false;
        if (t.wait_generation == nullptr || *t.wait_generation != t.wait_value) runnable.push_back(i);
      }
      if (all_done) break;
      if (runnable.empty()) fail("deadlock: every live thread waits (a barrier or collective some threads skip)");
      const int pick = runnable[std::uniform_int_distribution<size_t>(0, runnable.size() - 1)(m.rng)];
      m.current = &m.threads[static_cast<size_t>(pick)];
      if (swapcontext(&m.scheduler, &m.current->context) != 0) fail("swapcontext");
    }
  }
  m.current = nullptr;
}

}  // namespace emu

//===- DeviceEmulation.h - Runs kiln::dev code on the CPU -------*- C++ -*-===//
//
// Just enough of the CUDA execution model to run the device library
// (runtime/cuda/device/kiln_device.cuh) on a machine without a GPU, so that
// its indexing, masking and reductions are tested everywhere, not only
// where a GPU is: include this header, then kiln_device.cuh, and call a
// device function inside emulateKernel(grid, threads, body).
//
//   - Blocks run one after another. The threads of a block are fibers
//     (ucontext) on the calling thread, switched only at __syncthreads and
//     at warp shuffles, so `__shared__` (made `static`) is the running
//     block's shared memory.
//   - __syncthreads releases when every live thread of the block waits at
//     it; __shfl_xor_sync when all 32 lanes of the warp wait at one. A
//     barrier some threads never reach aborts with "deadlock": divergent
//     barriers are bugs on the GPU too.
//   - Math is the host's (glibc's expf, erff, sincos; __frsqrt_rn through
//     double), so results match the GPU's to a few ulps, not bit for bit.
//     cuda_bf16.h's host code does the BF16 conversions, as on the device.
//
// What it cannot show: speed, coalescing, register spills (compile_check.sh
// does), the memory model beyond one block, and the device's own math.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_TEST_RUNTIME_CUDA_DEVICE_DEVICEEMULATION_H
#define KILN_TEST_RUNTIME_CUDA_DEVICE_DEVICEEMULATION_H

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <math.h> // sincos, pow, expf... in the global namespace
#include <memory>
#include <ucontext.h>
#include <vector>

// The CUDA keywords kiln_device.cuh uses, for a host compiler.
#undef __device__
#undef __forceinline__
#undef __shared__
#define __device__
#define __forceinline__ inline
#define __shared__ static

/// The emulated built-in variables: threadIdx is the running fiber's.
struct EmulatedDim3 {
  unsigned x = 0, y = 0, z = 0;
};
inline EmulatedDim3 threadIdx, blockIdx, blockDim, gridDim;

namespace kiln::dev::emulation {

enum class FiberState { Runnable, AtSyncThreads, AtShuffle, Done };

struct Fiber {
  ucontext_t context;
  std::unique_ptr<char[]> stack;
  FiberState state = FiberState::Runnable;
};

/// The block being run.
struct Block {
  ucontext_t scheduler;
  std::vector<Fiber> fibers;
  std::vector<float> shuffleSlots; // one per thread
  unsigned current = 0;
  const std::function<void()> *body = nullptr;
};

/// Fiber stacks: the device functions' frames are small.
constexpr std::size_t kFiberStackBytes = 256 * 1024;

inline Block *runningBlock = nullptr;

/// Parks the running fiber in `state` and returns to the scheduler.
inline void park(FiberState state) {
  Fiber &fiber = runningBlock->fibers[runningBlock->current];
  fiber.state = state;
  swapcontext(&fiber.context, &runningBlock->scheduler);
}

inline void fiberEntry() {
  (*runningBlock->body)();
  runningBlock->fibers[runningBlock->current].state = FiberState::Done;
  // uc_link resumes the scheduler.
}

/// Points `fiber` at the start of the kernel body. Not inlined: getcontext
/// returns twice, which would make the caller's loop variables suspect.
[[gnu::noinline]] inline void startFiber(Fiber &fiber, Block &block) {
  getcontext(&fiber.context);
  fiber.context.uc_stack.ss_sp = fiber.stack.get();
  fiber.context.uc_stack.ss_size = kFiberStackBytes;
  fiber.context.uc_link = &block.scheduler;
  makecontext(&fiber.context, fiberEntry, 0);
  fiber.state = FiberState::Runnable;
}

/// Releases the warps whose lanes all wait at a shuffle, else (when every
/// live thread waits at __syncthreads) the block; false if neither.
inline bool releaseBarriers(Block &block) {
  bool released = false;
  const unsigned threads = static_cast<unsigned>(block.fibers.size());
  for (unsigned warp = 0; warp * 32 < threads; ++warp) {
    unsigned end = std::min(threads, warp * 32 + 32);
    bool all = true;
    for (unsigned t = warp * 32; t < end; ++t)
      all &= block.fibers[t].state == FiberState::AtShuffle;
    if (!all)
      continue;
    for (unsigned t = warp * 32; t < end; ++t)
      block.fibers[t].state = FiberState::Runnable;
    released = true;
  }
  if (released)
    return true;
  bool atSync = false;
  for (const Fiber &fiber : block.fibers) {
    if (fiber.state != FiberState::AtSyncThreads &&
        fiber.state != FiberState::Done)
      return false;
    atSync |= fiber.state == FiberState::AtSyncThreads;
  }
  for (Fiber &fiber : block.fibers)
    if (fiber.state == FiberState::AtSyncThreads)
      fiber.state = FiberState::Runnable;
  return atSync;
}

} // namespace kiln::dev::emulation

inline void __syncthreads() {
  kiln::dev::emulation::park(kiln::dev::emulation::FiberState::AtSyncThreads);
}

inline float __shfl_xor_sync(unsigned, float value, int laneMask) {
  using namespace kiln::dev::emulation;
  const unsigned t = threadIdx.x;
  runningBlock->shuffleSlots[t] = value;
  park(FiberState::AtShuffle);
  float other = runningBlock->shuffleSlots[(t & ~31u) | ((t & 31u) ^ laneMask)];
  park(FiberState::AtShuffle); // nobody overwrites a slot still to be read
  return other;
}

inline float __int_as_float(int bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

/// 1 / sqrt(x) rounded once (as the device's __frsqrt_rn).
inline float __frsqrt_rn(float x) {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(x)));
}

/// Fibers never run at the same time: a plain compare and swap.
inline int atomicCAS(int *address, int compare, int value) {
  int old = *address;
  if (old == compare)
    *address = value;
  return old;
}

/// Runs body() as a kernel of grid.x * grid.y * grid.z blocks of `threads`
/// threads (blockDim.x = threads); returns when every block has finished.
inline void emulateKernel(EmulatedDim3 grid, unsigned threads,
                          const std::function<void()> &body) {
  using namespace kiln::dev::emulation;
  gridDim = {std::max(grid.x, 1u), std::max(grid.y, 1u), std::max(grid.z, 1u)};
  blockDim = {threads, 1, 1};
  Block block;
  block.fibers.resize(threads);
  block.shuffleSlots.resize(threads);
  block.body = &body;
  for (Fiber &fiber : block.fibers)
    fiber.stack.reset(new char[kFiberStackBytes]);
  runningBlock = &block;
  for (unsigned z = 0; z < gridDim.z; ++z)
    for (unsigned y = 0; y < gridDim.y; ++y)
      for (unsigned x = 0; x < gridDim.x; ++x) {
        blockIdx = {x, y, z};
        for (Fiber &fiber : block.fibers)
          startFiber(fiber, block);
        for (;;) {
          bool ran = false;
          for (unsigned t = 0; t < threads; ++t) {
            if (block.fibers[t].state != FiberState::Runnable)
              continue;
            ran = true;
            block.current = t;
            threadIdx = {t, 0, 0};
            swapcontext(&block.scheduler, &block.fibers[t].context);
          }
          bool done = true;
          for (const Fiber &fiber : block.fibers)
            done &= fiber.state == FiberState::Done;
          if (done)
            break;
          if (!releaseBarriers(block) && !ran) {
            std::fprintf(stderr,
                         "emulateKernel: deadlock in block (%u, %u, %u): "
                         "threads wait at barriers others never reach\n",
                         x, y, z);
            std::abort();
          }
        }
      }
  runningBlock = nullptr;
}

#endif // KILN_TEST_RUNTIME_CUDA_DEVICE_DEVICEEMULATION_H

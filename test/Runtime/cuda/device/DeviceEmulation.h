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
//     it; a warp-level exchange (__shfl_xor_sync, and the matrix
//     instructions below) when all 32 lanes of the warp wait at one. A
//     barrier some threads never reach aborts with "deadlock": divergent
//     barriers are bugs on the GPU too.
//   - The warp-level matrix instructions of the tensor-core kernels
//     (mma.sync m16n8k16 BF16, ldmatrix .x4 with and without .trans) gather
//     the 32 lanes' registers at a warp barrier and compute each lane's
//     result from the PTX ISA's fragment layouts (FP32 sums in k order);
//     cp.async copies at once; dynamic shared memory is a per-block buffer
//     poisoned with NaNs.
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
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <math.h> // sincos, pow, expf... in the global namespace
#include <memory>
#include <ucontext.h>
#include <vector>

/// kiln_device.cuh leaves the warp-level instructions to this header.
#define KILN_DEVICE_EMULATION 1

// The CUDA keywords kiln_device.cuh uses, for a host compiler.
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
// Generated kernels (`extern "C" __global__ void __launch_bounds__(...)`)
// become plain functions to call inside emulateKernel.
#undef __global__
#undef __launch_bounds__
#define __global__
#define __launch_bounds__(...)

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

/// What each lane gives to a warp-level exchange: a shuffled value, or the
/// registers or address of a matrix instruction.
using LaneWords = std::array<unsigned, 6>;

/// The block being run.
struct Block {
  ucontext_t scheduler;
  std::vector<Fiber> fibers;
  /// What each thread gives to the warp-level exchange in progress.
  std::vector<LaneWords> warpSlots;
  /// The dynamic shared memory of the running block.
  std::vector<unsigned char> dynamicShared;
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

/// The 32 lanes' `mine` (the running warp's), gathered at a warp barrier:
/// every warp-level exchange (shuffles, mma, ldmatrix) goes through here.
inline std::array<LaneWords, 32> gatherWarp(const LaneWords &mine) {
  const unsigned t = threadIdx.x;
  runningBlock->warpSlots[t] = mine;
  park(FiberState::AtShuffle);
  std::array<LaneWords, 32> all;
  for (unsigned lane = 0; lane < 32; ++lane)
    all[lane] = runningBlock->warpSlots[(t & ~31u) | lane];
  park(FiberState::AtShuffle); // nobody overwrites a slot still to be read
  return all;
}

} // namespace kiln::dev::emulation

inline void __syncthreads() {
  kiln::dev::emulation::park(kiln::dev::emulation::FiberState::AtSyncThreads);
}

namespace kiln::dev::emulation {

/// Element `half` (0: bits 0-15) of a register of two bf16, as a float.
inline float bf16Half(unsigned reg, int half) {
  __nv_bfloat16_raw raw;
  raw.x = static_cast<unsigned short>(half ? reg >> 16 : reg & 0xffffu);
  return __bfloat162float(__nv_bfloat16(raw));
}

/// The 16-bit element `col` of the shared-memory row at `address`.
inline unsigned rowElement(unsigned long long address, int col) {
  unsigned short value;
  std::memcpy(&value,
              reinterpret_cast<const unsigned char *>(address) + 2 * col,
              sizeof value);
  return value;
}

/// ldmatrix .x4 (.trans when `transpose`): lanes 8i..8i+7 give matrix i's
/// row addresses.
inline void loadMatrices(unsigned (&r)[4], const void *row, bool transpose) {
  const auto address = reinterpret_cast<unsigned long long>(row);
  const auto all =
      gatherWarp({static_cast<unsigned>(address),
                  static_cast<unsigned>(address >> 32), 0, 0, 0, 0});
  auto rowAddress = [&](int lane) {
    return static_cast<unsigned long long>(all[lane][0]) |
           static_cast<unsigned long long>(all[lane][1]) << 32;
  };
  const int lane = threadIdx.x % 32, group = lane / 4, pair = lane % 4;
  for (int i = 0; i < 4; ++i) {
    unsigned lo, hi;
    if (transpose) { // rows 2 pair and 2 pair + 1, column group
      lo = rowElement(rowAddress(8 * i + 2 * pair), group);
      hi = rowElement(rowAddress(8 * i + 2 * pair + 1), group);
    } else { // row group, columns 2 pair and 2 pair + 1
      lo = rowElement(rowAddress(8 * i + group), 2 * pair);
      hi = rowElement(rowAddress(8 * i + group), 2 * pair + 1);
    }
    r[i] = lo | hi << 16;
  }
}

} // namespace kiln::dev::emulation

namespace kiln::dev::detail {

/// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, d += a * b: lane
/// (group g = lane / 4, pair p = lane % 4) holds A rows g and g + 8,
/// columns 2p, 2p + 1 (a[0], a[1]) and 2p + 8, 2p + 9 (a[2], a[3]); B
/// column g, rows 2p, 2p + 1 (b0) and 2p + 8, 2p + 9 (b1); D rows g
/// (d[0], d[1]) and g + 8 (d[2], d[3]), columns 2p and 2p + 1.
inline void mmaBf16(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                    unsigned b1) {
  const auto all = emulation::gatherWarp({a[0], a[1], a[2], a[3], b0, b1});
  auto aAt = [&](int row, int k) {
    const auto &regs = all[4 * (row % 8) + (k % 8) / 2];
    return emulation::bf16Half(regs[(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)],
                               k % 2);
  };
  auto bAt = [&](int k, int col) {
    const auto &regs = all[4 * col + (k % 8) / 2];
    return emulation::bf16Half(regs[k >= 8 ? 5 : 4], k % 2);
  };
  const int lane = threadIdx.x % 32, group = lane / 4, pair = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = group + (i >= 2 ? 8 : 0), col = 2 * pair + i % 2;
    float sum = d[i];
    for (int k = 0; k < 16; ++k)
      sum += aAt(row, k) * bAt(k, col);
    d[i] = sum;
  }
}

inline void loadMatrixX4(unsigned (&r)[4], const void *row) {
  emulation::loadMatrices(r, row, false);
}
inline void loadMatrixX4Trans(unsigned (&r)[4], const void *row) {
  emulation::loadMatrices(r, row, true);
}

/// cp.async: the copy happens at once.
inline void copyAsync16(void *dst, const void *src, bool valid) {
  if (valid)
    std::memcpy(dst, src, 16);
  else
    std::memset(dst, 0, 16);
}
inline void copyAsyncCommit() {}
template <int kPending> void copyAsyncWait() {}

inline unsigned char *dynamicSharedMemory() {
  return emulation::runningBlock->dynamicShared.data();
}
inline unsigned dynamicSharedBytes() {
  return static_cast<unsigned>(emulation::runningBlock->dynamicShared.size());
}
[[noreturn]] inline void trap() {
  std::fprintf(stderr, "emulateKernel: the kernel trapped\n");
  std::abort();
}

} // namespace kiln::dev::detail

/// Fibers never run at the same time: a plain add.
inline float atomicAdd(float *address, float value) {
  float old = *address;
  *address = old + value;
  return old;
}

/// The single-rounding arithmetic intrinsics: the host's operators (no
/// contraction into fused multiply-adds on x86-64 without -mfma).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }

inline float __shfl_xor_sync(unsigned, float value, int laneMask) {
  kiln::dev::emulation::LaneWords mine{};
  std::memcpy(&mine[0], &value, sizeof value);
  const auto all = kiln::dev::emulation::gatherWarp(mine);
  float other;
  std::memcpy(&other, &all[(threadIdx.x % 32) ^ laneMask][0], sizeof other);
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
/// threads (blockDim.x = threads) with `sharedBytes` of dynamic shared
/// memory; returns when every block has finished.
inline void emulateKernel(EmulatedDim3 grid, unsigned threads,
                          const std::function<void()> &body,
                          std::size_t sharedBytes = 0) {
  using namespace kiln::dev::emulation;
  gridDim = {std::max(grid.x, 1u), std::max(grid.y, 1u), std::max(grid.z, 1u)};
  blockDim = {threads, 1, 1};
  Block block;
  block.fibers.resize(threads);
  block.warpSlots.resize(threads);
  block.body = &body;
  for (Fiber &fiber : block.fibers)
    fiber.stack.reset(new char[kFiberStackBytes]);
  runningBlock = &block;
  for (unsigned z = 0; z < gridDim.z; ++z)
    for (unsigned y = 0; y < gridDim.y; ++y)
      for (unsigned x = 0; x < gridDim.x; ++x) {
        blockIdx = {x, y, z};
        // 0xff bytes: NaN as bf16 and as float, like garbage on a GPU.
        block.dynamicShared.assign(sharedBytes, 0xff);
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

//===- CostModel.h - What a target can do, and what ops cost ----*- C++ -*-===//
//
// The planners' shared model of a target: its memories and peak rates, and
// from them FLOPs, bytes and predicted times of ops and the tile sizes of
// the IO-aware kernels. Predictions are labelled as such wherever reported.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_PASSES_COSTMODEL_H
#define KILN_PASSES_COSTMODEL_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <optional>
#include <string>

namespace kiln {

/// A machine the cost model sizes tiles for. The GPUs: datasheet figures
/// of the SXM parts; H100 and H200 share an architecture (sm_90a) and
/// differ in memory (80 and 141 GB) and its bandwidth.
struct Target {
  std::string name;
  /// The architecture its kernels compile for ("" for the host).
  std::string arch;
  bool gpu = false;
  /// Fast memory one tile may use: shared memory per block on a GPU, a
  /// share of a core's L2 cache on the host.
  int64_t tileMemoryBytes = 0;
  /// Dense matrix rate (BF16 tensor cores on a GPU, FP32 on the host) and
  /// main-memory bandwidth, from datasheets or measurements.
  double peakFlops = 0;
  double memoryBandwidth = 0;
  /// Device memory (0 for the host: not modelled).
  int64_t memoryBytes = 0;
  /// Bandwidth of one device's links to its peers, one direction (NVLink;
  /// 0 for the host: not modelled), for the collectives.
  double linkBandwidth = 0;
};

/// Every known target: host, a100, h100, h200.
llvm::ArrayRef<Target> knownTargets();

/// `host`, `a100`, `h100` or `h200`; an error naming the known targets.
llvm::Expected<Target> lookupTarget(llvm::StringRef name);

/// The target of a CUDA architecture when nothing else is known: `sm_80`
/// -> a100, `sm_9x` -> h100 (the smaller part of that architecture), else
/// host. Name the GPU (`--target cuda:h200`) to get the other.
std::string targetForArch(llvm::StringRef arch);

/// The target of a GPU the runtime found: by its name ("NVIDIA H200"),
/// else, on sm_90, by its memory (more than 100 GiB: an H200), else by its
/// architecture.
std::string targetForDevice(llvm::StringRef deviceName, llvm::StringRef arch,
                            uint64_t memoryBytes);

struct AttentionTiles {
  int64_t blockQ = 64, blockK = 64, numWarps = 4, numStages = 2;
  /// Where the sizes came from and why, with the numbers.
  std::string reason;
};

struct AttentionShape {
  int64_t batch, seqLen, numHeads, numKvHeads, headDim;
  unsigned elementBytes;
  bool causal;
};

/// Tile sizes of FlashAttention for `shape` on `target` from the cost model:
/// the largest blocks whose working set fits the target's tile memory (and,
/// on a GPU, the registers of the tensor-core kernels).
AttentionTiles chooseAttentionTiles(const Target &target,
                                    const AttentionShape &shape, bool backward);

/// Whether the tensor-core FlashAttention kernels (runtime/cuda/device/
/// FlashAttention.cuh), which take BF16 storage, handle this head dim: 16, 32,
/// 64 or 128.
bool hasFlashKernel(int64_t headDim);

/// `tiles` made valid for the tensor-core kernels of `headDim`: blocks
/// multiples of 16 in [16, 128] (backward: at least 32, the key block a
/// power of two), warps one per 16 rows of the block a warp owns (the
/// forward's queries, the backward's keys), at most 2 stages forward and 1
/// backward. Tiles the GPU cost model chose come back unchanged.
AttentionTiles fitFlashKernelTiles(AttentionTiles tiles, int64_t headDim,
                                   bool backward);

/// Dynamic shared memory of the tensor-core kernel for `tiles`, in bytes.
int64_t flashKernelSharedBytes(const AttentionTiles &tiles, int64_t headDim,
                               bool backward);

/// Looks `shape` up in a tuning database (JSON written by `kiln tune`):
/// `{"attention": [{"target", "head_dim", "dtype_bytes", "causal",
/// "seq_len" (optional), "block_q", "block_k", "num_warps", "num_stages"}]}`.
/// The entry with the nearest seq_len wins. Errors name the file and entry.
llvm::Expected<std::optional<AttentionTiles>>
lookupTunedAttention(llvm::StringRef path, const Target &target,
                     const AttentionShape &shape);

/// FLOPs of attention forward or backward (4 or 10 b*h*s^2*d, halved when
/// causal) and the fewest bytes it must move (q, k, v, o, lse once).
double attentionFlops(const AttentionShape &shape, bool backward);
double attentionBytes(const AttentionShape &shape, bool backward);

/// Predicted seconds of work with `flops` and `bytes` on `target`: the
/// larger of compute time and memory time (a roofline).
double predictSeconds(const Target &target, double flops, double bytes);

/// Predicted seconds of a ring collective of `bytes` (each rank's tensor)
/// over `ranks` devices linked at `target.linkBandwidth`: every rank sends
/// (ranks - 1) / ranks of the bytes once for a reduce-scatter or an
/// all-gather, twice for an all-reduce. 0 with one rank or no link model.
double predictCollectiveSeconds(const Target &target, double bytes,
                                int64_t ranks, bool allReduce);

} // namespace kiln

#endif // KILN_PASSES_COSTMODEL_H

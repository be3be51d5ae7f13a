//===- CostModel.cpp - What a target can do, and what ops cost ------------===//

#include "passes/CostModel.h"
#include "runtime/plan/Schema.h"

#include "llvm/Support/CheckedArithmetic.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <algorithm>
#include <cmath>
#include <limits>

using namespace kiln;
using llvm::formatv;

llvm::ArrayRef<Target> kiln::knownTargets() {
  // Datasheet figures (dense BF16; SXM parts; NVLink per direction); shared
  // memory per block is the opt-in maximum. The host: 2 cores of a current x86
  // at ~100 GFLOP/s FP32 each, and a quarter of a 1 MiB L2 for one tile's
  // working set.
  static const Target targets[] = {
      {.name = "host",
       .arch = "",
       .gpu = false,
       .tileMemoryBytes = 256 << 10,
       .peakFlops = 200e9,
       .memoryBandwidth = 20e9},
      {.name = "a100",
       .arch = "sm_80",
       .gpu = true,
       .tileMemoryBytes = 163 << 10,
       .peakFlops = 312e12,
       .memoryBandwidth = 2.0e12,
       .memoryBytes = 80'000'000'000,
       .linkBandwidth = 300e9},
      {.name = "h100",
       .arch = "sm_90a",
       .gpu = true,
       .tileMemoryBytes = 227 << 10,
       .peakFlops = 989e12,
       .memoryBandwidth = 3.35e12,
       .memoryBytes = 80'000'000'000,
       .linkBandwidth = 450e9},
      {.name = "h200",
       .arch = "sm_90a",
       .gpu = true,
       .tileMemoryBytes = 227 << 10,
       .peakFlops = 989e12,
       .memoryBandwidth = 4.8e12,
       .memoryBytes = 141'000'000'000,
       .linkBandwidth = 450e9},
  };
  return targets;
}

llvm::Expected<Target> kiln::lookupTarget(llvm::StringRef name) {
  std::string known;
  for (const Target &target : knownTargets()) {
    if (target.name == name)
      return target;
    known += (known.empty() ? "" : ", ") + target.name;
  }
  return llvm::createStringError(
      formatv("unknown target '{0}' (known: {1})", name, known).str());
}

std::string kiln::targetForArch(llvm::StringRef arch) {
  if (arch.starts_with("sm_8"))
    return "a100";
  if (arch.starts_with("sm_9"))
    return "h100";
  return "host";
}

std::string kiln::targetForDevice(llvm::StringRef deviceName,
                                  llvm::StringRef arch, uint64_t memoryBytes) {
  for (const Target &target : knownTargets())
    if (target.gpu && deviceName.contains_insensitive(target.name))
      return target.name;
  if (arch.starts_with("sm_9") && memoryBytes > (100ull << 30))
    return "h200";
  return targetForArch(arch);
}

namespace {
/// Rounds up to a multiple of 16, the granularity of the tiles (an MMA
/// fragment's rows).
int64_t roundUp16(int64_t x) { return (x + 15) / 16 * 16; }
} // namespace

bool kiln::hasFlashKernel(int64_t headDim) {
  return headDim == 16 || headDim == 32 || headDim == 64 || headDim == 128;
}

namespace {
/// x rounded down to a multiple of 16 in [16, 128].
int64_t blockOf(int64_t x) { return std::clamp<int64_t>(x / 16 * 16, 16, 128); }
/// The largest power of two <= x in [16, 128].
int64_t powerOfTwoBlockOf(int64_t x) {
  int64_t block = 16;
  while (block * 2 <= std::min<int64_t>(x, 128))
    block *= 2;
  return block;
}
} // namespace

AttentionTiles kiln::fitFlashKernelTiles(AttentionTiles tiles, int64_t headDim,
                                         bool backward) {
  if (backward) {
    // At least 32 keys and queries: NVRTC spills registers in the 16-row
    // variants.
    tiles.blockK = std::max<int64_t>(32, powerOfTwoBlockOf(tiles.blockK));
    tiles.blockQ = std::max<int64_t>(32, blockOf(tiles.blockQ));
    tiles.numWarps = tiles.blockK / 16;
    tiles.numStages = 1;
  } else {
    tiles.blockQ = blockOf(tiles.blockQ);
    tiles.blockK = blockOf(tiles.blockK);
    tiles.numWarps = tiles.blockQ / 16;
    tiles.numStages = std::clamp<int64_t>(tiles.numStages, 1, 2);
  }
  return tiles;
}

int64_t kiln::flashKernelSharedBytes(const AttentionTiles &tiles,
                                     int64_t headDim, bool backward) {
  // Past 2^20 the kernels' formulas could overflow; no GPU has shared
  // memory for such tiles, so they need "more than any".
  constexpr int64_t kLargest = int64_t(1) << 20;
  for (int64_t size : {headDim, tiles.blockQ, tiles.blockK, tiles.numStages})
    if (size > kLargest)
      return std::numeric_limits<int64_t>::max();
  return backward ? plan::flashBackwardSharedBytes(headDim, tiles.blockQ,
                                                   tiles.blockK)
                  : plan::flashForwardSharedBytes(
                        headDim, tiles.blockQ, tiles.blockK, tiles.numStages);
}

AttentionTiles kiln::chooseAttentionTiles(const Target &target,
                                          const AttentionShape &shape,
                                          bool backward) {
  int64_t d = shape.headDim;
  // No block larger than the sequence (rounded up to the tile granularity);
  // no block exceeds 128 either, which keeps the rounding from overflowing.
  int64_t cap =
      std::max<int64_t>(16, roundUp16(std::min<int64_t>(shape.seqLen, 128)));
  AttentionTiles tiles;
  if (target.gpu) {
    // FlashAttention-2 on tensor cores (mma.sync m16n8k16), a warp per 16
    // rows. Forward: 128-query blocks, 128-key blocks for small heads and
    // 64 for large ones (the FP32 output accumulator grows with the head
    // dim), K/V double-buffered. Backward: 128-key blocks (the dK and dV
    // accumulators take head-dim registers per thread) against 64-query
    // tiles, worked 16 queries at a time. Shrink until the tiles fit shared
    // memory.
    if (backward) {
      tiles.blockK = std::min<int64_t>(128, cap);
      tiles.blockQ = std::min<int64_t>(64, cap);
    } else {
      tiles.blockQ = std::min<int64_t>(128, cap);
      tiles.blockK = std::min<int64_t>(d <= 64 ? 128 : 64, cap);
      tiles.numStages = 2;
    }
    tiles = fitFlashKernelTiles(tiles, d, backward);
    auto smem = [&] { return flashKernelSharedBytes(tiles, d, backward); };
    // Halve the query block, then the key block, while the kernels accept
    // the smaller size.
    for (int64_t AttentionTiles::*block :
         {&AttentionTiles::blockQ, &AttentionTiles::blockK})
      while (smem() > target.tileMemoryBytes) {
        AttentionTiles smaller = tiles;
        smaller.*block /= 2;
        smaller = fitFlashKernelTiles(smaller, d, backward);
        if (smaller.*block >= tiles.*block)
          break;
        tiles = smaller;
      }
    tiles.reason =
        backward
            ? formatv("cost model for {0}: blocks of {1} keys (a warp per 16) "
                      "against {2}-query tiles; K, V, Q, dO and dS tiles use "
                      "{3} KiB of {4} KiB shared memory",
                      target.name, tiles.blockK, tiles.blockQ, smem() >> 10,
                      target.tileMemoryBytes >> 10)
                  .str()
            : formatv("cost model for {0}: Q tile {1}x{2} + {3} stages of K "
                      "and V tiles {4}x{2} use {5} KiB of {6} KiB shared "
                      "memory; {7} warps of 16 query rows",
                      target.name, tiles.blockQ, d, tiles.numStages,
                      tiles.blockK, smem() >> 10, target.tileMemoryBytes >> 10,
                      tiles.numWarps)
                  .str();
    return tiles;
  }
  // Host: square blocks whose FP32 working set (Q, K, V, the score tile and
  // the output accumulator) stays in a core's share of L2.
  // Saturating at INT64_MAX: the working set of a head too large for 64
  // bits fits no cache.
  auto working = [&](int64_t b) {
    std::optional<int64_t> elements = llvm::checkedMulAdd(4 * b, d, b * b);
    std::optional<int64_t> bytes =
        elements ? llvm::checkedMul<int64_t>(*elements, 4) : std::nullopt;
    return bytes.value_or(std::numeric_limits<int64_t>::max());
  };
  int64_t block = 128;
  while (block > 16 && working(block) > target.tileMemoryBytes)
    block /= 2;
  tiles.blockQ = tiles.blockK = std::min(block, cap);
  tiles.numWarps = 1;
  tiles.numStages = 1;
  tiles.reason = formatv("cost model for {0}: {1}x{1} blocks keep Q, K, V, "
                         "the score tile and the accumulator ({2} KiB FP32) "
                         "within {3} KiB of L2",
                         target.name, tiles.blockQ, working(tiles.blockQ) >> 10,
                         target.tileMemoryBytes >> 10);
  return tiles;
}

llvm::Expected<std::optional<AttentionTiles>>
kiln::lookupTunedAttention(llvm::StringRef path, const Target &target,
                           const AttentionShape &shape) {
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/true);
  if (!buffer)
    return llvm::createStringError(
        formatv("{0}: cannot read the tuning database: {1}", path,
                buffer.getError().message())
            .str());
  llvm::Expected<llvm::json::Value> root =
      llvm::json::parse((*buffer)->getBuffer());
  if (!root)
    return llvm::createStringError(formatv("{0}: invalid JSON: {1}", path,
                                           llvm::toString(root.takeError()))
                                       .str());
  const llvm::json::Object *object = root->getAsObject();
  const llvm::json::Array *entries =
      object ? object->getArray("attention") : nullptr;
  if (!entries)
    return llvm::createStringError(
        formatv("{0}: expected an object with an 'attention' array", path)
            .str());
  std::optional<AttentionTiles> best;
  int64_t bestDistance = INT64_MAX;
  for (auto [index, value] : llvm::enumerate(*entries)) {
    const llvm::json::Object *entry = value.getAsObject();
    auto integer = [&](llvm::StringRef key) -> std::optional<int64_t> {
      return entry ? entry->getInteger(key) : std::nullopt;
    };
    std::optional<int64_t> blockQ = integer("block_q"),
                           blockK = integer("block_k"),
                           warps = integer("num_warps"),
                           stages = integer("num_stages");
    // Bounds far above any kernel's, so that the kernels' workspaces
    // (block_q x block_k scores) cannot overflow.
    constexpr int64_t kMaxBlock = 4096, kMaxWarps = 32, kMaxStages = 8;
    auto within = [](std::optional<int64_t> value, int64_t most) {
      return value && *value > 0 && *value <= most;
    };
    if (!entry || !entry->getString("target") || !integer("head_dim") ||
        !within(blockQ, kMaxBlock) || !within(blockK, kMaxBlock) ||
        !within(warps, kMaxWarps) || !within(stages, kMaxStages))
      return llvm::createStringError(
          formatv("{0}: attention entry {1} needs target, head_dim and "
                  "block_q, block_k in [1, {2}], num_warps in [1, {3}] and "
                  "num_stages in [1, {4}]",
                  path, index, kMaxBlock, kMaxWarps, kMaxStages)
              .str());
    if (*entry->getString("target") != target.name ||
        *integer("head_dim") != shape.headDim ||
        integer("dtype_bytes").value_or(shape.elementBytes) !=
            shape.elementBytes ||
        entry->getBoolean("causal").value_or(shape.causal) != shape.causal)
      continue;
    // |entry's seq_len - ours|, the largest distance where that overflows.
    std::optional<int64_t> difference = llvm::checkedSub(
        integer("seq_len").value_or(shape.seqLen), shape.seqLen);
    int64_t distance = difference && *difference != INT64_MIN
                           ? std::abs(*difference)
                           : std::numeric_limits<int64_t>::max();
    if (distance >= bestDistance)
      continue;
    bestDistance = distance;
    best = AttentionTiles{*blockQ, *blockK, *warps, *stages,
                          formatv("tuning database {0}, entry {1} (measured "
                                  "for seq_len {2})",
                                  path, index,
                                  integer("seq_len").value_or(shape.seqLen))
                              .str()};
  }
  return best;
}

double kiln::attentionFlops(const AttentionShape &shape, bool backward) {
  double flops = (backward ? 10.0 : 4.0) * shape.batch * shape.numHeads *
                 double(shape.seqLen) * shape.seqLen * shape.headDim;
  return shape.causal ? flops / 2 : flops;
}

double kiln::attentionBytes(const AttentionShape &shape, bool backward) {
  double q = double(shape.batch) * shape.seqLen * shape.numHeads *
             shape.headDim * shape.elementBytes;
  double kv = q / shape.numHeads * shape.numKvHeads;
  double lse = double(shape.batch) * shape.numHeads * shape.seqLen * 4;
  // Forward: read q, k, v, write o and lse. Backward: read those and do,
  // write dq, dk, dv.
  return backward ? 3 * q + 4 * kv + lse : 2 * q + 2 * kv + lse;
}

double kiln::predictSeconds(const Target &target, double flops, double bytes) {
  return std::max(flops / target.peakFlops, bytes / target.memoryBandwidth);
}

double kiln::predictCollectiveSeconds(const Target &target, double bytes,
                                      int64_t ranks, bool allReduce) {
  if (ranks <= 1 || target.linkBandwidth <= 0)
    return 0;
  double share = double(ranks - 1) / double(ranks) * bytes;
  return (allReduce ? 2 : 1) * share / target.linkBandwidth;
}

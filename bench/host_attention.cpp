//===- host_attention.cpp - Naive vs tiled attention on the host ----------===//
//
// Times the reference attentionForward + attentionBackward against
// flashAttentionForward + flashAttentionBackward (FP32, batch 1, 4 heads,
// head dim 64, causal and full) for seq 512 to 4096, and prints the extra
// memory each needs beyond its inputs and outputs, the speed ratio and the
// largest difference between the two results.
//
//   build/bin/kiln-attention-bench [--max-seq N] [--block-q N] [--block-k N]
//
// Each timing is the fastest of up to three runs, fewer when one run takes
// over a second (under two minutes in all on 2 cores).
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "runtime/host/Kernels.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace kiln::rt::host;

namespace {

constexpr std::int64_t kHeads = 4;
constexpr std::int64_t kHeadDim = 64;
constexpr int kMaxRuns = 3;
constexpr double kEnoughSeconds = 1.0; ///< no further runs after one this long

/// Fastest wall time of `run` in milliseconds.
template <typename Run> double bestMilliseconds(Run run) {
  double best = INFINITY;
  for (int i = 0; i < kMaxRuns; ++i) {
    auto start = std::chrono::steady_clock::now();
    run();
    std::chrono::duration<double> seconds =
        std::chrono::steady_clock::now() - start;
    best = std::min(best, seconds.count() * 1e3);
    if (seconds.count() > kEnoughSeconds)
      break;
  }
  return best;
}

/// max |a - b| / max |b|.
double relativeDifference(const std::vector<float> &a,
                          const std::vector<float> &b) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

double mebibytes(std::int64_t bytes) { return bytes / (1024.0 * 1024.0); }

struct Result {
  double forwardMs, backwardMs;
  std::int64_t forwardBytes, backwardBytes;
};

void runCase(std::int64_t seq, bool causal, FlashBlocks blocks) {
  std::int64_t qSize = seq * kHeads * kHeadDim;
  double scale = 1.0 / std::sqrt(double(kHeadDim));
  std::mt19937_64 rng(seq);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  auto random = [&](std::int64_t n) {
    std::vector<float> values(n);
    for (float &value : values)
      value = dist(rng);
    return values;
  };
  std::vector<float> q = random(qSize), k = random(qSize), v = random(qSize),
                     dout = random(qSize);
  std::vector<float> lse(kHeads * seq);
  std::int64_t threads = omp_get_max_threads();

  // What each allocates beyond its arguments (runtime/host/Attention.cpp,
  // FlashAttention.cpp): the reference keeps a row of scores per thread in
  // the forward and dk, dv accumulators for a whole document per thread in
  // the backward, all in double; the tiled kernels their per-thread tiles,
  // and the backward D, one value per query row.
  Result naive{0, 0, threads * (seq + kHeadDim) * std::int64_t(sizeof(double)),
               threads * (2 * seq * kHeadDim + kHeadDim) *
                   std::int64_t(sizeof(double))};
  std::int64_t tiles = threads * flashWorkspaceBytes(kHeadDim, blocks);
  Result flash{0, 0, tiles, tiles + seq * kHeads * std::int64_t(sizeof(float))};

  std::vector<float> naiveOut(qSize), flashOut(qSize);
  std::vector<float> naiveGrads(3 * qSize), flashGrads(3 * qSize);
  naive.forwardMs = bestMilliseconds([&] {
    attentionForward(q.data(), k.data(), v.data(), naiveOut.data(), lse.data(),
                     1, seq, kHeads, kHeads, kHeadDim, scale, causal, nullptr,
                     0);
  });
  naive.backwardMs = bestMilliseconds([&] {
    attentionBackward(dout.data(), q.data(), k.data(), v.data(),
                      naiveOut.data(), lse.data(), naiveGrads.data(),
                      naiveGrads.data() + qSize, naiveGrads.data() + 2 * qSize,
                      1, seq, kHeads, kHeads, kHeadDim, scale, causal, nullptr,
                      0);
  });
  flash.forwardMs = bestMilliseconds([&] {
    flashAttentionForward(q.data(), k.data(), v.data(), flashOut.data(),
                          lse.data(), 1, seq, kHeads, kHeads, kHeadDim, scale,
                          causal, nullptr, 0, blocks);
  });
  flash.backwardMs = bestMilliseconds([&] {
    flashAttentionBackward(dout.data(), q.data(), k.data(), v.data(),
                           flashOut.data(), lse.data(), flashGrads.data(),
                           flashGrads.data() + qSize,
                           flashGrads.data() + 2 * qSize, 1, seq, kHeads,
                           kHeads, kHeadDim, scale, causal, nullptr, 0, blocks);
  });

  double naiveTotal = naive.forwardMs + naive.backwardMs;
  double flashTotal = flash.forwardMs + flash.backwardMs;
  std::printf("%5lld %-6s | %9.1f %9.1f %8.2f %8.2f | %9.1f %9.1f %8.3f "
              "%8.3f | %5.1fx %5.1fx %5.1fx | %.1e %.1e\n",
              static_cast<long long>(seq), causal ? "causal" : "full",
              naive.forwardMs, naive.backwardMs, mebibytes(naive.forwardBytes),
              mebibytes(naive.backwardBytes), flash.forwardMs, flash.backwardMs,
              mebibytes(flash.forwardBytes), mebibytes(flash.backwardBytes),
              naive.forwardMs / flash.forwardMs,
              naive.backwardMs / flash.backwardMs, naiveTotal / flashTotal,
              relativeDifference(flashOut, naiveOut),
              relativeDifference(flashGrads, naiveGrads));
  std::fflush(stdout);
}

/// The value of `--name N`, or `fallback`.
std::int64_t option(int argc, char **argv, const char *name,
                    std::int64_t fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0)
      return std::atoll(argv[i + 1]);
  return fallback;
}

} // namespace

int main(int argc, char **argv) {
  std::int64_t maxSeq = option(argc, argv, "--max-seq", 4096);
  FlashBlocks blocks{option(argc, argv, "--block-q", 64),
                     option(argc, argv, "--block-k", 64)};
  std::printf("host attention, FP32: batch 1, %lld heads, head dim %lld, "
              "%d OpenMP threads, flash blocks %lldx%lld\n"
              "ms: fastest of up to %d runs; MiB: memory beyond inputs and "
              "outputs (naive accumulates in FP64, flash in FP32)\n\n",
              static_cast<long long>(kHeads), static_cast<long long>(kHeadDim),
              omp_get_max_threads(), static_cast<long long>(blocks.blockQ),
              static_cast<long long>(blocks.blockK), kMaxRuns);
  std::printf("                   naive                 |                 "
              "flash                 |   naive / flash   | flash vs naive\n"
              "  seq mask   |    fwd ms    bwd ms  fwd MiB  bwd MiB |    fwd "
              "ms    bwd ms  fwd MiB  bwd MiB |   fwd   bwd total | out    "
              "grads\n");
  try {
    for (std::int64_t seq : {512, 1024, 2048, 4096}) {
      if (seq > maxSeq)
        break;
      for (bool causal : {false, true})
        runCase(seq, causal, blocks);
    }
  } catch (const kiln::rt::Error &error) {
    std::fprintf(stderr, "kiln-attention-bench: %s\n", error.what());
    return 1;
  }
  return 0;
}

//===- Trainer.h - The training loop ----------------------------*- C++ -*-===//
//
// Runs a compiled training plan for a number of steps on token data:
// initialisation (seeded or from a safetensors file), the data stream,
// the learning-rate schedule, metrics, a progress bar, atomic checkpoints
// with Hugging Face names, and resuming so that a resumed run continues the
// uninterrupted run's loss curve exactly.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_TRAIN_TRAINER_H
#define KILN_RUNTIME_TRAIN_TRAINER_H

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kiln::rt {

/// Defaults of a fresh run (a resumed one uses what it was started with).
constexpr int64_t kDefaultSteps = 200;
constexpr double kDefaultLr = 1e-3;
constexpr int64_t kDefaultKeep = 2;

/// What `kiln train` and `kiln-run` were asked for. The optional settings
/// are unset when their flag was not given: a fresh run then takes the
/// default, a resumed run the value it was started with.
struct TrainOptions {
  std::string planText;                     ///< the compiled plan (JSON)
  std::string planSource = "compiled plan"; ///< names the plan in errors
  std::string configText; ///< the model's config.json, copied to checkpoints
  std::string configSource = "the given config"; ///< names it in errors
  /// Token shards, directories of them or of text files, text files, or
  /// glob patterns of those.
  std::vector<std::string> data;
  /// Held-out data to evaluate on, as `data` (empty: a directory of llm.c
  /// shards in `data` gives its *_val* shards, else no evaluation); the
  /// steps between evaluations (default: a tenth of the run's) and the
  /// tokens each reads (default: 20 batches', at most the data's).
  std::vector<std::string> valData;
  std::optional<int64_t> evalEvery;
  std::optional<int64_t> evalTokens;
  /// Empty: a fresh run writes to "out", a resumed one to its own directory.
  std::string outDir;
  std::optional<int64_t> steps;
  std::optional<double> lr;
  std::optional<int64_t> warmupSteps; ///< default: a tenth, at most 100
  double minLrRatio = 0.1;
  /// The schedule's decay (LrDecay's name), WSD's decay share of the steps,
  /// and the final rate (else minLrRatio of the peak); the run's own when
  /// resuming unless given.
  std::optional<std::string> lrSchedule;
  std::optional<double> decayFraction;
  std::optional<double> minLr;
  std::optional<uint64_t> seed;
  std::string initPath;      ///< initial weights by Hugging Face name
  std::string saveGradsPath; ///< first step's tokens, loss and gradients
  std::string resumeDir;     ///< an output directory or a checkpoint in it
  std::optional<int64_t> saveEvery; ///< 0: only at the end (default)
  std::optional<int64_t> keep;      ///< checkpoints kept; 0: all
  /// Write no checkpoint at all, not even at the end or on an interrupt
  /// (benchmarks); the metrics and the loss curve are still written.
  bool noCheckpoint = false;
  bool overwrite = false;   ///< a fresh run may replace an earlier run's files
  bool progressBar = false; ///< redraw a bar (a terminal); else log lines
  bool logScale = false;    ///< loss.svg's loss axis logarithmic
  std::string backend = "auto"; ///< auto, host or cuda
  /// How the user started this run ("kiln train config.json"), for the
  /// resume command printed after an interrupt.
  std::string command = "kiln-run plan.json";
};

/// The compiled settings a checkpoint records, so that `kiln train
/// --resume` recompiles the step the run was started with.
struct CompiledSettings {
  int64_t batch = 0, seqLen = 0;
  /// Micro-batches per step the run was compiled with (older runs: 1).
  int64_t microBatches = 1;
  std::optional<std::string> precision;
  std::optional<double> weightDecay, gradClip;
  std::optional<double> beta1, beta2, eps;
  /// The ZeRO stage (the plan's model.zero; older runs: 0).
  int64_t zero = 0;
  /// The packing (model.packing; older runs: stream) and the --eot given.
  std::string packing = "stream";
  std::optional<int64_t> eot;
};

/// Reads them from the checkpoint `resumeDir` names (as --resume does);
/// on failure returns false with the reason in `error`. Never throws.
bool readCompiledSettings(const std::string &resumeDir,
                          CompiledSettings &settings,
                          std::string &error) noexcept;

/// Trains; returns the process exit status: 0, 1 after an error (printed to
/// stderr as `kiln: error: ...`), or 128 + the signal after SIGINT/SIGTERM
/// stopped the run (with a checkpoint saved). Nothing here throws.
int runTraining(const TrainOptions &options) noexcept;

} // namespace kiln::rt

#endif // KILN_RUNTIME_TRAIN_TRAINER_H

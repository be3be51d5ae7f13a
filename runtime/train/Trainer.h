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
#include <string>
#include <vector>

namespace kiln::rt {

struct TrainOptions {
  std::string planText;                     ///< the compiled plan (JSON)
  std::string planSource = "compiled plan"; ///< names the plan in errors
  std::string configText; ///< the model's config.json, copied to checkpoints
  std::vector<std::string> data; ///< token shards, directories or text files
  std::string outDir = "out";
  int64_t steps = 100;
  double lr = 1e-3;
  int64_t warmupSteps = -1; ///< -1: a tenth of the steps, at most 100
  double minLrRatio = 0.1;
  uint64_t seed = 0;
  std::string initPath;      ///< initial weights by Hugging Face name
  std::string saveGradsPath; ///< first step's tokens, loss and gradients
  std::string resumeDir;     ///< an output directory or a checkpoint in it
  int64_t saveEvery = 0;     ///< 0: only at the end
  int keepCheckpoints = 2;
  bool progressBar = false;     ///< redraw a bar (a terminal); else log lines
  std::string backend = "auto"; ///< auto, host or cuda
};

/// Trains; returns the process exit status. Errors are printed to stderr as
/// `kiln: error: ...`; nothing here throws.
int runTraining(const TrainOptions &options) noexcept;

/// Writes llm.c token shards (byte-level tokens) for `inputs` into `output`
/// (a .bin file). Returns the exit status; never throws.
int runTokenize(const std::vector<std::string> &inputs,
                const std::string &output) noexcept;

} // namespace kiln::rt

#endif // KILN_RUNTIME_TRAIN_TRAINER_H

//===- ConfigFuzzer.cpp - Fuzzing the model config front end --------------===//
//
// Any text given as a config.json is either a model configuration or an
// llvm::Error naming the problem; anything else (a crash, a sanitizer
// report, a runaway allocation) is a bug.
//
//===----------------------------------------------------------------------===//

#include "compiler/frontend/ModelConfig.h"

#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data,
                                      std::size_t size) {
  llvm::StringRef text(reinterpret_cast<const char *>(data), size);
  llvm::Expected<kiln::ModelConfig> config =
      kiln::parseModelConfig(text, "fuzz.json");
  if (!config) {
    llvm::consumeError(config.takeError()); // refused, as it should be
    return 0;
  }
  // What the rest of the compiler divides by and sizes buffers with.
  if (config->numHeads <= 0 || config->numKvHeads <= 0 ||
      config->headDim <= 0 || config->hiddenSize <= 0 ||
      config->numLayers <= 0 || config->vocabSize <= 0 ||
      config->numHeads % config->numKvHeads != 0)
    std::abort();
  return 0;
}

//===- ModelConfig.h - Hugging Face model configurations --------*- C++ -*-===//
//
// Reads a Hugging Face `config.json` of a supported architecture into the
// few numbers that define the model's math. Keys that would change the math
// in a way Kiln does not implement are refused by name; keys that do not
// (token ids, dtype hints, cache flags) are ignored.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_COMPILER_FRONTEND_MODELCONFIG_H
#define KILN_COMPILER_FRONTEND_MODELCONFIG_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kiln {

enum class Architecture { Llama, Mistral, Qwen2, GPT2 };

/// The Hugging Face class name of an architecture (`LlamaForCausalLM`, ...).
llvm::StringRef architectureName(Architecture arch);

struct ModelConfig {
  Architecture architecture;
  int64_t vocabSize;
  int64_t hiddenSize;
  int64_t intermediateSize;
  int64_t numLayers;
  int64_t numHeads;
  int64_t numKvHeads;
  int64_t headDim;
  int64_t maxPositions;
  double normEpsilon;
  /// RoPE base (Llama family); unused by GPT-2.
  double ropeTheta = 10000.0;
  /// Attention score scale; 0 means 1/sqrt(head_dim).
  double attentionScale = 0.0;
  bool tieEmbeddings;
  bool qkvBias = false;
  bool outputBias = false;
  bool mlpBias = false;
  /// GPT-2: tanh-approximated GELU (`gelu_new`) or exact.
  bool geluTanh = true;
  /// Standard deviation of the normal initialisation of weight matrices.
  double initializerRange = 0.02;
  /// The config's end-of-document token (eos_token_id, or the first of a
  /// list), if it names one.
  std::optional<int64_t> eosTokenId;
  /// Sliding-window attention width, 0 when the model attends globally.
  int64_t slidingWindow = 0;
  /// Things the config asks for that Kiln does not do but that need not
  /// stop it (dropout); reported to the user.
  std::vector<std::string> notes;
};

/// The largest models Kiln builds. A config beyond them is refused before
/// any IR exists, naming the field that makes it so large: such a config is
/// a typo, and building it would take minutes and gigabytes (10^9 layers)
/// or overflow the sizes the compiler computes. Within them, every element
/// count and byte size of a parameter fits in 64 bits with room to spare.
/// The largest published dense models have about 130 layers; 10^4 tiny
/// layers compile in under a minute on 2 cores (the passes are not all
/// linear in the op count, so 10^6 would take hours).
constexpr int64_t kMaxParameters = 10'000'000'000'000; // 10^13
constexpr int64_t kMaxLayers = 10'000;

/// Parses `path`. Errors name the file, the key and the problem.
llvm::Expected<ModelConfig> readModelConfig(llvm::StringRef path);

/// Parses JSON text; `path` only names the source in errors.
llvm::Expected<ModelConfig> parseModelConfig(llvm::StringRef text,
                                             llvm::StringRef path);

} // namespace kiln

#endif // KILN_COMPILER_FRONTEND_MODELCONFIG_H

//===- TokenShardFuzzer.cpp - Fuzzing the token shard reader --------------===//
//
// Reads the input as an llm.c token shard, with and without a vocabulary
// bound, and streams training windows from it. A malformed shard must be
// refused with kiln::rt::Error; anything else is a bug.
//
//===----------------------------------------------------------------------===//

#include "FuzzInput.h"

#include "runtime/Error.h"
#include "runtime/io/TokenShard.h"

#include <cstdlib>

using namespace kiln::rt;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data,
                                      std::size_t size) {
  const std::string &path = kiln::fuzz::writeInput(data, size);
  try {
    std::vector<std::uint32_t> tokens = readTokenShard(path);
    // A vocabulary bound taken from the data: some tokens fall outside it.
    std::uint32_t vocab = size > 1024 ? data[1024] * 7u + 1u : 50257u;
    std::vector<std::uint32_t> bounded = readTokenShard(path, vocab);
    if (bounded != tokens)
      std::abort();
  } catch (const Error &) {
  }

  try {
    TokenStream stream({path, path});
    if (stream.numTokens() % 2 != 0)
      std::abort();
    std::vector<std::int32_t> inputs, targets;
    for (int i = 0; i < 3; ++i) {
      stream.nextBatch(/*batch=*/2, /*seqLen=*/3, inputs, targets);
      if (inputs.size() != 6 || targets.size() != 6)
        std::abort();
    }
    TokenStream::Position position = stream.position();
    stream.seek(position);
    if (!(stream.position() == position))
      std::abort();
  } catch (const Error &) {
  }
  return 0;
}

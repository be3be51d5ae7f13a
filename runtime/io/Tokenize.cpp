//===- Tokenize.cpp - kiln tokenize: text to an llm.c shard ---------------===//

#include "runtime/io/Tokenize.h"

#include "runtime/Error.h"
#include "runtime/io/ByteTokenizer.h"
#include "runtime/io/TokenShard.h"

#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <system_error>

namespace kiln::rt {

namespace fs = std::filesystem;

int runTokenize(const std::vector<std::string> &inputs,
                const std::string &output) noexcept {
  try {
    if (inputs.empty())
      throw Error("no input files to tokenize");
    std::error_code ec;
    for (const std::string &input : inputs)
      if (fs::equivalent(input, output, ec))
        throw Error(fmt::format("-o {} is also an input; writing the shard "
                                "there would destroy it",
                                output));
    std::vector<uint32_t> tokens = tokenizeFiles(inputs);
    if (fs::path parent = fs::path(output).parent_path(); !parent.empty())
      fs::create_directories(parent);
    writeTokenShard(output, tokens, /*version=*/1);
    std::fprintf(stderr, "wrote %zu tokens (byte-level, vocabulary %u) to %s\n",
                 tokens.size(), kByteVocabSize, output.c_str());
    return 0;
  } catch (const std::exception &error) {
    std::fprintf(stderr, "kiln: error: %s\n", error.what());
    return 1;
  }
}

} // namespace kiln::rt

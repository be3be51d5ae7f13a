//===- Tokenize.h - kiln tokenize: text to an llm.c shard -------*- C++ -*-===//
//
// The `kiln tokenize` command: text files, byte-level tokens
// (ByteTokenizer.h), one llm.c token shard (TokenShard.h).
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_IO_TOKENIZE_H
#define KILN_RUNTIME_IO_TOKENIZE_H

#include <string>
#include <vector>

namespace kiln::rt {

/// Writes the byte-level tokens of `inputs` (each one document) as an
/// llm.c token shard at `output` (a .bin file), refusing an output that is
/// also an input. Returns the exit status (errors printed as `kiln: error:
/// ...`); never throws.
int runTokenize(const std::vector<std::string> &inputs,
                const std::string &output) noexcept;

} // namespace kiln::rt

#endif // KILN_RUNTIME_IO_TOKENIZE_H

//===- ByteTokenizer.h - Byte-level tokenization ----------------*- C++ -*-===//
//
// The default tokenizer of `kiln tokenize`: every byte of UTF-8 text is its
// own token (0..255) and kEndOfText separates documents. It needs no
// vocabulary file, so any text trains out of the box.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_IO_BYTETOKENIZER_H
#define KILN_RUNTIME_IO_BYTETOKENIZER_H

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::rt {

/// The token that ends each document.
constexpr std::uint32_t kEndOfText = 256;

/// 256 byte values and kEndOfText.
constexpr std::uint32_t kByteVocabSize = 257;

/// The bytes of `text`, one token each (no kEndOfText).
std::vector<std::uint32_t> tokenizeText(std::string_view text);

/// The files at `paths`, each one document followed by kEndOfText. Throws
/// Error naming a file that cannot be read.
std::vector<std::uint32_t> tokenizeFiles(const std::vector<std::string> &paths);

/// The text of `tokens`, skipping kEndOfText. Throws Error on a token outside
/// the byte vocabulary.
std::string detokenize(std::span<const std::uint32_t> tokens);

} // namespace kiln::rt

#endif // KILN_RUNTIME_IO_BYTETOKENIZER_H

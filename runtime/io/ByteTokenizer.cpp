//===- ByteTokenizer.cpp - Byte-level tokenization ------------------------===//

#include "runtime/io/ByteTokenizer.h"

#include "runtime/Error.h"
#include "runtime/io/InputFile.h"

#include <fmt/format.h>

namespace kiln::rt {

std::vector<std::uint32_t> tokenizeText(std::string_view text) {
  std::vector<std::uint32_t> tokens;
  tokens.reserve(text.size());
  for (char c : text)
    tokens.push_back(static_cast<unsigned char>(c));
  return tokens;
}

std::vector<std::uint32_t>
tokenizeFiles(const std::vector<std::string> &paths) {
  std::vector<std::uint32_t> tokens;
  for (const std::string &path : paths) {
    std::vector<std::byte> bytes = InputFile(path).readAll();
    tokens.reserve(tokens.size() + bytes.size() + 1);
    for (std::byte b : bytes)
      tokens.push_back(std::to_integer<std::uint32_t>(b));
    tokens.push_back(kEndOfText);
  }
  return tokens;
}

std::string detokenize(std::span<const std::uint32_t> tokens) {
  std::string text;
  text.reserve(tokens.size());
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] == kEndOfText)
      continue;
    if (tokens[i] > 0xff)
      throw Error(fmt::format("token {} at position {} is outside the byte "
                              "vocabulary (vocab_size {})",
                              tokens[i], i, kByteVocabSize));
    text.push_back(static_cast<char>(tokens[i]));
  }
  return text;
}

} // namespace kiln::rt

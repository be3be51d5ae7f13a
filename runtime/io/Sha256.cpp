//===- Sha256.cpp - SHA-256 digests ---------------------------------------===//

#include "runtime/io/Sha256.h"

#include "runtime/Error.h"
#include "runtime/io/InputFile.h"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <algorithm>
#include <vector>

namespace kiln::rt {

namespace {
EVP_MD_CTX *evp(void *context) { return static_cast<EVP_MD_CTX *>(context); }
} // namespace

Sha256::Sha256() : context_(EVP_MD_CTX_new()) {
  if (!context_ || EVP_DigestInit_ex(evp(context_), EVP_sha256(), nullptr) != 1)
    throw Error("SHA-256: OpenSSL cannot create a digest context");
}

Sha256::~Sha256() { EVP_MD_CTX_free(evp(context_)); }

Sha256 &Sha256::update(std::span<const std::byte> bytes) {
  if (EVP_DigestUpdate(evp(context_), bytes.data(), bytes.size()) != 1)
    throw Error("SHA-256: OpenSSL's EVP_DigestUpdate failed");
  return *this;
}

Sha256 &Sha256::update(std::string_view text) {
  return update(std::as_bytes(std::span(text.data(), text.size())));
}

Sha256::Digest Sha256::finish() {
  Digest digest;
  unsigned int size = 0;
  if (EVP_DigestFinal_ex(evp(context_), digest.data(), &size) != 1 ||
      size != digest.size())
    throw Error("SHA-256: OpenSSL's EVP_DigestFinal_ex failed");
  return digest;
}

Sha256::Digest Sha256::of(std::span<const std::byte> bytes) {
  return Sha256().update(bytes).finish();
}

Sha256::Digest Sha256::of(std::string_view text) {
  return Sha256().update(text).finish();
}

std::string toHex(const Sha256::Digest &digest) {
  std::string hex;
  hex.reserve(2 * digest.size());
  for (std::uint8_t byte : digest)
    hex += fmt::format("{:02x}", byte);
  return hex;
}

Sha256::Digest sha256OfFile(const std::string &path) {
  constexpr std::uint64_t kChunkBytes = 1 << 20;
  InputFile file(path);
  Sha256 hash;
  std::vector<std::byte> chunk(kChunkBytes);
  for (std::uint64_t offset = 0; offset < file.size(); offset += kChunkBytes) {
    std::span<std::byte> piece(chunk.data(),
                               std::min(kChunkBytes, file.size() - offset));
    file.readAt(offset, piece);
    hash.update(piece);
  }
  return hash.finish();
}

} // namespace kiln::rt

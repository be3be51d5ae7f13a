//===- Sha256.h - SHA-256 digests -------------------------------*- C++ -*-===//
//
// SHA-256 (FIPS 180-4) through OpenSSL's libcrypto: the keys of the kernel
// cache and the checksums that each checkpoint records of its files.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_IO_SHA256_H
#define KILN_RUNTIME_IO_SHA256_H

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace kiln::rt {

/// An incremental SHA-256 digest.
class Sha256 {
public:
  using Digest = std::array<std::uint8_t, 32>;

  Sha256();
  ~Sha256();
  Sha256(const Sha256 &) = delete;
  Sha256 &operator=(const Sha256 &) = delete;

  Sha256 &update(std::span<const std::byte> bytes);
  Sha256 &update(std::string_view text);
  /// The digest of everything added; the object is then spent.
  Digest finish();

  static Digest of(std::span<const std::byte> bytes);
  static Digest of(std::string_view text);

private:
  void *context_; // EVP_MD_CTX
};

/// The digest in lowercase hex (64 digits).
std::string toHex(const Sha256::Digest &digest);

/// The digest of the file at `path`, read in pieces; throws Error naming the
/// file if it cannot be read.
Sha256::Digest sha256OfFile(const std::string &path);

} // namespace kiln::rt

#endif // KILN_RUNTIME_IO_SHA256_H

//===- SafeTensors.h - Hugging Face safetensors files -----------*- C++ -*-===//
//
// Checkpoints are safetensors files with Hugging Face parameter names, so a
// model trained by Kiln loads in `transformers` and back. The format:
//
//   u64 little-endian N | N bytes of JSON header | data section
//
// The header maps each tensor name to {"dtype", "shape", "data_offsets"}
// (a [begin, end) byte range of the data section) and may hold
// "__metadata__", a map of strings. Tensor data is little-endian, row-major.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_IO_SAFETENSORS_H
#define KILN_RUNTIME_IO_SAFETENSORS_H

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::rt {

/// The element types Kiln reads and writes (a subset of safetensors').
enum class DType { F32, BF16, F16, F64, I32, I64, U8, U16, F8E4M3, F8E5M2 };

/// Bytes per element of `dtype`.
std::size_t dtypeSize(DType dtype);

/// The safetensors spelling of `dtype` ("F32", "BF16", "F8_E4M3", ...).
std::string_view dtypeName(DType dtype);

/// The dtype spelled `name` in safetensors, or nothing if Kiln does not
/// support it.
std::optional<DType> parseDType(std::string_view name);

/// One named tensor with its raw little-endian, row-major bytes.
struct Tensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape; ///< empty for a scalar
  std::vector<std::byte> data;

  /// The product of the shape (1 for a scalar).
  std::int64_t numElements() const;
};

/// The contents of a safetensors file.
struct SafeTensors {
  std::vector<Tensor> tensors; ///< in the order of their data in the file
  std::map<std::string, std::string> metadata;

  /// The tensor called `name`, or null.
  const Tensor *find(std::string_view name) const;
};

/// Reads and validates the safetensors file at `path`. Throws Error naming
/// the file, the tensor and the problem if anything is malformed: a short
/// file, a header that is not a JSON object, a missing or mistyped field, an
/// unsupported dtype, a negative dimension, data ranges out of order, out of
/// the data section, overlapping or of the wrong size, a repeated name.
SafeTensors readSafeTensors(const std::string &path);

/// Writes `tensors` (data in the order given, contiguous) and `metadata` to
/// `path`, atomically: `path` keeps its old contents unless the whole new
/// file made it to disk. Throws Error on invalid tensors or failed I/O.
void writeSafeTensors(const std::string &path,
                      const std::vector<Tensor> &tensors,
                      const std::map<std::string, std::string> &metadata = {});

} // namespace kiln::rt

#endif // KILN_RUNTIME_IO_SAFETENSORS_H

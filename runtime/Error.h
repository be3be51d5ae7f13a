//===- Error.h - The runtime's error type -----------------------*- C++ -*-===//
//
// Every runtime failure is reported by throwing kiln::rt::Error; only `main`
// decides whether to exit. Messages name the file, the field or tensor and
// the problem, with the values found:
//
//   ckpt/model.safetensors: tensor 'model.norm.weight': data range [100, 400)
//   exceeds the data section (256 bytes)
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_ERROR_H
#define KILN_RUNTIME_ERROR_H

#include <stdexcept>
#include <string>
#include <system_error>

namespace kiln::rt {

/// A failure the runtime reports to its caller (bad input, failed I/O).
class Error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// The text of an errno value ("No such file or directory"), for messages.
inline std::string errnoMessage(int errnoValue) {
  return std::generic_category().message(errnoValue);
}

} // namespace kiln::rt

#endif // KILN_RUNTIME_ERROR_H

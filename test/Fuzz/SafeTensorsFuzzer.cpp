//===- SafeTensorsFuzzer.cpp - Fuzzing the safetensors reader -------------===//
//
// Any file is either read into tensors whose data matches their shape and
// dtype, or refused with kiln::rt::Error; anything else (a crash, a
// sanitizer report, another exception, a runaway allocation) is a bug.
//
//===----------------------------------------------------------------------===//

#include "FuzzInput.h"

#include "runtime/Error.h"
#include "runtime/io/SafeTensors.h"

#include <cstdlib>

using namespace kiln::rt;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data,
                                      std::size_t size) {
  const std::string &path = kiln::fuzz::writeInput(data, size);
  SafeTensors file;
  try {
    file = readSafeTensors(path);
  } catch (const Error &) {
    return 0; // refused, as it should be
  }
  for (const Tensor &tensor : file.tensors) {
    auto bytes = static_cast<std::uint64_t>(tensor.numElements()) *
                 dtypeSize(tensor.dtype);
    if (bytes != tensor.data.size() || file.find(tensor.name) != &tensor)
      std::abort();
  }
  return 0;
}

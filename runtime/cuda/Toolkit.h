//===- Toolkit.h - Where the CUDA libraries and headers are -----*- C++ -*-===//
//
// The runtime opens NVRTC and cuBLASLt with dlopen and gives NVRTC the
// directory of cuda_bf16.h (NVRTC 13 has no built-in copy). A toolkit
// install keeps them under $CUDA_HOME or /usr/local/cuda; a machine set up
// with PyTorch's pip wheels has them only in Python's site-packages:
// nvidia/cu13/{lib,include} (CUDA 13 wheels) or nvidia/<component>/{lib,
// include} (CUDA 12 wheels, e.g. nvidia/cublas/lib). Both are searched, in
// that order, after the dynamic linker's own path.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_TOOLKIT_H
#define KILN_RUNTIME_CUDA_TOOLKIT_H

#include <filesystem>
#include <string>
#include <vector>

namespace kiln::rt::cuda {

/// The places to look in.
struct ToolkitRoots {
  /// Toolkit installs: $CUDA_HOME, then /usr/local/cuda.
  std::vector<std::filesystem::path> toolkits;
  /// Python package directories that may hold NVIDIA's wheels: each
  /// $PYTHONPATH entry, $VIRTUAL_ENV's and $CONDA_PREFIX's, ~/.local's, then
  /// the system's (/usr/local/lib/python3*/{dist,site}-packages,
  /// /usr/lib/python3/dist-packages, /opt/conda/...). Only existing ones.
  std::vector<std::filesystem::path> sitePackages;

  static ToolkitRoots fromEnvironment();
};

/// Existing directories that may hold the toolkit's shared libraries, in
/// search order: each toolkit's lib64 and targets/<arch>-linux/lib, then
/// each site's nvidia/cu13/lib and nvidia/*/lib.
std::vector<std::filesystem::path>
libraryDirectories(const ToolkitRoots &roots);

/// Existing directories that may hold the toolkit's headers, likewise.
std::vector<std::filesystem::path>
includeDirectories(const ToolkitRoots &roots);

/// The first include directory holding cuda_bf16.h; empty if none does.
std::string findIncludeDirectory(const ToolkitRoots &roots);

} // namespace kiln::rt::cuda

#endif // KILN_RUNTIME_CUDA_TOOLKIT_H

//===- nvrtc_check.cpp - Compile the device library with NVRTC ------------===//
//
// Compiles a kernel source that includes "kiln_device.cuh" the way the
// runtime does: with NVRTC, C++17, the header given in memory (not from the
// file system) with its family headers inlined (as runtime/CMakeLists.txt
// embeds it), and CUDA's include directory as the only search path, so
// that a host standard header slipping into the device library fails here.
//
//   nvrtc_check <kiln_device.cuh> <kernels.cu> <arch> <cuda include dir>
//
// Prints NVRTC's log, which holds ptxas's resource usage (--verbose) for
// compile_check.sh to read; exits 1 when compilation fails, the log holds a
// warning, or the program has no cubin.
//
//===----------------------------------------------------------------------===//

#include <nvrtc.h>

#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::string readFile(const char *path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::cerr << "nvrtc_check: cannot read " << path << "\n";
    std::exit(2);
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

/// Whether `line` includes a header of the device library itself
/// (`#include "Name.cuh"`), and which.
bool libraryInclude(const std::string &line, std::string &name) {
  const std::string prefix = "#include \"", suffix = ".cuh\"";
  if (line.rfind(prefix, 0) != 0 ||
      line.size() < prefix.size() + suffix.size() ||
      line.compare(line.size() - suffix.size(), suffix.size(), suffix) != 0)
    return false;
  name = line.substr(prefix.size(), line.size() - prefix.size() - 1);
  return true;
}

/// The header at `path` with the device library's headers it includes
/// inlined as the preprocessor would, each at its first include (later ones
/// dropped: their include guards make them empty), as runtime/cuda/
/// DeviceHeader.cmake embeds it: the one header NVRTC gets.
std::string inlineFamilies(const std::string &dir, const std::string &name,
                           std::set<std::string> &inlined) {
  if (!inlined.insert(name).second)
    return "";
  std::istringstream text(readFile((dir + name).c_str()));
  std::string out, line, included;
  while (std::getline(text, line))
    out += libraryInclude(line, included)
               ? inlineFamilies(dir, included, inlined)
               : line + "\n";
  return out;
}

bool check(nvrtcResult result, const char *what) {
  if (result == NVRTC_SUCCESS)
    return true;
  std::cerr << "nvrtc_check: " << what << ": " << nvrtcGetErrorString(result)
            << "\n";
  return false;
}

} // namespace

int main(int argc, char **argv) {
  if (argc != 5) {
    std::cerr << "usage: nvrtc_check <kiln_device.cuh> <kernels.cu> <arch> "
                 "<cuda include dir>\n";
    return 2;
  }
  const std::string path = argv[1];
  const std::size_t slash = path.find_last_of('/');
  std::set<std::string> inlined;
  std::string header = slash == std::string::npos
                           ? inlineFamilies("", path, inlined)
                           : inlineFamilies(path.substr(0, slash + 1),
                                            path.substr(slash + 1), inlined);
  std::string source = readFile(argv[2]);
  std::string arch = std::string("--gpu-architecture=") + argv[3];
  std::string include = std::string("--include-path=") + argv[4];

  const char *headers[] = {header.c_str()};
  const char *headerNames[] = {"kiln_device.cuh"};
  nvrtcProgram program;
  if (!check(nvrtcCreateProgram(&program, source.c_str(), "kernels.cu", 1,
                                headers, headerNames),
             "nvrtcCreateProgram"))
    return 1;
  std::vector<const char *> options = {"--std=c++17", arch.c_str(),
                                       include.c_str(),
                                       "--ptxas-options=--verbose"};
  nvrtcResult compiled = nvrtcCompileProgram(
      program, static_cast<int>(options.size()), options.data());

  std::size_t logSize = 0;
  nvrtcGetProgramLogSize(program, &logSize);
  std::string log(logSize, '\0');
  nvrtcGetProgramLog(program, log.data());
  log.resize(log.find('\0') == std::string::npos ? log.size() : log.find('\0'));
  if (!log.empty())
    std::cout << log << "\n";

  bool ok = check(compiled, "nvrtcCompileProgram");
  if (ok && log.find("warning") != std::string::npos) {
    std::cerr << "nvrtc_check: NVRTC reported warnings\n";
    ok = false;
  }
  std::size_t cubinSize = 0;
  if (ok &&
      (!check(nvrtcGetCUBINSize(program, &cubinSize), "nvrtcGetCUBINSize") ||
       cubinSize == 0)) {
    std::cerr << "nvrtc_check: no cubin\n";
    ok = false;
  }
  int major = 0, minor = 0;
  nvrtcVersion(&major, &minor);
  if (ok)
    std::cout << "nvrtc " << major << "." << minor << " " << argv[3]
              << ": cubin of " << cubinSize << " bytes\n";
  nvrtcDestroyProgram(&program);
  return ok ? 0 : 1;
}

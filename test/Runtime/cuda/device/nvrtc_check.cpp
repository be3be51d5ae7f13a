//===- nvrtc_check.cpp - Compile the device library with NVRTC ------------===//
//
// Compiles a kernel source that includes "kiln_device.cuh" the way the
// runtime does: with NVRTC, C++17, the header given in memory (not from the
// file system), and CUDA's include directory as the only search path, so
// that a host standard header slipping into kiln_device.cuh fails here.
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
  std::string header = readFile(argv[1]);
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

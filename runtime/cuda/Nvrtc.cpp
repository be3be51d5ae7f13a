//===- Nvrtc.cpp - Compiling CUDA C++ kernels at run time -----------------===//

#include "runtime/cuda/Nvrtc.h"

#include "runtime/Error.h"
#include "runtime/cuda/CudaApi.h"
#include "runtime/cuda/KernelCache.h"
#include "runtime/cuda/Toolkit.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string_view>
#include <thread>

namespace kiln::rt::cuda {

namespace {

std::atomic<std::uint64_t> compileCount{0};

/// Options every kernel gets, before the arch and the include directory;
/// KILN_CUDA_LINEINFO=1 adds -lineinfo (source lines in compute-sanitizer's
/// and the profilers' reports; part of the cache key like every option).
const std::vector<std::string> &defaultOptions() {
  static const std::vector<std::string> options = [] {
    std::vector<std::string> list = {"-std=c++17", "-default-device"};
    if (const char *lineInfo = std::getenv("KILN_CUDA_LINEINFO");
        lineInfo && std::string_view(lineInfo) == "1")
      list.push_back("-lineinfo");
    return list;
  }();
  return options;
}

/// Throws Error unless `arch` is a real architecture: "sm_" + digits +
/// an optional family/arch-specific suffix ("sm_80", "sm_90a", "sm_100f").
void checkArch(const CompileRequest &request) {
  std::string_view arch = request.arch;
  bool valid = arch.starts_with("sm_");
  std::string_view rest = valid ? arch.substr(3) : arch;
  if (!rest.empty() && (rest.back() == 'a' || rest.back() == 'f'))
    rest.remove_suffix(1);
  valid = valid && !rest.empty() &&
          std::all_of(rest.begin(), rest.end(),
                      [](char c) { return std::isdigit((unsigned char)c); });
  if (!valid)
    throw Error(fmt::format("kernel '{}': '{}' is not a GPU architecture "
                            "NVRTC can make CUBIN for (expected sm_XY, such "
                            "as sm_80 or sm_90a)",
                            request.name, request.arch));
}

/// NVRTC's log for `program`, without the terminating NUL.
std::string programLog(const NvrtcApi &api, nvrtcProgram program) {
  size_t size = 0;
  KILN_NVRTC_CHECK(api.nvrtcGetProgramLogSize(program, &size));
  std::string log(size, '\0');
  if (size)
    KILN_NVRTC_CHECK(api.nvrtcGetProgramLog(program, log.data()));
  while (!log.empty() && log.back() == '\0')
    log.pop_back();
  return log;
}

/// Runs NVRTC on `request`.
CompiledKernel compileWithNvrtc(const CompileRequest &request) {
  const NvrtcApi &api = nvrtc();
  std::vector<const char *> headerTexts, headerNames;
  for (const auto &[name, text] : request.headers) {
    headerNames.push_back(name.c_str());
    headerTexts.push_back(text.c_str());
  }
  std::string programName = request.name + ".cu";
  nvrtcProgram program = nullptr;
  KILN_NVRTC_CHECK(api.nvrtcCreateProgram(
      &program, request.source.c_str(), programName.c_str(),
      static_cast<int>(headerNames.size()), headerTexts.data(),
      headerNames.data()));
  struct Destroy {
    const NvrtcApi &api;
    nvrtcProgram &program;
    ~Destroy() { api.nvrtcDestroyProgram(&program); }
  } destroy{api, program};

  std::vector<std::string> options = compileOptions(request);
  std::vector<const char *> optionPointers;
  for (const std::string &option : options)
    optionPointers.push_back(option.c_str());
  ++compileCount;
  nvrtcResult result = api.nvrtcCompileProgram(
      program, static_cast<int>(optionPointers.size()), optionPointers.data());
  CompiledKernel kernel{request.name, {}, programLog(api, program), false};
  if (result != NVRTC_SUCCESS) {
    std::string hint;
    if (cudaIncludeDirectory().empty() &&
        kernel.log.find("open source file") != std::string::npos)
      hint = "\n(no CUDA headers found: set CUDA_HOME to the toolkit's root)";
    throw Error(fmt::format("NVRTC cannot compile kernel '{}' for {}: {}\n{}{}",
                            request.name, request.arch,
                            api.nvrtcGetErrorString(result), kernel.log, hint));
  }

  size_t size = 0;
  KILN_NVRTC_CHECK(api.nvrtcGetCUBINSize(program, &size));
  if (size == 0)
    throw Error(fmt::format("NVRTC made no CUBIN for kernel '{}' ({})",
                            request.name, request.arch));
  kernel.cubin.resize(size);
  KILN_NVRTC_CHECK(api.nvrtcGetCUBIN(
      program, reinterpret_cast<char *>(kernel.cubin.data())));
  return kernel;
}

/// Appends `text` to `hash` with its length, so that fields cannot run
/// into each other.
void addField(Sha256 &hash, std::string_view text) {
  hash.update(fmt::format("{}:", text.size()));
  hash.update(text);
}

} // namespace

int nvrtcVersion() {
  static const int version = [] {
    int major = 0, minor = 0;
    KILN_NVRTC_CHECK(nvrtc().nvrtcVersion(&major, &minor));
    return major * 1000 + minor * 10;
  }();
  return version;
}

std::string cudaIncludeDirectory() {
  static const std::string directory =
      findIncludeDirectory(ToolkitRoots::fromEnvironment());
  return directory;
}

std::vector<std::string> compileOptions(const CompileRequest &request) {
  std::vector<std::string> options = {"--gpu-architecture=" + request.arch};
  options.insert(options.end(), defaultOptions().begin(),
                 defaultOptions().end());
  if (std::string include = cudaIncludeDirectory(); !include.empty())
    options.push_back("-I" + include);
  options.insert(options.end(), request.options.begin(), request.options.end());
  return options;
}

std::string cacheKey(const CompileRequest &request) {
  Sha256 hash;
  addField(hash, fmt::format("kiln-cubin-v{}", kCacheFormatVersion));
  addField(hash, fmt::format("nvrtc-{}", nvrtcVersion()));
  addField(hash, request.arch);
  addField(hash, fmt::format("{} options",
                             defaultOptions().size() + request.options.size()));
  for (const std::string &option : defaultOptions())
    addField(hash, option);
  for (const std::string &option : request.options)
    addField(hash, option);
  addField(hash, fmt::format("{} headers", request.headers.size()));
  for (const auto &[name, text] : request.headers) {
    addField(hash, name);
    addField(hash, text);
  }
  addField(hash, request.source);
  return toHex(hash.finish());
}

CompiledKernel compileKernel(const CompileRequest &request,
                             KernelCache *cache) {
  checkArch(request);
  std::string key;
  if (cache) {
    key = cacheKey(request);
    if (std::optional<std::vector<std::byte>> cubin = cache->load(key))
      return {request.name, std::move(*cubin), "", true};
  }
  CompiledKernel kernel = compileWithNvrtc(request);
  if (cache) {
    try {
      cache->store(key, kernel.cubin);
    } catch (const Error &error) {
      kernel.log +=
          fmt::format("\nkiln: kernel not cached: {}\n", error.what());
    }
  }
  return kernel;
}

std::vector<CompiledKernel>
compileKernels(const std::vector<CompileRequest> &requests, KernelCache *cache,
               int threads) {
  std::size_t count = requests.size();
  std::vector<CompiledKernel> kernels(count);
  std::vector<std::exception_ptr> failures(count);
  std::atomic<std::size_t> next{0};
  auto work = [&] {
    for (std::size_t i; (i = next++) < count;) {
      try {
        kernels[i] = compileKernel(requests[i], cache);
      } catch (...) {
        failures[i] = std::current_exception();
      }
    }
  };

  std::size_t workers =
      threads > 0 ? threads : std::max(1u, std::thread::hardware_concurrency());
  workers = std::min(workers, count);
  std::vector<std::thread> pool;
  for (std::size_t w = 1; w < workers; ++w)
    pool.emplace_back(work);
  work(); // this thread is the last worker
  for (std::thread &thread : pool)
    thread.join();

  std::vector<std::exception_ptr> failed;
  for (const std::exception_ptr &failure : failures)
    if (failure)
      failed.push_back(failure);
  if (failed.size() == 1)
    std::rethrow_exception(failed.front());
  if (!failed.empty()) {
    std::string message = fmt::format(
        "{} of {} kernels failed to compile:", failed.size(), count);
    for (const std::exception_ptr &failure : failed) {
      try {
        std::rethrow_exception(failure);
      } catch (const std::exception &error) {
        message += fmt::format("\n\n{}", error.what());
      }
    }
    throw Error(message);
  }
  return kernels;
}

std::uint64_t nvrtcCompileCount() { return compileCount.load(); }

//===----------------------------------------------------------------------===//
// ptxas statistics
//===----------------------------------------------------------------------===//

namespace {

/// The number that ends right before `phrase` in `line` ("24" before
/// " registers" in "Used 24 registers, ...").
std::optional<int> numberBefore(std::string_view line,
                                std::string_view phrase) {
  std::size_t end = line.find(phrase);
  if (end == std::string_view::npos)
    return std::nullopt;
  std::size_t begin = end;
  while (begin > 0 && std::isdigit(static_cast<unsigned char>(line[begin - 1])))
    --begin;
  if (begin == end)
    return std::nullopt;
  return std::atoi(std::string(line.substr(begin, end - begin)).c_str());
}

std::string_view trimRight(std::string_view line) {
  while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back())))
    line.remove_suffix(1);
  return line;
}

} // namespace

// ptxas -v prints, per entry function (CUDA 12 and 13):
//
//   ptxas info    : Compiling entry function 'axpy' for 'sm_90a'
//   ptxas info    : Function properties for axpy
//   ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes
//                       spill loads
//   ptxas info    : Used 10 registers, used 0 barriers
//
// with properties of the non-inlined device functions it calls in between.
std::optional<PtxasStats> parsePtxasStats(const std::string &log,
                                          const std::string &kernelName) {
  std::vector<std::string_view> lines;
  std::string_view rest = log;
  while (!rest.empty()) {
    std::size_t newline = rest.find('\n');
    lines.push_back(trimRight(rest.substr(0, newline)));
    rest = newline == std::string_view::npos ? "" : rest.substr(newline + 1);
  }

  const std::string entry = "Compiling entry function '" + kernelName + "'";
  const std::string properties = "Function properties for " + kernelName;
  auto start =
      std::find_if(lines.begin(), lines.end(), [&](std::string_view l) {
        return l.find(entry) != std::string_view::npos;
      });
  if (start == lines.end())
    return std::nullopt;

  PtxasStats stats;
  bool sawRegisters = false;
  for (auto it = start + 1; it != lines.end(); ++it) {
    std::string_view line = *it;
    if (line.find("Compiling entry function '") != std::string_view::npos)
      break;
    if (line.ends_with(properties) && it + 1 != lines.end()) {
      std::string_view frame = *(it + 1);
      stats.stackBytes = numberBefore(frame, " bytes stack frame").value_or(0);
      stats.spillStores =
          numberBefore(frame, " bytes spill stores").value_or(0);
      stats.spillLoads = numberBefore(frame, " bytes spill loads").value_or(0);
    }
    if (std::optional<int> registers = numberBefore(line, " registers");
        registers && line.find("Used ") != std::string_view::npos) {
      stats.registers = *registers;
      sawRegisters = true;
    }
  }
  if (!sawRegisters)
    return std::nullopt;
  return stats;
}

} // namespace kiln::rt::cuda

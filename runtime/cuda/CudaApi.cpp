//===- CudaApi.cpp - Loading the CUDA libraries, checking their results ---===//

#include "runtime/cuda/CudaApi.h"

#include "runtime/Error.h"
#include "runtime/cuda/Toolkit.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>

#include <dlfcn.h>
#include <link.h>

namespace kiln::rt::cuda {

//===----------------------------------------------------------------------===//
// Library
//===----------------------------------------------------------------------===//

Library::Library(const std::vector<std::string> &candidates) {
  std::string failures;
  for (const std::string &candidate : candidates) {
    handle_ = ::dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle_) {
      path_ = candidate;
      return;
    }
    const char *reason = ::dlerror();
    failures +=
        fmt::format("{}dlopen({}) failed: {}", failures.empty() ? "" : "; ",
                    candidate, reason ? reason : "unknown reason");
  }
  if (candidates.empty())
    failures = "no library candidates given";
  throw Error(failures);
}

std::string Library::resolvedPath() const {
  struct link_map *map = nullptr;
  if (handle_ && ::dlinfo(handle_, RTLD_DI_LINKMAP, &map) == 0 && map &&
      map->l_name && *map->l_name)
    return map->l_name;
  return path_;
}

Library::~Library() {
  if (handle_)
    ::dlclose(handle_);
}

Library::Library(Library &&other) noexcept
    : handle_(std::exchange(other.handle_, nullptr)),
      path_(std::move(other.path_)) {}

Library &Library::operator=(Library &&other) noexcept {
  if (this != &other) {
    if (handle_)
      ::dlclose(handle_);
    handle_ = std::exchange(other.handle_, nullptr);
    path_ = std::move(other.path_);
  }
  return *this;
}

void *Library::symbol(const char *name) const {
  ::dlerror(); // clear any earlier error
  void *address = ::dlsym(handle_, name);
  if (!address) {
    const char *reason = ::dlerror();
    throw Error(fmt::format("{} lacks the function {}: {}", path_, name,
                            reason ? reason : "symbol is null"));
  }
  return address;
}

//===----------------------------------------------------------------------===//
// Function tables
//===----------------------------------------------------------------------===//

// Two levels, so that the argument's macros (cuMemAlloc -> cuMemAlloc_v2)
// are expanded before it becomes a string.
#define KILN_CUDA_STRINGIFY_EXPANDED(x) KILN_CUDA_STRINGIFY(x)
#define KILN_CUDA_STRINGIFY(x) #x
#define KILN_CUDA_LOAD_FUNCTION(fn)                                            \
  api.fn = reinterpret_cast<decltype(api.fn)>(                                 \
      library.symbol(KILN_CUDA_STRINGIFY_EXPANDED(fn)));
#define KILN_CUDA_SYMBOL_NAME(fn)                                              \
  names.push_back(KILN_CUDA_STRINGIFY_EXPANDED(fn));

DriverApi loadDriverApi(const Library &library) {
  DriverApi api;
  KILN_CUDA_DRIVER_FUNCTIONS(KILN_CUDA_LOAD_FUNCTION)
  return api;
}

NvrtcApi loadNvrtcApi(const Library &library) {
  NvrtcApi api;
  KILN_NVRTC_FUNCTIONS(KILN_CUDA_LOAD_FUNCTION)
  return api;
}

CublasLtApi loadCublasLtApi(const Library &library) {
  CublasLtApi api;
  KILN_CUBLASLT_FUNCTIONS(KILN_CUDA_LOAD_FUNCTION)
  return api;
}

std::vector<std::string> driverSymbolNames() {
  std::vector<std::string> names;
  KILN_CUDA_DRIVER_FUNCTIONS(KILN_CUDA_SYMBOL_NAME)
  return names;
}

std::vector<std::string> nvrtcSymbolNames() {
  std::vector<std::string> names;
  KILN_NVRTC_FUNCTIONS(KILN_CUDA_SYMBOL_NAME)
  return names;
}

std::vector<std::string> cublasLtSymbolNames() {
  std::vector<std::string> names;
  KILN_CUBLASLT_FUNCTIONS(KILN_CUDA_SYMBOL_NAME)
  return names;
}

#undef KILN_CUDA_SYMBOL_NAME
#undef KILN_CUDA_LOAD_FUNCTION
#undef KILN_CUDA_STRINGIFY
#undef KILN_CUDA_STRINGIFY_EXPANDED

//===----------------------------------------------------------------------===//
// The process-wide libraries
//===----------------------------------------------------------------------===//

namespace {

/// A library and its function table, or why they did not load.
template <typename Api> struct Loaded {
  std::unique_ptr<Library> library;
  Api api;
  std::string error;

  const Api &get() const {
    if (!library)
      throw Error(error);
    return api;
  }
};

/// Opens the first loadable candidate and resolves `Api` in it; on failure
/// records "<what> not found: <dlopen failures>; <hint>" (or the missing
/// function). Never closes the library.
template <typename Api>
Loaded<Api> *loadOnce(const std::vector<std::string> &candidates,
                      Api (*resolve)(const Library &), const char *what,
                      const char *hint) {
  auto *loaded = new Loaded<Api>; // intentionally never freed
  std::unique_ptr<Library> library;
  try {
    library = std::make_unique<Library>(candidates);
  } catch (const Error &error) {
    loaded->error =
        fmt::format("{} not found: {}; {}", what, error.what(), hint);
    return loaded;
  }
  try {
    loaded->api = resolve(*library);
  } catch (const Error &error) {
    loaded->error = fmt::format("{} is unusable: {}; {}", what, error.what(),
                                "it is older than the Kiln runtime needs");
    return loaded;
  }
  loaded->library = std::move(library);
  return loaded;
}

/// NVRTC opens its builtins library (libnvrtc-builtins.so.13.0) by name
/// when it first compiles, which the dynamic linker finds only on its own
/// path. Where NVRTC was loaded from a directory, that directory's builtins
/// are loaded first (RTLD_GLOBAL, never closed), so that NVRTC's dlopen
/// finds them already loaded. Returns the path loaded, or empty.
std::string preloadNvrtcBuiltins(const std::string &nvrtcPath) {
  std::filesystem::path dir = std::filesystem::path(nvrtcPath).parent_path();
  if (dir.empty())
    return "";
  std::error_code error;
  for (const auto &entry : std::filesystem::directory_iterator(dir, error)) {
    std::string name = entry.path().filename().string();
    if (name.starts_with("libnvrtc-builtins.so.") &&
        ::dlopen(entry.path().c_str(), RTLD_NOW | RTLD_GLOBAL))
      return entry.path().string();
  }
  return "";
}

std::string &nvrtcBuiltinsPath() {
  static std::string path;
  return path;
}

Loaded<NvrtcApi> &nvrtcLoaded() {
  static Loaded<NvrtcApi> *loaded = [] {
    std::vector<std::string> candidates =
        toolkitLibraryCandidates("libnvrtc.so.13");
    for (std::string &c : toolkitLibraryCandidates("libnvrtc.so"))
      candidates.push_back(std::move(c));
    Loaded<NvrtcApi> *result = loadOnce<NvrtcApi>(
        candidates, loadNvrtcApi, "NVRTC",
        "is the CUDA toolkit's NVRTC installed (set CUDA_HOME to its root, or "
        "install the nvidia-cuda-nvrtc wheel)?");
    if (result->library)
      nvrtcBuiltinsPath() =
          preloadNvrtcBuiltins(result->library->resolvedPath());
    return result;
  }();
  return *loaded;
}

Loaded<CublasLtApi> &cublasLtLoaded() {
  static Loaded<CublasLtApi> *loaded = [] {
    std::vector<std::string> candidates =
        toolkitLibraryCandidates("libcublasLt.so.13");
    for (std::string &c : toolkitLibraryCandidates("libcublasLt.so"))
      candidates.push_back(std::move(c));
    return loadOnce<CublasLtApi>(candidates, loadCublasLtApi, "cuBLASLt",
                                 "is the CUDA toolkit's cuBLAS installed (set "
                                 "CUDA_HOME to its root, or install the "
                                 "nvidia-cublas wheel)?");
  }();
  return *loaded;
}

} // namespace

std::vector<std::string> toolkitLibraryCandidates(const std::string &soname) {
  std::vector<std::string> candidates = {soname};
  for (const std::filesystem::path &dir :
       libraryDirectories(ToolkitRoots::fromEnvironment()))
    candidates.push_back((dir / soname).string());
  return candidates;
}

namespace {

Loaded<DriverApi> &driverLoaded() {
  // Only the versioned name: the unversioned libcuda.so is the toolkit's
  // link-time stub (in lib64/stubs), whose every call fails.
  static Loaded<DriverApi> *loaded =
      loadOnce<DriverApi>({"libcuda.so.1"}, loadDriverApi, "CUDA driver",
                          "is an NVIDIA driver installed?");
  return *loaded;
}

} // namespace

const DriverApi &driver() { return driverLoaded().get(); }

const NvrtcApi &nvrtc() { return nvrtcLoaded().get(); }

const CublasLtApi &cublasLt() { return cublasLtLoaded().get(); }

const std::string &nvrtcLibraryPath() {
  nvrtcLoaded().get();
  return nvrtcLoaded().library->path();
}

const std::string &cublasLtLibraryPath() {
  cublasLtLoaded().get();
  return cublasLtLoaded().library->path();
}

std::vector<std::pair<std::string, std::string>> toolkitReport() {
  std::vector<std::pair<std::string, std::string>> lines;
  auto library = [&](const char *what, auto &loaded) {
    lines.emplace_back(what, loaded.library ? loaded.library->resolvedPath()
                                            : loaded.error);
  };
  library("driver", driverLoaded());
  std::string why;
  std::optional<DeviceInfo> device = probeDevice(&why);
  if (device)
    lines.emplace_back("device",
                       fmt::format("{} (sm_{}{}, {} SMs, {:.1f} GiB, driver "
                                   "CUDA {}.{})",
                                   device->name, device->major, device->minor,
                                   device->smCount,
                                   device->totalMemory / double(1 << 30),
                                   device->driverVersion / 1000,
                                   device->driverVersion % 1000 / 10));
  else
    lines.emplace_back("device", why);
  library("NVRTC", nvrtcLoaded());
  if (nvrtcLoaded().library)
    lines.emplace_back("NVRTC builtins",
                       nvrtcBuiltinsPath().empty()
                           ? "(left to the dynamic linker's path)"
                           : nvrtcBuiltinsPath());
  library("cuBLASLt", cublasLtLoaded());
  ToolkitRoots roots = ToolkitRoots::fromEnvironment();
  std::string include = findIncludeDirectory(roots);
  lines.emplace_back("CUDA headers", include.empty()
                                         ? "cuda_bf16.h not found"
                                         : include + "/cuda_bf16.h");
  std::string searched;
  for (const std::filesystem::path &dir : libraryDirectories(roots))
    searched += (searched.empty() ? "" : ":") + dir.string();
  lines.emplace_back("library search",
                     searched.empty()
                         ? "(the dynamic linker's only)"
                         : "the dynamic linker's, then " + searched);
  return lines;
}

//===----------------------------------------------------------------------===//
// Checking results
//===----------------------------------------------------------------------===//

namespace {

/// "cuMemAlloc(&p, n)" from "driver().cuMemAlloc(&p, n)" or
/// "api.cuMemAlloc(&p, n)": the function table adds nothing to a message.
std::string_view callText(std::string_view call) {
  while (true) {
    std::size_t length = 0;
    while (length < call.size() &&
           (std::isalnum(static_cast<unsigned char>(call[length])) ||
            call[length] == '_' || call[length] == ':'))
      ++length;
    std::string_view rest = call.substr(length);
    if (length == 0)
      return call;
    if (rest.starts_with("()"))
      rest.remove_prefix(2);
    if (rest.starts_with("."))
      call = rest.substr(1);
    else if (rest.starts_with("->"))
      call = rest.substr(2);
    else
      return call;
  }
}

/// The file name of a __FILE__ path.
std::string_view baseName(std::string_view file) {
  size_t slash = file.find_last_of('/');
  return slash == std::string_view::npos ? file : file.substr(slash + 1);
}

[[noreturn]] void throwCallError(const char *call, const char *file, int line,
                                 const std::string &text) {
  throw Error(fmt::format("{} failed at {}:{}: {}", callText(call),
                          baseName(file), line, text));
}

} // namespace

namespace {

/// The text of `result` when the driver cannot name it (it is missing, or
/// the toolkit's stub, whose cuGetErrorName fails too): the names of the
/// results a probe or a first allocation meets, else the number.
std::string fallbackResultText(CUresult result) {
  const char *name = nullptr;
  switch (result) {
  case CUDA_ERROR_OUT_OF_MEMORY:
    name = "CUDA_ERROR_OUT_OF_MEMORY";
    break;
  case CUDA_ERROR_NOT_INITIALIZED:
    name = "CUDA_ERROR_NOT_INITIALIZED";
    break;
  case CUDA_ERROR_STUB_LIBRARY:
    name = "CUDA_ERROR_STUB_LIBRARY (the toolkit's stub libcuda, not a "
           "driver)";
    break;
  case CUDA_ERROR_SYSTEM_DRIVER_MISMATCH:
    name = "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH";
    break;
  case CUDA_ERROR_NO_DEVICE:
    name = "CUDA_ERROR_NO_DEVICE";
    break;
  default:
    return fmt::format("CUresult {}", static_cast<int>(result));
  }
  return fmt::format("{} (CUresult {})", name, static_cast<int>(result));
}

/// The text of a driver result through `api`: "CUDA_ERROR_OUT_OF_MEMORY:
/// out of memory".
std::string resultText(const DriverApi &api, CUresult result) {
  const char *name = nullptr;
  const char *text = nullptr;
  if (api.cuGetErrorName(result, &name) != CUDA_SUCCESS || !name)
    return fallbackResultText(result);
  if (api.cuGetErrorString(result, &text) != CUDA_SUCCESS || !text)
    return name;
  return fmt::format("{}: {}", name, text);
}

} // namespace

std::string driverErrorText(CUresult result) {
  try {
    return resultText(driver(), result);
  } catch (const Error &) {
    return fallbackResultText(result); // no driver
  }
}

namespace detail {

void throwDriverError(CUresult result, const char *call, const char *file,
                      int line) {
  throwCallError(call, file, line, driverErrorText(result));
}

void throwNvrtcError(nvrtcResult result, const char *call, const char *file,
                     int line) {
  std::string text = fmt::format("nvrtcResult {}", static_cast<int>(result));
  try {
    text = nvrtc().nvrtcGetErrorString(result);
  } catch (const Error &) {
  }
  throwCallError(call, file, line, text);
}

void throwCublasError(cublasStatus_t status, const char *call, const char *file,
                      int line) {
  std::string text = fmt::format("cublasStatus_t {}", static_cast<int>(status));
  try {
    const CublasLtApi &api = cublasLt();
    text = fmt::format("{}: {}", api.cublasLtGetStatusName(status),
                       api.cublasLtGetStatusString(status));
  } catch (const Error &) {
  }
  throwCallError(call, file, line, text);
}

} // namespace detail

//===----------------------------------------------------------------------===//
// Probing for a device
//===----------------------------------------------------------------------===//

std::optional<DeviceInfo> probeDevice(const DriverApi &api, std::string *whyNot,
                                      int ordinal) {
  auto fail = [&](std::string reason) -> std::optional<DeviceInfo> {
    if (whyNot)
      *whyNot = std::move(reason);
    return std::nullopt;
  };
  try {
    if (CUresult r = api.cuInit(0); r != CUDA_SUCCESS)
      return fail(fmt::format("the CUDA driver found no usable GPU: cuInit "
                              "failed: {}",
                              resultText(api, r)));
    DeviceInfo info;
    info.ordinal = ordinal;
    if (CUresult r = api.cuDriverGetVersion(&info.driverVersion);
        r != CUDA_SUCCESS)
      return fail("cuDriverGetVersion failed: " + resultText(api, r));
    int count = 0;
    if (CUresult r = api.cuDeviceGetCount(&count); r != CUDA_SUCCESS)
      return fail("cuDeviceGetCount failed: " + resultText(api, r));
    if (count == 0)
      return fail("the CUDA driver reports no GPU");
    if (ordinal < 0 || ordinal >= count)
      return fail(
          fmt::format("no GPU {}: the CUDA driver reports {}", ordinal, count));
    CUdevice device;
    char name[256] = {};
    CUresult r = api.cuDeviceGet(&device, ordinal);
    if (r == CUDA_SUCCESS)
      r = api.cuDeviceGetName(name, sizeof(name), device);
    if (r == CUDA_SUCCESS)
      r = api.cuDeviceGetAttribute(
          &info.major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device);
    if (r == CUDA_SUCCESS)
      r = api.cuDeviceGetAttribute(
          &info.minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device);
    if (r == CUDA_SUCCESS)
      r = api.cuDeviceGetAttribute(
          &info.smCount, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, device);
    if (r == CUDA_SUCCESS)
      r = api.cuDeviceGetAttribute(
          &info.sharedMemoryPerBlockOptin,
          CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, device);
    if (r == CUDA_SUCCESS)
      r = api.cuDeviceTotalMem(&info.totalMemory, device);
    if (r != CUDA_SUCCESS)
      return fail(
          fmt::format("cannot query GPU {}: {}", ordinal, resultText(api, r)));
    info.name = name;
    return info;
  } catch (const std::exception &error) {
    return fail(error.what());
  }
}

std::optional<DeviceInfo> probeDevice(std::string *whyNot, int ordinal) {
  try {
    return probeDevice(driver(), whyNot, ordinal);
  } catch (const std::exception &error) {
    if (whyNot)
      *whyNot = error.what();
    return std::nullopt;
  }
}

} // namespace kiln::rt::cuda

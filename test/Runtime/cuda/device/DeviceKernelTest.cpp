//===- DeviceKernelTest.cpp - The device library against the host kernels -===//
//
// Compiles DeviceKernels.cu (a wrapper per kiln::dev template instantiation,
// built into the test: DeviceKernelsSource.cpp.in) with NVRTC for the GPU at
// hand, with the device library the runtime embeds, launches every kernel on
// fresh random data with its outputs poisoned (NaN), and compares with the host
// reference kernels in FP64 (runtime/host/Kernels.h) on the same inputs: both
// sides read values the storage type holds exactly. Bounds, max |got - ref| /
// max |ref|:
//   - f32 outputs: 1e-5 (FP32 arithmetic and accumulation: a few ulps of
//     rounding per reduction level over at most a few thousand terms);
//   - bf16 outputs: 2e-2 (one bf16 rounding of the output, 2^-9 relative,
//     plus FP32 error, with margin);
//   - FP32 outputs of bf16 inputs (lse, losses, statistics, the embedding
//     gradient): 1e-5, as the inputs are exact.
// Without a GPU every test skips with the reason.
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "runtime/Numerics.h"
#include "runtime/cuda/CudaApi.h"
#include "runtime/cuda/CudaBackend.h"
#include "runtime/cuda/Device.h"
#include "runtime/cuda/FlashAttention.h"
#include "runtime/cuda/KernelCache.h"
#include "runtime/cuda/Nvrtc.h"
#include "runtime/host/Kernels.h"

#include "../../host/KernelTestSupport.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

using namespace kiln::rt;
using namespace kiln::rt::cuda;
using kiln::rt::host::testing::randomIds;
using kiln::rt::host::testing::randomVector;
using kiln::rt::host::testing::relativeError;

namespace kiln::rt::cuda::testing {
/// The text of DeviceKernels.cu (generated from DeviceKernelsSource.cpp.in).
const char *deviceKernelsSource();
} // namespace kiln::rt::cuda::testing

namespace {

//===----------------------------------------------------------------------===//
// Storage types and tolerances
//===----------------------------------------------------------------------===//

enum class DType { F32, BF16 };
constexpr DType kDTypes[] = {DType::F32, DType::BF16};

const char *tagOf(DType type) { return type == DType::F32 ? "f32" : "bf16"; }
std::size_t bytesOf(DType type) { return type == DType::F32 ? 4 : 2; }

/// The bound on max |got - ref| / max |ref| of an output stored as `type`.
double toleranceOf(DType type) { return type == DType::F32 ? 1e-5 : 2e-2; }

/// The bound for FP32 outputs computed from exact inputs of either type.
constexpr double kFloatTolerance = 1e-5;

/// The value a tensor of `type` holds for x.
double representable(double x, DType type) {
  float f = static_cast<float>(x);
  return type == DType::BF16 ? roundToBf16(f) : f;
}

/// n values uniform in [lo, hi) that `type` holds exactly.
std::vector<double> randomValues(std::int64_t n, DType type, double lo = -1.0,
                                 double hi = 1.0) {
  std::vector<double> values = randomVector<double>(n, lo, hi);
  for (double &x : values)
    x = representable(x, type);
  return values;
}

std::vector<double> representableAll(std::vector<double> values, DType type) {
  for (double &x : values)
    x = representable(x, type);
  return values;
}

//===----------------------------------------------------------------------===//
// Device memory and launches
//===----------------------------------------------------------------------===//

/// The device context and DeviceKernels.cu compiled for the device, loaded
/// once per process.
class DeviceModule {
public:
  static DeviceModule &get() {
    static DeviceModule instance;
    return instance;
  }

  CUfunction function(const std::string &name) {
    auto it = functions.find(name);
    if (it != functions.end())
      return it->second;
    CUfunction f;
    KILN_CUDA_CHECK(driver().cuModuleGetFunction(&f, module, name.c_str()));
    functions.emplace(name, f);
    return f;
  }

private:
  DeviceModule() {
    std::string why;
    std::optional<DeviceInfo> device = probeDevice(&why);
    if (!device)
      throw Error("no device: " + why);
    CUdevice handle;
    KILN_CUDA_CHECK(driver().cuDeviceGet(&handle, device->ordinal));
    KILN_CUDA_CHECK(driver().cuDevicePrimaryCtxRetain(&context, handle));
    KILN_CUDA_CHECK(driver().cuCtxSetCurrent(context));

    CompileRequest request{"DeviceKernels",
                           kiln::rt::cuda::testing::deviceKernelsSource(),
                           device->arch(),
                           {},
                           {{"kiln_device.cuh", deviceHeaderSource()}}};
    // ctest runs each test in its own process: compile once, then hit the
    // on-disk cache (keyed by everything that determines the cubin).
    KernelCache cache(std::filesystem::temp_directory_path() /
                      "kiln-device-kernel-test");
    std::vector<CompiledKernel> compiled =
        compileKernels({request}, &cache, /*threads=*/1);
    cubin = std::move(compiled.at(0).cubin);
    KILN_CUDA_CHECK(driver().cuModuleLoadData(&module, cubin.data()));
  }

  CUcontext context = nullptr;
  CUmodule module = nullptr;
  std::vector<std::byte> cubin;
  std::map<std::string, CUfunction> functions;
};

/// A device allocation with 16 spare bytes, so that a view may start one
/// element in (misaligned), filled with 0xFF bytes (NaN in f32 and bf16).
class DeviceBuffer {
public:
  explicit DeviceBuffer(std::size_t bytes) : bytes(bytes) {
    KILN_CUDA_CHECK(driver().cuMemAlloc(&base, bytes + 16));
    KILN_CUDA_CHECK(driver().cuMemsetD8(base, 0xFF, bytes + 16));
  }
  ~DeviceBuffer() {
    if (base)
      driver().cuMemFree(base);
  }
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;

  CUdeviceptr base = 0;
  std::size_t bytes;
};

/// A tensor of `count` elements of `type` on the device, optionally
/// starting one element past a 16-byte boundary.
struct DeviceTensor {
  DeviceTensor(DType type, std::int64_t count, bool misaligned = false)
      : type(type), count(count), offset(misaligned ? bytesOf(type) : 0),
        buffer(std::make_unique<DeviceBuffer>(count * bytesOf(type))) {}

  CUdeviceptr ptr() const { return buffer->base + offset; }

  void upload(const std::vector<double> &values) {
    EXPECT_EQ(static_cast<std::int64_t>(values.size()), count);
    if (type == DType::F32) {
      std::vector<float> data(values.begin(), values.end());
      KILN_CUDA_CHECK(
          driver().cuMemcpyHtoD(ptr(), data.data(), data.size() * 4));
    } else {
      std::vector<std::uint16_t> data(values.size());
      for (std::size_t i = 0; i < values.size(); ++i)
        data[i] = floatToBf16(static_cast<float>(values[i]));
      KILN_CUDA_CHECK(
          driver().cuMemcpyHtoD(ptr(), data.data(), data.size() * 2));
    }
  }

  std::vector<double> download() const {
    std::vector<double> values(count);
    if (type == DType::F32) {
      std::vector<float> data(count);
      KILN_CUDA_CHECK(driver().cuMemcpyDtoH(data.data(), ptr(), count * 4));
      std::copy(data.begin(), data.end(), values.begin());
    } else {
      std::vector<std::uint16_t> data(count);
      KILN_CUDA_CHECK(driver().cuMemcpyDtoH(data.data(), ptr(), count * 2));
      for (std::int64_t i = 0; i < count; ++i)
        values[i] = bf16ToFloat(data[i]);
    }
    return values;
  }

  DType type;
  std::int64_t count;
  std::size_t offset;
  std::unique_ptr<DeviceBuffer> buffer;
};

DeviceTensor toDevice(const std::vector<double> &values, DType type,
                      bool misaligned = false) {
  DeviceTensor tensor(type, static_cast<std::int64_t>(values.size()),
                      misaligned);
  tensor.upload(values);
  return tensor;
}

/// int32 data (ids, targets, positions, cu_seqlens, error flags).
struct DeviceInts {
  explicit DeviceInts(const std::vector<std::int32_t> &values)
      : count(values.size()),
        buffer(std::make_unique<DeviceBuffer>(values.size() * 4)) {
    if (!values.empty())
      KILN_CUDA_CHECK(driver().cuMemcpyHtoD(buffer->base, values.data(),
                                            values.size() * 4));
  }
  CUdeviceptr ptr() const { return buffer->base; }
  std::vector<std::int32_t> download() const {
    std::vector<std::int32_t> values(count);
    if (count)
      KILN_CUDA_CHECK(
          driver().cuMemcpyDtoH(values.data(), buffer->base, count * 4));
    return values;
  }
  std::size_t count;
  std::unique_ptr<DeviceBuffer> buffer;
};

struct Grid {
  unsigned x = 1, y = 1, z = 1;
};

/// Launches kernel `name` of DeviceKernels.cu and waits for it. Arguments
/// must have the wrapper's exact parameter types: CUdeviceptr for pointers,
/// long long, int, float, double, bool.
template <typename... Args>
void launchShared(const std::string &name, Grid grid, unsigned threads,
                  unsigned sharedBytes, Args... args) {
  CUfunction f = DeviceModule::get().function(name);
  if (sharedBytes > 48 * 1024)
    KILN_CUDA_CHECK(driver().cuFuncSetAttribute(
        f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        static_cast<int>(sharedBytes)));
  void *params[] = {static_cast<void *>(&args)..., nullptr};
  KILN_CUDA_CHECK(driver().cuLaunchKernel(f, grid.x, grid.y, grid.z, threads, 1,
                                          1, sharedBytes, nullptr, params,
                                          nullptr));
  KILN_CUDA_CHECK(driver().cuCtxSynchronize());
}

/// launchShared without dynamic shared memory.
template <typename... Args>
void launch(const std::string &name, Grid grid, unsigned threads,
            Args... args) {
  launchShared(name, grid, threads, 0, args...);
}

unsigned ceilDiv(std::int64_t a, std::int64_t b) {
  return static_cast<unsigned>((a + b - 1) / b);
}

/// A wrapper's name for `type`: "rmsNorm" -> "rmsNorm_bf16<suffix>".
std::string kernel(const char *function, DType type, const char *suffix = "") {
  return std::string(function) + "_" + tagOf(type) + suffix;
}

/// The block sizes of the block-per-row wrappers (DeviceKernels.cu).
struct RowVariant {
  const char *suffix;
  unsigned threads;
};
constexpr RowVariant kRowVariants[] = {
    {"", 256}, {"_t32", 32}, {"_t1024", 1024}};
constexpr unsigned kColumnThreads = 256;
constexpr unsigned kSingleThreads = 1024;
constexpr unsigned kAttentionThreads = 128;

constexpr CUdeviceptr kNull = 0;

/// Every test: per-test random data, skipped without a GPU.
class DeviceKernelTest : public kiln::rt::host::testing::KernelTest {
protected:
  void SetUp() override {
    KernelTest::SetUp();
    std::string why;
    if (!probeDevice(&why))
      GTEST_SKIP() << why;
    DeviceModule::get(); // compile once, before the first launch
  }
};

#define EXPECT_CLOSE(got, ref, tolerance)                                      \
  EXPECT_LE(relativeError((got), (ref)), (tolerance)) << #got

//===----------------------------------------------------------------------===//
// Fill and elementwise bodies
//===----------------------------------------------------------------------===//

TEST_F(DeviceKernelTest, Fill) {
  for (DType type : kDTypes) {
    SCOPED_TRACE(tagOf(type));
    const long long n = 3001;
    DeviceTensor out(type, n, /*misaligned=*/true);
    // Two blocks: the grid-stride loop covers the rest.
    launch(kernel("fill", type), {2}, kColumnThreads, out.ptr(), n, 0.3f);
    std::vector<double> expected(n, representable(0.3f, type));
    EXPECT_EQ(out.download(), expected);
  }
}

TEST_F(DeviceKernelTest, ElementwiseActivations) {
  const long long n = 4099;
  const Grid grid{7};
  for (DType type : kDTypes) {
    SCOPED_TRACE(tagOf(type));
    std::vector<double> x = randomValues(n, type, -4, 4);
    std::vector<double> up = randomValues(n, type, -2, 2);
    std::vector<double> dy = randomValues(n, type);
    DeviceTensor dX = toDevice(x, type), dUp = toDevice(up, type),
                 dDy = toDevice(dy, type);
    std::vector<double> ref(n), ref2(n);

    for (bool tanhApprox : {false, true}) {
      SCOPED_TRACE(tanhApprox ? "tanh" : "erf");
      DeviceTensor y(type, n);
      launch(kernel("gelu", type), grid, kColumnThreads, dX.ptr(), y.ptr(), n,
             tanhApprox);
      host::gelu<double>(x.data(), ref.data(), n, tanhApprox);
      EXPECT_CLOSE(y.download(), ref, toleranceOf(type));

      DeviceTensor dx(type, n);
      launch(kernel("geluGrad", type), grid, kColumnThreads, dDy.ptr(),
             dX.ptr(), dx.ptr(), n, tanhApprox);
      host::geluGrad<double>(dy.data(), x.data(), ref.data(), n, tanhApprox);
      EXPECT_CLOSE(dx.download(), ref, toleranceOf(type));
    }

    DeviceTensor y(type, n);
    launch(kernel("swiglu", type), grid, kColumnThreads, dX.ptr(), dUp.ptr(),
           y.ptr(), n);
    host::swiglu<double>(x.data(), up.data(), ref.data(), n);
    EXPECT_CLOSE(y.download(), ref, toleranceOf(type));

    DeviceTensor dgate(type, n), dup(type, n);
    launch(kernel("swigluGrad", type), grid, kColumnThreads, dDy.ptr(),
           dX.ptr(), dUp.ptr(), dgate.ptr(), dup.ptr(), n);
    host::swigluGrad<double>(dy.data(), x.data(), up.data(), ref.data(),
                             ref2.data(), n);
    EXPECT_CLOSE(dgate.download(), ref, toleranceOf(type));
    EXPECT_CLOSE(dup.download(), ref2, toleranceOf(type));

    DeviceTensor silu(type, n);
    launch(kernel("silu", type), grid, kColumnThreads, dX.ptr(), silu.ptr(), n);
    std::vector<double> ones(n, 1.0);
    host::swiglu<double>(x.data(), ones.data(), ref.data(), n);
    EXPECT_CLOSE(silu.download(), ref, toleranceOf(type));
  }
}

//===----------------------------------------------------------------------===//
// Norms
//===----------------------------------------------------------------------===//

struct NormShape {
  long long rows;
  int dim;
  bool misaligned; ///< every tensor one element past a 16-byte boundary
};

/// Odd and tiny rows (scalar path), rows of whole vectors (vector path),
/// rows longer than every block, and a misaligned copy of a vector shape.
/// No row is shorter than 3: with 1 (RMSNorm) or 2 (LayerNorm) elements
/// the input gradient is a cancellation of order eps / (var + eps), which
/// no relative bound fits.
constexpr NormShape kNormShapes[] = {
    {1, 3, false},    {3, 7, false},   {5, 64, false},  {37, 1000, false},
    {8, 4096, false}, {4, 4104, true}, {6, 8200, false}};

std::string describe(const NormShape &s) {
  return "rows " + std::to_string(s.rows) + " dim " + std::to_string(s.dim) +
         (s.misaligned ? " misaligned" : "");
}

TEST_F(DeviceKernelTest, RmsNormForwardAndInputGradient) {
  const float eps = 1e-5f;
  for (DType type : kDTypes)
    for (const NormShape &s : kNormShapes)
      for (const RowVariant &variant : kRowVariants) {
        SCOPED_TRACE(std::string(tagOf(type)) + " " + describe(s) +
                     " threads " + std::to_string(variant.threads));
        const long long n = s.rows * s.dim;
        std::vector<double> x = randomValues(n, type, -2, 2);
        std::vector<double> w = randomValues(s.dim, type, 0.5, 1.5);
        std::vector<double> dy = randomValues(n, type);
        DeviceTensor dX = toDevice(x, type, s.misaligned),
                     dW = toDevice(w, type, s.misaligned),
                     dDy = toDevice(dy, type, s.misaligned);
        // Fewer blocks than rows: the row loop strides.
        const Grid grid{static_cast<unsigned>(std::max(1LL, s.rows / 2))};

        DeviceTensor y(type, n, s.misaligned);
        launch(kernel("rmsNorm", type, variant.suffix), grid, variant.threads,
               dX.ptr(), dW.ptr(), y.ptr(), s.rows, s.dim, eps);
        std::vector<double> ref(n);
        host::rmsNorm<double>(x.data(), w.data(), ref.data(), s.rows, s.dim,
                              eps);
        EXPECT_CLOSE(y.download(), ref, toleranceOf(type));

        DeviceTensor dx(type, n, s.misaligned);
        launch(kernel("rmsNormGrad", type, variant.suffix), grid,
               variant.threads, dDy.ptr(), dX.ptr(), dW.ptr(), dx.ptr(), s.rows,
               s.dim, eps);
        host::rmsNormGrad<double>(dy.data(), x.data(), w.data(), ref.data(),
                                  s.rows, s.dim, eps);
        EXPECT_CLOSE(dx.download(), ref, toleranceOf(type));
      }
}

TEST_F(DeviceKernelTest, LayerNormForwardAndInputGradient) {
  const float eps = 1e-5f;
  for (DType type : kDTypes)
    for (const NormShape &s : kNormShapes)
      for (const RowVariant &variant : kRowVariants) {
        SCOPED_TRACE(std::string(tagOf(type)) + " " + describe(s) +
                     " threads " + std::to_string(variant.threads));
        const long long n = s.rows * s.dim;
        // An offset mean, so that the two-pass variance matters.
        std::vector<double> x = randomValues(n, type, 1, 3);
        std::vector<double> w = randomValues(s.dim, type, 0.5, 1.5);
        std::vector<double> b = randomValues(s.dim, type);
        std::vector<double> dy = randomValues(n, type);
        DeviceTensor dX = toDevice(x, type, s.misaligned),
                     dW = toDevice(w, type, s.misaligned),
                     dB = toDevice(b, type, s.misaligned),
                     dDy = toDevice(dy, type, s.misaligned);
        const Grid grid{static_cast<unsigned>(std::max(1LL, s.rows / 2))};
        std::vector<double> ref(n);

        for (bool withBias : {true, false}) {
          SCOPED_TRACE(withBias ? "bias" : "no bias");
          DeviceTensor y(type, n, s.misaligned);
          launch(kernel("layerNorm", type, variant.suffix), grid,
                 variant.threads, dX.ptr(), dW.ptr(),
                 withBias ? dB.ptr() : kNull, y.ptr(), s.rows, s.dim, eps);
          host::layerNorm<double>(x.data(), w.data(),
                                  withBias ? b.data() : nullptr, ref.data(),
                                  s.rows, s.dim, eps);
          EXPECT_CLOSE(y.download(), ref, toleranceOf(type));
        }

        DeviceTensor dx(type, n, s.misaligned);
        launch(kernel("layerNormGrad", type, variant.suffix), grid,
               variant.threads, dDy.ptr(), dX.ptr(), dW.ptr(), dx.ptr(), s.rows,
               s.dim, eps);
        host::layerNormGrad<double>(dy.data(), x.data(), w.data(), ref.data(),
                                    s.rows, s.dim, eps);
        EXPECT_CLOSE(dx.download(), ref, toleranceOf(type));
      }
}

// Row statistics, then the thread-per-column weight gradients and the bias
// gradient (columnSum).
TEST_F(DeviceKernelTest, NormWeightGradients) {
  const float eps = 1e-5f;
  for (DType type : kDTypes)
    for (const NormShape &s : kNormShapes)
      for (const RowVariant &variant : kRowVariants) {
        SCOPED_TRACE(std::string(tagOf(type)) + " " + describe(s) +
                     " threads " + std::to_string(variant.threads));
        const long long n = s.rows * s.dim;
        std::vector<double> x = randomValues(n, type, 1, 3);
        std::vector<double> dy = randomValues(n, type);
        DeviceTensor dX = toDevice(x, type, s.misaligned),
                     dDy = toDevice(dy, type, s.misaligned);
        const Grid rowGrid{static_cast<unsigned>(std::max(1LL, s.rows / 2))};
        // At most two column blocks (the column loop strides when dim >
        // 512) by three row chunks (the last one short or empty).
        const unsigned chunks = 3;
        const Grid columnGrid{std::min(2u, ceilDiv(s.dim, kColumnThreads)),
                              chunks};
        DeviceTensor partials(DType::F32, chunks * s.dim);
        auto finish = [&](DeviceTensor &y) {
          launch(kernel("finishColumns", type), {columnGrid.x}, kColumnThreads,
                 partials.ptr(), y.ptr(), static_cast<int>(chunks),
                 static_cast<long long>(s.dim));
        };

        // rstd of RMSNorm, and mean and rstd of LayerNorm, in FP64.
        std::vector<double> rmsRef(s.rows), meanRef(s.rows), rstdRef(s.rows);
        for (long long r = 0; r < s.rows; ++r) {
          double sum = 0, sumSq = 0, dev = 0;
          for (int j = 0; j < s.dim; ++j) {
            sum += x[r * s.dim + j];
            sumSq += x[r * s.dim + j] * x[r * s.dim + j];
          }
          meanRef[r] = sum / s.dim;
          for (int j = 0; j < s.dim; ++j)
            dev += (x[r * s.dim + j] - meanRef[r]) *
                   (x[r * s.dim + j] - meanRef[r]);
          rmsRef[r] = 1.0 / std::sqrt(sumSq / s.dim + eps);
          rstdRef[r] = 1.0 / std::sqrt(dev / s.dim + eps);
        }

        DeviceTensor rstd(DType::F32, s.rows);
        launch(kernel("rmsRowStats", type, variant.suffix), rowGrid,
               variant.threads, dX.ptr(), rstd.ptr(), s.rows, s.dim, eps);
        EXPECT_CLOSE(rstd.download(), rmsRef, kFloatTolerance);
        DeviceTensor dw(type, s.dim, s.misaligned);
        launch(kernel("rmsNormWeightGradPartials", type), columnGrid,
               kColumnThreads, dDy.ptr(), dX.ptr(), rstd.ptr(), partials.ptr(),
               s.rows, s.dim);
        finish(dw);
        std::vector<double> ref(s.dim);
        host::rmsNormWeightGrad<double>(dy.data(), x.data(), ref.data(), s.rows,
                                        s.dim, eps);
        EXPECT_CLOSE(dw.download(), ref, toleranceOf(type));

        DeviceTensor mean(DType::F32, s.rows), layerRstd(DType::F32, s.rows);
        launch(kernel("layerRowStats", type, variant.suffix), rowGrid,
               variant.threads, dX.ptr(), mean.ptr(), layerRstd.ptr(), s.rows,
               s.dim, eps);
        EXPECT_CLOSE(mean.download(), meanRef, kFloatTolerance);
        EXPECT_CLOSE(layerRstd.download(), rstdRef, kFloatTolerance);
        DeviceTensor layerDw(type, s.dim, s.misaligned);
        launch(kernel("layerNormWeightGradPartials", type), columnGrid,
               kColumnThreads, dDy.ptr(), dX.ptr(), mean.ptr(), layerRstd.ptr(),
               partials.ptr(), s.rows, s.dim);
        finish(layerDw);
        host::layerNormWeightGrad<double>(dy.data(), x.data(), ref.data(),
                                          s.rows, s.dim, eps);
        EXPECT_CLOSE(layerDw.download(), ref, toleranceOf(type));

        DeviceTensor bias(type, s.dim, s.misaligned);
        launch(kernel("columnSumPartials", type), columnGrid, kColumnThreads,
               dDy.ptr(), partials.ptr(), s.rows, s.dim);
        finish(bias);
        host::columnSum<double>(dy.data(), ref.data(), s.rows, s.dim);
        EXPECT_CLOSE(bias.download(), ref, toleranceOf(type));
      }
}

//===----------------------------------------------------------------------===//
// Rotary embeddings
//===----------------------------------------------------------------------===//

TEST_F(DeviceKernelTest, Rope) {
  struct RopeCase {
    int batch, seq, heads, headDim;
    float theta;
    bool positions, inverse, inPlace;
  };
  const RopeCase cases[] = {
      {2, 5, 3, 64, 10000.0f, false, false, false},
      {2, 5, 3, 64, 10000.0f, false, true, false},
      {1, 7, 4, 128, 500000.0f, true, false, false},
      {1, 7, 4, 128, 500000.0f, true, true, true},
      {3, 2, 2, 6, 10000.0f, true, false, true},
      // More frequencies than the 32-thread block has threads.
      {1, 3, 2, 256, 10000.0f, true, false, false},
  };
  for (DType type : kDTypes)
    for (const RopeCase &c : cases)
      for (const RowVariant &variant : kRowVariants) {
        SCOPED_TRACE(
            std::string(tagOf(type)) + " headDim " + std::to_string(c.headDim) +
            " theta " + std::to_string(c.theta) +
            (c.positions ? " positions" : "") + (c.inverse ? " inverse" : "") +
            (c.inPlace ? " in place" : "") + " threads " +
            std::to_string(variant.threads));
        const long long tokens = static_cast<long long>(c.batch) * c.seq;
        const long long n = tokens * c.heads * c.headDim;
        std::vector<double> x = randomValues(n, type);
        // Large positions exercise the double-precision argument reduction.
        std::vector<std::int32_t> positions = randomIds(tokens, 200000);
        DeviceTensor dX = toDevice(x, type);
        DeviceInts dPositions(positions);
        DeviceTensor y(type, n);
        CUdeviceptr out = c.inPlace ? dX.ptr() : y.ptr();
        launch(kernel("rope", type, variant.suffix),
               {static_cast<unsigned>(std::max(1LL, tokens / 2))},
               variant.threads, dX.ptr(),
               c.positions ? dPositions.ptr() : kNull, out, c.batch, c.seq,
               c.heads, c.headDim, c.theta, c.inverse);
        std::vector<double> ref(n);
        host::rope<double>(x.data(), c.positions ? positions.data() : nullptr,
                           ref.data(), c.batch, c.seq, c.heads, c.headDim,
                           c.theta, c.inverse);
        EXPECT_CLOSE(c.inPlace ? dX.download() : y.download(), ref,
                     toleranceOf(type));
      }
}

//===----------------------------------------------------------------------===//
// Embedding
//===----------------------------------------------------------------------===//

TEST_F(DeviceKernelTest, EmbeddingLookupAndGradient) {
  const int vocab = 50;
  for (DType type : kDTypes)
    for (int dim : {7, 64, 1000})
      for (const RowVariant &variant : kRowVariants) {
        SCOPED_TRACE(std::string(tagOf(type)) + " dim " + std::to_string(dim) +
                     " threads " + std::to_string(variant.threads));
        const long long numIds = 67; // ids repeat: 67 > vocab
        std::vector<double> table = randomValues(vocab * dim, type);
        std::vector<std::int32_t> ids = randomIds(numIds, vocab);
        DeviceTensor dTable = toDevice(table, type);
        DeviceInts dIds(ids), flag(std::vector<std::int32_t>{0});
        DeviceTensor y(type, numIds * dim);
        launch(kernel("embedding", type, variant.suffix),
               {static_cast<unsigned>(numIds / 2)}, variant.threads,
               dTable.ptr(), dIds.ptr(), y.ptr(), numIds, vocab, dim,
               flag.ptr());
        std::vector<double> ref(numIds * dim);
        host::embedding<double>(table.data(), ids.data(), ref.data(), numIds,
                                vocab, dim);
        EXPECT_EQ(y.download(), ref); // a copy: exact
        EXPECT_EQ(flag.download()[0], 0);

        // The table gradient is FP32 for both types and exact inputs.
        std::vector<double> dy = randomValues(numIds * dim, type);
        DeviceTensor dDy = toDevice(dy, type);
        DeviceTensor dtable(DType::F32, vocab * dim);
        // Two vocabulary ranges: each block scans every id.
        launch(kernel("embeddingGradColumns", type),
               {std::min(2u, ceilDiv(dim, kColumnThreads)), 2}, kColumnThreads,
               dDy.ptr(), dIds.ptr(), dtable.ptr(), numIds, vocab, dim);
        std::vector<double> gradRef(vocab * dim);
        host::embeddingGrad<double>(dy.data(), ids.data(), gradRef.data(),
                                    numIds, vocab, dim);
        EXPECT_CLOSE(dtable.download(), gradRef, kFloatTolerance);
      }
}

// An id outside the vocabulary sets the flag to its position + 1 (one of
// the bad ones: blocks race) and gives zeros; the other rows are copied.
TEST_F(DeviceKernelTest, EmbeddingReportsBadIds) {
  const int vocab = 50, dim = 64;
  const long long numIds = 12;
  for (DType type : kDTypes) {
    SCOPED_TRACE(tagOf(type));
    std::vector<double> table = randomValues(vocab * dim, type);
    std::vector<std::int32_t> ids = randomIds(numIds, vocab);
    ids[5] = -1;
    ids[9] = vocab;
    DeviceTensor dTable = toDevice(table, type);
    DeviceInts dIds(ids), flag(std::vector<std::int32_t>{0});
    DeviceTensor y(type, numIds * dim);
    launch(kernel("embedding", type), {static_cast<unsigned>(numIds)}, 256,
           dTable.ptr(), dIds.ptr(), y.ptr(), numIds, vocab, dim, flag.ptr());
    int flagged = flag.download()[0];
    EXPECT_TRUE(flagged == 6 || flagged == 10) << "flag " << flagged;
    std::vector<double> got = y.download();
    for (long long p = 0; p < numIds; ++p)
      for (int j = 0; j < dim; ++j) {
        double expected = (p == 5 || p == 9) ? 0.0 : table[ids[p] * dim + j];
        ASSERT_EQ(got[p * dim + j], expected) << "position " << p;
      }
  }
}

//===----------------------------------------------------------------------===//
// Cross-entropy
//===----------------------------------------------------------------------===//

TEST_F(DeviceKernelTest, CrossEntropyLossAndGradient) {
  const long long ignoreIndex = -100;
  for (DType type : kDTypes)
    for (int vocab : {8, 1000, 50257})
      for (const RowVariant &variant : kRowVariants) {
        SCOPED_TRACE(std::string(tagOf(type)) + " vocab " +
                     std::to_string(vocab) + " threads " +
                     std::to_string(variant.threads));
        const long long rows = 37;
        std::vector<double> logits = randomValues(rows * vocab, type, -4, 4);
        std::vector<std::int32_t> targets = randomIds(rows, vocab);
        for (long long r = 0; r < rows; r += 5)
          targets[r] = static_cast<std::int32_t>(ignoreIndex);
        DeviceTensor dLogits = toDevice(logits, type);
        DeviceInts dTargets(targets), flag(std::vector<std::int32_t>{0});
        const Grid grid{static_cast<unsigned>(rows / 2)};

        DeviceTensor rowLoss(DType::F32, rows);
        launch(kernel("crossEntropyRows", type, variant.suffix), grid,
               variant.threads, dLogits.ptr(), dTargets.ptr(), rowLoss.ptr(),
               rows, vocab, ignoreIndex, flag.ptr());
        EXPECT_EQ(flag.download()[0], 0);
        std::vector<double> rowRef(rows, 0.0);
        long long valid = 0;
        for (long long r = 0; r < rows; ++r) {
          if (targets[r] == ignoreIndex)
            continue;
          ++valid;
          rowRef[r] = host::crossEntropy<double>(logits.data() + r * vocab,
                                                 targets.data() + r, 1, vocab,
                                                 ignoreIndex);
        }
        EXPECT_CLOSE(rowLoss.download(), rowRef, kFloatTolerance);

        DeviceTensor loss(DType::F32, 1), count(DType::F32, 1);
        launch("crossEntropyReduce", {1}, kSingleThreads, rowLoss.ptr(),
               dTargets.ptr(), loss.ptr(), rows, ignoreIndex);
        double lossRef = host::crossEntropy<double>(
            logits.data(), targets.data(), rows, vocab, ignoreIndex);
        EXPECT_CLOSE(loss.download(), std::vector<double>{lossRef},
                     kFloatTolerance);
        launch("countValid", {1}, kSingleThreads, dTargets.ptr(), rows,
               ignoreIndex, count.ptr());
        EXPECT_EQ(count.download()[0], static_cast<double>(valid));

        const double dlossValue = 0.75;
        DeviceTensor dloss = toDevice({dlossValue}, DType::F32);
        DeviceTensor dlogits(type, rows * vocab);
        launch(kernel("crossEntropyGrad", type, variant.suffix), grid,
               variant.threads, dloss.ptr(), count.ptr(), dLogits.ptr(),
               dTargets.ptr(), dlogits.ptr(), rows, vocab, ignoreIndex);
        std::vector<double> gradRef(rows * vocab);
        host::crossEntropyGrad<double>(dlossValue, logits.data(),
                                       targets.data(), gradRef.data(), rows,
                                       vocab, ignoreIndex);
        EXPECT_CLOSE(dlogits.download(), gradRef, toleranceOf(type));
      }
}

// Every row ignored: loss 0, count 0, zero gradients (not NaN).
TEST_F(DeviceKernelTest, CrossEntropyAllIgnored) {
  const long long ignoreIndex = -100, rows = 9;
  const int vocab = 100;
  for (DType type : kDTypes) {
    SCOPED_TRACE(tagOf(type));
    DeviceTensor logits = toDevice(randomValues(rows * vocab, type), type);
    DeviceInts targets(std::vector<std::int32_t>(rows, -100));
    DeviceInts flag(std::vector<std::int32_t>{0});
    DeviceTensor rowLoss(DType::F32, rows), loss(DType::F32, 1),
        count(DType::F32, 1);
    launch(kernel("crossEntropyRows", type), {4}, 256, logits.ptr(),
           targets.ptr(), rowLoss.ptr(), rows, vocab, ignoreIndex, flag.ptr());
    launch("crossEntropyReduce", {1}, kSingleThreads, rowLoss.ptr(),
           targets.ptr(), loss.ptr(), rows, ignoreIndex);
    launch("countValid", {1}, kSingleThreads, targets.ptr(), rows, ignoreIndex,
           count.ptr());
    EXPECT_EQ(loss.download()[0], 0.0);
    EXPECT_EQ(count.download()[0], 0.0);
    DeviceTensor dloss = toDevice({1.0}, DType::F32);
    DeviceTensor dlogits(type, rows * vocab);
    launch(kernel("crossEntropyGrad", type), {4}, 256, dloss.ptr(), count.ptr(),
           logits.ptr(), targets.ptr(), dlogits.ptr(), rows, vocab,
           ignoreIndex);
    EXPECT_EQ(dlogits.download(), std::vector<double>(rows * vocab, 0.0));
  }
}

// A target outside the vocabulary (not ignore_index) flags its row + 1 and
// gives that row a NaN loss.
TEST_F(DeviceKernelTest, CrossEntropyReportsBadTargets) {
  const long long ignoreIndex = -100, rows = 6;
  const int vocab = 100;
  for (DType type : kDTypes) {
    SCOPED_TRACE(tagOf(type));
    std::vector<std::int32_t> targets = randomIds(rows, vocab);
    targets[3] = vocab;
    DeviceTensor logits = toDevice(randomValues(rows * vocab, type), type);
    DeviceInts dTargets(targets), flag(std::vector<std::int32_t>{0});
    DeviceTensor rowLoss(DType::F32, rows);
    launch(kernel("crossEntropyRows", type), {static_cast<unsigned>(rows)}, 256,
           logits.ptr(), dTargets.ptr(), rowLoss.ptr(), rows, vocab,
           ignoreIndex, flag.ptr());
    EXPECT_EQ(flag.download()[0], 4);
    std::vector<double> losses = rowLoss.download();
    EXPECT_TRUE(std::isnan(losses[3]));
    for (long long r = 0; r < rows; ++r) {
      if (r == 3)
        continue;
      EXPECT_TRUE(std::isfinite(losses[r])) << "row " << r;
    }
  }
}

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

/// An attention case with the kernels' parameter types (int sizes, a float
/// scale), which launches pass as they are; described as the host tests'.
struct AttentionCase {
  int batch, seq, heads, kvHeads, headDim;
  bool causal;
  std::vector<std::int32_t> cuSeqlens; ///< empty: none

  long long qSize() const {
    return static_cast<long long>(batch) * seq * heads * headDim;
  }
  long long kvSize() const {
    return static_cast<long long>(batch) * seq * kvHeads * headDim;
  }
  long long rows() const { return static_cast<long long>(batch) * heads * seq; }
  float scale() const { return 1.0f / std::sqrt(static_cast<float>(headDim)); }
  std::string describe() const {
    return kiln::rt::host::testing::AttentionCase{
        batch, seq, heads, kvHeads, headDim, causal, cuSeqlens}
        .describe();
  }
};

/// GQA groups 1, 4 and 8; causal or not; head dims 64 and 128; sequence
/// lengths around the 4 warps of a block and past 32 and 128; packed
/// documents: an empty one, one crossing batch rows, single tokens.
std::vector<AttentionCase> attentionCases() {
  std::vector<AttentionCase> cases;
  for (int headDim : {64, 128})
    for (bool causal : {false, true}) {
      for (int kvHeads : {8, 2, 1})
        for (int seq : {1, 3, 4, 5, 33, 129})
          cases.push_back({2, seq, 8, kvHeads, headDim, causal, {}});
      cases.push_back({2, 100, 8, 2, headDim, causal, {0, 17, 17, 120, 200}});
      cases.push_back({2, 64, 4, 1, headDim, causal, {0, 128}});
      cases.push_back({1, 7, 2, 2, headDim, causal, {0, 1, 2, 3, 4, 5, 6, 7}});
    }
  return cases;
}

/// The attention kernels' name: "attentionForward" -> "..._bf16_d128".
std::string attentionKernel(const char *function, DType type, int headDim) {
  return std::string(function) + "_" + tagOf(type) + "_d" +
         std::to_string(headDim);
}

/// Random inputs of one attention case in `type` (on the host and the
/// device) and the FP64 host reference: the forward's out and lse, and the
/// backward's gradients from out as `type` stores it (also on the device,
/// with lse, for the backward kernels).
struct AttentionData {
  AttentionData(const AttentionCase &c, DType type)
      : q(randomValues(c.qSize(), type, -2, 2)),
        k(randomValues(c.kvSize(), type, -2, 2)),
        v(randomValues(c.kvSize(), type)), dout(randomValues(c.qSize(), type)),
        outRef(c.qSize()), dqRef(c.qSize()), dkRef(c.kvSize()),
        dvRef(c.kvSize()), lseRef(c.rows()), dQ(toDevice(q, type)),
        dK(toDevice(k, type)), dV(toDevice(v, type)),
        dDout(toDevice(dout, type)), cu(c.cuSeqlens),
        cuPtr(c.cuSeqlens.empty() ? kNull : cu.ptr()),
        numCu(static_cast<int>(c.cuSeqlens.size())) {
    const std::int32_t *hostCu =
        c.cuSeqlens.empty() ? nullptr : c.cuSeqlens.data();
    std::vector<float> lse(c.rows());
    host::attentionForward<double>(
        q.data(), k.data(), v.data(), outRef.data(), lse.data(), c.batch, c.seq,
        c.heads, c.kvHeads, c.headDim, c.scale(), c.causal, hostCu, numCu);
    lseRef.assign(lse.begin(), lse.end());
    outStored = representableAll(outRef, type);
    host::attentionBackward<double>(
        dout.data(), q.data(), k.data(), v.data(), outStored.data(), lse.data(),
        dqRef.data(), dkRef.data(), dvRef.data(), c.batch, c.seq, c.heads,
        c.kvHeads, c.headDim, c.scale(), c.causal, hostCu, numCu);
    dOut = toDevice(outStored, type);
    dLse = toDevice(lseRef, DType::F32);
  }

  std::vector<double> q, k, v, dout, outRef, outStored, dqRef, dkRef, dvRef;
  std::vector<double> lseRef; ///< FP32 values
  DeviceTensor dQ, dK, dV, dDout;
  std::optional<DeviceTensor> dOut, dLse;
  DeviceInts cu;
  CUdeviceptr cuPtr;
  int numCu;
};

TEST_F(DeviceKernelTest, AttentionForwardAndBackward) {
  for (DType type : kDTypes)
    for (const AttentionCase &c : attentionCases()) {
      SCOPED_TRACE(std::string(tagOf(type)) + " " + c.describe());
      const AttentionData a(c, type);
      const float scale = c.scale();
      const unsigned seq = c.seq, heads = c.heads, batch = c.batch,
                     kvHeads = c.kvHeads;

      // Forward.
      DeviceTensor out(type, c.qSize()), lse(DType::F32, c.rows());
      launch(attentionKernel("attentionForward", type, c.headDim),
             {seq, heads, batch}, kAttentionThreads, a.dQ.ptr(), a.dK.ptr(),
             a.dV.ptr(), out.ptr(), lse.ptr(), c.batch, c.seq, c.heads,
             c.kvHeads, scale, c.causal, a.cuPtr, a.numCu);
      EXPECT_CLOSE(out.download(), a.outRef, toleranceOf(type));
      EXPECT_CLOSE(lse.download(), a.lseRef, kFloatTolerance);

      // Backward, from the reference's out (as the type stores it) and lse.
      std::vector<double> deltaRef(c.rows());
      for (int b = 0; b < c.batch; ++b)
        for (int h = 0; h < c.heads; ++h)
          for (int i = 0; i < c.seq; ++i) {
            long long offset =
                ((static_cast<long long>(b) * c.seq + i) * c.heads + h) *
                c.headDim;
            double sum = 0;
            for (int d = 0; d < c.headDim; ++d)
              sum += a.dout[offset + d] * a.outStored[offset + d];
            deltaRef[(static_cast<long long>(b) * c.heads + h) * c.seq + i] =
                sum;
          }
      // The warp-per-row launch of the code generator, then a 1-D one.
      DeviceTensor delta(DType::F32, c.rows());
      launch(kernel("attentionBackwardPreprocess", type, "_t32"),
             {seq, heads, batch}, 32, a.dDout.ptr(), a.dOut->ptr(), delta.ptr(),
             c.batch, c.seq, c.heads, c.headDim);
      EXPECT_CLOSE(delta.download(), deltaRef, kFloatTolerance);
      DeviceTensor delta1d(DType::F32, c.rows());
      launch(kernel("attentionBackwardPreprocess", type),
             {std::min(5u, ceilDiv(c.rows(), 8))}, 256, a.dDout.ptr(),
             a.dOut->ptr(), delta1d.ptr(), c.batch, c.seq, c.heads, c.headDim);
      EXPECT_EQ(delta1d.download(), delta.download());

      DeviceTensor dq(type, c.qSize()), dk(type, c.kvSize()),
          dv(type, c.kvSize());
      launch(attentionKernel("attentionBackwardQuery", type, c.headDim),
             {seq, heads, batch}, kAttentionThreads, a.dDout.ptr(), a.dQ.ptr(),
             a.dK.ptr(), a.dV.ptr(), a.dLse->ptr(), delta.ptr(), dq.ptr(),
             c.batch, c.seq, c.heads, c.kvHeads, scale, c.causal, a.cuPtr,
             a.numCu);
      launch(attentionKernel("attentionBackwardKeyValue", type, c.headDim),
             {seq, kvHeads, batch}, kAttentionThreads, a.dDout.ptr(),
             a.dQ.ptr(), a.dK.ptr(), a.dV.ptr(), a.dLse->ptr(), delta.ptr(),
             dk.ptr(), dv.ptr(), c.batch, c.seq, c.heads, c.kvHeads, scale,
             c.causal, a.cuPtr, a.numCu);
      EXPECT_CLOSE(dq.download(), a.dqRef, toleranceOf(type));
      EXPECT_CLOSE(dk.download(), a.dkRef, toleranceOf(type));
      EXPECT_CLOSE(dv.download(), a.dvRef, toleranceOf(type));
    }
}

/// A flash configuration of DeviceKernels.cu: forward and backward tile
/// sizes for one head dim.
struct FlashConfig {
  int headDim, blockQ, blockK, stages, bwdBlockQ, bwdBlockK;
  std::string forward() const {
    return "flashAttentionForward_d" + std::to_string(headDim) + "_q" +
           std::to_string(blockQ) + "_k" + std::to_string(blockK) + "_s" +
           std::to_string(stages);
  }
  unsigned forwardSharedBytes() const {
    return static_cast<unsigned>(kiln::rt::cuda::flashForwardSharedBytes(
        headDim, blockQ, blockK, stages));
  }
  unsigned backwardSharedBytes() const {
    return static_cast<unsigned>(kiln::rt::cuda::flashBackwardSharedBytes(
        headDim, bwdBlockQ, bwdBlockK));
  }
  std::string backward() const {
    return "flashAttentionBackward_d" + std::to_string(headDim) + "_q" +
           std::to_string(bwdBlockQ) + "_k" + std::to_string(bwdBlockK);
  }
};
constexpr FlashConfig kFlashConfigs[] = {{64, 128, 128, 2, 64, 128},
                                         {128, 128, 64, 2, 64, 128},
                                         {64, 16, 16, 1, 32, 32},
                                         {128, 64, 32, 1, 32, 32}};
/// BF16 outputs of the flash kernels, whose probabilities and dS are
/// rounded to BF16 for the tensor cores (the CPU emulation's bound).
constexpr double kFlashTolerance = 1e-2;

// The tensor-core kernels on the attention grid, each configuration of its
// head dim, as the code generator launches them: forward, delta with the
// dq accumulator zeroed, backward, dq finish; against the FP64 host
// reference.
TEST_F(DeviceKernelTest, FlashAttentionMatchesHost) {
  const DType type = DType::BF16;
  for (const AttentionCase &c : attentionCases())
    for (const FlashConfig &config : kFlashConfigs) {
      if (config.headDim != c.headDim)
        continue;
      SCOPED_TRACE(config.forward() + " " + config.backward() + " " +
                   c.describe());
      const AttentionData a(c, type);
      const float scale = c.scale();

      DeviceTensor out(type, c.qSize()), lse(DType::F32, c.rows());
      launchShared(
          config.forward(),
          {ceilDiv(c.seq, config.blockQ), unsigned(c.heads), unsigned(c.batch)},
          config.blockQ / 16 * 32, config.forwardSharedBytes(), a.dQ.ptr(),
          a.dK.ptr(), a.dV.ptr(), out.ptr(), lse.ptr(), c.batch, c.seq, c.heads,
          c.kvHeads, scale, c.causal, a.cuPtr, a.numCu);
      EXPECT_CLOSE(out.download(), a.outRef, kFlashTolerance);
      EXPECT_CLOSE(lse.download(), a.lseRef, kFloatTolerance);

      DeviceTensor delta(DType::F32, c.rows()), dqAccum(DType::F32, c.qSize());
      launch("flashAttentionPreprocess_bf16",
             {unsigned(c.seq), unsigned(c.heads), unsigned(c.batch)}, 32,
             a.dDout.ptr(), a.dOut->ptr(), delta.ptr(), c.batch, c.seq, c.heads,
             c.headDim, dqAccum.ptr());
      DeviceTensor dq(type, c.qSize()), dk(type, c.kvSize()),
          dv(type, c.kvSize());
      launchShared(config.backward(),
                   {ceilDiv(c.seq, config.bwdBlockK), unsigned(c.kvHeads),
                    unsigned(c.batch)},
                   config.bwdBlockK / 16 * 32, config.backwardSharedBytes(),
                   a.dDout.ptr(), a.dQ.ptr(), a.dK.ptr(), a.dV.ptr(),
                   a.dLse->ptr(), delta.ptr(), dqAccum.ptr(), dk.ptr(),
                   dv.ptr(), c.batch, c.seq, c.heads, c.kvHeads, scale,
                   c.causal, a.cuPtr, a.numCu);
      launch("flashAttentionFinishDq_bf16", {ceilDiv(c.qSize(), 256)},
             kColumnThreads, dqAccum.ptr(), dq.ptr(), c.qSize(), scale);
      EXPECT_CLOSE(dq.download(), a.dqRef, kFlashTolerance);
      EXPECT_CLOSE(dk.download(), a.dkRef, kFlashTolerance);
      EXPECT_CLOSE(dv.download(), a.dvRef, kFlashTolerance);
    }
}

// Grids smaller than (seq, heads, batch): the kernels stride, and give the
// same bits as the full grid (each row's work does not depend on the grid).
TEST_F(DeviceKernelTest, AttentionSmallGridMatchesFullGrid) {
  const AttentionCase c{2, 37, 8, 2, 64, true, {0, 30, 74}};
  for (DType type : kDTypes) {
    SCOPED_TRACE(tagOf(type));
    DeviceTensor q = toDevice(randomValues(c.qSize(), type), type),
                 k = toDevice(randomValues(c.kvSize(), type), type),
                 v = toDevice(randomValues(c.kvSize(), type), type),
                 dout = toDevice(randomValues(c.qSize(), type), type);
    DeviceInts cu(c.cuSeqlens);
    const int numCu = static_cast<int>(c.cuSeqlens.size());
    std::vector<std::vector<double>> results[2];
    const Grid full{37, 8, 2}, fullKv{37, 2, 2}, small{5, 3, 1};
    for (int run = 0; run < 2; ++run) {
      const Grid grid = run == 0 ? full : small;
      const Grid kvGrid = run == 0 ? fullKv : small;
      DeviceTensor out(type, c.qSize()), lse(DType::F32, c.rows()),
          delta(DType::F32, c.rows()), dq(type, c.qSize()),
          dk(type, c.kvSize()), dv(type, c.kvSize());
      launch(attentionKernel("attentionForward", type, 64), grid,
             kAttentionThreads, q.ptr(), k.ptr(), v.ptr(), out.ptr(), lse.ptr(),
             c.batch, c.seq, c.heads, c.kvHeads, c.scale(), c.causal, cu.ptr(),
             numCu);
      launch(kernel("attentionBackwardPreprocess", type, "_t32"), grid, 32,
             dout.ptr(), out.ptr(), delta.ptr(), c.batch, c.seq, c.heads,
             c.headDim);
      launch(attentionKernel("attentionBackwardQuery", type, 64), grid,
             kAttentionThreads, dout.ptr(), q.ptr(), k.ptr(), v.ptr(),
             lse.ptr(), delta.ptr(), dq.ptr(), c.batch, c.seq, c.heads,
             c.kvHeads, c.scale(), c.causal, cu.ptr(), numCu);
      launch(attentionKernel("attentionBackwardKeyValue", type, 64), kvGrid,
             kAttentionThreads, dout.ptr(), q.ptr(), k.ptr(), v.ptr(),
             lse.ptr(), delta.ptr(), dk.ptr(), dv.ptr(), c.batch, c.seq,
             c.heads, c.kvHeads, c.scale(), c.causal, cu.ptr(), numCu);
      results[run] = {out.download(), lse.download(), delta.download(),
                      dq.download(),  dk.download(),  dv.download()};
    }
    EXPECT_EQ(results[0], results[1]);
  }
}

//===----------------------------------------------------------------------===//
// Optimizer
//===----------------------------------------------------------------------===//

// The global norm over two gradients: partial sums of squares into one
// buffer (64 per gradient), then their square root; aligned or not.
TEST_F(DeviceKernelTest, GlobalGradientNorm) {
  constexpr unsigned kPartials = 64;
  for (DType type : kDTypes)
    for (bool misaligned : {false, true})
      for (long long n : {1LL, 1001LL, (1LL << 20) + 3}) {
        SCOPED_TRACE(std::string(tagOf(type)) + " n " + std::to_string(n) +
                     (misaligned ? " misaligned" : ""));
        std::vector<double> a = randomValues(n, type);
        std::vector<double> b = randomValues(77, type);
        DeviceTensor dA = toDevice(a, type, misaligned),
                     dB = toDevice(b, type, misaligned);
        DeviceTensor partials(DType::F32, 2 * kPartials);
        launch(kernel("squaredNormPartial", type), {kPartials}, kColumnThreads,
               dA.ptr(), n, partials.ptr());
        launch(kernel("squaredNormPartial", type), {kPartials}, kColumnThreads,
               dB.ptr(), 77LL, partials.ptr() + kPartials * 4);
        DeviceTensor norm(DType::F32, 1);
        launch("finishNorm", {1}, kSingleThreads, partials.ptr(),
               static_cast<int>(2 * kPartials), norm.ptr());
        double ref = std::sqrt(host::sumOfSquares<double>(a.data(), n) +
                               host::sumOfSquares<double>(b.data(), 77));
        EXPECT_CLOSE(norm.download(), std::vector<double>{ref},
                     kFloatTolerance);
      }
}

TEST_F(DeviceKernelTest, AdamW) {
  struct AdamCase {
    double step, beta2, maxGradNorm, gradNorm;
  };
  const AdamCase cases[] = {
      {1, 0.95, 1.0, 2.5},  // clipped
      {3, 0.999, 0.0, 2.5}, // no clipping
      {7, 0.95, 10.0, 2.5}, // the clip coefficient is capped at 1
  };
  const long long n = 10007;
  const double lr = 0.05, beta1 = 0.9, eps = 1e-8, weightDecay = 0.1;
  for (const AdamCase &c : cases) {
    SCOPED_TRACE("step " + std::to_string(c.step) + " beta2 " +
                 std::to_string(c.beta2) + " max norm " +
                 std::to_string(c.maxGradNorm));
    std::vector<double> param = randomValues(n, DType::F32);
    std::vector<double> grad = randomValues(n, DType::F32);
    std::vector<double> m = randomValues(n, DType::F32, -0.1, 0.1);
    std::vector<double> v = randomValues(n, DType::F32, 0.0, 0.01);
    DeviceTensor dParam = toDevice(param, DType::F32),
                 dGrad = toDevice(grad, DType::F32),
                 dM = toDevice(m, DType::F32), dV = toDevice(v, DType::F32);
    DeviceTensor dLr = toDevice({lr}, DType::F32),
                 dStep = toDevice({c.step}, DType::F32),
                 dNorm = toDevice({c.gradNorm}, DType::F32);
    launch("adamw", {7}, kColumnThreads, dParam.ptr(), dGrad.ptr(), dM.ptr(),
           dV.ptr(), n, dLr.ptr(), dStep.ptr(), dNorm.ptr(), beta1, c.beta2,
           eps, weightDecay, c.maxGradNorm);
    // The host reads lr as the FP32 value the plan stores.
    std::vector<double> paramRef = param, mRef = m, vRef = v;
    host::adamw<double>(paramRef.data(), grad.data(), mRef.data(), vRef.data(),
                        n, static_cast<float>(lr), c.step, c.gradNorm, beta1,
                        c.beta2, eps, weightDecay, c.maxGradNorm);
    // Compare the updates, not the parameters (which barely move).
    std::vector<double> got = dParam.download(), update(n), updateRef(n);
    for (long long i = 0; i < n; ++i) {
      update[i] = got[i] - param[i];
      updateRef[i] = paramRef[i] - param[i];
    }
    EXPECT_CLOSE(update, updateRef, kFloatTolerance);
    EXPECT_CLOSE(dM.download(), mRef, kFloatTolerance);
    EXPECT_CLOSE(dV.download(), vRef, kFloatTolerance);
  }
}

//===----------------------------------------------------------------------===//
// Determinism
//===----------------------------------------------------------------------===//

// Reductions have one order: two runs give the same bits.
TEST_F(DeviceKernelTest, RunsAreBitwiseReproducible) {
  const long long rows = 301;
  const int dim = 777;
  for (DType type : kDTypes) {
    SCOPED_TRACE(tagOf(type));
    DeviceTensor x = toDevice(randomValues(rows * dim, type), type),
                 dy = toDevice(randomValues(rows * dim, type), type),
                 w = toDevice(randomValues(dim, type), type);
    std::vector<double> first[3];
    for (int run = 0; run < 2; ++run) {
      DeviceTensor dx(type, rows * dim), rstd(DType::F32, rows), dw(type, dim),
          partials(DType::F32, 64), columns(DType::F32, 5 * dim);
      launch(kernel("rmsNormGrad", type), {97}, 256, dy.ptr(), x.ptr(), w.ptr(),
             dx.ptr(), rows, dim, 1e-5f);
      launch(kernel("rmsRowStats", type), {97}, 256, x.ptr(), rstd.ptr(), rows,
             dim, 1e-5f);
      launch(kernel("rmsNormWeightGradPartials", type), {4, 5}, kColumnThreads,
             dy.ptr(), x.ptr(), rstd.ptr(), columns.ptr(), rows, dim);
      launch(kernel("finishColumns", type), {4}, kColumnThreads, columns.ptr(),
             dw.ptr(), 5, static_cast<long long>(dim));
      launch(kernel("squaredNormPartial", type), {64}, kColumnThreads, x.ptr(),
             rows * dim, partials.ptr());
      std::vector<double> results[3] = {dx.download(), dw.download(),
                                        partials.download()};
      for (int i = 0; i < 3; ++i) {
        if (run == 0)
          first[i] = results[i];
        else
          EXPECT_EQ(results[i], first[i]) << "output " << i;
      }
    }
  }
}

} // namespace

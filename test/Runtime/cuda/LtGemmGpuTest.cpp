//===- LtGemmGpuTest.cpp - cuBLASLt GEMMs against the host gemm ----------===//
//
// LtGemm against host::gemm for F32 and BF16, every transpose combination,
// with and without bias, batched and odd shapes, on fresh random data with
// the output poisoned first. F32 must be exact FP32 (no TF32): the bound is
// FP32's; BF16 rounds its output to 8 bits of mantissa. Skips where there
// is no GPU.
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "runtime/Numerics.h"
#include "runtime/cuda/CublasLt.h"
#include "runtime/host/Kernels.h"

#include "GpuTestSupport.h"
#include "test/Runtime/host/KernelTestSupport.h"

using namespace kiln::rt;
using namespace kiln::rt::cuda;
using namespace kiln::rt::cuda::testing;
using kiln::rt::host::testing::poisoned;
using kiln::rt::host::testing::randomVector;
using kiln::rt::host::testing::relativeError;
using kiln::rt::host::testing::seedFromTestName;

namespace {

/// max |got - ref| / max |ref|. FP32 accumulation over at most ~100 terms
/// in another order than OpenBLAS's: a few units of 2^-24. TF32 (10-bit
/// mantissa inputs) would miss this by two orders of magnitude.
constexpr double kF32Tolerance = 1e-5;
/// BF16 output rounding alone is up to 2^-9 of each element.
constexpr double kBf16Tolerance = 1e-2;

/// cuBLASLt's scratch space for split-K and similar algorithms.
constexpr std::size_t kWorkspaceBytes = 32 << 20;

struct Shape {
  std::int64_t batch, m, n, k;
};

/// A device copy of `values` as `dtype` (F32 or BF16 bits).
std::unique_ptr<DeviceBuffer> upload(const std::vector<float> &values,
                                     ElemType dtype) {
  if (dtype == ElemType::F32)
    return std::make_unique<DeviceBuffer>(values);
  std::vector<std::uint16_t> bits(values.size());
  for (std::size_t i = 0; i < values.size(); ++i)
    bits[i] = floatToBf16(values[i]);
  return std::make_unique<DeviceBuffer>(bits);
}

/// `count` elements of `dtype` from `buffer`, as floats.
std::vector<float> download(const DeviceBuffer &buffer, std::size_t count,
                            ElemType dtype) {
  if (dtype == ElemType::F32)
    return buffer.download<float>(count);
  std::vector<float> values(count);
  std::vector<std::uint16_t> bits = buffer.download<std::uint16_t>(count);
  for (std::size_t i = 0; i < count; ++i)
    values[i] = bf16ToFloat(bits[i]);
  return values;
}

/// n values in [-1, 1), exactly representable in `dtype`.
std::vector<float> randomValues(std::int64_t n, ElemType dtype) {
  std::vector<float> values = randomVector<float>(n);
  if (dtype == ElemType::BF16)
    for (float &value : values)
      value = roundToBf16(value);
  return values;
}

class LtGemmGpuTest : public GpuTest {};

TEST_F(LtGemmGpuTest, MatchesHostGemm) {
  seedFromTestName();
  LtGemm gemm;
  DeviceBuffer workspace(kWorkspaceBytes);
  const Shape shapes[] = {{1, 1, 1, 1},     {1, 3, 5, 7},    {2, 4, 3, 6},
                          {3, 17, 9, 13},   {1, 64, 48, 80}, {2, 33, 31, 37},
                          {1, 128, 256, 96}};
  for (ElemType dtype : {ElemType::F32, ElemType::BF16})
    for (Shape s : shapes)
      for (bool transA : {false, true})
        for (bool transB : {false, true})
          for (bool withBias : {false, true}) {
            SCOPED_TRACE(::testing::Message()
                         << elemName(dtype) << " batch " << s.batch << " m "
                         << s.m << " n " << s.n << " k " << s.k << " transA "
                         << transA << " transB " << transB << " bias "
                         << withBias);
            auto [batch, m, n, k] = s;
            std::vector<float> a = randomValues(batch * m * k, dtype);
            std::vector<float> b = randomValues(batch * k * n, dtype);
            std::vector<float> bias = randomValues(n, dtype);
            std::vector<float> expected = poisoned<float>(batch * m * n);
            host::gemm<float>(a.data(), b.data(), expected.data(), batch, m, n,
                              k, transA, transB,
                              withBias ? bias.data() : nullptr, false);

            auto aDevice = upload(a, dtype), bDevice = upload(b, dtype);
            auto biasDevice = upload(bias, dtype);
            DeviceBuffer c(batch * m * n * elemSize(dtype));
            c.poison();
            gemm.run(stream_, dtype, batch, m, n, k, transA, transB,
                     aDevice->pointer(), bDevice->pointer(), c.pointer(),
                     withBias ? biasDevice->pointer() : nullptr,
                     workspace.pointer(), kWorkspaceBytes);
            synchronize();
            std::vector<float> got = download(c, batch * m * n, dtype);
            EXPECT_LE(relativeError(got, expected),
                      dtype == ElemType::F32 ? kF32Tolerance : kBf16Tolerance);
          }

  // Running a shape again reuses its algorithm.
  std::size_t algorithms = gemm.cachedAlgorithms();
  EXPECT_GT(algorithms, 0u);
  DeviceBuffer a(4 * 4 * 4), b(4 * 4 * 4), c(4 * 4 * 4);
  gemm.run(stream_, ElemType::F32, 1, 1, 1, 1, false, false, a.pointer(),
           b.pointer(), c.pointer(), nullptr, workspace.pointer(),
           kWorkspaceBytes);
  synchronize();
  EXPECT_EQ(gemm.cachedAlgorithms(), algorithms);
}

// BF16 operands writing the FP32 accumulator (a weight gradient that
// nn-fuse keeps in FP32): the result is the FP32 product of the BF16
// values, no BF16 rounding of C.
TEST_F(LtGemmGpuTest, Bf16OperandsWriteFp32) {
  seedFromTestName();
  LtGemm gemm;
  DeviceBuffer workspace(kWorkspaceBytes);
  for (bool transA : {false, true}) {
    SCOPED_TRACE(::testing::Message() << "transA " << transA);
    std::int64_t m = 48, n = 40, k = 96;
    std::vector<float> a = randomValues(m * k, ElemType::BF16);
    std::vector<float> b = randomValues(k * n, ElemType::BF16);
    std::vector<float> expected = poisoned<float>(m * n);
    host::gemm<float>(a.data(), b.data(), expected.data(), 1, m, n, k, transA,
                      false, nullptr, false);
    auto aDevice = upload(a, ElemType::BF16),
         bDevice = upload(b, ElemType::BF16);
    DeviceBuffer c(m * n * 4);
    c.poison();
    gemm.run(stream_, ElemType::BF16, ElemType::F32, 1, m, n, k, transA, false,
             aDevice->pointer(), bDevice->pointer(), c.pointer(), nullptr,
             workspace.pointer(), kWorkspaceBytes);
    synchronize();
    std::vector<float> got = download(c, m * n, ElemType::F32);
    EXPECT_LE(relativeError(got, expected), kF32Tolerance);
  }
}

// Operands at an odd element offset (4-byte aligned F32, 2-byte BF16) get
// an algorithm that works for them, and no workspace is fine too.
TEST_F(LtGemmGpuTest, UnalignedOperandsAndNoWorkspace) {
  seedFromTestName();
  LtGemm gemm;
  for (ElemType dtype : {ElemType::F32, ElemType::BF16}) {
    SCOPED_TRACE(elemName(dtype));
    std::int64_t m = 19, n = 23, k = 29;
    std::size_t elem = elemSize(dtype);
    std::vector<float> a = randomValues(m * k + 1, dtype);
    std::vector<float> b = randomValues(k * n + 1, dtype);
    std::vector<float> bias = randomValues(n, dtype);
    std::vector<float> expected = poisoned<float>(m * n);
    host::gemm<float>(a.data() + 1, b.data() + 1, expected.data(), 1, m, n, k,
                      false, true, bias.data(), false);

    auto aDevice = upload(a, dtype), bDevice = upload(b, dtype);
    auto biasDevice = upload(bias, dtype);
    DeviceBuffer c((m * n + 1) * elem);
    c.poison();
    gemm.run(stream_, dtype, 1, m, n, k, false, true, aDevice->pointer(elem),
             bDevice->pointer(elem), c.pointer(elem), biasDevice->pointer(),
             nullptr, 0);
    synchronize();
    std::vector<float> got = download(c, m * n + 1, dtype);
    got.erase(got.begin());
    EXPECT_LE(relativeError(got, expected),
              dtype == ElemType::F32 ? kF32Tolerance : kBf16Tolerance);
  }
}

TEST_F(LtGemmGpuTest, RejectsOtherDtypes) {
  LtGemm gemm;
  EXPECT_THROW(gemm.run(stream_, ElemType::I32, 1, 1, 1, 1, false, false,
                        nullptr, nullptr, nullptr, nullptr, nullptr, 0),
               Error);
}

} // namespace

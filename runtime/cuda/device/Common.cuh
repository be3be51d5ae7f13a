//===- Common.cuh - Storage types and vector access ------------*- CUDA -*-===//
//
// What every kernel family of the device library (kiln_device.cuh) builds
// on: FP32 from and to the storage types, 16-byte vector access to rows,
// and the error flag kernels set on bad data. Storage is float or
// __nv_bfloat16, computation FP32, and a stored result is rounded once, to
// nearest-even; vector paths are chosen per row at run time from the actual
// addresses, so any buffer offset is correct and aligned buffers are fast.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_DEVICE_COMMON_CUH
#define KILN_RUNTIME_CUDA_DEVICE_COMMON_CUH

#include <cuda_bf16.h>

namespace kiln::dev {

//===----------------------------------------------------------------------===//
// Storage types and conversions
//===----------------------------------------------------------------------===//

__device__ __forceinline__ float toFloat(float x) { return x; }
__device__ __forceinline__ float toFloat(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

/// The value of an FP32 result stored as T: exact for float, rounded to
/// nearest-even for bf16.
template <typename T> __device__ __forceinline__ T fromFloat(float x);
template <> __device__ __forceinline__ float fromFloat<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 fromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

/// An FP32 slot holding a bf16 value: how a fused row region keeps a bf16
/// temporary in shared memory (runtime/cuda/device/RowRegion.cuh). Loads
/// are exact; stores round to bf16, as the host rounds every op result to
/// its dtype, so the region's later ops read the value the host would.
struct RoundedBf16 {
  float value;
};
__device__ __forceinline__ float toFloat(RoundedBf16 x) { return x.value; }
template <>
__device__ __forceinline__ RoundedBf16 fromFloat<RoundedBf16>(float x) {
  return {__bfloat162float(__float2bfloat16_rn(x))};
}

/// -infinity: the maximum of no values and the log of an empty sum.
__device__ __forceinline__ float negativeInfinity() {
  return -__int_as_float(0x7f800000);
}

//===----------------------------------------------------------------------===//
// 16-byte vector access
//===----------------------------------------------------------------------===//

/// kWidth consecutive elements of T, 16 bytes: one vector load or store.
template <typename T> struct alignas(16) Vec {
  static constexpr int kWidth = 16 / sizeof(T);
  T elems[kWidth];
};

__device__ __forceinline__ bool isAligned16(const void *p) {
  return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0;
}

/// Loads Vec<T> from p, which must be 16-byte aligned.
template <typename T> __device__ __forceinline__ Vec<T> loadVec(const T *p) {
  return *reinterpret_cast<const Vec<T> *>(p);
}

/// Stores Vec<T> at p, which must be 16-byte aligned.
template <typename T>
__device__ __forceinline__ void storeVec(T *p, const Vec<T> &v) {
  *reinterpret_cast<Vec<T> *>(p) = v;
}

/// Whether a row of n elements at p can use Vec<T> accesses.
template <typename T>
__device__ __forceinline__ bool canVectorize(const T *p, long long n) {
  return n % Vec<T>::kWidth == 0 && isAligned16(p);
}

/// Widens N elements at p to FP32: N / Vec<T>::kWidth vector loads when
/// N > 1 (p aligned, N a multiple of Vec<T>::kWidth: a pass over rows of
/// several element types reads as many elements of each), else one scalar
/// load.
template <int N, typename T>
__device__ __forceinline__ void loadFloats(const T *p, float (&out)[N]) {
  if constexpr (N == 1) {
    out[0] = toFloat(p[0]);
  } else {
    constexpr int W = Vec<T>::kWidth;
    static_assert(N % W == 0, "vector width mismatch");
#pragma unroll
    for (int c = 0; c < N / W; ++c) {
      const Vec<T> v = loadVec(p + c * W);
#pragma unroll
      for (int i = 0; i < W; ++i)
        out[c * W + i] = toFloat(v.elems[i]);
    }
  }
}

/// Rounds N FP32 values to T and stores them at p (see loadFloats).
template <int N, typename T>
__device__ __forceinline__ void storeFloats(T *p, const float (&in)[N]) {
  if constexpr (N == 1) {
    p[0] = fromFloat<T>(in[0]);
  } else {
    constexpr int W = Vec<T>::kWidth;
    static_assert(N % W == 0, "vector width mismatch");
#pragma unroll
    for (int c = 0; c < N / W; ++c) {
      Vec<T> v;
#pragma unroll
      for (int i = 0; i < W; ++i)
        v.elems[i] = fromFloat<T>(in[c * W + i]);
      storeVec(p + c * W, v);
    }
  }
}

/// The elements per access of a pass over rows of the element types Ts:
/// 16 bytes of the narrowest (Vec<T>::kWidth when all are one T).
template <typename... Ts> constexpr int kRowVectorWidth = 1;
template <typename T, typename... Ts>
constexpr int kRowVectorWidth<T, Ts...> =
    Vec<T>::kWidth > kRowVectorWidth<Ts...> ? Vec<T>::kWidth
                                            : kRowVectorWidth<Ts...>;

/// Whether a pass over rows of n elements at `rows` can use N-element
/// vector accesses. A null pointer (an absent operand) counts as aligned.
/// One test of the addresses or-ed together, not one branch per pointer:
/// with the branches NVRTC 13.0 gave rmsNorm at 512 threads 32 registers
/// and spills on sm_80 (cuda-compile.test).
template <int N, typename... Ts>
__device__ __forceinline__ bool canVectorizeRows(long long n,
                                                 const Ts *...rows) {
  return n % N == 0 &&
         ((... | reinterpret_cast<unsigned long long>(rows)) & 15ull) == 0;
}

/// The first element of this thread in a pass over a row that reads N
/// elements per access: consecutive threads take consecutive N-element
/// chunks (coalesced), and the pass loops
///   for (j = rowBegin<N>(); j < n; j += kThreads * N).
/// Row passes are function templates over N, called with Vec<T>::kWidth
/// when canVectorize holds for every pointer of the row and with 1
/// otherwise.
template <int N> __device__ __forceinline__ int rowBegin() {
  return static_cast<int>(threadIdx.x) * N;
}

namespace detail {

#ifndef KILN_DEVICE_EMULATION
// Under the CPU emulation (test/Runtime/cuda/device/DeviceEmulation.h) the
// emulator defines these instead.

/// The block's dynamic shared memory, and its size.
__device__ __forceinline__ unsigned char *dynamicSharedMemory() {
  extern __shared__ __align__(128) unsigned char kilnDynamicShared[];
  return kilnDynamicShared;
}
__device__ __forceinline__ unsigned dynamicSharedBytes() {
  unsigned bytes;
  asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(bytes));
  return bytes;
}
#endif // KILN_DEVICE_EMULATION

/// Records the first bad index of a kernel: *errorFlag = position + 1 if it
/// was 0 (errorFlag may be null).
__device__ __forceinline__ void reportError(int *errorFlag,
                                            long long position) {
  if (errorFlag)
    atomicCAS(errorFlag, 0, static_cast<int>(position + 1));
}

} // namespace detail

} // namespace kiln::dev

#endif // KILN_RUNTIME_CUDA_DEVICE_COMMON_CUH

//===- Elementwise.cuh - Activations and fused bodies ----------*- CUDA -*-===//
//
// The scalar FP32 math of elementwise ops (runtime/host/Activations.cpp)
// and the element access of the bodies the code generator emits for fused
// elementwise regions: a generated kernel is a grid-stride loop over
// groups of V elements that loads each input with loadElements<V>, computes
// in FP32 (rounding a bf16 temporary with roundBf16, as the host does) and
// stores with storeElements<V>. The generator asks for V = 8 only when the
// element count is a multiple of 8 (16 bytes of bf16, two vectors of f32);
// the plan aligns every buffer to 256 bytes.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_DEVICE_ELEMENTWISE_CUH
#define KILN_RUNTIME_CUDA_DEVICE_ELEMENTWISE_CUH

#include "Common.cuh"

namespace kiln::dev {

//===----------------------------------------------------------------------===//
// Scalar math of elementwise bodies (runtime/host/Activations.cpp)
//===----------------------------------------------------------------------===//

/// GELU's tanh-approximation constants (Hendrycks and Gimpel; GPT-2):
/// sqrt(2 / pi) and the cubic coefficient.
constexpr float kGeluTanhScale = 0.7978845608028654f;
constexpr float kGeluTanhCubic = 0.044715f;
/// 1 / sqrt(2) and 1 / sqrt(2 pi), of the exact GELU and its derivative.
constexpr float kInvSqrt2 = 0.7071067811865476f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;

__device__ __forceinline__ float sigmoid(float x) {
  return 1.0f / (1.0f + expf(-x));
}

/// x * sigmoid(x) (SiLU, the gate of SwiGLU).
__device__ __forceinline__ float silu(float x) { return x * sigmoid(x); }

/// SwiGLU: gate * sigmoid(gate) * up.
__device__ __forceinline__ float swiglu(float gate, float up) {
  return silu(gate) * up;
}

/// GELU: exact, 0.5 x (1 + erf(x / sqrt(2))), or with `tanhApprox`
/// 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))).
__device__ __forceinline__ float gelu(float x, bool tanhApprox) {
  if (tanhApprox)
    return 0.5f * x *
           (1.0f + tanhf(kGeluTanhScale * (x + kGeluTanhCubic * x * x * x)));
  return 0.5f * x * (1.0f + erff(x * kInvSqrt2));
}

/// dy * d/dx gelu(x), for the same mode as the forward.
__device__ __forceinline__ float geluGrad(float dy, float x, bool tanhApprox) {
  float derivative;
  if (tanhApprox) {
    float t = tanhf(kGeluTanhScale * (x + kGeluTanhCubic * x * x * x));
    derivative = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) *
                                         kGeluTanhScale *
                                         (1.0f + 3.0f * kGeluTanhCubic * x * x);
  } else {
    // Phi(x) + x phi(x), with Phi and phi the standard normal CDF and density.
    derivative = 0.5f * (1.0f + erff(x * kInvSqrt2)) +
                 x * kInvSqrt2Pi * expf(-0.5f * x * x);
  }
  return dy * derivative;
}

/// The gate gradient of swiglu: dy * up * s * (1 + gate * (1 - s)) with
/// s = sigmoid(gate).
__device__ __forceinline__ float swigluGate(float dy, float gate, float up) {
  float s = sigmoid(gate);
  return dy * up * s * (1.0f + gate * (1.0f - s));
}

/// The up gradient of swiglu: dy * gate * sigmoid(gate).
__device__ __forceinline__ float swigluUp(float dy, float gate) {
  return dy * gate * sigmoid(gate);
}

//===----------------------------------------------------------------------===//
// Fill (grid-stride)
//===----------------------------------------------------------------------===//

/// out[i] = value for i < n.
template <typename T>
__device__ __forceinline__ void fill(T *out, long long n, float value) {
  const T stored = fromFloat<T>(value);
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i =
           static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < n; i += stride)
    out[i] = stored;
}

//===----------------------------------------------------------------------===//
// Element access of generated elementwise bodies
//===----------------------------------------------------------------------===//

/// Widens the V elements at p to FP32: V == 1, or V a multiple of
/// Vec<T>::kWidth with p 16-byte aligned (V / kWidth vector loads).
template <int V, typename T>
__device__ __forceinline__ void loadElements(const T *p, float (&v)[V]) {
  loadFloats<V>(p, v);
}

/// Rounds V FP32 values to T and stores them at p (see loadElements).
template <int V, typename T>
__device__ __forceinline__ void storeElements(T *p, const float (&v)[V]) {
  storeFloats<V>(p, v);
}

/// x rounded to bf16 and widened back: the value of a bf16 temporary of a
/// fused body, which computes in FP32.
__device__ __forceinline__ float roundBf16(float x) {
  return toFloat(fromFloat<__nv_bfloat16>(x));
}

} // namespace kiln::dev

#endif // KILN_RUNTIME_CUDA_DEVICE_ELEMENTWISE_CUH

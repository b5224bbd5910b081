"""C++ CPU ops around ``torch._int_mm`` for the integer linear layers.

Why: at the project's token counts (M = 1…64) the int8 GEMM itself is ~4–5× faster than the
fp32 GEMM on this CPU, but in eager PyTorch the dozen small ops that quantise activations per
token and rescale the int32 result cost about as much as the GEMM. One fused op (quantise rows →
``at::_int_mm`` → dequantising epilogue with bias) removes that overhead without
``torch.compile``. The int4 variant unpacks two-codes-per-byte weights into a scratch int8
buffer first. Results are bit-identical to the torch expressions in ``int_linear.py`` except for
the fused multiply-add rounding of the epilogue (≤ 1 ulp).
"""

from __future__ import annotations

from ._cpp import CppOps

__all__ = ["INT_OPS", "INT_SOURCE"]

INT_SOURCE = r"""
#include <ATen/core/Tensor.h>
#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <c10/util/Optional.h>
#include <algorithm>
#include <cmath>
#include <cstdint>

namespace {

// Symmetric per-row int8: s = max(max|x|, eps) / 127, q = clamp(round_half_even(x / s), -127, 127).
void quantize_rows(const float* x, int64_t M, int64_t K, float eps, int8_t* q, float* s) {
  at::parallel_for(0, M, 16, [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      const float* xr = x + m * K;
      float amax = 0.f;
#pragma omp simd reduction(max : amax)
      for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(xr[k]));
      const float sc = std::max(amax, eps) / 127.0f;
      s[m] = sc;
      int8_t* qr = q + m * K;
#pragma omp simd
      for (int64_t k = 0; k < K; ++k) {
        float v = std::nearbyint(xr[k] / sc);
        v = std::min(std::max(v, -127.0f), 127.0f);
        qr[k] = static_cast<int8_t>(v);
      }
    }
  });
}

// y[m, n] = acc[m, n] * s_x[m] * s_w[n] (+ bias[n])
at::Tensor epilogue(const at::Tensor& acc, const float* sx, const at::Tensor& ws,
                    const c10::optional<at::Tensor>& bias) {
  const int64_t M = acc.size(0), N = acc.size(1);
  auto y = at::empty({M, N}, acc.options().dtype(at::kFloat));
  auto accc = acc.contiguous();
  const int32_t* a = accc.data_ptr<int32_t>();
  const float* w = ws.data_ptr<float>();
  const float* bb = bias ? bias->data_ptr<float>() : nullptr;
  float* out = y.data_ptr<float>();
  at::parallel_for(0, M, 16, [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      const float sm = sx[m];
      const int32_t* ar = a + m * N;
      float* yr = out + m * N;
      if (bb) {
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) yr[n] = static_cast<float>(ar[n]) * sm * w[n] + bb[n];
      } else {
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) yr[n] = static_cast<float>(ar[n]) * sm * w[n];
      }
    }
  });
  return y;
}

void check_common(const at::Tensor& x, const at::Tensor& ws, const c10::optional<at::Tensor>& bias, int64_t N) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous() && x.device().is_cpu(),
              "x must be a contiguous float32 CPU matrix [M, K]");
  TORCH_CHECK(ws.dim() == 1 && ws.size(0) == N && ws.scalar_type() == at::kFloat && ws.is_contiguous(),
              "w_scale must be contiguous float32 [N]");
  if (bias) TORCH_CHECK(bias->dim() == 1 && bias->size(0) == N && bias->scalar_type() == at::kFloat &&
                        bias->is_contiguous(), "bias must be contiguous float32 [N]");
}

std::tuple<at::Tensor, at::Tensor> quantize_per_token(const at::Tensor& x, double eps) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous() && x.device().is_cpu(),
              "x must be a contiguous float32 CPU matrix [M, K]");
  const int64_t M = x.size(0), K = x.size(1);
  auto q = at::empty({M, K}, x.options().dtype(at::kChar));
  auto s = at::empty({M}, x.options());
  quantize_rows(x.data_ptr<float>(), M, K, static_cast<float>(eps), q.data_ptr<int8_t>(), s.data_ptr<float>());
  return {q, s};
}

// wq: int8 [K, N] (any strides, e.g. a transposed view of [N, K])
at::Tensor w8a8_linear(const at::Tensor& x, const at::Tensor& wq, const at::Tensor& ws,
                       const c10::optional<at::Tensor>& bias, double eps) {
  TORCH_CHECK(wq.dim() == 2 && wq.scalar_type() == at::kChar && wq.size(0) == x.size(1),
              "weight must be int8 [K, N]");
  check_common(x, ws, bias, wq.size(1));
  auto [q, s] = quantize_per_token(x, eps);
  auto acc = at::_int_mm(q, wq);
  return epilogue(acc, s.data_ptr<float>(), ws, bias);
}

// packed: uint8 [ceil(K/2), N]; row r holds k = 2r (low nibble) and k = 2r + 1 (high nibble).
at::Tensor unpack_int4_rows(const at::Tensor& packed, int64_t K) {
  TORCH_CHECK(packed.dim() == 2 && packed.scalar_type() == at::kByte && packed.is_contiguous(),
              "packed must be contiguous uint8 [ceil(K/2), N]");
  TORCH_CHECK(packed.size(0) == (K + 1) / 2, "packed rows must be ceil(K/2)");
  const int64_t R = packed.size(0), N = packed.size(1);
  auto out = at::empty({K, N}, packed.options().dtype(at::kChar));
  const uint8_t* p = packed.data_ptr<uint8_t>();
  int8_t* o = out.data_ptr<int8_t>();
  at::parallel_for(0, R, 64, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const uint8_t* pr = p + r * N;
      int8_t* lo = o + (2 * r) * N;
#pragma omp simd
      for (int64_t n = 0; n < N; ++n) lo[n] = static_cast<int8_t>(static_cast<int8_t>(pr[n] << 4) >> 4);
      if (2 * r + 1 < K) {
        int8_t* hi = o + (2 * r + 1) * N;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) hi[n] = static_cast<int8_t>(static_cast<int8_t>(pr[n]) >> 4);
      }
    }
  });
  return out;
}

at::Tensor w4a8_linear(const at::Tensor& x, const at::Tensor& packed, int64_t K, const at::Tensor& ws,
                       const c10::optional<at::Tensor>& bias, double eps) {
  TORCH_CHECK(x.size(1) == K, "x must be [M, K]");
  check_common(x, ws, bias, packed.size(1));
  auto wq = unpack_int4_rows(packed, K);
  auto [q, s] = quantize_per_token(x, eps);
  auto acc = at::_int_mm(q, wq);
  return epilogue(acc, s.data_ptr<float>(), ws, bias);
}

}  // namespace

TORCH_LIBRARY(latentstack_int, m) {
  m.def("quantize_per_token(Tensor x, float eps) -> (Tensor, Tensor)");
  m.def("w8a8_linear(Tensor x, Tensor wq, Tensor w_scale, Tensor? bias, float eps) -> Tensor");
  m.def("unpack_int4_rows(Tensor packed, int K) -> Tensor");
  m.def("w4a8_linear(Tensor x, Tensor packed, int K, Tensor w_scale, Tensor? bias, float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(latentstack_int, CPU, m) {
  m.impl("quantize_per_token", &quantize_per_token);
  m.impl("w8a8_linear", &w8a8_linear);
  m.impl("unpack_int4_rows", &unpack_int4_rows);
  m.impl("w4a8_linear", &w4a8_linear);
}
"""

def _register_fakes() -> None:
    """Shape functions so ``torch.compile`` can trace through the ops (as opaque calls)."""
    import torch

    @torch.library.register_fake("latentstack_int::quantize_per_token")
    def _q(x, eps):  # type: ignore[no-untyped-def]
        return x.new_empty(x.shape, dtype=torch.int8), x.new_empty(x.shape[0])

    @torch.library.register_fake("latentstack_int::w8a8_linear")
    def _w8(x, wq, w_scale, bias, eps):  # type: ignore[no-untyped-def]
        return x.new_empty(x.shape[0], wq.shape[1])

    @torch.library.register_fake("latentstack_int::unpack_int4_rows")
    def _up(packed, K):  # type: ignore[no-untyped-def]
        return packed.new_empty(K, packed.shape[1], dtype=torch.int8)

    @torch.library.register_fake("latentstack_int::w4a8_linear")
    def _w4(x, packed, K, w_scale, bias, eps):  # type: ignore[no-untyped-def]
        return x.new_empty(x.shape[0], packed.shape[1])


INT_OPS = CppOps(
    namespace="latentstack_int",
    source=INT_SOURCE,
    filename="int_linear.cpp",
    env_switch="LATENTSTACK_INT_CPP",
    what="C++ int8 linear ops",
    probe="w8a8_linear",
    on_load=_register_fakes,
)

"""C++ CPU kernel for the selective scan: source, one-time build, and cache.

Why a C++ kernel: the recurrence is sequential in time, so on CPU the fastest form is a tight
sequential loop with the state kept in registers and the ``exp`` vectorised. The loop here runs
over time for a block of 16 channels at once (SIMD over channels, loop over the state size N),
so no horizontal reductions are needed in the forward pass and every lane does useful work for
any N. Inputs stay in the caller's ``[Bt, Dch, L]`` layout: each thread transposes 64-step tiles
into a small buffer, so no full-tensor copies are made. ``D`` and the ``silu(z)`` gate are fused
(forward and backward); ``softplus(delta + bias)`` stays in torch. Parallelism is over
(batch, group, channel block) with ``at::parallel_for``; the backward recomputes states from
checkpoints every ``chunk`` steps, so its scratch memory does not grow with L.

Built once and cached by :class:`latentstack.kernels._cpp.CppOps` as the torch ops
``torch.ops.latentstack_scan.fwd`` / ``.bwd``; a failed build is remembered for the process and
reported through :func:`cpp_status`; callers fall back.
"""

from __future__ import annotations

from ._cpp import CppOps

__all__ = ["BLOCK", "CPP_SOURCE", "SCAN_OPS", "cpp_status", "load_scan_extension"]

#: channels per SIMD block (a group's last block may be partial; lanes are masked in-kernel).
BLOCK = 16

CPP_SOURCE = r"""
#include <ATen/core/Tensor.h>
#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>
#include <c10/util/Optional.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t DB = 16;  // channels per block (SIMD lanes)

// exp that gcc vectorises (Cephes expf: |rel err| < 2e-7 on the clamped range).
static inline float vexp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  float k = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - k * 0.693359375f + k * 2.12194440e-4f;
  float p = 1.9875691500E-4f;
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(float));
  return p * scale;
}
static inline double vexp(double x) { return std::exp(x); }

static inline int64_t tix(int64_t i, int64_t L, bool rev) { return rev ? L - 1 - i : i; }

// [len x DB] tile of rows t(i0..i0+len) of channels c0..c0+nv of a [.., L] tensor (base = &x[b, c0, 0]).
template <typename T>
static void load_tile(const T* base, int64_t L, int64_t nv, int64_t i0, int64_t len, bool rev, T* out) {
  for (int64_t j = 0; j < DB; ++j) {
    if (j < nv) {
      const T* row = base + j * L;
      for (int64_t ii = 0; ii < len; ++ii) out[ii * DB + j] = row[tix(i0 + ii, L, rev)];
    } else {
      for (int64_t ii = 0; ii < len; ++ii) out[ii * DB + j] = T(0);
    }
  }
}
template <typename T>
static void store_tile(T* base, int64_t L, int64_t nv, int64_t i0, int64_t len, bool rev, const T* in) {
  for (int64_t j = 0; j < nv; ++j) {
    T* row = base + j * L;
    for (int64_t ii = 0; ii < len; ++ii) row[tix(i0 + ii, L, rev)] = in[ii * DB + j];
  }
}
// [len x N] tile of B or C (base = &B[b, g, 0, 0], layout [N, L]).
template <typename T>
static void load_bc(const T* base, int64_t L, int64_t N, int64_t i0, int64_t len, bool rev, T* out) {
  for (int64_t n = 0; n < N; ++n) {
    const T* row = base + n * L;
    for (int64_t ii = 0; ii < len; ++ii) out[ii * N + n] = row[tix(i0 + ii, L, rev)];
  }
}

struct Geo {
  int64_t Bt, Dch, L, G, N, Dg, nbpg;
  Geo(int64_t Bt_, int64_t Dch_, int64_t L_, int64_t G_, int64_t N_)
      : Bt(Bt_), Dch(Dch_), L(L_), G(G_), N(N_), Dg(Dch_ / G_), nbpg((Dch_ / G_ + DB - 1) / DB) {}
  int64_t ntask() const { return Bt * G * nbpg; }
};

// Shapes (contiguous): u, dt, z, y : [Bt, Dch, L];  A : [Dch, N];  B, C : [Bt, G, N, L];  D : [Dch];
// h0, hlast : [Bt, Dch, N].  One task = (batch, group, block of <= 16 channels of that group).
template <typename T>
void scan_fwd_impl(const T* u, const T* dt, const T* A, const T* Bm, const T* Cm, const T* Dv, const T* z,
                   const T* h0, T* y, T* hlast, Geo q, bool reverse, int64_t chunk) {
  const int64_t N = q.N, L = q.L;
  at::parallel_for(0, q.ntask(), 1, [&](int64_t begin, int64_t end) {
    std::vector<T> h(N * DB), Ab(N * DB), U(chunk * DB), DT(chunk * DB), Z(chunk * DB), Y(chunk * DB),
        Bl(chunk * N), Cl(chunk * N);
    T Dl[DB];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (q.G * q.nbpg), g = (task / q.nbpg) % q.G, k = task % q.nbpg;
      const int64_t c0 = g * q.Dg + k * DB, nv = std::min(DB, q.Dg - k * DB);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t j = 0; j < DB; ++j) {
          Ab[n * DB + j] = j < nv ? A[(c0 + j) * N + n] : T(0);
          h[n * DB + j] = (h0 && j < nv) ? h0[((b * q.Dch) + c0 + j) * N + n] : T(0);
        }
      for (int64_t j = 0; j < DB; ++j) Dl[j] = (Dv && j < nv) ? Dv[c0 + j] : T(0);
      const int64_t off = (b * q.Dch + c0) * L;
      const T* Bb = Bm + (b * q.G + g) * N * L;
      const T* Cb = Cm + (b * q.G + g) * N * L;
      for (int64_t i0 = 0; i0 < L; i0 += chunk) {
        const int64_t len = std::min(chunk, L - i0);
        load_tile(u + off, L, nv, i0, len, reverse, U.data());
        load_tile(dt + off, L, nv, i0, len, reverse, DT.data());
        if (z) load_tile(z + off, L, nv, i0, len, reverse, Z.data());
        load_bc(Bb, L, N, i0, len, reverse, Bl.data());
        load_bc(Cb, L, N, i0, len, reverse, Cl.data());
        for (int64_t ii = 0; ii < len; ++ii) {
          const T* ut = U.data() + ii * DB;
          const T* dtt = DT.data() + ii * DB;
          T du[DB], acc[DB];
#pragma omp simd
          for (int64_t j = 0; j < DB; ++j) {
            du[j] = dtt[j] * ut[j];
            acc[j] = Dl[j] * ut[j];
          }
          for (int64_t n = 0; n < N; ++n) {
            const T bv = Bl[ii * N + n], cv = Cl[ii * N + n];
            const T* An = Ab.data() + n * DB;
            T* hn = h.data() + n * DB;
#pragma omp simd
            for (int64_t j = 0; j < DB; ++j) {
              const T hv = vexp(dtt[j] * An[j]) * hn[j] + du[j] * bv;
              hn[j] = hv;
              acc[j] += cv * hv;
            }
          }
          T* yt = Y.data() + ii * DB;
          if (z) {
            const T* zt = Z.data() + ii * DB;
#pragma omp simd
            for (int64_t j = 0; j < DB; ++j) yt[j] = acc[j] * zt[j] / (T(1) + vexp(-zt[j]));
          } else {
#pragma omp simd
            for (int64_t j = 0; j < DB; ++j) yt[j] = acc[j];
          }
        }
        store_tile(y + off, L, nv, i0, len, reverse, Y.data());
      }
      for (int64_t n = 0; n < N; ++n)
        for (int64_t j = 0; j < nv; ++j) hlast[((b * q.Dch) + c0 + j) * N + n] = h[n * DB + j];
    }
  });
}

// Backward: reverse-time scan. States are recomputed chunk by chunk from checkpoints taken every
// `chunk` steps (scratch O(chunk * N * 16) per thread). Per-(batch) partial sums for A, D and
// per-block partial sums for B, C are reduced outside:
//   gA [Bt, Dch, N], gD [Bt, Dch], gB/gC [Bt, G * nbpg, N, L].
template <typename T>
void scan_bwd_impl(const T* u, const T* dt, const T* A, const T* Bm, const T* Cm, const T* Dv, const T* z,
                   const T* h0, const T* gout, const T* ghl, T* gu, T* gdt, T* gz, T* gA, T* gB, T* gC,
                   T* gD, T* gh0, Geo q, bool reverse, int64_t chunk) {
  const int64_t N = q.N, L = q.L, S = N * DB;
  const int64_t nck = (L + chunk - 1) / chunk;
  at::parallel_for(0, q.ntask(), 1, [&](int64_t begin, int64_t end) {
    std::vector<T> ckpt(std::max<int64_t>(nck, 1) * S), h(S), gh(S), gAacc(S), Ab(S), HP(chunk * S),
        AB(chunk * S), U(chunk * DB), DT(chunk * DB), Z(chunk * DB), GO(chunk * DB), YC(chunk * DB),
        GU(chunk * DB), GDT(chunk * DB), GZ(chunk * DB), Bl(chunk * N), Cl(chunk * N);
    T Dl[DB], gDacc[DB];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (q.G * q.nbpg), g = (task / q.nbpg) % q.G, k = task % q.nbpg;
      const int64_t c0 = g * q.Dg + k * DB, nv = std::min(DB, q.Dg - k * DB);
      const int64_t blk = g * q.nbpg + k, nblk = q.G * q.nbpg;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t j = 0; j < DB; ++j) {
          Ab[n * DB + j] = j < nv ? A[(c0 + j) * N + n] : T(0);
          h[n * DB + j] = (h0 && j < nv) ? h0[((b * q.Dch) + c0 + j) * N + n] : T(0);
          gh[n * DB + j] = (ghl && j < nv) ? ghl[((b * q.Dch) + c0 + j) * N + n] : T(0);
          gAacc[n * DB + j] = T(0);
        }
      for (int64_t j = 0; j < DB; ++j) {
        Dl[j] = (Dv && j < nv) ? Dv[c0 + j] : T(0);
        gDacc[j] = T(0);
      }
      const int64_t off = (b * q.Dch + c0) * L;
      const T* Bb = Bm + (b * q.G + g) * N * L;
      const T* Cb = Cm + (b * q.G + g) * N * L;
      T* gBb = gB + (b * nblk + blk) * N * L;
      T* gCb = gC + (b * nblk + blk) * N * L;
      // pass 1: forward, keeping the state at the start of every chunk
      for (int64_t c = 0; c < nck; ++c) {
        const int64_t i0 = c * chunk, len = std::min(chunk, L - i0);
        std::memcpy(ckpt.data() + c * S, h.data(), S * sizeof(T));
        load_tile(u + off, L, nv, i0, len, reverse, U.data());
        load_tile(dt + off, L, nv, i0, len, reverse, DT.data());
        load_bc(Bb, L, N, i0, len, reverse, Bl.data());
        for (int64_t ii = 0; ii < len; ++ii) {
          const T* ut = U.data() + ii * DB;
          const T* dtt = DT.data() + ii * DB;
          for (int64_t n = 0; n < N; ++n) {
            const T bv = Bl[ii * N + n];
            const T* An = Ab.data() + n * DB;
            T* hn = h.data() + n * DB;
#pragma omp simd
            for (int64_t j = 0; j < DB; ++j) hn[j] = vexp(dtt[j] * An[j]) * hn[j] + dtt[j] * ut[j] * bv;
          }
        }
      }
      // pass 2: chunks in reverse processing order
      for (int64_t c = nck - 1; c >= 0; --c) {
        const int64_t i0 = c * chunk, len = std::min(chunk, L - i0);
        load_tile(u + off, L, nv, i0, len, reverse, U.data());
        load_tile(dt + off, L, nv, i0, len, reverse, DT.data());
        load_tile(gout + off, L, nv, i0, len, reverse, GO.data());
        if (z) load_tile(z + off, L, nv, i0, len, reverse, Z.data());
        load_bc(Bb, L, N, i0, len, reverse, Bl.data());
        load_bc(Cb, L, N, i0, len, reverse, Cl.data());
        std::memcpy(h.data(), ckpt.data() + c * S, S * sizeof(T));
        for (int64_t ii = 0; ii < len; ++ii) {  // recompute decays, previous states and y (pre-gate)
          const T* ut = U.data() + ii * DB;
          const T* dtt = DT.data() + ii * DB;
          T* hp = HP.data() + ii * S;
          T* ab = AB.data() + ii * S;
          T* yc = YC.data() + ii * DB;
#pragma omp simd
          for (int64_t j = 0; j < DB; ++j) yc[j] = Dl[j] * ut[j];
          for (int64_t n = 0; n < N; ++n) {
            const T bv = Bl[ii * N + n], cv = Cl[ii * N + n];
            const T* An = Ab.data() + n * DB;
            T* hn = h.data() + n * DB;
#pragma omp simd
            for (int64_t j = 0; j < DB; ++j) {
              const T a = vexp(dtt[j] * An[j]);
              hp[n * DB + j] = hn[j];
              ab[n * DB + j] = a;
              hn[j] = a * hn[j] + dtt[j] * ut[j] * bv;
              yc[j] += cv * hn[j];
            }
          }
        }
        for (int64_t ii = len - 1; ii >= 0; --ii) {
          const int64_t t = tix(i0 + ii, L, reverse);
          const T* ut = U.data() + ii * DB;
          const T* dtt = DT.data() + ii * DB;
          const T* got = GO.data() + ii * DB;
          const T* hp = HP.data() + ii * S;
          const T* ab = AB.data() + ii * S;
          T du[DB], gy[DB], gdu[DB], gdtv[DB];
          if (z) {
            const T* zt = Z.data() + ii * DB;
            const T* yc = YC.data() + ii * DB;
            T* gzt = GZ.data() + ii * DB;
#pragma omp simd
            for (int64_t j = 0; j < DB; ++j) {
              const T s = T(1) / (T(1) + vexp(-zt[j]));
              gy[j] = got[j] * zt[j] * s;
              gzt[j] = got[j] * yc[j] * s * (T(1) + zt[j] * (T(1) - s));
            }
          } else {
#pragma omp simd
            for (int64_t j = 0; j < DB; ++j) gy[j] = got[j];
          }
#pragma omp simd
          for (int64_t j = 0; j < DB; ++j) {
            du[j] = dtt[j] * ut[j];
            gdu[j] = T(0);
            gdtv[j] = T(0);
            gDacc[j] += gy[j] * ut[j];
          }
          for (int64_t n = 0; n < N; ++n) {
            const T bv = Bl[ii * N + n], cv = Cl[ii * N + n];
            const T* An = Ab.data() + n * DB;
            T* ghn = gh.data() + n * DB;
            T* gAn = gAacc.data() + n * DB;
            T sc = T(0), sb = T(0);
#pragma omp simd reduction(+ : sc, sb)
            for (int64_t j = 0; j < DB; ++j) {
              const T a = ab[n * DB + j];
              const T hpv = hp[n * DB + j];
              const T ht = a * hpv + du[j] * bv;
              sc += gy[j] * ht;                 // dL/dC[t, n]
              const T gg = ghn[j] + gy[j] * cv;  // dL/dh_t
              const T gad = gg * hpv * a;        // dL/da_t * a_t
              gAn[j] += gad * dtt[j];
              gdtv[j] += gad * An[j];
              sb += gg * du[j];                  // dL/dB[t, n]
              gdu[j] += gg * bv;
              ghn[j] = gg * a;                   // carried to h_{t-1}
            }
            gCb[n * L + t] = sc;
            gBb[n * L + t] = sb;
          }
          T* gut = GU.data() + ii * DB;
          T* gdtt = GDT.data() + ii * DB;
#pragma omp simd
          for (int64_t j = 0; j < DB; ++j) {
            gut[j] = gdu[j] * dtt[j] + gy[j] * Dl[j];
            gdtt[j] = gdtv[j] + gdu[j] * ut[j];
          }
        }
        store_tile(gu + off, L, nv, i0, len, reverse, GU.data());
        store_tile(gdt + off, L, nv, i0, len, reverse, GDT.data());
        if (z) store_tile(gz + off, L, nv, i0, len, reverse, GZ.data());
      }
      for (int64_t j = 0; j < nv; ++j) {
        gD[b * q.Dch + c0 + j] = gDacc[j];
        for (int64_t n = 0; n < N; ++n) {
          gA[((b * q.Dch) + c0 + j) * N + n] = gAacc[n * DB + j];
          gh0[((b * q.Dch) + c0 + j) * N + n] = gh[n * DB + j];
        }
      }
    }
  });
}

const at::Tensor* opt_ptr(const c10::optional<at::Tensor>& x) { return x.has_value() ? &*x : nullptr; }

Geo check_inputs(const at::Tensor& u, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& Bm,
                 const at::Tensor& Cm, const c10::optional<at::Tensor>& Dv, const c10::optional<at::Tensor>& z,
                 const c10::optional<at::Tensor>& h0, int64_t chunk) {
  TORCH_CHECK(u.dim() == 3 && dt.sizes() == u.sizes(), "u, dt must be [Bt, Dch, L]");
  const int64_t Bt = u.size(0), Dch = u.size(1), L = u.size(2);
  TORCH_CHECK(Bm.dim() == 4 && Cm.sizes() == Bm.sizes() && Bm.size(0) == Bt && Bm.size(3) == L,
              "B, C must be [Bt, G, N, L]");
  const int64_t G = Bm.size(1), N = Bm.size(2);
  TORCH_CHECK(Dch % G == 0, "Dch must be divisible by G");
  TORCH_CHECK(A.dim() == 2 && A.size(0) == Dch && A.size(1) == N, "A must be [Dch, N]");
  TORCH_CHECK(chunk > 0, "chunk must be positive");
  std::vector<const at::Tensor*> all = {&u, &dt, &A, &Bm, &Cm, opt_ptr(Dv), opt_ptr(z), opt_ptr(h0)};
  for (const auto* x : all) {
    if (!x) continue;
    TORCH_CHECK(x->is_contiguous() && x->device().is_cpu(), "inputs must be contiguous CPU tensors");
    TORCH_CHECK(x->scalar_type() == u.scalar_type(), "inputs must share one dtype");
  }
  if (Dv) TORCH_CHECK(Dv->numel() == Dch, "D must be [Dch]");
  if (z) TORCH_CHECK(z->sizes() == u.sizes(), "z must be [Bt, Dch, L]");
  if (h0) TORCH_CHECK(h0->dim() == 3 && h0->size(0) == Bt && h0->size(1) == Dch && h0->size(2) == N,
                      "initial state must be [Bt, Dch, N]");
  return Geo(Bt, Dch, L, G, N);
}

template <typename T>
const T* ptr(const c10::optional<at::Tensor>& x) { return x.has_value() ? x->data_ptr<T>() : nullptr; }

std::tuple<at::Tensor, at::Tensor> scan_fwd(const at::Tensor& u, const at::Tensor& dt, const at::Tensor& A,
                                            const at::Tensor& Bm, const at::Tensor& Cm,
                                            const c10::optional<at::Tensor>& Dv,
                                            const c10::optional<at::Tensor>& z,
                                            const c10::optional<at::Tensor>& h0, bool reverse, int64_t chunk) {
  Geo q = check_inputs(u, dt, A, Bm, Cm, Dv, z, h0, chunk);
  auto y = at::empty_like(u);
  auto hlast = at::empty({q.Bt, q.Dch, q.N}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "latentstack_scan_fwd", [&] {
    scan_fwd_impl<scalar_t>(u.data_ptr<scalar_t>(), dt.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
                            Bm.data_ptr<scalar_t>(), Cm.data_ptr<scalar_t>(), ptr<scalar_t>(Dv),
                            ptr<scalar_t>(z), ptr<scalar_t>(h0), y.data_ptr<scalar_t>(),
                            hlast.data_ptr<scalar_t>(), q, reverse, chunk);
  });
  return {y, hlast};
}

std::vector<at::Tensor> scan_bwd(const at::Tensor& u, const at::Tensor& dt, const at::Tensor& A,
                                 const at::Tensor& Bm, const at::Tensor& Cm, const c10::optional<at::Tensor>& Dv,
                                 const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& h0,
                                 const at::Tensor& gout, const c10::optional<at::Tensor>& ghlast, bool reverse,
                                 int64_t chunk) {
  Geo q = check_inputs(u, dt, A, Bm, Cm, Dv, z, h0, chunk);
  TORCH_CHECK(gout.sizes() == u.sizes() && gout.is_contiguous() && gout.scalar_type() == u.scalar_type(),
              "grad_out must be contiguous [Bt, Dch, L] of the input dtype");
  if (ghlast) TORCH_CHECK(ghlast->sizes() == at::IntArrayRef({q.Bt, q.Dch, q.N}) && ghlast->is_contiguous() &&
                          ghlast->scalar_type() == u.scalar_type(), "grad_hlast must be contiguous [Bt, Dch, N]");
  const int64_t nblk = q.G * q.nbpg;
  auto gu = at::empty_like(u);
  auto gdt = at::empty_like(u);
  auto gz = z ? at::empty_like(u) : at::empty({0}, u.options());
  auto gA = at::empty({q.Bt, q.Dch, q.N}, u.options());
  auto gB = at::empty({q.Bt, nblk, q.N, q.L}, u.options());
  auto gC = at::empty({q.Bt, nblk, q.N, q.L}, u.options());
  auto gD = at::empty({q.Bt, q.Dch}, u.options());
  auto gh0 = at::empty({q.Bt, q.Dch, q.N}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "latentstack_scan_bwd", [&] {
    scan_bwd_impl<scalar_t>(u.data_ptr<scalar_t>(), dt.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
                            Bm.data_ptr<scalar_t>(), Cm.data_ptr<scalar_t>(), ptr<scalar_t>(Dv),
                            ptr<scalar_t>(z), ptr<scalar_t>(h0), gout.data_ptr<scalar_t>(),
                            ptr<scalar_t>(ghlast), gu.data_ptr<scalar_t>(), gdt.data_ptr<scalar_t>(),
                            z ? gz.data_ptr<scalar_t>() : nullptr, gA.data_ptr<scalar_t>(),
                            gB.data_ptr<scalar_t>(), gC.data_ptr<scalar_t>(), gD.data_ptr<scalar_t>(),
                            gh0.data_ptr<scalar_t>(), q, reverse, chunk);
  });
  return {gu, gdt, gz, gA, gB, gC, gD, gh0};
}

}  // namespace

TORCH_LIBRARY(latentstack_scan, m) {
  m.def("fwd(Tensor u, Tensor dt, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, Tensor? h0, "
        "bool reverse, int chunk) -> (Tensor, Tensor)");
  m.def("bwd(Tensor u, Tensor dt, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, Tensor? h0, "
        "Tensor gout, Tensor? ghlast, bool reverse, int chunk) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(latentstack_scan, CPU, m) {
  m.impl("fwd", &scan_fwd);
  m.impl("bwd", &scan_bwd);
}
"""

def _register_fakes() -> None:
    """Shape functions so ``torch.compile`` can trace through the ops (as opaque calls)."""
    import torch

    @torch.library.register_fake("latentstack_scan::fwd")
    def _fwd(u, dt, A, B, C, D, z, h0, reverse, chunk):  # type: ignore[no-untyped-def]
        return u.new_empty(u.shape), u.new_empty(u.shape[0], u.shape[1], A.shape[1])

    @torch.library.register_fake("latentstack_scan::bwd")
    def _bwd(u, dt, A, B, C, D, z, h0, gout, ghlast, reverse, chunk):  # type: ignore[no-untyped-def]
        bt, dch, length = u.shape
        g, n = B.shape[1], B.shape[2]
        nblk = g * (-(-(dch // g) // BLOCK))
        return [
            u.new_empty(u.shape), u.new_empty(u.shape), u.new_empty(u.shape if z is not None else (0,)),
            u.new_empty(bt, dch, n), u.new_empty(bt, nblk, n, length), u.new_empty(bt, nblk, n, length),
            u.new_empty(bt, dch), u.new_empty(bt, dch, n),
        ]


SCAN_OPS = CppOps(
    namespace="latentstack_scan",
    source=CPP_SOURCE,
    filename="selective_scan.cpp",
    env_switch="LATENTSTACK_SCAN_CPP",
    what="C++ selective_scan",
    probe="fwd",
    on_load=_register_fakes,
)


def cpp_status() -> tuple[bool, str | None]:
    """(loaded, error message of a failed build or ``None``) — without triggering a build."""
    return SCAN_OPS.status()


def load_scan_extension(verbose: bool = False) -> bool:
    """Build (first call, ~15–30 s) or load (cached) the C++ scan ops; ``False`` if unavailable.

    Set ``LATENTSTACK_SCAN_CPP=0`` to disable the C++ path (the dispatcher then falls back).
    """
    return SCAN_OPS.load(verbose)

// AutoInt's interacting layer after its projections, relu(softmax(Q K^T) V + residual) for every
// sample and head, fused into one CPU
// pass per sample (forward and backward) for head dims 8 and 16 and up to 64 fields, with AVX2
// and FMA. The eager ops it replaces run one batched matmul per product over tiny matrices and
// copy the heads in and out of a [B, H, F, d] layout; here each sample's heads stay in cache and
// q, k, v are read in place from the one projection's [B, F, 3 * H*d] output.
// Ops: torch.ops.recsys_embed.field_attention_{forward,backward}; the Python side
// (field_attention.py) holds the autograd function and the eager reference.
#include <Python.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include "avx2_math.h"

#include <array>

namespace {

using recsys_embed::exp_nonpositive;

constexpr int kLanes = 8;
constexpr int kMaxBlocks = 8;  // fields padded to a multiple of 8, at most 64

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Lanes of field block nb that hold real fields (all ones), padding zeros.
inline __m256 field_mask(int nb, int64_t F) {
  const __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(nb * kLanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(F)), idx));
}

// x [F rows of stride D] -> xt [d][NB * 8], zero padded: field f of dim j at xt[j * NB * 8 + f].
template <int NB, int d>
inline void transpose_fields(const float* x, int64_t F, int64_t D, float* xt) {
  for (int j = 0; j < d; ++j) {
    float* row = xt + j * NB * kLanes;
    for (int64_t f = 0; f < F; ++f) row[f] = x[f * D + j];
    for (int64_t f = F; f < NB * kLanes; ++f) row[f] = 0.f;
  }
}

// scores[nb] = sum_j a[j] * bt[j][nb]: one row of A B^T over all (padded) fields.
template <int NB, int d>
inline void row_times_transposed(const float* a, const float* bt, __m256* scores) {
  for (int nb = 0; nb < NB; ++nb) scores[nb] = _mm256_setzero_ps();
  for (int j = 0; j < d; ++j) {
    const __m256 x = _mm256_broadcast_ss(a + j);
    for (int nb = 0; nb < NB; ++nb) scores[nb] = _mm256_fmadd_ps(x, _mm256_loadu_ps(bt + (j * NB + nb) * kLanes), scores[nb]);
  }
}

// out[0:d] = sum_f w[f] * x[f * stride + 0:d]
template <int d>
inline void weighted_rows(const float* w, int64_t w_stride, const float* x, int64_t F, int64_t stride, float* out) {
  __m256 acc[d / kLanes];
  for (int c = 0; c < d / kLanes; ++c) acc[c] = _mm256_setzero_ps();
  for (int64_t f = 0; f < F; ++f) {
    const __m256 wf = _mm256_broadcast_ss(w + f * w_stride);
    for (int c = 0; c < d / kLanes; ++c) acc[c] = _mm256_fmadd_ps(wf, _mm256_loadu_ps(x + f * stride + c * kLanes), acc[c]);
  }
  for (int c = 0; c < d / kLanes; ++c) _mm256_storeu_ps(out + c * kLanes, acc[c]);
}

// One sample and head: q, k, v at field 0 of the head in rows of stride S, out likewise in rows
// of stride D; p receives the [F][NB * 8] probabilities.
template <int NB, int d>
void head_forward(const float* q, const float* k, const float* v, int64_t S, const float* res, float* out, int64_t D,
                  float* p, int64_t F, float* kt) {
  transpose_fields<NB, d>(k, F, S, kt);
  __m256 s[NB];
  for (int64_t m = 0; m < F; ++m) {
    row_times_transposed<NB, d>(q + m * S, kt, s);
    __m256 mx = s[0];
    for (int nb = 0; nb < NB; ++nb) mx = _mm256_max_ps(mx, _mm256_blendv_ps(s[0], s[nb], field_mask(nb, F)));
    const __m256 row_max = _mm256_set1_ps(hmax(mx));
    __m256 sum = _mm256_setzero_ps();
    for (int nb = 0; nb < NB; ++nb) {
      s[nb] = _mm256_and_ps(exp_nonpositive(_mm256_sub_ps(s[nb], row_max)), field_mask(nb, F));
      sum = _mm256_add_ps(sum, s[nb]);
    }
    const __m256 inv = _mm256_set1_ps(1.0f / hsum(sum));
    float* pm = p + m * NB * kLanes;
    for (int nb = 0; nb < NB; ++nb) _mm256_storeu_ps(pm + nb * kLanes, _mm256_mul_ps(s[nb], inv));
    float* om = out + m * D;
    weighted_rows<d>(pm, 1, v, F, S, om);
    for (int c = 0; c < d / kLanes; ++c) {  // relu(attention + residual)
      const __m256 sum = _mm256_add_ps(_mm256_loadu_ps(om + c * kLanes), _mm256_loadu_ps(res + m * D + c * kLanes));
      _mm256_storeu_ps(om + c * kLanes, _mm256_max_ps(sum, _mm256_setzero_ps()));
    }
  }
}

// Gradients of one sample and head given g, the output's gradient (rows of stride D): dq, dk, dv
// written (not accumulated) in rows of stride S, like q, k, v.
template <int NB, int d>
void head_backward(const float* grad, const float* out, float* g, int64_t D, const float* q, const float* k, const float* v,
                   int64_t S, const float* p, float* dq, float* dk, float* dv, int64_t F, float* vt, float* ds) {
  constexpr int64_t W = NB * kLanes;
  for (int64_t m = 0; m < F; ++m)  // through the relu: g = grad where out > 0 (also the residual's gradient)
    for (int c = 0; c < d / kLanes; ++c) {
      const int64_t at = m * D + c * kLanes;
      const __m256 live = _mm256_cmp_ps(_mm256_loadu_ps(out + at), _mm256_setzero_ps(), _CMP_GT_OQ);
      _mm256_storeu_ps(g + at, _mm256_and_ps(_mm256_loadu_ps(grad + at), live));
    }
  transpose_fields<NB, d>(v, F, S, vt);
  __m256 dp[NB];
  for (int64_t m = 0; m < F; ++m) {
    const float* pm = p + m * W;
    row_times_transposed<NB, d>(g + m * D, vt, dp);  // dP[m] = dO[m] V^T
    __m256 dot = _mm256_setzero_ps();
    for (int nb = 0; nb < NB; ++nb) dot = _mm256_fmadd_ps(dp[nb], _mm256_loadu_ps(pm + nb * kLanes), dot);
    const __m256 row_dot = _mm256_set1_ps(hsum(dot));
    float* dsm = ds + m * W;
    for (int nb = 0; nb < NB; ++nb)  // dS = P * (dP - <P, dP>)
      _mm256_storeu_ps(dsm + nb * kLanes, _mm256_mul_ps(_mm256_loadu_ps(pm + nb * kLanes), _mm256_sub_ps(dp[nb], row_dot)));
    weighted_rows<d>(dsm, 1, k, F, S, dq + m * S);  // dQ[m] = dS[m] K
  }
  for (int64_t f = 0; f < F; ++f) {
    weighted_rows<d>(ds + f, W, q, F, S, dk + f * S);  // dK[f] = dS[:, f]^T Q
    weighted_rows<d>(p + f, W, g, F, D, dv + f * S);   // dV[f] = P[:, f]^T dO
  }
}

// qkv [B, F, 3D] (q, k, v side by side, D = heads * d), residual [B, F, D]
// -> out = relu(attention + residual) [B, F, D], probs [B, H, F, NB * 8].
template <int NB, int d>
std::tuple<at::Tensor, at::Tensor> forward_impl(const at::Tensor& qkv, const at::Tensor& residual, int64_t heads) {
  const int64_t B = qkv.size(0), F = qkv.size(1), S = qkv.size(2), D = S / 3, W = NB * kLanes;
  auto out = at::empty({B, F, D}, qkv.options());
  auto probs = at::empty({B, heads, F, W}, qkv.options());
  const float *X = qkv.data_ptr<float>(), *R = residual.data_ptr<float>();
  float *O = out.data_ptr<float>(), *P = probs.data_ptr<float>();
  at::parallel_for(0, B, 16, [&](int64_t lo, int64_t hi) {
    std::array<float, 16 * kMaxBlocks * kLanes> kt;
    for (int64_t b = lo; b < hi; ++b)
      for (int64_t h = 0; h < heads; ++h) {
        const float* q = X + b * F * S + h * d;
        const int64_t at = b * F * D + h * d;
        head_forward<NB, d>(q, q + D, q + 2 * D, S, R + at, O + at, D, P + (b * heads + h) * F * W, F, kt.data());
      }
  });
  return {out, probs};
}

// -> (grad of qkv, grad of the residual = grad of the output through the relu)
template <int NB, int d>
std::tuple<at::Tensor, at::Tensor> backward_impl(const at::Tensor& g, const at::Tensor& qkv, const at::Tensor& probs,
                                                 const at::Tensor& out) {
  const int64_t B = qkv.size(0), F = qkv.size(1), S = qkv.size(2), D = S / 3, heads = probs.size(1), W = NB * kLanes;
  auto grad = at::empty_like(qkv);
  auto grad_residual = at::empty_like(out);
  const float *G = g.data_ptr<float>(), *X = qkv.data_ptr<float>(), *P = probs.data_ptr<float>(), *O = out.data_ptr<float>();
  float *DX = grad.data_ptr<float>(), *DR = grad_residual.data_ptr<float>();
  at::parallel_for(0, B, 16, [&](int64_t lo, int64_t hi) {
    std::array<float, 16 * kMaxBlocks * kLanes> vt;
    std::array<float, kMaxBlocks * kLanes * kMaxBlocks * kLanes> ds;
    for (int64_t b = lo; b < hi; ++b)
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t at = b * F * S + h * d;
        const int64_t ot = b * F * D + h * d;
        head_backward<NB, d>(G + ot, O + ot, DR + ot, D, X + at, X + at + D, X + at + 2 * D, S, P + (b * heads + h) * F * W,
                             DX + at, DX + at + D, DX + at + 2 * D, F, vt.data(), ds.data());
      }
  });
  return {grad, grad_residual};
}

template <typename Fn>
auto dispatch(int64_t F, int64_t d, Fn&& fn) {
  TORCH_CHECK(F >= 1 && F <= kMaxBlocks * kLanes, "field_attention: 1 to ", kMaxBlocks * kLanes, " fields, got ", F);
  TORCH_CHECK(d == 8 || d == 16, "field_attention: head dim 8 or 16, got ", d);
  const int64_t nb = (F + kLanes - 1) / kLanes;
#define RECSYS_FA_CASE(N)                                                                               \
  if (nb == N)                                                                                          \
    return d == 8 ? fn(std::integral_constant<int, N>{}, std::integral_constant<int, 8>{})              \
                  : fn(std::integral_constant<int, N>{}, std::integral_constant<int, 16>{});
  RECSYS_FA_CASE(1) RECSYS_FA_CASE(2) RECSYS_FA_CASE(3) RECSYS_FA_CASE(4)
  RECSYS_FA_CASE(5) RECSYS_FA_CASE(6) RECSYS_FA_CASE(7)
#undef RECSYS_FA_CASE
  return d == 8 ? fn(std::integral_constant<int, kMaxBlocks>{}, std::integral_constant<int, 8>{})
                : fn(std::integral_constant<int, kMaxBlocks>{}, std::integral_constant<int, 16>{});
}

void check_qkv(const at::Tensor& qkv, int64_t heads) {
  TORCH_CHECK(qkv.dim() == 3 && qkv.size(2) % 3 == 0, "field_attention: qkv must be [B, F, 3 * H * d], got ", qkv.sizes());
  TORCH_CHECK(qkv.scalar_type() == at::kFloat, "field_attention: float32 only, got ", qkv.scalar_type());
  TORCH_CHECK(heads > 0 && qkv.size(2) / 3 % heads == 0, "field_attention: width ", qkv.size(2) / 3,
              " not divisible by ", heads, " heads");
}

void check_like_output(const at::Tensor& t, const at::Tensor& qkv, const char* what) {
  TORCH_CHECK(t.dim() == 3 && t.size(0) == qkv.size(0) && t.size(1) == qkv.size(1) && t.size(2) * 3 == qkv.size(2) &&
                  t.scalar_type() == at::kFloat,
              "field_attention: ", what, " must be float32 [B, F, H * d] of qkv ", qkv.sizes(), ", got ", t.sizes());
}

std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& qkv, const at::Tensor& residual, int64_t heads) {
  check_qkv(qkv, heads);
  check_like_output(residual, qkv, "residual");
  auto x = qkv.contiguous(), r = residual.contiguous();
  return dispatch(x.size(1), x.size(2) / 3 / heads, [&](auto nb, auto d) { return forward_impl<nb, d>(x, r, heads); });
}

std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& qkv, const at::Tensor& probs,
                                            const at::Tensor& out) {
  const int64_t heads = probs.size(1);
  check_qkv(qkv, heads);
  check_like_output(grad, qkv, "grad");
  check_like_output(out, qkv, "out");
  auto g = grad.contiguous(), x = qkv.contiguous(), p = probs.contiguous(), o = out.contiguous();
  return dispatch(x.size(1), x.size(2) / 3 / heads, [&](auto nb, auto d) { return backward_impl<nb, d>(g, x, p, o); });
}

}  // namespace

TORCH_LIBRARY(recsys_embed, m) {
  m.def("field_attention_forward(Tensor qkv, Tensor residual, int heads) -> (Tensor, Tensor)");
  m.def("field_attention_backward(Tensor grad, Tensor qkv, Tensor probs, Tensor out) -> (Tensor, Tensor)");
}
TORCH_LIBRARY_IMPL(recsys_embed, CPU, m) {
  m.impl("field_attention_forward", &forward);
  m.impl("field_attention_backward", &backward);
}

// An importable module, so that importing it registers the ops above.
PyMODINIT_FUNC PyInit__field_attention() {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_field_attention", "recsys_embed field attention ops", -1, nullptr};
  return PyModule_Create(&module);
}

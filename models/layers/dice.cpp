// Dice (DIN's activation, activation.py) over x [N, H] float32 on CPU with AVX2 and FMA: the
// column statistics in one pass, the forward in one, the backward in one (two with batch
// statistics), each element loaded once per pass and its gate sigmoid(n) recomputed in registers,
// where the eager ops stream about ten [N, H] tensors through memory.
// Ops: torch.ops.recsys_embed.dice_{stats,forward,backward}; activation.py holds the autograd
// function, the math and the path for other dtypes and devices.
#include <Python.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include "avx2_math.h"

#include <algorithm>
#include <tuple>
#include <vector>

namespace {

using recsys_embed::sigmoid;

constexpr int64_t kLanes = 8;
constexpr int64_t kFlush = 64;    // rows summed in float before the sums go to double
constexpr int64_t kChunk = 1024;  // rows per parallel chunk; partial sums per chunk, added in order

// Lanes [j, j + 8) of a row of width H that exist (all ones), for masked loads and stores.
inline __m256i lanes(int64_t j, int64_t H) {
  const __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(j)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(H)), idx);
}

inline __m256 load(const float* p, int64_t j, int64_t H) {
  return j + kLanes <= H ? _mm256_loadu_ps(p + j) : _mm256_maskload_ps(p + j, lanes(j, H));
}

inline void store(float* p, int64_t j, int64_t H, __m256 v) {
  if (j + kLanes <= H) {
    _mm256_storeu_ps(p + j, v);
  } else {
    _mm256_maskstore_ps(p + j, lanes(j, H), v);
  }
}

// Column sums of K per-element terms over rows [0, N): body(row, j, acc) adds 8 lanes of column
// block j to acc[k * Hp + j]; the totals come back in double, the same for any thread count.
template <int K, typename Body>
std::vector<double> column_sums(int64_t N, int64_t H, const Body& body) {
  const int64_t Hp = (H + kLanes - 1) / kLanes * kLanes;
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  std::vector<double> partial(chunks * K * Hp, 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> acc(K * Hp);
    for (int64_t c = lo; c < hi; ++c) {
      double* out = partial.data() + c * K * Hp;
      for (int64_t r0 = c * kChunk; r0 < std::min(N, (c + 1) * kChunk); r0 += kFlush) {
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int64_t r = r0; r < std::min({N, r0 + kFlush, (c + 1) * kChunk}); ++r)
          for (int64_t j = 0; j < H; j += kLanes) body(r, j, acc.data());
        for (int64_t i = 0; i < K * Hp; ++i) out[i] += acc[i];
      }
    }
  });
  std::vector<double> total(K * Hp, 0.0);
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t i = 0; i < K * Hp; ++i) total[i] += partial[c * K * Hp + i];
  return total;
}

inline void accumulate(float* acc, int64_t j, __m256 v) {
  _mm256_storeu_ps(acc + j, _mm256_add_ps(_mm256_loadu_ps(acc + j), v));
}

void check(const at::Tensor& x, const at::Tensor& column, const char* what) {
  TORCH_CHECK(column.dim() == 1 && column.size(0) == x.size(1) && column.scalar_type() == at::kFloat &&
                  column.is_contiguous(),
              "dice: ", what, " must be a contiguous float32 [", x.size(1), "], got ", column.sizes());
}

// The per-column constants, padded to whole lanes: alpha, 1 - alpha, invstd and -mean * invstd
// (so that n = x * invstd + shift).
struct Columns {
  std::vector<float> alpha, keep, invstd, shift;
  Columns(const at::Tensor& a, const at::Tensor& mean, const at::Tensor& s, int64_t Hp)
      : alpha(Hp, 0.f), keep(Hp, 0.f), invstd(Hp, 0.f), shift(Hp, 0.f) {
    for (int64_t j = 0; j < a.size(0); ++j) {
      alpha[j] = a.data_ptr<float>()[j];
      keep[j] = 1.f - alpha[j];
      invstd[j] = s.data_ptr<float>()[j];
      shift[j] = -mean.data_ptr<float>()[j] * invstd[j];
    }
  }
};

at::Tensor rows_of(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.device().is_cpu(),
              "dice: x must be a float32 CPU [N, H], got ", x.sizes(), " ", x.scalar_type());
  return x.contiguous();
}

// Mean and biased variance of each column, (x - x[0]) summed in one pass (shifted: no cancellation).
std::tuple<at::Tensor, at::Tensor> stats(const at::Tensor& input) {
  const auto x = rows_of(input);
  const int64_t N = x.size(0), H = x.size(1), Hp = (H + kLanes - 1) / kLanes * kLanes;
  TORCH_CHECK(N > 0, "dice: statistics of zero rows");
  const float* X = x.data_ptr<float>();
  const auto sums = column_sums<2>(N, H, [&](int64_t r, int64_t j, float* acc) {
    const __m256 d = _mm256_sub_ps(load(X + r * H, j, H), load(X, j, H));
    accumulate(acc, j, d);
    accumulate(acc + Hp, j, _mm256_mul_ps(d, d));
  });
  auto mean = at::empty({H}, x.options()), var = at::empty({H}, x.options());
  for (int64_t j = 0; j < H; ++j) {
    const double m = sums[j] / N;
    mean.data_ptr<float>()[j] = static_cast<float>(X[j] + m);
    var.data_ptr<float>()[j] = static_cast<float>(std::max(0.0, sums[Hp + j] / N - m * m));
  }
  return {mean, var};
}

// y = x * (alpha + (1 - alpha) * sigmoid((x - mean) * invstd)).
at::Tensor forward(const at::Tensor& input, const at::Tensor& alpha, const at::Tensor& mean, const at::Tensor& invstd) {
  const auto x = rows_of(input);
  check(x, alpha, "alpha");
  check(x, mean, "mean");
  check(x, invstd, "invstd");
  const int64_t N = x.size(0), H = x.size(1), Hp = (H + kLanes - 1) / kLanes * kLanes;
  auto y = at::empty_like(x);
  const Columns c(alpha, mean, invstd, Hp);
  const float* X = x.data_ptr<float>();
  float* Y = y.data_ptr<float>();
  at::parallel_for(0, N, kChunk, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r)
      for (int64_t j = 0; j < H; j += kLanes) {
        const __m256 v = load(X + r * H, j, H);
        const __m256 p = sigmoid(_mm256_fmadd_ps(v, _mm256_loadu_ps(&c.invstd[j]), _mm256_loadu_ps(&c.shift[j])));
        store(Y + r * H, j, H, _mm256_mul_ps(v, _mm256_fmadd_ps(_mm256_loadu_ps(&c.keep[j]), p, _mm256_loadu_ps(&c.alpha[j]))));
      }
  });
  return y;
}

// The backward of activation.py's dice(), written out there: grad_x, grad_alpha.
std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& alpha,
                                            const at::Tensor& mean, const at::Tensor& invstd, bool batch_stats) {
  const auto x = rows_of(input), g = grad_out.contiguous();
  TORCH_CHECK(g.sizes() == x.sizes() && g.scalar_type() == at::kFloat, "dice: grad must be float32 like x ", x.sizes(),
              ", got ", g.sizes());
  check(x, alpha, "alpha");
  check(x, mean, "mean");
  check(x, invstd, "invstd");
  const int64_t N = x.size(0), H = x.size(1), Hp = (H + kLanes - 1) / kLanes * kLanes;
  auto grad_x = at::empty_like(x);
  const Columns c(alpha, mean, invstd, Hp);
  const float *X = x.data_ptr<float>(), *G = g.data_ptr<float>(), *M = mean.data_ptr<float>(), *S = invstd.data_ptr<float>();
  float* DX = grad_x.data_ptr<float>();
  // per element: q = g x (1 - p), g_n = q p (1 - alpha), dx = g (alpha + (1 - alpha) p) + invstd g_n;
  // column sums of q (dalpha), g_n and g_n n (the batch-norm terms)
  const auto sums = column_sums<3>(N, H, [&](int64_t r, int64_t j, float* acc) {
    const __m256 a = _mm256_loadu_ps(&c.alpha[j]), s = _mm256_loadu_ps(&c.invstd[j]), keep = _mm256_loadu_ps(&c.keep[j]);
    const __m256 v = load(X + r * H, j, H), gr = load(G + r * H, j, H);
    const __m256 n = _mm256_fmadd_ps(v, s, _mm256_loadu_ps(&c.shift[j])), p = sigmoid(n);
    const __m256 gx = _mm256_mul_ps(gr, v);
    const __m256 q = _mm256_fnmadd_ps(gx, p, gx);
    const __m256 gn = _mm256_mul_ps(_mm256_mul_ps(q, p), keep);
    store(DX + r * H, j, H, _mm256_fmadd_ps(s, gn, _mm256_mul_ps(gr, _mm256_fmadd_ps(keep, p, a))));
    accumulate(acc, j, q);
    accumulate(acc + Hp, j, gn);
    accumulate(acc + 2 * Hp, j, _mm256_mul_ps(gn, n));
  });
  auto grad_alpha = at::empty_like(alpha);
  for (int64_t j = 0; j < H; ++j) grad_alpha.data_ptr<float>()[j] = static_cast<float>(sums[j]);
  if (batch_stats) {
    // - invstd (mean(g_n) + n mean(g_n n)) = offset - x slope
    std::vector<float> slope(Hp, 0.f), offset(Hp, 0.f);
    for (int64_t j = 0; j < H; ++j) {
      const double sl = static_cast<double>(S[j]) * S[j] * sums[2 * Hp + j] / N;
      slope[j] = static_cast<float>(sl);
      offset[j] = static_cast<float>(M[j] * sl - S[j] * sums[Hp + j] / N);
    }
    at::parallel_for(0, N, kChunk, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r)
        for (int64_t j = 0; j < H; j += kLanes) {
          const __m256 off = _mm256_add_ps(load(DX + r * H, j, H), _mm256_loadu_ps(&offset[j]));
          store(DX + r * H, j, H, _mm256_fnmadd_ps(load(X + r * H, j, H), _mm256_loadu_ps(&slope[j]), off));
        }
    });
  }
  return {grad_x, grad_alpha};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(recsys_embed, m) {
  m.def("dice_stats(Tensor x) -> (Tensor, Tensor)");
  m.def("dice_forward(Tensor x, Tensor alpha, Tensor mean, Tensor invstd) -> Tensor");
  m.def("dice_backward(Tensor grad, Tensor x, Tensor alpha, Tensor mean, Tensor invstd, bool batch_stats) -> (Tensor, Tensor)");
}
TORCH_LIBRARY_IMPL(recsys_embed, CPU, m) {
  m.impl("dice_stats", &stats);
  m.impl("dice_forward", &forward);
  m.impl("dice_backward", &backward);
}

// An importable module, so that importing it registers the ops above.
PyMODINIT_FUNC PyInit__dice() {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_dice", "recsys_embed Dice ops", -1, nullptr};
  return PyModule_Create(&module);
}

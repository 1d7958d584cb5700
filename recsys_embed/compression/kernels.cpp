// The compiled CPU ops of the compression methods (kernels.py holds their autograd functions, the
// math and the eager paths for other devices and dtypes; each is checked against them):
//
// * row_product_{forward,backward}: out[b, p] = rows[b, p] * table[index[b, p]] (QR's
//   quotient-remainder product, qr.py) in one pass forward and one pass backward, where the eager
//   ops gather table rows into a [B, P, D] tensor, multiply, and in backward multiply twice and
//   scatter-add, each streaming [B, P, D] tensors through memory. rows [B, P, D] float32 with unit
//   stride in D (a view of the fbgemm kernel's output columns), index [B, P] int64 in [0, T),
//   table [T, D] float32 contiguous.
// * hash_buckets: splitmix64(value ^ seed) mod buckets (unsigned) of every value (the hashes of
//   every method but double hashing's pair), and double_hash_rows: double
//   hashing's two rows of each id (double_hashing.py), the SplitMix64 hash of
//   recsys_embed/hashing.py and the modulos in one pass, where the eager path runs about fifteen
//   int64 ops over the ids.
#include <Python.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <tuple>

namespace {

void check(const at::Tensor& rows, const at::Tensor& index, const at::Tensor& table) {
  TORCH_CHECK(rows.dim() == 3 && rows.scalar_type() == at::kFloat && rows.stride(2) == 1,
              "row_product: rows must be float32 [B, P, D] with unit stride in D, got ", rows.sizes());
  TORCH_CHECK(index.dim() == 2 && index.scalar_type() == at::kLong && index.size(0) == rows.size(0) &&
                  index.size(1) == rows.size(1),
              "row_product: index must be int64 [", rows.size(0), ", ", rows.size(1), "], got ", index.sizes());
  TORCH_CHECK(table.dim() == 2 && table.scalar_type() == at::kFloat && table.is_contiguous() &&
                  table.size(1) == rows.size(2),
              "row_product: table must be contiguous float32 [T, ", rows.size(2), "], got ", table.sizes());
}

inline void multiply(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out, int64_t D) {
  for (int64_t d = 0; d < D; ++d) out[d] = a[d] * b[d];
}

// grad_row = grad * t;  grad_t += grad * row
inline void multiply_back(const float* __restrict__ grad, const float* __restrict__ row, const float* __restrict__ t,
                          float* __restrict__ grad_row, float* __restrict__ grad_t, int64_t D) {
  for (int64_t d = 0; d < D; ++d) {
    grad_row[d] = grad[d] * t[d];
    grad_t[d] += grad[d] * row[d];
  }
}

at::Tensor forward(const at::Tensor& rows, const at::Tensor& index, const at::Tensor& table) {
  check(rows, index, table);
  const int64_t B = rows.size(0), P = rows.size(1), D = rows.size(2);
  at::Tensor out = at::empty({B, P, D}, rows.options());
  const float* r = rows.data_ptr<float>();
  const int64_t* idx = index.data_ptr<int64_t>();
  const float* t = table.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t rb = rows.stride(0), rp = rows.stride(1), ib = index.stride(0), ip = index.stride(1);
  at::parallel_for(0, B, 256, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b)
      for (int64_t p = 0; p < P; ++p) multiply(r + b * rb + p * rp, t + idx[b * ib + p * ip] * D, o + (b * P + p) * D, D);
  });
  return out;
}

// One serial pass (the table's gradient is summed in a fixed order: the same for any thread count).
std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& rows, const at::Tensor& index,
                                            const at::Tensor& table) {
  check(rows, index, table);
  const int64_t B = rows.size(0), P = rows.size(1), D = rows.size(2);
  TORCH_CHECK(grad.sizes() == rows.sizes() && grad.scalar_type() == at::kFloat && grad.stride(2) == 1,
              "row_product: grad must be float32 ", rows.sizes(), " with unit stride in D, got ", grad.sizes());
  at::Tensor grad_rows = at::empty({B, P, D}, rows.options());
  at::Tensor grad_table = at::zeros_like(table);
  const float* g = grad.data_ptr<float>();
  const float* r = rows.data_ptr<float>();
  const int64_t* idx = index.data_ptr<int64_t>();
  const float* t = table.data_ptr<float>();
  float* gr = grad_rows.data_ptr<float>();
  float* gt = grad_table.data_ptr<float>();
  const int64_t gb = grad.stride(0), gp = grad.stride(1), rb = rows.stride(0), rp = rows.stride(1);
  const int64_t ib = index.stride(0), ip = index.stride(1);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t p = 0; p < P; ++p) {
      const int64_t k = idx[b * ib + p * ip];
      multiply_back(g + b * gb + p * gp, r + b * rb + p * rp, t + k * D, gr + (b * P + p) * D, gt + k * D, D);
    }
  return {grad_rows, grad_table};
}

// SplitMix64 of id ^ seed (recsys_embed/hashing.py: hash_int_np, the same 64 bits).
inline uint64_t splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// out[i] = splitmix64(values[i] ^ seed) mod buckets, unsigned (hashing.py: bucket_torch)
at::Tensor hash_buckets(const at::Tensor& values, int64_t seed, int64_t buckets) {
  TORCH_CHECK(values.scalar_type() == at::kLong, "hash_buckets: values must be int64, got ", values.scalar_type());
  TORCH_CHECK(buckets >= 1 && buckets < (1LL << 31), "hash_buckets: buckets must lie in [1, 2^31), got ", buckets);
  const at::Tensor in = values.contiguous();
  at::Tensor out = at::empty_like(in);
  const int64_t* x = in.data_ptr<int64_t>();
  int64_t* o = out.data_ptr<int64_t>();
  const uint64_t s = static_cast<uint64_t>(seed), b = static_cast<uint64_t>(buckets);
  at::parallel_for(0, in.numel(), 4096, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) o[i] = static_cast<int64_t>(splitmix64(static_cast<uint64_t>(x[i]) ^ s) % b);
  });
  return out;
}

// rows [2, N]: (h >> 32) mod first, (h & 0xFFFFFFFF) mod second, h = splitmix64(id ^ seed)
at::Tensor double_hash_rows(const at::Tensor& ids, int64_t seed, int64_t first, int64_t second) {
  TORCH_CHECK(ids.dim() == 1 && ids.scalar_type() == at::kLong, "double_hash_rows: ids must be int64 [N], got ",
              ids.scalar_type(), " ", ids.sizes());
  TORCH_CHECK(first >= 1 && first < (1LL << 31) && second >= 1 && second < (1LL << 31),
              "double_hash_rows: table rows must lie in [1, 2^31), got ", first, " and ", second);
  const at::Tensor in = ids.contiguous();
  const int64_t N = in.numel();
  at::Tensor rows = at::empty({2, N}, in.options());
  const int64_t* x = in.data_ptr<int64_t>();
  int64_t* r0 = rows.data_ptr<int64_t>();
  int64_t* r1 = r0 + N;
  const uint64_t s = static_cast<uint64_t>(seed);
  const uint32_t m0 = static_cast<uint32_t>(first), m1 = static_cast<uint32_t>(second);
  at::parallel_for(0, N, 4096, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const uint64_t h = splitmix64(static_cast<uint64_t>(x[i]) ^ s);
      r0[i] = static_cast<uint32_t>(h >> 32) % m0;
      r1[i] = static_cast<uint32_t>(h) % m1;
    }
  });
  return rows;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(recsys_embed, m) {
  m.def("row_product_forward(Tensor rows, Tensor index, Tensor table) -> Tensor");
  m.def("row_product_backward(Tensor grad, Tensor rows, Tensor index, Tensor table) -> (Tensor, Tensor)");
  m.def("hash_buckets(Tensor values, int seed, int buckets) -> Tensor");
  m.def("double_hash_rows(Tensor ids, int seed, int first, int second) -> Tensor");
}
TORCH_LIBRARY_IMPL(recsys_embed, CPU, m) {
  m.impl("row_product_forward", &forward);
  m.impl("row_product_backward", &backward);
  m.impl("hash_buckets", &hash_buckets);
  m.impl("double_hash_rows", &double_hash_rows);
}

// An importable module, so that importing it registers the ops above.
PyMODINIT_FUNC PyInit__kernels() {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "recsys_embed compression ops", -1, nullptr};
  return PyModule_Create(&module);
}

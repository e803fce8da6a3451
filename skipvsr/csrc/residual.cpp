// The residual stream's add, fused with the next block's bf16 cast (skipvsr.kernels).
//
// A residual block in `mixed` precision adds a bf16 update to the float32 stream; torch's
// mixed-dtype add_ first casts the update to float32 (one pass, one allocation), and the next
// block then casts the stream to bf16 for its convs (another pass). Here both happen in one
// pass over pixel rows: h += float(u), and optionally out = bf16(h). Every step rounds as
// torch does (the float32 sum of two float32 values; bf16 round-to-nearest-even, a NaN as
// 0xFFFF, as torch's vectorised cast writes it), so the results are torch's bit for bit.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <cstring>

namespace {

inline float bf16_to_float(uint16_t v) {
  uint32_t bits = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0xffff;  // NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}

// a (B, C, H, W) map whose pixel rows are contiguous runs of W * C values (channels-last)
void check_rows(const torch::Tensor& t, const char* name, const torch::Tensor& like) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(t.dim() == 4 && t.sizes() == like.sizes(), name, " must have shape ", like.sizes(),
              ", got ", t.sizes());
  TORCH_CHECK(t.stride(1) == 1 && t.stride(3) == t.size(1), name,
              " must be channels-last (rows of W * C contiguous values)");
}

template <typename U>
void add_rows(float* h, const U* u, uint16_t* out, int64_t n) {
  if (out != nullptr) {
    for (int64_t i = 0; i < n; ++i) {
      float v;
      if constexpr (std::is_same_v<U, uint16_t>) v = h[i] + bf16_to_float(u[i]); else v = h[i] + u[i];
      h[i] = v;
      out[i] = float_to_bf16(v);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      if constexpr (std::is_same_v<U, uint16_t>) h[i] += bf16_to_float(u[i]); else h[i] += u[i];
    }
  }
}

// h += u in place (u bfloat16 or float32); with out, also out = bf16(h) after the add
void residual_add_(torch::Tensor h, const torch::Tensor& u, const c10::optional<torch::Tensor>& out) {
  TORCH_CHECK(h.scalar_type() == at::kFloat, "h must be float32");
  check_rows(h, "h", h);
  check_rows(u, "update", h);
  const bool low = u.scalar_type() == at::kBFloat16;
  TORCH_CHECK(low || u.scalar_type() == at::kFloat, "update must be bfloat16 or float32");
  if (out) {
    check_rows(*out, "out", h);
    TORCH_CHECK(out->scalar_type() == at::kBFloat16, "out must be bfloat16");
  }
  const int64_t rows = h.size(0) * h.size(2), height = h.size(2), row = h.size(3) * h.size(1);
  float* hp = h.data_ptr<float>();
  const char* up = static_cast<const char*>(u.data_ptr());
  uint16_t* op = out ? static_cast<uint16_t*>(out->data_ptr()) : nullptr;
  const int64_t usize = low ? 2 : 4;
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / height, y = r % height;
      float* hr = hp + b * h.stride(0) + y * h.stride(2);
      const char* ur = up + (b * u.stride(0) + y * u.stride(2)) * usize;
      uint16_t* orow = op ? op + b * out->stride(0) + y * out->stride(2) : nullptr;
      if (low) add_rows(hr, reinterpret_cast<const uint16_t*>(ur), orow, row);
      else add_rows(hr, reinterpret_cast<const float*>(ur), orow, row);
    }
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("residual_add_", &residual_add_, "h += update, and optionally out = bf16(h)");
}

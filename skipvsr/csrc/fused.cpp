// Fused CPU kernels for the passes around the convs (skipvsr.kernels). Each does in one pass
// over channels-last maps (pixels as rows of C contiguous values) what torch does in several.
//
// residual_add_: a residual block in `mixed` precision adds a bf16 update to the float32 stream; torch's
// mixed-dtype add_ first casts the update to float32 (one pass, one allocation), and the next
// block then casts the stream to bf16 for its convs (another pass). Here both happen in one
// pass over pixel rows: h += float(u), and optionally out = bf16(h). Every step rounds as
// torch does (the float32 sum of two float32 values; bf16 round-to-nearest-even, a NaN as
// 0xFFFF, as torch's vectorised cast writes it), so the results are torch's bit for bit.
// Optionally it also copies u into keep (a routed block's cached update) with non-temporal
// stores: the cache is read only a frame later, so writing it around the CPU's cache leaves the
// maps the next blocks read in place and skips reading the cache's old lines first. Or, with
// accumulate, adds u into keep (a group's total update), rounding as torch's add_ does.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

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

// n bytes from src to dst, the 32-byte-aligned part of dst with non-temporal stores
inline void stream_copy(char* dst, const char* src, int64_t n) {
  const int64_t head = std::min<int64_t>(n, (32 - (reinterpret_cast<uintptr_t>(dst) & 31)) & 31);
  std::memcpy(dst, src, head);
  int64_t i = head;
  for (; i + 32 <= n; i += 32) {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i),
                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
  }
  std::memcpy(dst + i, src + i, n - i);
}

// keep += u over n values of u's dtype (bf16: the float32 sum rounded to nearest even)
void accumulate_row(char* keep, const char* u, int64_t n, bool low) {
  if (low) {
    uint16_t* k = reinterpret_cast<uint16_t*>(keep);
    const uint16_t* v = reinterpret_cast<const uint16_t*>(u);
    for (int64_t i = 0; i < n; ++i) k[i] = float_to_bf16(bf16_to_float(k[i]) + bf16_to_float(v[i]));
  } else {
    float* k = reinterpret_cast<float*>(keep);
    const float* v = reinterpret_cast<const float*>(u);
    for (int64_t i = 0; i < n; ++i) k[i] += v[i];
  }
}

// h += u in place (u bfloat16 or float32); with out, also out = bf16(h) after the add; with
// keep, also keep = u (non-temporal), or keep += u with accumulate
void residual_add_(torch::Tensor h, const torch::Tensor& u, const c10::optional<torch::Tensor>& out,
                   const c10::optional<torch::Tensor>& keep, bool accumulate) {
  TORCH_CHECK(h.scalar_type() == at::kFloat, "h must be float32");
  check_rows(h, "h", h);
  check_rows(u, "update", h);
  const bool low = u.scalar_type() == at::kBFloat16;
  TORCH_CHECK(low || u.scalar_type() == at::kFloat, "update must be bfloat16 or float32");
  if (out) {
    check_rows(*out, "out", h);
    TORCH_CHECK(out->scalar_type() == at::kBFloat16, "out must be bfloat16");
  }
  if (keep) {
    check_rows(*keep, "keep", h);
    TORCH_CHECK(keep->scalar_type() == u.scalar_type(), "keep must have the update's dtype");
  }
  const int64_t rows = h.size(0) * h.size(2), height = h.size(2), row = h.size(3) * h.size(1);
  float* hp = h.data_ptr<float>();
  const char* up = static_cast<const char*>(u.data_ptr());
  uint16_t* op = out ? static_cast<uint16_t*>(out->data_ptr()) : nullptr;
  char* kp = keep ? static_cast<char*>(keep->data_ptr()) : nullptr;
  const int64_t usize = low ? 2 : 4;
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / height, y = r % height;
      float* hr = hp + b * h.stride(0) + y * h.stride(2);
      const char* ur = up + (b * u.stride(0) + y * u.stride(2)) * usize;
      uint16_t* orow = op ? op + b * out->stride(0) + y * out->stride(2) : nullptr;
      if (low) add_rows(hr, reinterpret_cast<const uint16_t*>(ur), orow, row);
      else add_rows(hr, reinterpret_cast<const float*>(ur), orow, row);
      if (!kp) continue;
      char* kr = kp + (b * keep->stride(0) + y * keep->stride(2)) * usize;
      if (accumulate) accumulate_row(kr, ur, row, low);
      else stream_copy(kr, ur, row * usize);
    }
    if (kp && !accumulate) _mm_sfence();  // this thread's streamed stores ordered before the kernel returns
  });
}


// shuffle_into_: conv (B, 4c, H, W) channels-last, its channels in (i, j, k) order, into out
// (B, c, 2H + 2 ring, 2W + 2 ring) channels-last: out[b, :, ring + 2y + i, ring + 2x + j] =
// conv[b, (2i + j) c : (2i + j + 1) c, y, x]. A copy of whole pixel rows of c values; torch's copy_
// of the 6-d permuted view moved them at a third of the memory's speed.
void shuffle_into_(const torch::Tensor& conv, torch::Tensor out, int64_t ring) {
  TORCH_CHECK(conv.device().is_cpu() && out.device().is_cpu(), "maps must be on the CPU");
  TORCH_CHECK(conv.scalar_type() == out.scalar_type(), "conv and out must have one dtype");
  TORCH_CHECK(conv.dim() == 4 && out.dim() == 4 && conv.size(1) % 4 == 0, "conv must be (B, 4c, H, W)");
  const int64_t B = conv.size(0), c = conv.size(1) / 4, H = conv.size(2), W = conv.size(3);
  TORCH_CHECK(out.size(0) == B && out.size(1) == c && out.size(2) == 2 * H + 2 * ring &&
                  out.size(3) == 2 * W + 2 * ring, "out must be (B, c, 2H + 2 ring, 2W + 2 ring)");
  TORCH_CHECK(conv.stride(1) == 1 && out.stride(1) == 1, "conv and out must be channels-last");
  const int64_t es = conv.element_size(), bytes = c * es;
  const char* src = static_cast<const char*>(conv.data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  at::parallel_for(0, B * H * 2, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / (2 * H), y = (r / 2) % H, i = r % 2;
      const char* s = src + (b * conv.stride(0) + y * conv.stride(2)) * es;
      char* d = dst + (b * out.stride(0) + (ring + 2 * y + i) * out.stride(2) + ring * out.stride(3)) * es;
      for (int64_t x = 0; x < W; ++x) {
        for (int64_t j = 0; j < 2; ++j) {
          std::memcpy(d + (2 * x + j) * out.stride(3) * es, s + x * conv.stride(3) * es + (2 * i + j) * bytes,
                      bytes);
        }
      }
    }
  });
}

// The routed blocks' cell batches. cells (N, 3) int64 holds each running cell's batch element
// and top-left pixel (b, y0, x0); all cells are size x size pixels, those at the frame's
// bottom and right edges reaching past it. A block then runs as one batched conv pair over the
// N cells, instead of one conv pair per box of cells: oneDNN's fixed cost per call made a
// lone 32x32 cell cost 3.4x its share of the dense block (AMX Xeon, 2 threads).
struct Cell {
  int64_t b, y0, x0;
};

std::vector<Cell> read_cells(const torch::Tensor& cells, int64_t B) {
  TORCH_CHECK(cells.scalar_type() == at::kLong && cells.dim() == 2 && cells.size(1) == 3 && cells.is_contiguous(),
              "cells must be int64 (N, 3)");
  const int64_t* c = cells.data_ptr<int64_t>();
  std::vector<Cell> out(cells.size(0));
  for (int64_t i = 0; i < cells.size(0); ++i) {
    out[i] = {c[3 * i], c[3 * i + 1], c[3 * i + 2]};
    TORCH_CHECK(out[i].b >= 0 && out[i].b < B, "cell batch index out of range");
  }
  return out;
}

// gather_cells_: out[i, :, yy, xx] = h[b, :, y0 - halo + yy, x0 - halo + xx] in out's dtype, 0
// past the frame; out (N, C, size + 2 halo, size + 2 halo) channels-last, bf16 or float32.
void gather_cells_(const torch::Tensor& h, const torch::Tensor& cells, int64_t halo, torch::Tensor out) {
  TORCH_CHECK(h.scalar_type() == at::kFloat && h.dim() == 4 && h.stride(1) == 1 && h.stride(3) == h.size(1),
              "h must be float32 channels-last");
  const auto cs = read_cells(cells, h.size(0));
  const int64_t C = h.size(1), H = h.size(2), W = h.size(3), N = cs.size(), S = out.size(2);
  TORCH_CHECK(out.dim() == 4 && out.size(0) == N && out.size(1) == C && out.size(3) == S &&
                  out.is_contiguous(at::MemoryFormat::ChannelsLast), "out must be (N, C, S, S) channels-last");
  const bool low = out.scalar_type() == at::kBFloat16;
  TORCH_CHECK(low || out.scalar_type() == at::kFloat, "out must be bfloat16 or float32");
  const float* hp = h.data_ptr<float>();
  char* op = static_cast<char*>(out.data_ptr());
  const int64_t es = out.element_size();
  at::parallel_for(0, N * S, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const Cell& c = cs[r / S];
      const int64_t yy = r % S, y = c.y0 - halo + yy;
      char* orow = op + ((r / S) * out.stride(0) + yy * out.stride(2)) * es;
      const int64_t xa = std::max<int64_t>(0, halo - c.x0), xb = std::min<int64_t>(S, W - c.x0 + halo);
      if (y < 0 || y >= H || xa >= xb) {
        std::memset(orow, 0, S * C * es);
        continue;
      }
      std::memset(orow, 0, xa * C * es);
      std::memset(orow + xb * C * es, 0, (S - xb) * C * es);
      const float* src = hp + c.b * h.stride(0) + y * h.stride(2) + (c.x0 - halo + xa) * C;
      const int64_t n = (xb - xa) * C;
      if (low) {
        uint16_t* dst = reinterpret_cast<uint16_t*>(orow) + xa * C;
        for (int64_t k = 0; k < n; ++k) dst[k] = float_to_bf16(src[k]);
      } else {
        std::memcpy(reinterpret_cast<float*>(orow) + xa * C, src, n * sizeof(float));
      }
    }
  });
}

// zero_outside_: set to 0 the pixels of mid (N, C, S, S) channels-last, cell i's map whose
// pixel (yy, xx) lies at (y0 - margin + yy, x0 - margin + xx), that fall outside the H x W
// frame: the zero padding that the dense conv2 reads there.
void zero_outside_(torch::Tensor mid, const torch::Tensor& cells, int64_t H, int64_t W, int64_t margin) {
  TORCH_CHECK(mid.dim() == 4 && mid.is_contiguous(at::MemoryFormat::ChannelsLast), "mid must be channels-last");
  const auto cs = read_cells(cells, INT64_MAX);
  const int64_t C = mid.size(1), S = mid.size(2), N = cs.size(), es = mid.element_size();
  TORCH_CHECK(mid.size(0) == N && mid.size(3) == S, "mid must be (N, C, S, S)");
  char* mp = static_cast<char*>(mid.data_ptr());
  at::parallel_for(0, N * S, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const Cell& c = cs[r / S];
      const int64_t yy = r % S, y = c.y0 - margin + yy;
      char* row = mp + ((r / S) * mid.stride(0) + yy * mid.stride(2)) * es;
      if (y < 0 || y >= H) {
        std::memset(row, 0, S * C * es);
        continue;
      }
      const int64_t xa = std::max<int64_t>(0, margin - c.x0), xb = std::min<int64_t>(S, W - c.x0 + margin);
      if (xa > 0) std::memset(row, 0, std::min(xa, S) * C * es);
      if (xb < S) std::memset(row + std::max<int64_t>(xb, 0) * C * es, 0, (S - std::max<int64_t>(xb, 0)) * C * es);
    }
  });
}

// scatter_cells_: out[b, :, y0 + yy, x0 + xx] = upd[i, :, yy, xx] inside the frame; upd (N, C,
// S, S) and out (B, C, H, W) channels-last of one dtype.
void scatter_cells_(const torch::Tensor& upd, const torch::Tensor& cells, torch::Tensor out) {
  TORCH_CHECK(upd.scalar_type() == out.scalar_type(), "upd and out must have one dtype");
  TORCH_CHECK(upd.dim() == 4 && upd.is_contiguous(at::MemoryFormat::ChannelsLast), "upd must be channels-last");
  TORCH_CHECK(out.dim() == 4 && out.stride(1) == 1 && out.stride(3) == out.size(1), "out must be channels-last");
  const auto cs = read_cells(cells, out.size(0));
  const int64_t C = upd.size(1), S = upd.size(2), N = cs.size(), H = out.size(2), W = out.size(3);
  TORCH_CHECK(upd.size(0) == N && upd.size(3) == S && out.size(1) == C, "upd must be (N, C, S, S)");
  const int64_t es = upd.element_size();
  const char* up = static_cast<const char*>(upd.data_ptr());
  char* op = static_cast<char*>(out.data_ptr());
  at::parallel_for(0, N * S, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const Cell& c = cs[r / S];
      const int64_t yy = r % S, y = c.y0 + yy;
      if (y < 0 || y >= H || c.x0 >= W || c.x0 < 0) continue;
      const int64_t n = std::min(S, W - c.x0);
      std::memcpy(op + (c.b * out.stride(0) + y * out.stride(2) + c.x0 * C) * es,
                  up + ((r / S) * upd.stride(0) + yy * upd.stride(2)) * es, n * C * es);
    }
  });
}


// warp_rows_: the bilinear warp of a bf16 channels-last map along a flow, as WarpPlan's
// embedding_bag gathers it: out[p] = bf16(w0 x[r0] + w1 x[r1] + w2 x[r2] + w3 x[r3]), the four
// taps of pixel p summed in float32 in that order (each product of two bf16 values is exact
// in float32) and rounded half away from zero, as fbgemm's embedding_bag rounds its bf16 output.
// pixels: the pixels to warp (all where undefined). The next pixel's source rows are
// prefetched: they are scattered along the flow.
inline __m256 bf16x8_to_float(const uint16_t* s) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s))), 16));
}

struct WarpArgs {
  const uint16_t* table;
  const int64_t* rows;
  const uint16_t* weights;
  const int64_t* pixels;  // nullptr: every pixel
  uint16_t* out;
  float* h;
  uint16_t* cast;
  int64_t H, W, cast_s0, cast_s2, cast_s3;  // cast_into's strides (batch, row, column)
};

// float32 x 8 -> bf16 x 8 rounded half to even, a NaN as 0xFFFF (torch's cast), in the low
// 16 bits of each 32-bit lane
inline __m256i float_to_bf16_even(__m256 x) {
  const __m256i bits = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  return _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0xffff), nan);
}

inline __m256 bf16_lanes_to_float(__m256i v) { return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)); }

// two vectors of bf16 values in 32-bit lanes -> 16 packed bf16 values, in order
inline void store_bf16x16(uint16_t* dst, __m256i lo, __m256i hi) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xD8));
}
// the same with a non-temporal store: dst 32-byte aligned
inline void stream_bf16x16(uint16_t* dst, __m256i lo, __m256i hi) {
  _mm256_stream_si256(reinterpret_cast<__m256i*>(dst), _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xD8));
}

// pixel p's warped row, acc[j] holding channels 8j .. 8j + 7 in float32 before rounding
template <int V>
inline void warp_sum(const WarpArgs& a, int64_t p, int64_t C, int v, __m256* acc) {
  for (int j = 0; j < v; ++j) acc[j] = _mm256_setzero_ps();
  for (int k = 0; k < 4; ++k) {
    const uint32_t bits = uint32_t(a.weights[4 * p + k]) << 16;
    if (bits == 0) continue;  // a tap outside the frame (0 * x adds nothing to a finite sum)
    float wf;
    std::memcpy(&wf, &bits, sizeof wf);
    const __m256 w = _mm256_set1_ps(wf);
    const uint16_t* src = a.table + a.rows[4 * p + k] * C;
    for (int j = 0; j < v; ++j) acc[j] = _mm256_fmadd_ps(w, bf16x8_to_float(src + 8 * j), acc[j]);
  }
}

inline __m256i round_away(__m256 x) {
  return _mm256_srli_epi32(_mm256_add_epi32(_mm256_castps_si256(x), _mm256_set1_epi32(0x8000)), 16);
}

// pixel q's four source rows of row_bytes bytes each in table, into the cache
inline void prefetch_rows(const void* table, const int64_t* rows, int64_t q, int64_t row_bytes) {
  for (int k = 0; k < 4; ++k) {
    const char* src = static_cast<const char*>(table) + rows[4 * q + k] * row_bytes;
    for (int64_t off = 0; off < row_bytes; off += 64) _mm_prefetch(src + off, _MM_HINT_T0);
  }
}

inline void prefetch_taps(const WarpArgs& a, int64_t q, int64_t C) { prefetch_rows(a.table, a.rows, q, C * 2); }

// the bf16 kernels' channel counts (C == 64 is their unrolled case)
void check_bf16_channels(int64_t C, const char* name) {
  TORCH_CHECK(C % 16 == 0 && C <= 256, name, " must have 64 channels, or a multiple of 16 up to 256");
}

template <int V>  // V = C / 8 vectors of 8 channels, known at compile time; 0: read from C
void warp_pixels(const WarpArgs& a, int64_t begin, int64_t end, int64_t C) {
  const int v = V > 0 ? V : int(C / 8);
  __m256 acc[V > 0 ? V : 32];
  for (int64_t i = begin; i < end; ++i) {
    const int64_t p = a.pixels ? a.pixels[i] : i;
    if (i + 2 < end) prefetch_taps(a, a.pixels ? a.pixels[i + 2] : i + 2, C);  // scattered along the flow
    warp_sum<V>(a, p, C, v, acc);
    uint16_t* o = a.out + p * C;
    for (int j = 0; j < v; j += 2) store_bf16x16(o + 8 * j, round_away(acc[j]), round_away(acc[j + 1]));
  }
}

// rows (P, 4) int64 and weights (P, 4) of dtype: a WarpPlan's bilinear taps of P pixels
void check_taps(const torch::Tensor& rows, const torch::Tensor& weights, int64_t P, at::ScalarType dtype) {
  TORCH_CHECK(rows.scalar_type() == at::kLong && rows.is_contiguous() && rows.numel() == 4 * P, "rows must be int64 (P, 4)");
  TORCH_CHECK(weights.scalar_type() == dtype && weights.is_contiguous() && weights.numel() == 4 * P,
              "weights must be (P, 4) in the map's dtype");
}

// The float32 warp: out[p] = w0 x[r0] + w1 x[r1] + w2 x[r2] + w3 x[r3] as fused multiply-adds
// from 0 in tap order, as fbgemm's float32 embedding_bag sums them. out's pixels may lie a
// stride apart (a channel slice of a wider channels-last map: the trunk's input, whose first
// channels hold the LR frame). A bf16 out (O = uint16_t) gets that sum rounded as torch casts it:
// the input conv's feature channels in `mixed`, with no float32 copy written and cast.
template <int V, typename O>
void warp_pixels_f32(const float* table, const int64_t* rows, const float* weights, const int64_t* pixels,
                     O* out, int64_t out_stride, int64_t begin, int64_t end, int64_t C) {
  const int v = V > 0 ? V : int(C / 8);
  __m256 acc[V > 0 ? V : 32];
  for (int64_t i = begin; i < end; ++i) {
    const int64_t p = pixels ? pixels[i] : i;
    if (i + 2 < end) prefetch_rows(table, rows, pixels ? pixels[i + 2] : i + 2, C * 4);
    for (int j = 0; j < v; ++j) acc[j] = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
      const float w = weights[4 * p + k];
      if (w == 0.0f) continue;  // a tap outside the frame (0 * x adds nothing to a finite sum)
      const __m256 wv = _mm256_set1_ps(w);
      const float* src = table + rows[4 * p + k] * C;
      for (int j = 0; j < v; ++j) acc[j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(src + 8 * j), acc[j]);
    }
    O* o = out + p * out_stride;
    if constexpr (std::is_same_v<O, float>) {
      for (int j = 0; j < v; ++j) _mm256_storeu_ps(o + 8 * j, acc[j]);
    } else {
      for (int j = 0; j < v; j += 2) store_bf16x16(o + 8 * j, float_to_bf16_even(acc[j]), float_to_bf16_even(acc[j + 1]));
    }
  }
}

// The warp of x into out by its taps, checked once, as a function of a range [begin, end) of
// the pixel list px (of all pixels where px is null), for the caller to split across threads:
// warp_rows_ over its pixels, warp_cells_ over its cells' rows.
std::function<void(int64_t, int64_t)> warper(const torch::Tensor& x, const torch::Tensor& rows,
                                             const torch::Tensor& weights, const torch::Tensor& out,
                                             const int64_t* px) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast), "x must be contiguous channels-last");
  const int64_t C = x.size(1), P = x.size(0) * x.size(2) * x.size(3);
  if (x.scalar_type() == at::kFloat) {
    const bool low = out.scalar_type() == at::kBFloat16;
    TORCH_CHECK(low || out.scalar_type() == at::kFloat, "a float32 x needs a float32 or bf16 out");
    const int64_t ps = out.dim() == 4 ? out.stride(3) : 0;
    TORCH_CHECK(C % (low ? 16 : 8) == 0 && C <= 256, "x must have a multiple of 8 channels up to 256 (16 for a bf16 out)");
    TORCH_CHECK(out.dim() == 4 && out.size(0) == x.size(0) && out.size(1) == C && out.size(2) == x.size(2) &&
                    out.size(3) == x.size(3) && out.stride(1) == 1 && ps >= C && out.stride(2) == ps * out.size(3) &&
                    (out.size(0) == 1 || out.stride(0) == out.stride(2) * out.size(2)),
                "out must be x's shape, its pixels rows of C channels a fixed stride apart");
    check_taps(rows, weights, P, at::kFloat);
    const float* t = x.data_ptr<float>();
    const int64_t* r = rows.data_ptr<int64_t>();
    const float* w = weights.data_ptr<float>();
    void* o = out.data_ptr();
    return [=](int64_t begin, int64_t end) {
      if (low) {
        auto* ob = static_cast<uint16_t*>(o);
        if (C == 64) warp_pixels_f32<8>(t, r, w, px, ob, ps, begin, end, C);
        else warp_pixels_f32<0>(t, r, w, px, ob, ps, begin, end, C);
      } else {
        auto* of = static_cast<float*>(o);
        if (C == 64) warp_pixels_f32<8>(t, r, w, px, of, ps, begin, end, C);
        else warp_pixels_f32<0>(t, r, w, px, of, ps, begin, end, C);
      }
    };
  }
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && out.scalar_type() == at::kBFloat16, "x and out must be bfloat16");
  TORCH_CHECK(out.sizes() == x.sizes() && out.is_contiguous(at::MemoryFormat::ChannelsLast),
              "out must be contiguous channels-last of x's shape");
  check_bf16_channels(C, "x");
  check_taps(rows, weights, P, at::kBFloat16);
  const WarpArgs a{static_cast<const uint16_t*>(x.data_ptr()), rows.data_ptr<int64_t>(),
                   static_cast<const uint16_t*>(weights.data_ptr()), px, static_cast<uint16_t*>(out.data_ptr()),
                   nullptr, nullptr, x.size(2), x.size(3), 0, 0, 0};
  return [=](int64_t begin, int64_t end) {
    if (C == 64) warp_pixels<8>(a, begin, end, C);
    else warp_pixels<0>(a, begin, end, C);
  };
}

void warp_rows_(const torch::Tensor& x, const torch::Tensor& rows, const torch::Tensor& weights, torch::Tensor out,
                const c10::optional<torch::Tensor>& pixels) {
  const int64_t* px = nullptr;  // the pixels to warp: all where undefined
  if (pixels) {
    TORCH_CHECK(pixels->scalar_type() == at::kLong && pixels->is_contiguous() && pixels->dim() == 1,
                "pixels must be int64 (n,)");
    px = pixels->data_ptr<int64_t>();
  }
  const auto warp = warper(x, rows, weights, out, px);
  at::parallel_for(0, pixels ? pixels->numel() : x.size(0) * x.size(2) * x.size(3), 64, warp);
}

// warp_cells_: warp_rows_ on the pixels of the cells where mask (B, nH, nW) is set only (cell x
// cell patches, the last ones clipped to the frame): a routed block's skipped cells, whose reused
// update is warped while its running cells are computed. Each cell row is a contiguous run of
// pixels, so no pixel index list is built (building one from the mask took about as long as
// warping a fifth of the frame).
void warp_cells_(const torch::Tensor& x, const torch::Tensor& rows, const torch::Tensor& weights, torch::Tensor out,
                 const torch::Tensor& mask, int64_t cell) {
  TORCH_CHECK(out.sizes() == x.sizes() && out.scalar_type() == x.scalar_type() &&
                  out.is_contiguous(at::MemoryFormat::ChannelsLast),
              "out must be contiguous channels-last of x's shape and dtype");
  const auto warp = warper(x, rows, weights, out, nullptr);
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3);
  TORCH_CHECK(cell >= 1, "cell must be >= 1");
  const int64_t nH = (H + cell - 1) / cell, nW = (W + cell - 1) / cell;
  TORCH_CHECK(mask.scalar_type() == at::kBool && mask.is_contiguous() && mask.dim() == 3 && mask.size(0) == B &&
                  mask.size(1) == nH && mask.size(2) == nW,
              "mask must be bool contiguous (B, nH, nW)");
  const bool* mp = mask.data_ptr<bool>();
  std::vector<std::pair<int64_t, int64_t>> runs;  // [first, last) pixels of each masked cell row
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t y = 0; y < H; ++y) {
      const bool* row = mp + (b * nH + y / cell) * nW;
      for (int64_t cx = 0; cx < nW; ++cx) {
        if (!row[cx]) continue;
        const int64_t first = (b * H + y) * W + cx * cell, last = (b * H + y) * W + std::min((cx + 1) * cell, W);
        if (!runs.empty() && runs.back().second == first) runs.back().second = last;  // neighbouring cells
        else runs.emplace_back(first, last);
      }
    }
  }
  at::parallel_for(0, int64_t(runs.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) warp(runs[i].first, runs[i].second);
  });
}

// warp_add_run_: a run of blocks skipped everywhere, one after another: for each block j in
// order, out_j = its cached update x_j warped (warp_rows_'s numbers) and h += out_j, with h's
// pixel row held in registers across the run: the stream is read and written once for the run
// instead of once per block, with every value summed in the same order as block by block (bit
// for bit). Optionally cast_into = bf16(h) after the last add (the next block's input). The
// out_j are the blocks' new caches, read a frame later: they are written around the CPU's cache
// (non-temporal stores, 32-byte aligned), which took 1-2 % off `rotate` (AMX Xeon, 2 threads).
template <int V>
void warp_add_run(const std::vector<WarpArgs>& as, int64_t C, int64_t begin, int64_t end) {
  const int v = V > 0 ? V : int(C / 8);
  __m256 acc[V > 0 ? V : 32], hv[V > 0 ? V : 32];
  const WarpArgs& first = as[0];
  for (int64_t p = begin; p < end; ++p) {
    if (p + 2 < end)
      for (const WarpArgs& a : as) prefetch_taps(a, p + 2, C);
    float* hr = first.h + p * C;
    for (int j = 0; j < v; ++j) hv[j] = _mm256_loadu_ps(hr + 8 * j);
    for (const WarpArgs& a : as) {
      warp_sum<V>(a, p, C, v, acc);
      uint16_t* o = a.out + p * C;
      for (int j = 0; j < v; j += 2) {
        const __m256i lo = round_away(acc[j]), hi = round_away(acc[j + 1]);
        stream_bf16x16(o + 8 * j, lo, hi);
        hv[j] = _mm256_add_ps(hv[j], bf16_lanes_to_float(lo));
        hv[j + 1] = _mm256_add_ps(hv[j + 1], bf16_lanes_to_float(hi));
      }
    }
    for (int j = 0; j < v; ++j) _mm256_storeu_ps(hr + 8 * j, hv[j]);
    if (first.cast != nullptr) {  // from the registers, 16 values a store (C is a multiple of 16)
      const int64_t b = p / (first.H * first.W), y = (p / first.W) % first.H, x = p % first.W;
      uint16_t* c = first.cast + b * first.cast_s0 + y * first.cast_s2 + x * first.cast_s3;
      for (int j = 0; j < v; j += 2) store_bf16x16(c + 8 * j, float_to_bf16_even(hv[j]), float_to_bf16_even(hv[j + 1]));
    }
  }
}

void warp_add_run_(const std::vector<torch::Tensor>& xs, const torch::Tensor& rows, const torch::Tensor& weights,
                   const std::vector<torch::Tensor>& outs, torch::Tensor h, const c10::optional<torch::Tensor>& cast_into) {
  TORCH_CHECK(!xs.empty() && xs.size() == outs.size(), "xs and outs must be lists of one length, at least 1");
  TORCH_CHECK(h.scalar_type() == at::kFloat && h.dim() == 4 && h.is_contiguous(at::MemoryFormat::ChannelsLast),
              "h must be float32 contiguous channels-last");
  const int64_t C = h.size(1), P = h.size(0) * h.size(2) * h.size(3);
  check_bf16_channels(C, "h");
  check_taps(rows, weights, P, at::kBFloat16);
  std::vector<WarpArgs> as;
  for (size_t i = 0; i < xs.size(); ++i) {
    for (const torch::Tensor* t : std::initializer_list<const torch::Tensor*>{&xs[i], &outs[i]}) {
      TORCH_CHECK(t->scalar_type() == at::kBFloat16 && t->sizes() == h.sizes() &&
                      t->is_contiguous(at::MemoryFormat::ChannelsLast),
                  "xs and outs must be bf16 contiguous channels-last maps of h's shape");
    }
    TORCH_CHECK(reinterpret_cast<uintptr_t>(outs[i].data_ptr()) % 32 == 0, "outs must be 32-byte aligned");
    as.push_back({static_cast<const uint16_t*>(xs[i].data_ptr()), rows.data_ptr<int64_t>(),
                  static_cast<const uint16_t*>(weights.data_ptr()), nullptr, static_cast<uint16_t*>(outs[i].data_ptr()),
                  h.data_ptr<float>(), nullptr, h.size(2), h.size(3), 0, 0, 0});
  }
  if (cast_into) {
    check_rows(*cast_into, "cast_into", h);
    TORCH_CHECK(cast_into->scalar_type() == at::kBFloat16, "cast_into must be bfloat16");
    as[0].cast = static_cast<uint16_t*>(cast_into->data_ptr());
    as[0].cast_s0 = cast_into->stride(0), as[0].cast_s2 = cast_into->stride(2), as[0].cast_s3 = cast_into->stride(3);
  }
  at::parallel_for(0, P, 64, [&](int64_t begin, int64_t end) {
    if (C == 64) warp_add_run<8>(as, C, begin, end);
    else warp_add_run<0>(as, C, begin, end);
    _mm_sfence();  // this thread's streamed stores ordered before the kernel returns
  });
}

// score_inputs_: what a routed block's warped-difference estimator reads, in one pass over its
// cells (skipvsr.routing.Router._score with bf16 caches): on every stride-th row and column of
// the float32 stream h, fresh = bf16(h) (torch's cast); warped = prev warped along the flow
// (warp_rows_'s numbers); pooled = the mean over each cell x cell patch of |fresh - warped|,
// the difference rounded to bf16 as torch's bf16 subtraction rounds it, summed in float32 over
// the patch's pixels row by row and divided by their count, then rounded to bf16: the numbers
// of torch's cast, sub, abs and channels-last avg_pool2d (ceil_mode, valid pixels only), bit
// for bit, where those took six passes and as many calls.

// pixel p's estimator inputs from its stream row hr: fresh = bf16(hr) and warped = its warped
// cached row are stored, and each pair of channel vectors' |fresh - warped| (bf16 in 32-bit
// lanes) goes to take(j, lo, hi); the next pixel's taps and stream row (step floats on) are
// prefetched where it exists
template <int V, typename Take>
inline void score_pixel(const float* hr, int64_t step, bool next, const WarpArgs& a, int64_t p, int64_t C,
                        uint16_t* fresh, uint16_t* warped, Take take) {
  const int v = V > 0 ? V : int(C / 8);
  __m256 acc[V > 0 ? V : 32];
  const __m256i magnitude = _mm256_set1_epi32(0x7fff);
  if (next) {  // the next pixel's taps and stream row: both a stride apart, or scattered
    prefetch_taps(a, p + 1, C);
    const char* row = reinterpret_cast<const char*>(hr + step);
    for (int64_t off = 0; off < C * 4; off += 64) _mm_prefetch(row + off, _MM_HINT_T0);
  }
  warp_sum<V>(a, p, C, v, acc);
  for (int j = 0; j < v; j += 2) {
    const __m256i f_lo = float_to_bf16_even(_mm256_loadu_ps(hr + 8 * j));
    const __m256i f_hi = float_to_bf16_even(_mm256_loadu_ps(hr + 8 * j + 8));
    const __m256i w_lo = round_away(acc[j]), w_hi = round_away(acc[j + 1]);
    store_bf16x16(fresh + p * C + 8 * j, f_lo, f_hi);
    store_bf16x16(warped + p * C + 8 * j, w_lo, w_hi);
    const __m256i d_lo = float_to_bf16_even(_mm256_sub_ps(bf16_lanes_to_float(f_lo), bf16_lanes_to_float(w_lo)));
    const __m256i d_hi = float_to_bf16_even(_mm256_sub_ps(bf16_lanes_to_float(f_hi), bf16_lanes_to_float(w_hi)));
    take(j, _mm256_and_si256(d_lo, magnitude), _mm256_and_si256(d_hi, magnitude));
  }
}

template <int V>
void score_cells(const float* hp, const int64_t hs[4], int64_t stride, const WarpArgs& a, int64_t C, int64_t cell,
                 int64_t nH, int64_t nW, uint16_t* fresh, uint16_t* warped, uint16_t* pooled, int64_t begin,
                 int64_t end) {
  const int v = V > 0 ? V : int(C / 8);
  __m256 sum[V > 0 ? V : 32];
  for (int64_t i = begin; i < end; ++i) {
    const int64_t b = i / (nH * nW), cy = (i / nW) % nH, cx = i % nW;
    const int64_t y0 = cy * cell, y1 = std::min(y0 + cell, a.H), x0 = cx * cell, x1 = std::min(x0 + cell, a.W);
    for (int j = 0; j < v; ++j) sum[j] = _mm256_setzero_ps();
    for (int64_t y = y0; y < y1; ++y) {
      for (int64_t x = x0; x < x1; ++x) {
        const int64_t p = (b * a.H + y) * a.W + x;
        const float* hr = hp + b * hs[0] + y * stride * hs[2] + x * stride * hs[3];
        score_pixel<V>(hr, stride * hs[3], x + 1 < x1, a, p, C, fresh, warped, [&](int j, __m256i lo, __m256i hi) {
          sum[j] = _mm256_add_ps(sum[j], bf16_lanes_to_float(lo));
          sum[j + 1] = _mm256_add_ps(sum[j + 1], bf16_lanes_to_float(hi));
        });
      }
    }
    const __m256 count = _mm256_set1_ps(float((y1 - y0) * (x1 - x0)));
    for (int j = 0; j < v; j += 2) {
      store_bf16x16(pooled + i * C + 8 * j, float_to_bf16_even(_mm256_div_ps(sum[j], count)),
                    float_to_bf16_even(_mm256_div_ps(sum[j + 1], count)));
    }
  }
}

// score_cells for grids of fewer cells than threads (whole frames: one), in two passes: the
// pixels' fresh, warped and |fresh - warped| rows, in parallel over pixel rows (diff a scratch of
// P x C bf16), then each cell's sum over its pixels in score_cells' order, so bit for bit the same
template <int V>
void score_rows(const float* hp, const int64_t hs[4], int64_t stride, const WarpArgs& a, int64_t C,
                uint16_t* fresh, uint16_t* warped, uint16_t* diff, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {  // r: batch * H + y of the strided map
    const int64_t b = r / a.H, y = r % a.H;
    for (int64_t x = 0; x < a.W; ++x) {
      const int64_t p = r * a.W + x;
      const float* hr = hp + b * hs[0] + y * stride * hs[2] + x * stride * hs[3];
      score_pixel<V>(hr, stride * hs[3], x + 1 < a.W, a, p, C, fresh, warped, [&](int j, __m256i lo, __m256i hi) {
        store_bf16x16(diff + p * C + 8 * j, lo, hi);
      });
    }
  }
}

void pool_cells(const uint16_t* diff, int64_t H, int64_t W, int64_t C, int64_t cell, int64_t nH, int64_t nW,
                uint16_t* pooled, int64_t i) {
  const int v = int(C / 8);
  __m256 sum[32];
  const int64_t b = i / (nH * nW), cy = (i / nW) % nH, cx = i % nW;
  const int64_t y0 = cy * cell, y1 = std::min(y0 + cell, H), x0 = cx * cell, x1 = std::min(x0 + cell, W);
  for (int j = 0; j < v; ++j) sum[j] = _mm256_setzero_ps();
  for (int64_t y = y0; y < y1; ++y) {
    for (int64_t x = x0; x < x1; ++x) {
      const uint16_t* d = diff + ((b * H + y) * W + x) * C;
      for (int j = 0; j < v; ++j) sum[j] = _mm256_add_ps(sum[j], bf16x8_to_float(d + 8 * j));
    }
  }
  const __m256 count = _mm256_set1_ps(float((y1 - y0) * (x1 - x0)));
  for (int j = 0; j < v; j += 2) {
    store_bf16x16(pooled + i * C + 8 * j, float_to_bf16_even(_mm256_div_ps(sum[j], count)),
                  float_to_bf16_even(_mm256_div_ps(sum[j + 1], count)));
  }
}

void score_inputs_(const torch::Tensor& h, int64_t stride, const torch::Tensor& prev, const torch::Tensor& rows,
                   const torch::Tensor& weights, int64_t cell, torch::Tensor fresh, torch::Tensor warped,
                   torch::Tensor pooled) {
  TORCH_CHECK(h.scalar_type() == at::kFloat && h.dim() == 4 && h.device().is_cpu() && h.stride(1) == 1 &&
                  h.stride(3) == h.size(1), "h must be a float32 channels-last CPU map");
  TORCH_CHECK(stride >= 1 && cell >= 1, "stride and cell must be >= 1");
  const int64_t B = h.size(0), C = h.size(1), Hs = (h.size(2) + stride - 1) / stride, Ws = (h.size(3) + stride - 1) / stride;
  check_bf16_channels(C, "h");
  for (const torch::Tensor* t : std::initializer_list<const torch::Tensor*>{&prev, &fresh, &warped}) {
    TORCH_CHECK(t->scalar_type() == at::kBFloat16 && t->dim() == 4 && t->size(0) == B && t->size(1) == C &&
                    t->size(2) == Hs && t->size(3) == Ws && t->is_contiguous(at::MemoryFormat::ChannelsLast),
                "prev, fresh and warped must be bf16 contiguous channels-last (B, C, ceil(H / stride), ceil(W / stride))");
  }
  const int64_t nH = (Hs + cell - 1) / cell, nW = (Ws + cell - 1) / cell, P = B * Hs * Ws;
  TORCH_CHECK(pooled.scalar_type() == at::kBFloat16 && pooled.dim() == 4 && pooled.size(0) == B && pooled.size(1) == C &&
                  pooled.size(2) == nH && pooled.size(3) == nW && pooled.is_contiguous(at::MemoryFormat::ChannelsLast),
              "pooled must be bf16 contiguous channels-last (B, C, nH, nW)");
  check_taps(rows, weights, P, at::kBFloat16);
  WarpArgs a{static_cast<const uint16_t*>(prev.data_ptr()), rows.data_ptr<int64_t>(),
             static_cast<const uint16_t*>(weights.data_ptr()), nullptr, nullptr, nullptr, nullptr, Hs, Ws, 0, 0, 0};
  const int64_t hs[4] = {h.stride(0), h.stride(1), h.stride(2), h.stride(3)};
  auto* fp = static_cast<uint16_t*>(fresh.data_ptr());
  auto* wp = static_cast<uint16_t*>(warped.data_ptr());
  auto* pp = static_cast<uint16_t*>(pooled.data_ptr());
  const float* hp = h.data_ptr<float>();
  const int64_t cells = B * nH * nW;
  if (cells >= 2 * at::get_num_threads()) {
    at::parallel_for(0, cells, 1, [&](int64_t begin, int64_t end) {
      if (C == 64) score_cells<8>(hp, hs, stride, a, C, cell, nH, nW, fp, wp, pp, begin, end);
      else score_cells<0>(hp, hs, stride, a, C, cell, nH, nW, fp, wp, pp, begin, end);
    });
    return;
  }
  // few cells (a whole frame is one): split the pixels between the threads, then pool
  // not value-initialised: score_rows writes every value before pool_cells reads it (a
  // zero fill would be another pass over P x C values on every decision)
  std::unique_ptr<uint16_t[]> diff(new uint16_t[size_t(P * C)]);
  at::parallel_for(0, B * Hs, 1, [&](int64_t begin, int64_t end) {
    if (C == 64) score_rows<8>(hp, hs, stride, a, C, fp, wp, diff.get(), begin, end);
    else score_rows<0>(hp, hs, stride, a, C, fp, wp, diff.get(), begin, end);
  });
  at::parallel_for(0, cells, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) pool_cells(diff.get(), Hs, Ws, C, cell, nH, nW, pp, i);
  });
}

// refresh_cells_: prev = where(run, fresh, prev) per cell x cell patch, in place: a block's
// cached estimator input follows its cached update, refreshed only where the block ran.
void refresh_cells_(torch::Tensor prev, const torch::Tensor& fresh, const torch::Tensor& run, int64_t cell) {
  TORCH_CHECK(prev.sizes() == fresh.sizes() && prev.scalar_type() == fresh.scalar_type() && prev.dim() == 4 &&
                  prev.is_contiguous(at::MemoryFormat::ChannelsLast) && fresh.is_contiguous(at::MemoryFormat::ChannelsLast),
              "prev and fresh must be contiguous channels-last maps of one shape and dtype");
  const int64_t B = prev.size(0), C = prev.size(1), H = prev.size(2), W = prev.size(3);
  const int64_t nH = (H + cell - 1) / cell, nW = (W + cell - 1) / cell, es = prev.element_size();
  TORCH_CHECK(run.scalar_type() == at::kBool && run.is_contiguous() && run.dim() == 3 && run.size(0) == B &&
                  run.size(1) == nH && run.size(2) == nW, "run must be bool (B, nH, nW)");
  const bool* r = run.data_ptr<bool>();
  char* dst = static_cast<char*>(prev.data_ptr());
  const char* src = static_cast<const char*>(fresh.data_ptr());
  at::parallel_for(0, B * H, 8, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / H, y = row % H;
      const bool* cells = r + (b * nH + y / cell) * nW;
      for (int64_t cx = 0; cx < nW; ++cx) {
        if (!cells[cx]) continue;
        const int64_t x0 = cx * cell, n = std::min(cell, W - x0), off = ((row * W) + x0) * C * es;
        std::memcpy(dst + off, src + off, n * C * es);
      }
    }
  });
}

// warp_taps_: WarpPlan's bilinear taps from its grid_sample grid (N, H, W, 2) float32 (x, y in
// [-1, 1], align_corners=True): for each pixel the four source rows (nw, ne, sw, se) into the
// (N * H * W, C) pixel table, clamped into the frame, and their weights, 0 for a tap outside. The
// float32 steps are torch's: ix = (gx + 1) * ((W - 1) / 2), x0 = floor(ix), fx = ix - x0, weight
// (1 - fy or fy) * (1 - fx or fx); the row index is exact integer arithmetic, as torch's float
// one is below 2^24 pixels. Fourteen torch ops and two stacks took 1.6 ms at 180x320 (2 threads).
void warp_taps_(const torch::Tensor& grid, torch::Tensor rows, torch::Tensor weights) {
  TORCH_CHECK(grid.scalar_type() == at::kFloat && grid.dim() == 4 && grid.size(3) == 2 && grid.is_contiguous(),
              "grid must be float32 contiguous (N, H, W, 2)");
  const int64_t N = grid.size(0), H = grid.size(1), W = grid.size(2), P = N * H * W;
  TORCH_CHECK(rows.scalar_type() == at::kLong && rows.is_contiguous() && rows.numel() == 4 * P,
              "rows must be int64 contiguous (N, H, W, 4)");
  TORCH_CHECK(weights.scalar_type() == at::kFloat && weights.is_contiguous() && weights.numel() == 4 * P,
              "weights must be float32 contiguous (N, H, W, 4)");
  const float* g = grid.data_ptr<float>();
  int64_t* r = rows.data_ptr<int64_t>();
  float* wt = weights.data_ptr<float>();
  const float sx = float(W - 1) / 2.0f, sy = float(H - 1) / 2.0f;
  const float xmax = float(W - 1), ymax = float(H - 1);
  at::parallel_for(0, P, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const float ix = (g[2 * p] + 1.0f) * sx, iy = (g[2 * p + 1] + 1.0f) * sy;
      const float x0 = std::floor(ix), y0 = std::floor(iy);
      const float fx = ix - x0, fy = iy - y0;
      const int64_t base = (p / (H * W)) * (H * W);
      for (int dy = 0; dy < 2; ++dy) {
        const float yi = y0 + float(dy), wy = dy ? fy : 1.0f - fy;
        const int64_t yc = int64_t(yi >= 0.0f ? std::min(yi, ymax) : 0.0f);  // a NaN row: 0
        for (int dx = 0; dx < 2; ++dx) {
          const float xi = x0 + float(dx), wx = dx ? fx : 1.0f - fx;
          const bool inside = xi >= 0.0f && xi <= xmax && yi >= 0.0f && yi <= ymax;
          const int k = 4 * p + 2 * dy + dx;
          wt[k] = inside ? wy * wx : 0.0f;
          r[k] = base + yc * W + int64_t(xi >= 0.0f ? std::min(xi, xmax) : 0.0f);
        }
      }
    }
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("residual_add_", &residual_add_,
        "h += update, and optionally out = bf16(h) and keep = update (keep += update: accumulate)",
        py::arg("h"), py::arg("update"), py::arg("out") = py::none(), py::arg("keep") = py::none(),
        py::arg("accumulate") = false);
  m.def("shuffle_into_", &shuffle_into_, "a channels-last pixel shuffle by 2 into a zero border");
  m.def("gather_cells_", &gather_cells_, "running cells with their halo, as one batch");
  m.def("zero_outside_", &zero_outside_, "zero a cell batch outside the frame");
  m.def("scatter_cells_", &scatter_cells_, "a cell batch written back into its map");
  m.def("warp_rows_", &warp_rows_, "a channels-last map warped by its bilinear taps",
        py::arg("x"), py::arg("rows"), py::arg("weights"), py::arg("out"), py::arg("pixels") = py::none());
  m.def("warp_cells_", &warp_cells_, "a channels-last map warped on the pixels of the masked cells only");
  m.def("warp_add_run_", &warp_add_run_, "a run of skipped blocks' reused updates warped and added into h in one pass",
        py::arg("xs"), py::arg("rows"), py::arg("weights"), py::arg("outs"), py::arg("h"),
        py::arg("cast_into") = py::none());
  m.def("score_inputs_", &score_inputs_, "a warped-difference estimator's inputs and patch means in one pass");
  m.def("warp_taps_", &warp_taps_, "a warp's bilinear taps (source rows and weights) from its sampling grid");
  m.def("refresh_cells_", &refresh_cells_, "a cached map refreshed from a fresh one on the running patches");
}

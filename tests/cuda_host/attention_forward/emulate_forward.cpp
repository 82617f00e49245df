// Runs the CUDA attention forward kernels (csrc/cuda/attention/forward_kernel.cuh, and the
// split-KV chunks plus splitkv_kernel.cuh's combine) on the CPU under the SIMT emulator
// (tests/cuda_host/emulation) and compares out and lse with a float64 reference of the contract
// (csrc/schema/attention.cpp), on random problems covering every head-dim bucket (and head dims
// below their bucket), both dtypes, several query tiles, GQA, causal modes 0/1/2, masks (key
// padding broadcast, additive with -inf through transposed strides, full bool with empty rows),
// dropout (Philox, exactly the reference's mask), strided inputs, rows that see no key, and the
// split-KV path.
//
// Every case runs twice, with different thread schedules, block orders and cp.async timings, and
// must give bitwise identical results (the forward has no atomics).
// Build and run: tests/cuda_host/attention_forward/run.sh [seed [case-name-substring]]
#include <cuda_runtime.h>  // the emulator's stand-in (tests/cuda_host/emulation)

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/philox.h"
#include "emulated_tensors.h"
#include "cuda/attention/forward_config.h"
#include "cuda/attention/forward_kernel.cuh"
#include "cuda/attention/splitkv_kernel.cuh"
#include "cuda/attention/splitkv_plan.h"

namespace bigkern::cuda_attention {
// The kernels' `extern __shared__` array: one block runs at a time.
alignas(16) unsigned char shared_bytes[forward_shared_bytes(256)];
}  // namespace bigkern::cuda_attention

namespace {

using namespace bigkern::cuda_attention;
using namespace bigkern::cuda_attention::emulated;

enum class Mask { kNone, kKeyPadding, kAdditiveTransposed, kBoolWithEmptyRows };

struct Case {
  std::string name;
  ElementType dtype;
  int batch, heads_q, heads_kv, len_q, len_k, head_dim;
  int causal;
  Mask mask;
  double dropout_p;
  bool permuted;  // q, k, v stored (B, L, H, D): strided head and row dims
  bool split;     // plan the split-KV path as for a device with many SMs
};

constexpr uint64_t kSeed = 0x0123456789ABCDEFull;
constexpr uint32_t kOffset = 77;

struct Problem {
  const Case& c;
  Operand q, k, v;
  std::vector<unsigned char> mask_bool;
  Buffer mask_additive{1};
  Layout mask_layout{};
  std::vector<double> ref_out;  // (B, Hq, Lq, D)
  std::vector<double> ref_lse;  // (B, Hq, Lq), +inf for rows without a visible key

  Problem(const Case& cs, std::mt19937_64& rng)
      : c(cs),
        q(make_layout(cs.batch, cs.heads_q, cs.len_q, cs.head_dim, cs.permuted), cs.dtype, rng),
        k(make_layout(cs.batch, cs.heads_kv, cs.len_k, cs.head_dim, cs.permuted), cs.dtype, rng),
        v(make_layout(cs.batch, cs.heads_kv, cs.len_k, cs.head_dim, cs.permuted), cs.dtype, rng) {
    make_mask(rng);
    reference();
  }

  void make_mask(std::mt19937_64& rng) {
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    const int64_t B = c.batch, H = c.heads_q, Lq = c.len_q, Lk = c.len_k;
    switch (c.mask) {
      case Mask::kNone:
        break;
      case Mask::kKeyPadding:  // (B, 1, 1, Lk) broadcast: stride 0 over heads and rows
        mask_bool.resize(static_cast<size_t>(B * Lk));
        for (auto& m : mask_bool) m = uniform(rng) < 0.75;
        mask_layout = {{B, H, Lq, Lk}, {Lk, 0, 0, 1}};
        break;
      case Mask::kAdditiveTransposed: {  // (Lq, Lk) stored as (Lk, Lq): strides (0, 0, 1, Lq)
        mask_additive = Buffer(static_cast<size_t>(Lq * Lk));
        mask_layout = {{B, H, Lq, Lk}, {0, 0, 1, Lq}};
        std::normal_distribution<double> normal(0.0, 2.0);
        for (int64_t i = 0; i < Lq; ++i)
          for (int64_t j = 0; j < Lk; ++j) {
            const double value = j % 7 == 3 ? -std::numeric_limits<double>::infinity() : normal(rng);
            mask_additive.data()[mask_layout.offset(0, 0, i, j)] = from_double(c.dtype, value);
          }
        break;
      }
      case Mask::kBoolWithEmptyRows:  // full (B, Hq, Lq, Lk); every fifth row sees no key at all
        mask_bool.resize(static_cast<size_t>(B * H * Lq * Lk));
        mask_layout = {{B, H, Lq, Lk}, {H * Lq * Lk, Lq * Lk, Lk, 1}};
        for (int64_t b = 0; b < B; ++b)
          for (int64_t h = 0; h < H; ++h)
            for (int64_t i = 0; i < Lq; ++i)
              for (int64_t j = 0; j < Lk; ++j)
                mask_bool[static_cast<size_t>(mask_layout.offset(b, h, i, j))] = i % 5 != 2 && uniform(rng) < 0.6;
        break;
    }
  }

  double scale() const { return 1.0 / std::sqrt(static_cast<double>(c.head_dim)); }

  bool kept(int64_t b, int64_t h, int64_t i, int64_t j) const {
    const auto r = bigkern::philox4x32_10(static_cast<uint32_t>(j >> 2), static_cast<uint32_t>(i),
                                          static_cast<uint32_t>(b * c.heads_q + h), kOffset,
                                          static_cast<uint32_t>(kSeed), static_cast<uint32_t>(kSeed >> 32));
    return r.x[j & 3] >= bigkern::dropout_threshold(c.dropout_p);
  }

  void reference() {
    const int64_t B = c.batch, H = c.heads_q, Lq = c.len_q, Lk = c.len_k, D = c.head_dim;
    const int64_t group = H / c.heads_kv;
    ref_out.assign(static_cast<size_t>(B * H * Lq * D), 0.0);
    ref_lse.assign(static_cast<size_t>(B * H * Lq), std::numeric_limits<double>::infinity());
    std::vector<double> score(static_cast<size_t>(Lk));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < Lq; ++i) {
          double max = -std::numeric_limits<double>::infinity();
          for (int64_t j = 0; j < Lk; ++j) {
            double s = 0;
            for (int64_t d = 0; d < D; ++d) s += q.at(c.dtype, b, h, i, d) * k.at(c.dtype, b, h / group, j, d);
            s *= scale();
            bool visible = c.causal == 0 || j <= i + (c.causal == 2 ? Lk - Lq : 0);
            if (c.mask == Mask::kKeyPadding || c.mask == Mask::kBoolWithEmptyRows) {
              visible = visible && mask_bool[static_cast<size_t>(mask_layout.offset(b, h, i, j))] != 0;
            } else if (c.mask == Mask::kAdditiveTransposed) {
              s += to_double(c.dtype, mask_additive.data()[mask_layout.offset(b, h, i, j)]);
            }
            score[static_cast<size_t>(j)] = visible ? s : -std::numeric_limits<double>::infinity();
            max = std::max(max, score[static_cast<size_t>(j)]);
          }
          if (max == -std::numeric_limits<double>::infinity()) continue;
          double total = 0;
          for (int64_t j = 0; j < Lk; ++j) total += std::exp(score[static_cast<size_t>(j)] - max);
          ref_lse[static_cast<size_t>((b * H + h) * Lq + i)] = max + std::log(total);
          for (int64_t j = 0; j < Lk; ++j) {
            double weight = std::exp(score[static_cast<size_t>(j)] - max) / total;
            if (c.dropout_p > 0) weight = kept(b, h, i, j) ? weight / (1.0 - c.dropout_p) : 0.0;
            if (weight == 0) continue;
            double* const out_row = &ref_out[static_cast<size_t>(((b * H + h) * Lq + i) * D)];
            for (int64_t d = 0; d < D; ++d) out_row[d] += weight * v.at(c.dtype, b, h / group, j, d);
          }
        }
  }
};

struct Result {
  Buffer out;
  std::vector<float> lse;
  int num_splits = 1;
};

AttentionParams make_params(const Problem& pr, Result& r) {
  const Case& c = pr.c;
  AttentionParams p{};
  p.q = pr.q.buffer.data();
  p.k = pr.k.buffer.data();
  p.v = pr.v.buffer.data();
  p.q_strides = {pr.q.layout.stride[0], pr.q.layout.stride[1], pr.q.layout.stride[2]};
  p.k_strides = {pr.k.layout.stride[0], pr.k.layout.stride[1], pr.k.layout.stride[2]};
  p.v_strides = {pr.v.layout.stride[0], pr.v.layout.stride[1], pr.v.layout.stride[2]};
  p.out = r.out.data();
  p.out_strides = {int64_t{c.heads_q} * c.len_q * c.head_dim, int64_t{c.len_q} * c.head_dim, c.head_dim};
  p.lse = r.lse.data();
  p.batch = c.batch;
  p.heads_q = c.heads_q;
  p.heads_kv = c.heads_kv;
  p.kv_group = c.heads_q / c.heads_kv;
  p.len_q = c.len_q;
  p.len_k = c.len_k;
  p.head_dim = c.head_dim;
  p.scale = static_cast<float>(pr.scale());
  p.scale_log2 = static_cast<float>(pr.scale() * 1.4426950408889634);
  p.causal = c.causal;
  p.causal_shift = c.causal == kCausalBottomRight ? c.len_k - c.len_q : 0;
  p.mask_kind = MaskKind::kNone;
  if (c.mask == Mask::kKeyPadding || c.mask == Mask::kBoolWithEmptyRows) {
    p.mask_kind = MaskKind::kBool;
    p.mask = pr.mask_bool.data();
  } else if (c.mask == Mask::kAdditiveTransposed) {
    p.mask_kind = MaskKind::kAdditive;
    p.mask = pr.mask_additive.data();
  }
  p.mask_stride_batch = pr.mask_layout.stride[0];
  p.mask_stride_head = pr.mask_layout.stride[1];
  p.mask_stride_row = pr.mask_layout.stride[2];
  p.mask_stride_col = pr.mask_layout.stride[3];
  p.has_dropout = c.dropout_p > 0;
  p.dropout_threshold = bigkern::dropout_threshold(c.dropout_p);
  p.dropout_rescale = static_cast<float>(1.0 / (1.0 - c.dropout_p));
  p.seed_lo = static_cast<uint32_t>(kSeed);
  p.seed_hi = static_cast<uint32_t>(kSeed >> 32);
  p.philox_offset = kOffset;
  return p;
}

// The launch sequence of attention.cpp (plain, or split-KV chunks then the combine), each kernel
// under the emulator.
template <ElementType kType, int kBucket>
void run_forward(const Problem& pr, Result& r, const emu::Options& options) {
  const Case& c = pr.c;
  const AttentionParams p = make_params(pr, r);
  const int64_t q_tiles = (c.len_q + forward_block_m(kBucket) - 1) / forward_block_m(kBucket);
  const int64_t ctas = q_tiles * c.heads_q * c.batch;
  auto* shared = bigkern::cuda_attention::shared_bytes;
  const size_t shared_size = forward_shared_bytes(kBucket);
  // 1000 SMs: a grid this small is always split when the keys allow it.
  const SplitPlan plan = c.split ? plan_splits(ctas, c.len_k, forward_tile(kBucket).block_n, 1000) : SplitPlan{1, 0};
  r.num_splits = plan.num_splits;
  if (plan.num_splits == 1) {
    emu::launch({static_cast<unsigned>(ctas), 1, 1}, {kForwardThreads, 1, 1}, shared, shared_size,
                [&] { attention_forward_kernel<kType, kBucket, false>(p, SplitKvWorkspace{}); }, options);
    return;
  }
  const int64_t rows = int64_t{c.batch} * c.heads_q * c.len_q;
  // Poisoned with NaN: the combine must read only what the chunks wrote.
  std::vector<float> workspace(static_cast<size_t>(plan.num_splits * rows * (c.head_dim + 1)),
                               std::numeric_limits<float>::quiet_NaN());
  const SplitKvWorkspace split{workspace.data(), workspace.data() + plan.num_splits * rows * c.head_dim,
                               plan.num_splits, plan.keys_per_split};
  emu::launch({static_cast<unsigned>(ctas * plan.num_splits), 1, 1}, {kForwardThreads, 1, 1}, shared, shared_size,
              [&] { attention_forward_kernel<kType, kBucket, true>(p, split); }, options);
  emu::launch({static_cast<unsigned>((rows + kCombineWarps - 1) / kCombineWarps), 1, 1}, {kCombineWarps * 32, 1, 1},
              shared, 0, [&] { attention_splitkv_combine_kernel<kType>(p, split); }, options);
}

template <ElementType kType>
void dispatch_bucket(int bucket, const Problem& pr, Result& r, const emu::Options& options) {
  switch (bucket) {
    case 32: return run_forward<kType, 32>(pr, r, options);
    case 64: return run_forward<kType, 64>(pr, r, options);
    case 96: return run_forward<kType, 96>(pr, r, options);
    case 128: return run_forward<kType, 128>(pr, r, options);
    case 160: return run_forward<kType, 160>(pr, r, options);
    case 192: return run_forward<kType, 192>(pr, r, options);
    case 224: return run_forward<kType, 224>(pr, r, options);
    case 256: return run_forward<kType, 256>(pr, r, options);
    default: emu::fail("no bucket");
  }
}

Result run(const Problem& pr, const emu::Options& options) {
  const Case& c = pr.c;
  const size_t rows = static_cast<size_t>(c.batch) * c.heads_q * c.len_q;
  Result r{Buffer(rows * static_cast<size_t>(c.head_dim)), std::vector<float>(rows)};
  // Poison the outputs: every element must be written.
  std::memset(r.out.data(), 0xFF, rows * static_cast<size_t>(c.head_dim) * 2);
  std::fill(r.lse.begin(), r.lse.end(), std::numeric_limits<float>::quiet_NaN());
  const int bucket = head_dim_bucket(c.head_dim);
  if (c.dtype == ElementType::kFloat16) {
    dispatch_bucket<ElementType::kFloat16>(bucket, pr, r, options);
  } else {
    dispatch_bucket<ElementType::kBFloat16>(bucket, pr, r, options);
  }
  return r;
}

// The kernels round P to the dtype before P V and the output once; fp32 accumulation otherwise.
bool check(const Problem& pr, const Result& r, std::string& why) {
  const Case& c = pr.c;
  const double unit = c.dtype == ElementType::kFloat16 ? 1.0 / 1024 : 1.0 / 128;
  const size_t rows = pr.ref_lse.size();
  double max_err = 0, max_ref = 0, max_lse_err = 0;
  for (size_t row = 0; row < rows; ++row) {
    const double ref_lse = pr.ref_lse[row];
    const float lse = r.lse[row];
    if (std::isinf(ref_lse)) {
      if (!(std::isinf(lse) && lse > 0)) {
        why = "row " + std::to_string(row) + " sees no key: lse " + std::to_string(lse) + ", expected +inf";
        return false;
      }
    } else {
      if (!std::isfinite(lse)) {
        why = "row " + std::to_string(row) + ": lse " + std::to_string(lse) + ", expected " + std::to_string(ref_lse);
        return false;
      }
      max_lse_err = std::max(max_lse_err, std::fabs(lse - ref_lse) / std::max(1.0, std::fabs(ref_lse)));
    }
    for (int d = 0; d < c.head_dim; ++d) {
      const size_t index = row * static_cast<size_t>(c.head_dim) + static_cast<size_t>(d);
      const double out = to_double(c.dtype, r.out.data()[index]);
      if (std::isinf(ref_lse) && out != 0.0) {
        why = "row " + std::to_string(row) + " sees no key but its output is " + std::to_string(out);
        return false;
      }
      if (!std::isfinite(out)) {
        why = "non-finite output at row " + std::to_string(row) + " col " + std::to_string(d);
        return false;
      }
      max_err = std::max(max_err, std::fabs(out - pr.ref_out[index]));
      max_ref = std::max(max_ref, std::fabs(pr.ref_out[index]));
    }
  }
  // Output rounding (half a unit of the largest value) plus P rounded to the dtype (relative
  // half unit per weight, summed over keys of unit-variance values: a few units at most).
  const double bound = 4 * unit * std::max(1.0, max_ref);
  char text[200];
  std::snprintf(text, sizeof text, "max |out - ref| %.3g (bound %.3g), max rel lse error %.3g, splits %d", max_err,
                bound, max_lse_err, r.num_splits);
  why = text;
  return max_err <= bound && max_lse_err <= 2e-6;
}

bool bitwise_equal(const Result& a, const Result& b, size_t out_elements) {
  return std::memcmp(a.out.data(), b.out.data(), out_elements * 2) == 0 &&
         std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * sizeof(float)) == 0;
}

std::vector<Case> cases() {
  const auto f16 = ElementType::kFloat16;
  const auto bf16 = ElementType::kBFloat16;
  std::vector<Case> out;
  // Every bucket, head dims at and below their bucket, odd lengths (padding of the last tiles).
  for (int d : {8, 32, 40, 64, 72, 96, 128, 136, 160, 192, 200, 224, 256}) {
    out.push_back({"bucket_d" + std::to_string(d), d % 16 == 0 ? f16 : bf16, 1, 2, 2, 37, 45, d, 0, Mask::kNone, 0,
                   false, false});
  }
  // Many key tiles: the pipeline's slots wrap around (3 stages at d <= 64, 2 above).
  out.push_back({"long_keys_d32", f16, 1, 1, 1, 50, 400, 32, 0, Mask::kNone, 0, false, false});
  out.push_back({"long_keys_d256", bf16, 1, 1, 1, 20, 300, 256, 0, Mask::kNone, 0, false, false});
  // Two query tiles (the second mostly padding: warps without rows skip the products).
  out.push_back({"two_query_tiles_d128", bf16, 1, 1, 1, 150, 70, 128, 1, Mask::kNone, 0, false, false});
  out.push_back({"two_query_tiles_d64", f16, 1, 1, 1, 140, 100, 64, 0, Mask::kNone, 0, false, false});
  // Causal alignments with Lq < Lk and Lq > Lk (bottom-right leaves the first rows empty).
  for (int causal : {1, 2}) {
    out.push_back({"causal" + std::to_string(causal) + "_short_q", f16, 1, 2, 2, 33, 97, 64, causal, Mask::kNone, 0,
                   false, false});
    out.push_back({"causal" + std::to_string(causal) + "_long_q", bf16, 1, 2, 2, 81, 40, 160, causal, Mask::kNone, 0,
                   false, false});
  }
  out.push_back({"gqa_permuted", f16, 2, 4, 2, 29, 53, 96, 1, Mask::kNone, 0, true, false});
  out.push_back({"key_padding", bf16, 2, 2, 1, 21, 70, 64, 0, Mask::kKeyPadding, 0, false, false});
  out.push_back({"additive_transposed", f16, 1, 2, 2, 45, 66, 32, 2, Mask::kAdditiveTransposed, 0, false, false});
  out.push_back({"bool_empty_rows", f16, 1, 2, 2, 30, 41, 192, 0, Mask::kBoolWithEmptyRows, 0, false, false});
  out.push_back({"dropout_causal", bf16, 1, 2, 1, 40, 75, 64, 1, Mask::kNone, 0.3, false, false});
  out.push_back({"dropout_mask_d256", f16, 1, 1, 1, 19, 50, 256, 0, Mask::kKeyPadding, 0.2, true, false});
  // Split-KV: decoding one row over many keys, and a few rows with causal, dropout and a mask.
  out.push_back({"split_decode_d64", f16, 1, 2, 1, 1, 600, 64, 0, Mask::kNone, 0, false, true});
  out.push_back({"split_decode_d128_bf16", bf16, 1, 1, 1, 1, 517, 128, 2, Mask::kNone, 0, true, true});
  out.push_back({"split_causal_dropout", f16, 1, 2, 2, 9, 700, 32, 2, Mask::kKeyPadding, 0.25, false, true});
  out.push_back({"split_empty_rows", bf16, 1, 1, 1, 40, 300, 160, 2, Mask::kBoolWithEmptyRows, 0, false, true});
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const uint64_t seed = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 2024;
  const std::string filter = argc > 2 ? argv[2] : "";
  int failures = 0, ran = 0;
  for (const Case& c : cases()) {
    if (!filter.empty() && c.name.find(filter) == std::string::npos) continue;
    std::mt19937_64 rng(seed ^ std::hash<std::string>{}(c.name));
    const Problem problem(c, rng);
    const Result first = run(problem, emu::Options{emu::CopyTiming::kAtWait, seed + 1});
    const Result second = run(problem, emu::Options{emu::CopyTiming::kAtIssue, seed + 2});
    std::string why;
    const bool accurate = check(problem, first, why);
    const size_t out_elements = problem.ref_out.size();
    const bool repeatable = bitwise_equal(first, second, out_elements);
    if (c.split && first.num_splits < 2) why += " [expected a split]";
    const bool ok = accurate && repeatable && (!c.split || first.num_splits >= 2);
    std::printf("%-28s %s  %s%s\n", c.name.c_str(), ok ? "ok  " : "FAIL", why.c_str(),
                repeatable ? "" : " [differs across schedules]");
    failures += ok ? 0 : 1;
    ++ran;
  }
  if (failures != 0) {
    std::printf("%d of %d cases failed\n", failures, ran);
    return 1;
  }
  std::printf("all cases passed (%d)\n", ran);
  return 0;
}

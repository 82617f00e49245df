// Runs the CUDA attention backward kernels (csrc/cuda/attention/backward_*.cuh) on the CPU under
// the SIMT emulator (tests/cuda_host/emulation) and compares grad_q, grad_k, grad_v with a
// float64 reference of the contract (csrc/schema/attention.cpp), on random problems covering
// every head-dim bucket, both dtypes, GQA, causal modes, masks (broadcast and transposed
// strides), dropout, strided inputs, padding of the last tiles, and rows that see no key.
//
// Every case runs the atomic path and the deterministic path (different thread schedules, block
// orders and cp.async timings); the deterministic path runs twice more and must agree bitwise.
// Build and run: tests/cuda_host/attention_backward/run.sh
#include <cuda_runtime.h>  // the emulator's stand-in (tests/cuda_host/emulation)

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
#include "cuda/attention/backward_config.h"
#include "cuda/attention/backward_dq_kernel.cuh"
#include "cuda/attention/backward_kernel.cuh"
#include "cuda/attention/backward_preprocess.cuh"

namespace bigkern::cuda_attention {
// The kernels' `extern __shared__` array: one block runs at a time.
alignas(16) unsigned char shared_bytes[kBackwardMaxSharedBytes];
}  // namespace bigkern::cuda_attention

namespace {

using namespace bigkern::cuda_attention;
using namespace bigkern::cuda_attention::emulated;

enum class Mask { kNone, kKeyPadding, kBoolPerHead, kAdditiveTransposed };

struct Case {
  std::string name;
  ElementType dtype;
  int batch, heads_q, heads_kv, len_q, len_k, head_dim;
  int causal;
  Mask mask;
  double dropout_p;
  bool permuted;  // q, k, v, grad_out stored (B, L, H, D): strided head/row dims
};

struct Problem {
  const Case& c;
  Operand q, k, v, grad_out;
  // attn_mask: bool bytes or additive elements, viewed (B, Hq, Lq, Lk) through mask_layout.
  std::vector<unsigned char> mask_bool;
  Buffer mask_additive{1};
  Layout mask_layout{};
  // The forward's results as the kernels receive them: out rounded to the dtype, lse float32.
  Buffer out;
  std::vector<float> lse;
  // float64 reference gradients, (B, H, L, D) contiguous.
  std::vector<double> ref_dq, ref_dk, ref_dv;

  Problem(const Case& cs, std::mt19937_64& rng)
      : c(cs),
        q(make_layout(cs.batch, cs.heads_q, cs.len_q, cs.head_dim, cs.permuted), cs.dtype, rng, 1.0),
        k(make_layout(cs.batch, cs.heads_kv, cs.len_k, cs.head_dim, cs.permuted), cs.dtype, rng, 1.0),
        v(make_layout(cs.batch, cs.heads_kv, cs.len_k, cs.head_dim, cs.permuted), cs.dtype, rng, 1.0),
        grad_out(make_layout(cs.batch, cs.heads_q, cs.len_q, cs.head_dim, cs.permuted), cs.dtype, rng, 1.0),
        out(static_cast<size_t>(cs.batch) * cs.heads_q * cs.len_q * cs.head_dim) {
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
      case Mask::kBoolPerHead:  // full (B, Hq, Lq, Lk); every fifth row sees no key at all
        mask_bool.resize(static_cast<size_t>(B * H * Lq * Lk));
        mask_layout = {{B, H, Lq, Lk}, {H * Lq * Lk, Lq * Lk, Lk, 1}};
        for (int64_t b = 0; b < B; ++b)
          for (int64_t h = 0; h < H; ++h)
            for (int64_t i = 0; i < Lq; ++i)
              for (int64_t j = 0; j < Lk; ++j)
                mask_bool[static_cast<size_t>(mask_layout.offset(b, h, i, j))] = i % 5 != 3 && uniform(rng) < 0.7;
        break;
      case Mask::kAdditiveTransposed: {  // (Lq, Lk) stored as (Lk, Lq): strides (0, 0, 1, Lq)
        mask_additive = Buffer(static_cast<size_t>(Lq * Lk));
        mask_layout = {{B, H, Lq, Lk}, {0, 0, 1, Lq}};
        std::normal_distribution<double> normal(0.0, 2.0);
        for (int64_t i = 0; i < Lq; ++i)
          for (int64_t j = 0; j < Lk; ++j) {
            const double value = uniform(rng) < 0.1 ? -INFINITY : normal(rng);
            mask_additive.data()[mask_layout.offset(0, 0, i, j)] = from_double(c.dtype, value);
          }
        break;
      }
    }
  }

  double scale() const { return 1.0 / std::sqrt(static_cast<double>(c.head_dim)) * 1.25; }
  uint64_t seed() const { return 0x123456789ABCDEF0ull; }
  uint32_t offset() const { return 77; }

  // The dropout decision of the contract, written out here from csrc/common/philox.h's comment.
  bool kept(int64_t b, int64_t h, int64_t i, int64_t j) const {
    const bigkern::Philox4 r = bigkern::philox4x32_10(
        static_cast<uint32_t>(j >> 2), static_cast<uint32_t>(i), static_cast<uint32_t>(b * c.heads_q + h), offset(),
        static_cast<uint32_t>(seed() & 0xFFFFFFFFu), static_cast<uint32_t>(seed() >> 32));
    return r.x[j & 3] >= bigkern::dropout_threshold(c.dropout_p);
  }

  void reference() {
    const int64_t B = c.batch, H = c.heads_q, Lq = c.len_q, Lk = c.len_k, D = c.head_dim;
    const int64_t group = c.heads_q / c.heads_kv;
    const double keep_scale = 1.0 / (1.0 - c.dropout_p);
    ref_dq.assign(static_cast<size_t>(B * H * Lq * D), 0.0);
    ref_dk.assign(static_cast<size_t>(B * c.heads_kv * Lk * D), 0.0);
    ref_dv.assign(ref_dk.size(), 0.0);
    lse.assign(static_cast<size_t>(B * H * Lq), 0.f);
    std::vector<double> s(static_cast<size_t>(Lq * Lk)), p(s.size()), z(s.size());
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        const int64_t kvh = h / group;
        for (int64_t i = 0; i < Lq; ++i) {
          double row_max = -INFINITY;
          for (int64_t j = 0; j < Lk; ++j) {
            double x = 0;
            for (int64_t d = 0; d < D; ++d) x += q.at(c.dtype, b, h, i, d) * k.at(c.dtype, b, kvh, j, d);
            x *= scale();
            bool visible = c.causal == 0 || j <= i + (c.causal == 2 ? Lk - Lq : 0);
            if (c.mask == Mask::kKeyPadding || c.mask == Mask::kBoolPerHead) {
              visible = visible && mask_bool[static_cast<size_t>(mask_layout.offset(b, h, i, j))];
            }
            if (c.mask == Mask::kAdditiveTransposed) {
              x += to_double(c.dtype, mask_additive.data()[mask_layout.offset(b, h, i, j)]);
            }
            s[static_cast<size_t>(i * Lk + j)] = visible ? x : -INFINITY;
            row_max = std::max(row_max, s[static_cast<size_t>(i * Lk + j)]);
          }
          double total = 0;
          for (int64_t j = 0; j < Lk; ++j) {
            const double e = row_max == -INFINITY ? 0.0 : std::exp(s[static_cast<size_t>(i * Lk + j)] - row_max);
            p[static_cast<size_t>(i * Lk + j)] = e;
            total += e;
          }
          for (int64_t j = 0; j < Lk; ++j) {
            auto& pij = p[static_cast<size_t>(i * Lk + j)];
            pij = row_max == -INFINITY ? 0.0 : pij / total;
            z[static_cast<size_t>(i * Lk + j)] = c.dropout_p > 0 ? (kept(b, h, i, j) ? keep_scale : 0.0) : 1.0;
          }
          lse[static_cast<size_t>((b * H + h) * Lq + i)] =
              row_max == -INFINITY ? INFINITY : static_cast<float>(row_max + std::log(total));
          for (int64_t d = 0; d < D; ++d) {
            double o = 0;
            for (int64_t j = 0; j < Lk; ++j) {
              o += p[static_cast<size_t>(i * Lk + j)] * z[static_cast<size_t>(i * Lk + j)] * v.at(c.dtype, b, kvh, j, d);
            }
            out.data()[((b * H + h) * Lq + i) * D + d] = from_double(c.dtype, o);
          }
        }
        // Backward: dV = (P Z)^T dO, dP = (dO V^T) Z, dS = P (dP - rowsum(P dP)), dQ = scale dS K,
        // dK = scale dS^T Q.
        for (int64_t i = 0; i < Lq; ++i) {
          std::vector<double> dp(static_cast<size_t>(Lk));
          double delta = 0;
          for (int64_t j = 0; j < Lk; ++j) {
            double x = 0;
            for (int64_t d = 0; d < D; ++d) x += grad_out.at(c.dtype, b, h, i, d) * v.at(c.dtype, b, kvh, j, d);
            dp[static_cast<size_t>(j)] = x * z[static_cast<size_t>(i * Lk + j)];
            delta += p[static_cast<size_t>(i * Lk + j)] * dp[static_cast<size_t>(j)];
          }
          for (int64_t j = 0; j < Lk; ++j) {
            const double pij = p[static_cast<size_t>(i * Lk + j)];
            const double ds = pij * (dp[static_cast<size_t>(j)] - delta);
            const double weight = pij * z[static_cast<size_t>(i * Lk + j)];
            for (int64_t d = 0; d < D; ++d) {
              ref_dq[static_cast<size_t>(((b * H + h) * Lq + i) * D + d)] += scale() * ds * k.at(c.dtype, b, kvh, j, d);
              ref_dk[static_cast<size_t>(((b * c.heads_kv + kvh) * Lk + j) * D + d)] +=
                  scale() * ds * q.at(c.dtype, b, h, i, d);
              ref_dv[static_cast<size_t>(((b * c.heads_kv + kvh) * Lk + j) * D + d)] +=
                  weight * grad_out.at(c.dtype, b, h, i, d);
            }
          }
        }
      }
    }
  }

  // The kernel parameters, as attention_backward.cpp fills them.
  AttentionParams params() {
    AttentionParams p{};
    p.q = q.buffer.data();
    p.k = k.buffer.data();
    p.v = v.buffer.data();
    p.q_strides = {q.layout.stride[0], q.layout.stride[1], q.layout.stride[2]};
    p.k_strides = {k.layout.stride[0], k.layout.stride[1], k.layout.stride[2]};
    p.v_strides = {v.layout.stride[0], v.layout.stride[1], v.layout.stride[2]};
    p.out = out.data();
    p.out_strides = {int64_t{c.heads_q} * c.len_q * c.head_dim, int64_t{c.len_q} * c.head_dim, c.head_dim};
    p.lse = lse.data();
    p.batch = c.batch;
    p.heads_q = c.heads_q;
    p.heads_kv = c.heads_kv;
    p.kv_group = c.heads_q / c.heads_kv;
    p.len_q = c.len_q;
    p.len_k = c.len_k;
    p.head_dim = c.head_dim;
    p.scale = static_cast<float>(scale());
    p.scale_log2 = static_cast<float>(scale() * 1.4426950408889634);
    p.causal = c.causal;
    p.causal_shift = c.causal == kCausalBottomRight ? c.len_k - c.len_q : 0;
    p.mask_kind = MaskKind::kNone;
    if (c.mask != Mask::kNone) {
      const bool is_bool = c.mask != Mask::kAdditiveTransposed;
      p.mask_kind = is_bool ? MaskKind::kBool : MaskKind::kAdditive;
      p.mask = is_bool ? static_cast<const void*>(mask_bool.data()) : static_cast<const void*>(mask_additive.data());
      p.mask_stride_batch = mask_layout.stride[0];
      p.mask_stride_head = mask_layout.stride[1];
      p.mask_stride_row = mask_layout.stride[2];
      p.mask_stride_col = mask_layout.stride[3];
    }
    p.has_dropout = c.dropout_p > 0;
    p.dropout_threshold = bigkern::dropout_threshold(c.dropout_p);
    p.dropout_rescale = static_cast<float>(1.0 / (1.0 - c.dropout_p));
    p.seed_lo = static_cast<uint32_t>(seed() & 0xFFFFFFFFu);
    p.seed_hi = static_cast<uint32_t>(seed() >> 32);
    p.philox_offset = offset();
    return p;
  }
};

// The outputs start as NaN (all bits set), like at::empty's garbage: an element the kernels
// forget to write fails the comparison.
struct Gradients {
  Buffer dq, dk, dv;
  explicit Gradients(const Case& c)
      : dq(static_cast<size_t>(c.batch) * c.heads_q * c.len_q * c.head_dim),
        dk(static_cast<size_t>(c.batch) * c.heads_kv * c.len_k * c.head_dim),
        dv(static_cast<size_t>(c.batch) * c.heads_kv * c.len_k * c.head_dim) {
    for (Buffer* b : {&dq, &dk, &dv}) std::memset(b->storage.data(), 0xFF, b->storage.size() * sizeof(uint4));
  }
};

unsigned int blocks_for(int64_t items, int64_t per_block) {
  return static_cast<unsigned int>(std::min<int64_t>((items + per_block - 1) / per_block, kMaxPreprocessBlocks));
}

// The launch sequence of attention_backward.cpp, each kernel under the emulator.
template <ElementType kType, int kBucket>
void run_backward(Problem& problem, Gradients& grads, bool deterministic, const emu::Options& options) {
  const Case& c = problem.c;
  const AttentionParams p = problem.params();
  std::vector<float> delta(static_cast<size_t>(c.batch) * c.heads_q * c.len_q, std::numeric_limits<float>::quiet_NaN());
  std::vector<float> dq_accum(deterministic ? 0 : delta.size() * c.head_dim + 4);
  BackwardBuffers g{};
  g.grad_out = problem.grad_out.buffer.data();
  g.grad_out_strides = {problem.grad_out.layout.stride[0], problem.grad_out.layout.stride[1],
                        problem.grad_out.layout.stride[2]};
  g.delta = delta.data();
  // float4 access needs 16-byte alignment; vector<float> data is 16-byte aligned by glibc malloc.
  g.dq_accum = deterministic ? nullptr : dq_accum.data();
  std::fill(dq_accum.begin(), dq_accum.end(), std::numeric_limits<float>::quiet_NaN());  // preprocess must zero it
  g.grad_q = grads.dq.data();
  g.grad_k = grads.dk.data();
  g.grad_v = grads.dv.data();
  auto* shared = bigkern::cuda_attention::shared_bytes;

  const int64_t rows = static_cast<int64_t>(c.batch) * c.heads_q * c.len_q;
  emu::launch({blocks_for(rows, kRowsPerBlock), 1, 1}, {kPreprocessThreads, 1, 1}, shared, 0,
              [&] { attention_backward_preprocess_kernel<kType>(p, g, rows); }, options);
  const int64_t key_tiles = (c.len_k + backward_tile(kBucket).block_n - 1) / backward_tile(kBucket).block_n;
  emu::launch({static_cast<unsigned>(key_tiles * c.heads_kv * c.batch), 1, 1},
              {static_cast<unsigned>(backward_threads(kBucket)), 1, 1}, shared, backward_shared_bytes(kBucket),
              [&] { attention_backward_kernel<kType, kBucket>(p, g); }, options);
  if (deterministic) {
    const int64_t q_tiles = (c.len_q + kBackwardDqBlockM - 1) / kBackwardDqBlockM;
    emu::launch({static_cast<unsigned>(q_tiles * c.heads_q * c.batch), 1, 1}, {kBackwardDqThreads, 1, 1}, shared,
                backward_dq_shared_bytes(kBucket), [&] { attention_backward_dq_kernel<kType, kBucket>(p, g); },
                options);
  } else {
    const int64_t vectors = rows * c.head_dim / 4;
    emu::launch({blocks_for(vectors, kPreprocessThreads), 1, 1}, {kPreprocessThreads, 1, 1}, shared, 0,
                [&] {
                  attention_backward_convert_dq_kernel<kType>(g.dq_accum, static_cast<element_t<kType>*>(g.grad_q),
                                                              vectors, p.scale);
                },
                options);
  }
}

template <ElementType kType>
void dispatch(int bucket, Problem& problem, Gradients& grads, bool deterministic, const emu::Options& options) {
  switch (bucket) {
    case 32: return run_backward<kType, 32>(problem, grads, deterministic, options);
    case 64: return run_backward<kType, 64>(problem, grads, deterministic, options);
    case 96: return run_backward<kType, 96>(problem, grads, deterministic, options);
    case 128: return run_backward<kType, 128>(problem, grads, deterministic, options);
    case 160: return run_backward<kType, 160>(problem, grads, deterministic, options);
    case 192: return run_backward<kType, 192>(problem, grads, deterministic, options);
    case 224: return run_backward<kType, 224>(problem, grads, deterministic, options);
    default: return run_backward<kType, 256>(problem, grads, deterministic, options);
  }
}

int bucket_of(int head_dim) {
  for (int bucket : {32, 64, 96, 128, 160, 192, 224, 256}) {
    if (head_dim <= bucket) return bucket;
  }
  return 0;
}

// max |got - ref| / max |ref| (NaN anywhere counts as failure).
double relative_error(ElementType t, Buffer& got, const std::vector<double>& ref, double& ref_max) {
  double worst = 0;
  ref_max = 0;
  for (size_t i = 0; i < ref.size(); ++i) ref_max = std::max(ref_max, std::fabs(ref[i]));
  for (size_t i = 0; i < ref.size(); ++i) {
    const double x = to_double(t, got.data()[i]);
    if (!std::isfinite(x)) return INFINITY;
    worst = std::max(worst, std::fabs(x - ref[i]));
  }
  return worst / std::max(ref_max, 1e-30);
}

bool same_bits(Buffer& a, Buffer& b, size_t elements) {
  return std::memcmp(a.data(), b.data(), elements * 2) == 0;
}

bool check_case(const Case& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Problem problem(c, rng);
  const int bucket = bucket_of(c.head_dim);
  // fp32 accumulation of products rounded to the dtype: errors of a few units of the dtype's
  // resolution relative to the largest gradient; layout or masking mistakes are O(1).
  const double tolerance = c.dtype == ElementType::kFloat16 ? 4e-3 : 3e-2;
  bool ok = true;
  auto run = [&](bool deterministic, emu::CopyTiming timing, uint64_t schedule) {
    Gradients g(c);
    const emu::Options options{timing, schedule};
    if (c.dtype == ElementType::kFloat16) {
      dispatch<ElementType::kFloat16>(bucket, problem, g, deterministic, options);
    } else {
      dispatch<ElementType::kBFloat16>(bucket, problem, g, deterministic, options);
    }
    return g;
  };
  auto report = [&](const char* path, Gradients& g) {
    double mq, mk, mv;
    const double eq = relative_error(c.dtype, g.dq, problem.ref_dq, mq);
    const double ek = relative_error(c.dtype, g.dk, problem.ref_dk, mk);
    const double ev = relative_error(c.dtype, g.dv, problem.ref_dv, mv);
    const bool pass = eq <= tolerance && ek <= tolerance && ev <= tolerance;
    std::printf("  %-13s dq %.2e  dk %.2e  dv %.2e  (max |ref| %.2g %.2g %.2g)  %s\n", path, eq, ek, ev, mq, mk, mv,
                pass ? "ok" : "FAIL");
    ok = ok && pass;
  };
  std::printf("%s\n", c.name.c_str());
  Gradients atomic = run(false, emu::CopyTiming::kAtWait, seed + 1);
  report("atomic", atomic);
  Gradients det1 = run(true, emu::CopyTiming::kAtIssue, seed + 2);
  report("deterministic", det1);
  Gradients det2 = run(true, emu::CopyTiming::kAtWait, seed + 3);
  const size_t nq = problem.ref_dq.size(), nk = problem.ref_dk.size();
  const bool bitwise = same_bits(det1.dq, det2.dq, nq) && same_bits(det1.dk, det2.dk, nk) &&
                       same_bits(det1.dv, det2.dv, nk);
  std::printf("  deterministic rerun (other schedule, block order, copy timing): %s\n",
              bitwise ? "bitwise equal" : "DIFFERS");
  return ok && bitwise;
}

}  // namespace

int main(int argc, char** argv) {
  using E = ElementType;
  const E f16 = E::kFloat16, bf16 = E::kBFloat16;
  // name, dtype, B, Hq, Hkv, Lq, Lk, D, causal, mask, dropout, permuted
  const std::vector<Case> cases = {
      {"d32 f16 plain, Lq/Lk off the tiles", f16, 1, 2, 2, 70, 90, 32, 0, Mask::kNone, 0.0, false},
      {"d64 bf16 GQA 4:2, causal top-left, strided", bf16, 2, 4, 2, 75, 75, 64, 1, Mask::kNone, 0.0, true},
      {"d40 (bucket 64) f16 key padding mask", f16, 2, 2, 1, 33, 100, 40, 0, Mask::kKeyPadding, 0.0, false},
      {"d96 f16 causal bottom-right Lq > Lk (empty rows)", f16, 1, 2, 1, 90, 40, 96, 2, Mask::kNone, 0.0, false},
      {"d128 f16 dropout 0.3, causal bottom-right Lq < Lk", f16, 1, 2, 2, 45, 110, 128, 2, Mask::kNone, 0.3, false},
      {"d128 bf16 bool mask per head (rows with no key)", bf16, 1, 3, 1, 50, 70, 128, 0, Mask::kBoolPerHead, 0.0, true},
      {"d160 f16 additive mask, transposed strides", f16, 1, 2, 2, 40, 80, 160, 0, Mask::kAdditiveTransposed, 0.0,
       false},
      {"d192 bf16 GQA 2:1 causal top-left dropout 0.2", bf16, 1, 2, 1, 66, 66, 192, 1, Mask::kNone, 0.2, false},
      {"d200 (bucket 224) f16 strided", f16, 1, 2, 2, 35, 70, 200, 0, Mask::kNone, 0.0, true},
      {"d256 f16 causal top-left, key padding", f16, 1, 2, 1, 40, 72, 256, 1, Mask::kKeyPadding, 0.0, false},
      {"d256 bf16 dropout 0.1 additive mask", bf16, 1, 1, 1, 20, 40, 256, 0, Mask::kAdditiveTransposed, 0.1, false},
      {"d64 f16 dropout 0.5 bool mask GQA 3:1", f16, 1, 3, 1, 64, 64, 64, 0, Mask::kBoolPerHead, 0.5, false},
      {"d32 bf16 causal top-left Lk >> Lq (key tiles no query sees)", bf16, 2, 1, 1, 30, 200, 32, 1, Mask::kNone, 0.0,
       false},
  };
  const uint64_t seed = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 2024;
  int failures = 0;
  for (const Case& c : cases) {
    if (argc > 2 && c.name.find(argv[2]) == std::string::npos) continue;
    if (!check_case(c, seed)) ++failures;
  }
  std::printf(failures == 0 ? "all cases passed\n" : "%d case(s) FAILED\n", failures);
  return failures == 0 ? 0 : 1;
}

// The OBS scan on CPU: a whole window of the recurrence in C++, forward and backward.
//
// The math is kernels/step.py's, step for step; kernels/README.md derives the backward. Axis
// letters: B streams, T steps, N nodes, K = k_max, M = m_active, H write-module width, Dv value
// width, O write-module outputs (k logit + G gates), W writes per step, R = K + M rows read.
//
// Both ops are functional (they change no input), so torch.library can register autograd for
// them. The state is read as a *base* (the state at the window's start: a dense [B, N, N]
// tensor or one [N, N] shared by all streams, or the sparse store's S_0 plus its stored
// changes) plus the window's own changes, which the op keeps itself (DirectRows or
// HashedChanges below). The caller applies the returned log of writes (pos, vals) to its store
// after the op.
//
// The backward never rebuilds the state. The gradient needs the state only where a step read
// it at its active columns (the R x M grid); the forward logs those values, and dL/dS is kept
// only where the window wrote (SlotGrad below). Backward memory is O(T (W + R M)) per stream, no
// copy of S. Streams are independent and run in parallel (at::parallel_for); nothing in the
// time loop talks to Python or synchronises.
//
// Where the window's changes live, per stream (chosen by N, the same way in both passes):
// - direct, when an N x N scratch of T and one of int32 fit in `direct_max_bytes`: the rows the
//   window touched, whole, in a per-thread N x N scratch, with their squared norms kept as they
//   change, and the entries' slot numbers in another (both kept between calls, so they are not
//   faulted in again); nothing is hashed;
// - hashed, above that (large N, the sparse store): an open-addressing map from entry to a
//   "slot" with per-row lists of slots.
// Either way every entry the window wrote has a slot number, and the backward keeps dL/dS in a
// small array by slot.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <tuple>
#include <utility>
#include <vector>

namespace {

using i64 = int64_t;
using u64 = uint64_t;

// ---- sizes and switches (StepConfig) -----------------------------------------------------------
struct Dims {
  i64 B, T, N, K, M, H, Dv, O, k_min;
  bool spread, reverse, row_norm, chain;
  double gate_scale, tau, circuit_direct, persist, eps;
  double bound = 0.0;   // state_bound: the soft bound c on |S| (0: plain additive writes)
  i64 G() const { return O - 1; }
  i64 R() const { return K + M; }
  // writes per step, in WritePlan's order: intra K x K, assoc M x K, chain K x K, reverse K x M
  i64 off_assoc() const { return K * K; }
  i64 off_chain() const { return K * K + M * K; }
  i64 off_reverse() const { return off_chain() + (chain ? K * K : 0); }
  i64 W() const { return off_reverse() + (reverse ? K * M : 0); }
};

// ---- the sparse store's hash-generated S_0 (model/sparse_state.py: hash_normal, s0_values) ----
constexpr u64 kMask32 = 0xFFFFFFFFull;
inline u64 mix32(u64 x) {
  x = (((x >> 16) ^ x) * 0x45D9F3Bull) & kMask32;
  x = (((x >> 16) ^ x) * 0x45D9F3Bull) & kMask32;
  return (x >> 16) ^ x;
}

struct HashS0 {
  u64 sa = 0, sb = 0;
  float std = 0.f;
  HashS0() = default;
  HashS0(i64 seed, double std_) : std(static_cast<float>(std_)) {
    sa = mix32(mix32(static_cast<u64>((2 * seed + 1) & static_cast<i64>(kMask32))));
    sb = mix32(mix32(static_cast<u64>((2 * seed + 2) & static_cast<i64>(kMask32))));
  }
  // std * z(seed, row, col), rounded through float32 as the Python version does
  template <typename T>
  T value(u64 ra, u64 rb, u64 col) const {
    const u64 ha = mix32(ra ^ col), hb = mix32(rb ^ col);
    const double u1 = (static_cast<double>(ha) + 0.5) * 0x1p-32;
    const double u2 = static_cast<double>(hb) * 0x1p-32;
    const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos((2.0 * M_PI) * u2);
    return static_cast<T>(static_cast<float>(z) * std);
  }
  u64 row_a(u64 row) const { return mix32((row ^ sa) & kMask32); }
  u64 row_b(u64 row) const { return mix32((row ^ sb) & kMask32); }
};

// ---- the state at the window's start ----------------------------------------------------------
template <typename T>
struct Base {
  i64 N = 0;
  const T* dense = nullptr;   // [B, N, N] (or one [N, N] shared by every stream), or null: sparse
  i64 dense_stride = 0;       // N * N, or 0 when shared
  const T* table = nullptr;   // sparse: the shared S_0 table [N, N], or null
  const T* row_sq = nullptr;  // sparse: the table's squared row norms [N], or null
  bool hashed = false;        // sparse without a table: S_0 hashed on every read (std > 0)
  HashS0 hash;
  const i64* keys[2] = {nullptr, nullptr};  // sparse: stored changes, two sorted runs
  const T* kvals[2] = {nullptr, nullptr};
  i64 nkeys[2] = {0, 0};

  bool has_s0() const { return dense || table || hashed; }

  // The S_0 (or dense) part of a row: a pointer into memory, or `buf` filled by hashing.
  const T* s0_row(i64 b, i64 row, T* buf) const {
    if (dense) return dense + b * dense_stride + row * N;
    if (table) return table + row * N;
    const u64 ra = hash.row_a(static_cast<u64>(row)), rb = hash.row_b(static_cast<u64>(row));
    for (i64 n = 0; n < N; ++n) buf[n] = hash.value<T>(ra, rb, static_cast<u64>(n));
    return buf;
  }
  T s0_value(i64 b, i64 row, i64 col) const {
    if (dense) return dense[b * dense_stride + row * N + col];
    if (table) return table[row * N + col];
    if (hashed) return hash.value<T>(hash.row_a(row), hash.row_b(row), static_cast<u64>(col));
    return T(0);
  }
  // f(col, value) for every stored change of (stream b, row)
  template <typename F>
  void for_stored(i64 b, i64 row, F&& f) const {
    const i64 first = (b * N + row) * N;
    for (int run = 0; run < 2; ++run) {
      if (!nkeys[run]) continue;
      const i64* k = keys[run];
      const i64* lo = std::lower_bound(k, k + nkeys[run], first);
      const i64* hi = std::lower_bound(lo, k + nkeys[run], first + N);
      for (const i64* e = lo; e < hi; ++e) f(*e - first, kvals[run][e - k]);
    }
  }
  // f(row * N + col, value) for every stored change of stream b
  template <typename F>
  void for_stream_stored(i64 b, F&& f) const {
    const i64 first = b * N * N;
    for (int run = 0; run < 2; ++run) {
      if (!nkeys[run]) continue;
      const i64* k = keys[run];
      const i64* lo = std::lower_bound(k, k + nkeys[run], first);
      const i64* hi = std::lower_bound(lo, k + nkeys[run], first + N * N);
      for (const i64* e = lo; e < hi; ++e) f(*e - first, kvals[run][e - k]);
    }
  }
  T value(i64 b, i64 row, i64 col) const {
    T v = s0_value(b, row, col);
    const i64 key = (b * N + row) * N + col;
    for (int run = 0; run < 2; ++run) {
      if (!nkeys[run]) continue;
      const i64* k = keys[run];
      const i64* e = std::lower_bound(k, k + nkeys[run], key);
      if (e != k + nkeys[run] && *e == key) v += kvals[run][e - k];
    }
    return v;
  }
};

// ---- the window's changes of one stream: entry -> slot, slot lists per row ---------------------
// ---- small math ----------------------------------------------------------------------------------
// Sums over 8 running partial sums: one running sum is a serial chain the compiler does not
// vectorise (as one sum, the row norms took half the forward's time at N = 1024).
template <typename T>
T dot(const T* a, const T* b, i64 n) {
  T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  i64 i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
  for (; i < n; ++i) acc[0] += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <typename T>
double sum_of_squares(const T* x, i64 n) {
  double acc[16] = {0};
  i64 i = 0;
  for (; i + 16 <= n; i += 16)
    for (int k = 0; k < 16; ++k) acc[k] += static_cast<double>(x[i + k]) * static_cast<double>(x[i + k]);
  for (; i < n; ++i) acc[0] += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  double s = 0;
  for (int k = 0; k < 16; ++k) s += acc[k];
  return s;
}

template <typename T>
inline T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }
template <typename T>
inline T gelu(T x) { return x * T(0.5) * (T(1) + std::erf(x * T(M_SQRT1_2))); }
template <typename T>
inline T gelu_grad(T x) {
  const T cdf = T(0.5) * (T(1) + std::erf(x * T(M_SQRT1_2)));
  const T pdf = std::exp(T(-0.5) * x * x) * T(0.5 * M_2_SQRTPI * M_SQRT1_2);
  return cdf + x * pdf;
}

// ---- the parameters used inside the recurrence (StepParams) -----------------------------------
template <typename T>
struct Params {
  const T* V;       // [N, Dv]
  const T* Wz;      // [H, Dv]
  const T* Wo;      // [O, H]
  const T* bo;      // [O]
  T beta;           // sigmoid(beta_logit)
};

// ---- the write module of one step (plan_writes), shared by forward and backward -------------
template <typename T>
struct Plan {
  std::vector<T> z, pre, hid, o, soft, mask, p, alpha, gates;
  T k_soft = 0, sig0 = 0;
  i64 k_hard = 0;
  explicit Plan(const Dims& d)
      : z(d.Dv), pre(d.H), hid(d.H), o(d.O), soft(d.K), mask(d.K), p(d.K), alpha(d.K), gates(d.G()) {}
};

// k_hard < 0: round k_soft (forward); else replay the logged count (backward)
template <typename T>
void plan_step(const Dims& d, const Params<T>& P, const T* u, const T* sig, const i64* a_prev,
               const T* w_prev, i64 k_hard, Plan<T>& pl) {
  const i64 K = d.K, H = d.H, Dv = d.Dv;
  std::fill(pl.z.begin(), pl.z.end(), T(0));
  for (i64 j = 0; j < d.M; ++j) {
    const T* v = P.V + a_prev[j] * Dv;
    for (i64 e = 0; e < Dv; ++e) pl.z[e] += w_prev[j] * v[e];
  }
  for (i64 e = 0; e < Dv; ++e) pl.z[e] /= T(K);
  for (i64 h = 0; h < H; ++h) {
    pl.pre[h] = u[h] + dot(pl.z.data(), P.Wz + h * Dv, Dv);
    pl.hid[h] = gelu(pl.pre[h]);
  }
  for (i64 i = 0; i < d.O; ++i) pl.o[i] = dot(pl.hid.data(), P.Wo + i * H, H) + P.bo[i];
  pl.sig0 = sigmoid(pl.o[0]);
  pl.k_soft = T(d.k_min) + T(K - d.k_min) * pl.sig0;
  if (k_hard < 0) {
    // torch.round: half to even, as std::nearbyint in the default rounding mode
    k_hard = std::min<i64>(K, std::max<i64>(d.k_min, static_cast<i64>(std::nearbyint(pl.k_soft))));
  }
  pl.k_hard = k_hard;
  T mx = sig[0];
  for (i64 r = 1; r < K; ++r) mx = std::max(mx, sig[r]);
  T sum = 0;
  for (i64 r = 0; r < K; ++r) { pl.p[r] = std::exp(sig[r] - mx); sum += pl.p[r]; }
  for (i64 r = 0; r < K; ++r) {
    pl.p[r] /= sum;
    pl.soft[r] = sigmoid((pl.k_soft - T(r) - T(0.5)) * T(d.tau));
    const T hard = r < k_hard ? T(1) : T(0);
    // straight-through: the value is `hard`, computed as the Python path computes it
    pl.mask[r] = (hard + pl.soft[r]) - pl.soft[r];
    pl.alpha[r] = pl.mask[r] * pl.p[r] * T(K);
  }
  for (i64 g = 0; g < d.G(); ++g) pl.gates[g] = T(d.gate_scale) * std::tanh(pl.o[g + 1]);
}

// Calls f(e, row, col, value) for every write of a step, in WritePlan's order.
template <typename T, typename F>
void for_writes(const Dims& d, const Plan<T>& pl, const i64* I, const i64* a_prev, const T* w_prev,
                const i64* i_prev, const T* alpha_prev, T cont, F&& f) {
  const i64 K = d.K, M = d.M;
  const T* al = pl.alpha.data();
  const T g_in = pl.gates[0], g_as = pl.gates[1];
  for (i64 i = 0; i < K; ++i)
    for (i64 j = 0; j < K; ++j) f(i * K + j, I[i], I[j], g_in * al[i] * al[j]);
  for (i64 j = 0; j < M; ++j)
    for (i64 k = 0; k < K; ++k) f(d.off_assoc() + j * K + k, a_prev[j], I[k], g_as * w_prev[j] * al[k]);
  if (d.chain) {
    const T gc = cont * pl.gates[2];
    for (i64 i = 0; i < K; ++i)
      for (i64 k = 0; k < K; ++k) f(d.off_chain() + i * K + k, i_prev[i], I[k], gc * alpha_prev[i] * al[k]);
  }
  if (d.reverse) {
    const T g_rev = pl.gates[3];
    for (i64 i = 0; i < K; ++i)
      for (i64 j = 0; j < M; ++j) f(d.off_reverse() + i * M + j, I[i], a_prev[j], g_rev * al[i] * w_prev[j]);
  }
}

// Spread coefficients of the rows [I_t, A_{t-1}] before row_norm's scales: [alpha, beta w] / K
template <typename T>
void read_coeffs(const Dims& d, const Params<T>& P, const Plan<T>& pl, const T* w_prev, T* coeff) {
  for (i64 r = 0; r < d.K; ++r) coeff[r] = pl.alpha[r] / T(d.K);
  for (i64 j = 0; j < d.M; ++j) coeff[d.K + j] = d.spread ? (P.beta * w_prev[j]) / T(d.K) : T(0);
}

// A_t: the M largest activations, largest first; ties go to the smaller index, and NaN counts as
// largest (as in torch.topk). Without NaN: the M-th largest of the maxima of blocks of 16 nodes is
// at most the M-th largest activation (the maxima are M distinct nodes), so every node of the
// top M is at least it; those few candidates are sorted. Two passes over N, no heap.
template <typename T>
void top_m(const T* act, i64 N, i64 M, std::vector<std::pair<T, i64>>& cand, std::vector<T>& maxima, i64* out) {
  auto better = [](const std::pair<T, i64>& x, const std::pair<T, i64>& y) {
    const bool nx = x.first != x.first, ny = y.first != y.first;
    if (nx != ny) return nx;
    if (!nx && x.first != y.first) return x.first > y.first;
    return x.second < y.second;
  };
  constexpr i64 kBlock = 16;
  maxima.clear();
  bool nan = false;
  i64 n = 0;
  for (; n + kBlock <= N; n += kBlock) {
    T mx = act[n];
    for (i64 k = 1; k < kBlock; ++k) mx = std::max(mx, act[n + k]);
    for (i64 k = 0; k < kBlock; ++k) nan |= act[n + k] != act[n + k];
    maxima.push_back(mx);
  }
  for (; n < N; ++n) { maxima.push_back(act[n]); nan |= act[n] != act[n]; }
  cand.clear();
  if (nan || static_cast<i64>(maxima.size()) < M) {
    for (i64 m = 0; m < N; ++m) cand.emplace_back(act[m], m);
  } else {
    std::nth_element(maxima.begin(), maxima.begin() + (M - 1), maxima.end(), std::greater<T>());
    const T tau = maxima[M - 1];
    for (i64 m = 0; m < N; ++m)
      if (act[m] >= tau) cand.emplace_back(act[m], m);
  }
  std::partial_sort(cand.begin(), cand.begin() + M, cand.end(), better);
  for (i64 j = 0; j < M; ++j) out[j] = cand[j].second;
}

// ---- where the window's changes live --------------------------------------------------------------
// One scratch of n values per thread and dtype, zero between uses, kept between calls.
template <typename T>
std::vector<T>& zero_scratch(i64 n) {
  thread_local std::vector<T> scratch;
  if (static_cast<i64>(scratch.size()) < n) scratch.assign(n, T(0));
  return scratch;
}

// The rows the window touched, whole: the first write to a row of a stream copies the row as it
// stands (S_0 or the dense state, plus the sparse store's stored changes) into a per-thread
// N x N scratch, and from then on the row lives there, with its squared norm kept up to date
// write by write (in double). A read row (always touched by the step's own writes first) is then
// one dense vector, and row_norm costs no pass over it. A second N x N scratch holds each
// entry's slot number (slot + 1; 0 for none), zeroed again at the stream's end.
template <typename T>
struct DirectRows {
  const Base<T>& base;
  i64 N, b = 0;
  T* val;
  int32_t* sid;
  std::vector<char> touched;
  std::vector<double> sq;
  std::vector<i64> rows_used;
  int32_t count = 0;
  explicit DirectRows(const Base<T>& base_)
      : base(base_), N(base_.N), val(zero_scratch<T>(N * N).data()), sid(zero_scratch<int32_t>(N * N).data()),
        touched(base_.N, 0), sq(base_.N, 0.0) {}

  void begin(i64 stream) { b = stream; count = 0; }
  void end(const i64* pos, i64 n) {
    for (i64 e = 0; e < n; ++e) sid[pos[e] - b * N * N] = 0;
    for (i64 r : rows_used) touched[r] = 0;
    rows_used.clear();
  }
  T* row(i64 r) {
    T* x = val + r * N;
    if (!touched[r]) {
      touched[r] = 1;
      rows_used.push_back(r);
      if (base.has_s0()) {
        const T* s0 = base.s0_row(b, r, x);          // hashing fills x itself
        if (s0 != x) std::copy_n(s0, N, x);
      } else {
        std::fill_n(x, N, T(0));
      }
      base.for_stored(b, r, [&](i64 c, T v) { x[c] += v; });
      sq[r] = sum_of_squares(x, N);
    }
    return x;
  }
  int32_t add(i64 r, i64 col, T v) {
    T* x = row(r);
    const double before = x[col];
    x[col] += v;
    sq[r] += static_cast<double>(x[col]) * x[col] - before * before;
    // branch-free: whether an entry is new is a coin toss the branch predictor loses
    int32_t& s = sid[r * N + col];
    const int32_t fresh = s == 0;
    count += fresh;
    s = fresh ? count : s;
    return s - 1;
  }
  // the entry's value, and its slot (-1: not written) when `slot` is given
  T value(i64 r, i64 col, int32_t* slot) {
    if (slot) *slot = sid[r * N + col] - 1;
    return row(r)[col];
  }
  // act += coeff * scale * (the row as it is now); returns the scale (1 without row_norm)
  T spread_row(i64 r, T coeff, bool row_norm, T* act, T*) {
    const T* x = row(r);
    const T scale = row_norm ? T(1) / (T(1) + static_cast<T>(std::sqrt(std::max(sq[r], 0.0)))) : T(1);
    const T cr = coeff * scale;
    if (cr != T(0)) for (i64 n = 0; n < N; ++n) act[n] += cr * x[n];
    return scale;
  }
};

// Open addressing with linear probing; a key and its slot share one bucket (one cache line per
// probe). Starts small and doubles at half load; keeps its size for the next stream.
class SlotMap {
 public:
  static constexpr u64 kEmpty = ~0ull;
  void reset() {
    if (buckets_.empty()) buckets_.assign(kStart, Bucket{kEmpty, -1});
    else std::fill(buckets_.begin(), buckets_.end(), Bucket{kEmpty, -1});
    shift_ = 64;
    for (u64 n = buckets_.size(); n > 1; n >>= 1) --shift_;
    count_ = 0;
  }
  int32_t find(u64 key) const {
    const u64 mask = buckets_.size() - 1;
    for (u64 h = bucket(key);; h = (h + 1) & mask) {
      const Bucket& e = buckets_[h];
      if (e.key == key) return e.slot;
      if (e.key == kEmpty) return -1;
    }
  }
  // the key's slot; a new key gets the next slot number and *added is set
  int32_t insert(u64 key, bool* added) {
    if (2 * static_cast<u64>(count_ + 1) > buckets_.size()) grow();
    const u64 mask = buckets_.size() - 1;
    for (u64 h = bucket(key);; h = (h + 1) & mask) {
      Bucket& e = buckets_[h];
      if (e.key == key) { *added = false; return e.slot; }
      if (e.key == kEmpty) {
        e = Bucket{key, count_};
        *added = true;
        return count_++;
      }
    }
  }

 private:
  struct Bucket { u64 key; int32_t slot; };
  static constexpr u64 kStart = 1ull << 12;
  u64 bucket(u64 key) const { return (key * 0x9E3779B97F4A7C15ull) >> shift_; }
  void grow() {
    std::vector<Bucket> old;
    old.swap(buckets_);
    buckets_.assign(old.size() * 2, Bucket{kEmpty, -1});
    shift_ -= 1;
    const u64 mask = buckets_.size() - 1;
    for (const Bucket& e : old) {
      if (e.key == kEmpty) continue;
      u64 h = bucket(e.key);
      while (buckets_[h].key != kEmpty) h = (h + 1) & mask;
      buckets_[h] = e;
    }
  }
  std::vector<Bucket> buckets_;
  int shift_ = 52;
  int32_t count_ = 0;
};

// The window's changes of one stream as slots: entry -> slot, each slot's column and change, and
// per row a list of its slots. The stored changes (sparse store) stay in the base's sorted runs.
template <typename T>
struct HashedChanges {
  const Base<T>& base;
  i64 N, b = 0;
  SlotMap map;
  std::vector<i64> col;
  std::vector<T> delta;
  std::vector<int32_t> next;     // next slot of the same row, -1 at the end
  std::vector<int32_t> head;     // [N] first slot of each row, -1 if none
  std::vector<i64> rows_used;
  explicit HashedChanges(const Base<T>& base_) : base(base_), N(base_.N), head(base_.N, -1) {}

  void begin(i64 stream) {
    b = stream;
    map.reset();
    for (i64 r : rows_used) head[r] = -1;
    rows_used.clear();
    col.clear(); delta.clear(); next.clear();
  }
  void end(const i64*, i64) {}
  int32_t add(i64 row, i64 c, T v) {
    bool added = false;
    const int32_t s = map.insert(static_cast<u64>(row) * static_cast<u64>(N) + static_cast<u64>(c), &added);
    if (added) {
      col.push_back(c); delta.push_back(v);
      if (head[row] < 0) rows_used.push_back(row);
      next.push_back(head[row]);
      head[row] = s;
    } else {
      delta[s] += v;
    }
    return s;
  }
  T value(i64 row, i64 c, int32_t* slot) const {
    const int32_t s = map.find(static_cast<u64>(row) * static_cast<u64>(N) + static_cast<u64>(c));
    if (slot) *slot = s;
    return base.value(b, row, c) + (s >= 0 ? delta[s] : T(0));
  }
  // act += coeff * scale * (the row as it is now); returns the scale (1 without row_norm). The
  // row's changes (stored and this window's) are summed per column first; its squared norm is
  // S_0's (the table's row_sq, else one pass) plus their corrections, so a row whose coefficient
  // is 0 (an unused circuit slot) never reads its N values of S_0.
  T spread_row(i64 row, T coeff, bool row_norm, T* act, T* s0buf) {
    if (static_cast<i64>(comb.size()) != N) { comb.assign(N, T(0)); seen.assign(N, 0); }
    cols.clear();
    auto put = [&](i64 c, T v) {
      if (!seen[c]) { seen[c] = 1; cols.push_back(c); comb[c] = v; } else { comb[c] += v; }
    };
    base.for_stored(b, row, put);
    for (int32_t s = head[row]; s >= 0; s = next[s]) put(col[s], delta[s]);
    const T* s0 = nullptr;
    T scale = T(1);
    if (row_norm) {
      double sq = 0;
      if (base.table && base.row_sq) {
        sq = static_cast<double>(base.row_sq[row]);
      } else if (base.has_s0()) {
        s0 = base.s0_row(b, row, s0buf);
        sq = sum_of_squares(s0, N);
      }
      for (i64 c : cols) {
        const double s0c = s0 ? s0[c] : base.s0_value(b, row, c), dc = comb[c];
        sq += dc * (2.0 * s0c + dc);
      }
      scale = T(1) / (T(1) + static_cast<T>(std::sqrt(std::max(sq, 0.0))));
    }
    const T cr = coeff * scale;
    if (cr != T(0)) {
      if (base.has_s0()) {
        if (!s0) s0 = base.s0_row(b, row, s0buf);
        for (i64 n = 0; n < N; ++n) act[n] += cr * s0[n];
      }
      for (i64 c : cols) act[c] += cr * comb[c];
    }
    for (i64 c : cols) { seen[c] = 0; comb[c] = T(0); }
    return scale;
  }
  std::vector<T> comb;           // [N] a row's summed changes by column, zero between rows
  std::vector<char> seen;
  std::vector<i64> cols;
};

// ================================ forward =========================================================
// The forward's outputs, [B, T, ...] each (the logs only when saving for backward)
struct FwdOut {
  at::Tensor read, k_soft, gates, reg, k_hard, active, w, alpha, pos, vals, scale, write_slot, grid_slot, grid_val,
      write_fac;
};

template <typename T, typename Changes>
void forward_streams(const Dims& d, const Base<T>& base, const Params<T>& P, const i64* cidx, const T* sc,
                     const T* ft, const T* ct, const i64* c_idx, const T* c_w, const i64* c_cidx,
                     const T* c_alpha, const i64* pick, i64 P_, bool save, FwdOut& o, i64 b0, i64 b1) {
  const i64 T_ = d.T, N = d.N, K = d.K, M = d.M, Dv = d.Dv, G = d.G(), W = d.W(), R = d.R();
  Changes ch(base);
  Plan<T> pl(d);
  std::vector<T> act(N), s0buf(N), coeff(R), scale(R, T(1));
  std::vector<std::pair<T, i64>> cand;
  std::vector<T> maxima;
  std::vector<i64> a_prev(M), i_prev(K);
  std::vector<T> w_prev(M), al_prev(K);
  for (i64 b = b0; b < b1; ++b) {
    ch.begin(b);
    std::copy_n(c_idx + b * M, M, a_prev.data());
    std::copy_n(c_w + b * M, M, w_prev.data());
    std::copy_n(c_cidx + b * K, K, i_prev.data());
    std::copy_n(c_alpha + b * K, K, al_prev.data());
    for (i64 t = 0; t < T_; ++t) {
      const i64 bt = b * T_ + t;
      const i64* I = cidx + bt * K;
      plan_step(d, P, ft + bt * d.H, sc + bt * K, a_prev.data(), w_prev.data(), -1, pl);
      // 1. the writes, into the window's changes
      i64* pos = o.pos.data_ptr<i64>() + bt * W;
      T* vals = o.vals.data_ptr<T>() + bt * W;
      int32_t* wslot = save ? o.write_slot.data_ptr<int32_t>() + bt * W : nullptr;
      if (d.bound > 0) {
        // the soft bound: every factor from S_{t-1} (all values read before any write of the step)
        T* fac = save ? o.write_fac.data_ptr<T>() + bt * W : nullptr;
        for_writes(d, pl, I, a_prev.data(), w_prev.data(), i_prev.data(), al_prev.data(), ct[bt],
                   [&](i64 e, i64 row, i64 col, T v) {
                     pos[e] = (b * N + row) * N + col;
                     // kernels/step.py bound_factors: s moves towards sign(v) c by 1 - exp(-|v| / c)
                     const T a = std::abs(v), c = T(d.bound);
                     const T sgn = T((v > T(0)) - (v < T(0)));
                     const T f = a > T(0) ? -std::expm1(-a / c) * (c - sgn * ch.value(row, col, nullptr)) / a : T(1);
                     vals[e] = v * f;
                     if (fac) fac[e] = f;
                   });
        for (i64 e = 0; e < W; ++e) {
          const i64 rc = pos[e] - b * N * N;
          const int32_t s = ch.add(rc / N, rc % N, vals[e]);
          if (wslot) wslot[e] = s;
        }
      } else {
        for_writes(d, pl, I, a_prev.data(), w_prev.data(), i_prev.data(), al_prev.data(), ct[bt],
                   [&](i64 e, i64 row, i64 col, T v) {
                     pos[e] = (b * N + row) * N + col;
                     vals[e] = v;
                     const int32_t s = ch.add(row, col, v);
                     if (wslot) wslot[e] = s;
                   });
      }
      // 2. spreading activation from the rows [I_t, A_{t-1}], read after the writes
      read_coeffs(d, P, pl, w_prev.data(), coeff.data());
      std::fill(act.begin(), act.end(), T(0));
      // row_norm needs every row's scale, also of rows with coefficient 0 (the backward uses it);
      // without it a row of coefficient 0 (an unused circuit slot, no spread) is not read
      for (i64 r = 0; r < R; ++r) {
        const i64 row = r < K ? I[r] : a_prev[r - K];
        if (d.row_norm || coeff[r] != T(0))
          scale[r] = ch.spread_row(row, coeff[r], d.row_norm, act.data(), s0buf.data());
      }
      if (d.circuit_direct != 0.0)
        for (i64 k = 0; k < K; ++k) act[I[k]] += pl.alpha[k] * T(d.circuit_direct / double(K));
      // the active nodes stay active (active_persist)
      if (d.persist != 0.0)
        for (i64 j = 0; j < M; ++j) act[a_prev[j]] += w_prev[j] * T(d.persist / double(K));
      // 3. A_t = top-m, w_t, r_t
      i64* A = o.active.data_ptr<i64>() + bt * M;
      top_m(act.data(), N, M, cand, maxima, A);
      T* w = o.w.data_ptr<T>() + bt * M;
      T sp = 0;
      // relu, keeping a NaN as F.relu does (std::max(NaN, 0) is NaN)
      for (i64 j = 0; j < M; ++j) { w[j] = std::max(act[A[j]], T(0)); sp += w[j]; }
      for (i64 j = 0; j < M; ++j) w[j] = w[j] / (sp + T(d.eps)) * T(K);
      T* rd = o.read.data_ptr<T>() + bt * Dv;
      std::fill_n(rd, Dv, T(0));
      for (i64 j = 0; j < M; ++j) {
        const T* v = P.V + A[j] * Dv;
        for (i64 e = 0; e < Dv; ++e) rd[e] += w[j] * v[e];
      }
      for (i64 e = 0; e < Dv; ++e) rd[e] /= T(K);
      o.k_soft.data_ptr<T>()[bt] = pl.k_soft;
      o.k_hard.data_ptr<i64>()[bt] = pl.k_hard;
      std::copy_n(pl.gates.data(), G, o.gates.data_ptr<T>() + bt * G);
      std::copy_n(pl.alpha.data(), K, o.alpha.data_ptr<T>() + bt * K);
      if (save) {
        // what the backward needs of the state: its values on the R x M grid read at A_t
        int32_t* gs = o.grid_slot.data_ptr<int32_t>() + bt * R * M;
        T* gv = o.grid_val.data_ptr<T>() + bt * R * M;
        // a row of coefficient 0 sends no gradient to the state it read: no slot needed
        for (i64 r = 0; r < R; ++r) {
          const i64 row = r < K ? I[r] : a_prev[r - K];
          const bool read = coeff[r] != T(0);
          for (i64 j = 0; j < M; ++j) {
            int32_t s = -1;
            gv[r * M + j] = ch.value(row, A[j], read ? &s : nullptr);
            gs[r * M + j] = s;
          }
        }
        if (d.row_norm) std::copy_n(scale.data(), R, o.scale.data_ptr<T>() + bt * R);
      }
      // 4. the carry
      std::copy_n(A, M, a_prev.data());
      std::copy_n(w, M, w_prev.data());
      std::copy_n(I, K, i_prev.data());
      std::copy_n(pl.alpha.data(), K, al_prev.data());
    }
    // the final state at the sampled written entries (the Gaussian regulariser)
    const i64* pos_b = o.pos.data_ptr<i64>() + b * T_ * W;
    for (i64 q = 0; q < P_; ++q) {
      const i64 rc = pos_b[pick[q]] - b * N * N;
      o.reg.data_ptr<T>()[b * P_ + q] = ch.value(rc / N, rc % N, nullptr);
    }
    ch.end(pos_b, T_ * W);
  }
}

// an N x N scratch of values and one of slot numbers per thread
bool direct_mode(i64 N, i64 elem_size, i64 direct_max_bytes) {
  return N * N * (elem_size + static_cast<i64>(sizeof(int32_t))) <= direct_max_bytes;
}

template <typename T>
FwdOut forward_impl(const Dims& d, const Base<T>& base, const Params<T>& P, const at::Tensor& circuit_idx,
                    const at::Tensor& scores, const at::Tensor& features, const at::Tensor& continuous,
                    const at::Tensor& carry_idx, const at::Tensor& carry_w, const at::Tensor& carry_cidx,
                    const at::Tensor& carry_alpha, const at::Tensor& reg_pick, bool save, i64 direct_max_bytes) {
  const i64 B = d.B, T_ = d.T, K = d.K, M = d.M, R = d.R(), W = d.W();
  const bool direct = direct_mode(d.N, sizeof(T), direct_max_bytes);
  const i64 P_ = reg_pick.numel();
  auto f = scores.options();
  auto l = circuit_idx.options();
  auto i32 = l.dtype(at::kInt);
  const i64 Ts = save ? T_ : 0;
  FwdOut o{at::empty({B, T_, d.Dv}, f), at::empty({B, T_}, f), at::empty({B, T_, d.G()}, f), at::empty({B, P_}, f),
           at::empty({B, T_}, l), at::empty({B, T_, M}, l), at::empty({B, T_, M}, f), at::empty({B, T_, K}, f),
           at::empty({B, T_, W}, l), at::empty({B, T_, W}, f), at::empty({B, d.row_norm ? Ts : 0, R}, f),
           at::empty({B, Ts, W}, i32), at::empty({B, Ts, R, M}, i32),
           at::empty({B, Ts, R, M}, f), at::empty({B, d.bound > 0 ? Ts : 0, W}, f)};
  const i64* cidx = circuit_idx.data_ptr<i64>();
  const T *sc = scores.data_ptr<T>(), *ft = features.data_ptr<T>(), *ct = continuous.data_ptr<T>();
  const i64 *c_idx = carry_idx.data_ptr<i64>(), *c_cidx = carry_cidx.data_ptr<i64>(), *pick = reg_pick.data_ptr<i64>();
  const T *c_w = carry_w.data_ptr<T>(), *c_alpha = carry_alpha.data_ptr<T>();
  at::parallel_for(0, B, 1, [&](i64 b0, i64 b1) {
    if (direct)
      forward_streams<T, DirectRows<T>>(d, base, P, cidx, sc, ft, ct, c_idx, c_w, c_cidx, c_alpha, pick, P_,
                                           save, o, b0, b1);
    else
      forward_streams<T, HashedChanges<T>>(d, base, P, cidx, sc, ft, ct, c_idx, c_w, c_cidx, c_alpha, pick, P_,
                                           save, o, b0, b1);
  });
  return o;
}

// ================================ backward ========================================================
// What the backward reads: the window's inputs, the forward's log and the upstream gradients.
struct BwdLog {
  at::Tensor circuit_idx, scores, features, continuous;            // the window's inputs
  at::Tensor carry_idx, carry_w, carry_cidx, carry_alpha;          // the carry it started from
  at::Tensor k_hard, active, w_log, alpha_log, scale_log;          // the forward's per-step log
  at::Tensor write_slot, grid_slot, grid_val, reg_pick;            // written entries and sampled ones
  at::Tensor g_read, g_k_soft, g_gates, g_reg;                     // upstream gradients
  at::Tensor write_fac;                                            // the soft bound's factors (or empty)
};

// dL/dS_t of one stream at the window's written entries, by the forward's slot numbers: a small
// array (about 4 bytes per entry written), not a second N x N state.
template <typename T>
struct SlotGrad {
  std::vector<T> g;
  T sink = 0;
  void begin(i64 n_slots) { g.assign(n_slots, T(0)); }
  // slot -1: an entry the window had not written, whose gradient nothing reads
  T& at(int32_t slot) { if (slot >= 0) return g[slot]; sink = 0; return sink; }
};

template <typename T>
void backward_streams(const Dims& d, const Params<T>& P, const BwdLog& L, at::Tensor& d_scores,
                      at::Tensor& d_features, T* gV, T* gWz, T* gWo, T* gbo, T& gbeta, i64 b0, i64 b1) {
  const i64 T_ = d.T, N = d.N, K = d.K, M = d.M, H = d.H, Dv = d.Dv, O = d.O, G = d.G(), W = d.W(), R = d.R();
  const i64 P_ = L.reg_pick.numel();
  const i64* cidx = L.circuit_idx.data_ptr<i64>();
  const T *sc = L.scores.data_ptr<T>(), *ft = L.features.data_ptr<T>(), *ct = L.continuous.data_ptr<T>();
  const i64* pick = L.reg_pick.data_ptr<i64>();
  const T beta = P.beta;
  SlotGrad<T> Gs;
  Plan<T> pl(d);
  std::vector<T> coeff(R), scale(R, T(1)), a(M), pos(M), w(M), dw(M), da(M), dcoeff(R), dalpha(K), dw_prev(M),
      dal_prev(K), gw_next(M), gal_next(K), dg(G), dout(O), dz(Dv), dp(K);
  for (i64 b = b0; b < b1; ++b) {
    const int32_t* ws_b = L.write_slot.data_ptr<int32_t>() + b * T_ * W;
    int32_t n_slots = 0;
    for (i64 e = 0; e < T_ * W; ++e) n_slots = std::max(n_slots, ws_b[e] + 1);
    Gs.begin(n_slots);
    // the regulariser read the final state at sampled writes
    for (i64 q = 0; q < P_; ++q) Gs.at(ws_b[pick[q]]) += L.g_reg.data_ptr<T>()[b * P_ + q];
    std::fill(gw_next.begin(), gw_next.end(), T(0));
    std::fill(gal_next.begin(), gal_next.end(), T(0));
    for (i64 t = T_ - 1; t >= 0; --t) {
      const i64 bt = b * T_ + t;
      const i64* I = cidx + bt * K;
      const i64 *a_prev, *i_prev;
      const T *w_prev, *al_prev;
      if (t > 0) {
        a_prev = L.active.data_ptr<i64>() + (bt - 1) * M; w_prev = L.w_log.data_ptr<T>() + (bt - 1) * M;
        i_prev = cidx + (bt - 1) * K; al_prev = L.alpha_log.data_ptr<T>() + (bt - 1) * K;
      } else {
        a_prev = L.carry_idx.data_ptr<i64>() + b * M; w_prev = L.carry_w.data_ptr<T>() + b * M;
        i_prev = L.carry_cidx.data_ptr<i64>() + b * K; al_prev = L.carry_alpha.data_ptr<T>() + b * K;
      }
      const T cont = ct[bt];
      plan_step(d, P, ft + bt * H, sc + bt * K, a_prev, w_prev, L.k_hard.data_ptr<i64>()[bt], pl);
      read_coeffs(d, P, pl, w_prev, coeff.data());
      if (d.row_norm) {
        std::copy_n(L.scale_log.data_ptr<T>() + bt * R, R, scale.data());
        for (i64 r = 0; r < R; ++r) coeff[r] = coeff[r] * scale[r];
      }
      const i64* A = L.active.data_ptr<i64>() + bt * M;
      const T* gv = L.grid_val.data_ptr<T>() + bt * R * M;
      const int32_t* gs = L.grid_slot.data_ptr<int32_t>() + bt * R * M;
      // the activation at A_t, rebuilt from the logged grid
      for (i64 j = 0; j < M; ++j) {
        T acc = 0;
        for (i64 r = 0; r < R; ++r) acc += coeff[r] * gv[r * M + j];
        T dir = 0;
        if (d.circuit_direct != 0.0)
          for (i64 k = 0; k < K; ++k) if (I[k] == A[j]) dir += pl.alpha[k];
        T kept = 0;
        if (d.persist != 0.0)
          for (i64 i = 0; i < M; ++i) if (a_prev[i] == A[j]) kept += w_prev[i];
        a[j] = acc + dir * T(d.circuit_direct / double(K)) + kept * T(d.persist / double(K));
      }
      T sp = 0;
      for (i64 j = 0; j < M; ++j) { pos[j] = std::max(a[j], T(0)); sp += pos[j]; }
      const T D = sp + T(d.eps);
      for (i64 j = 0; j < M; ++j) w[j] = pos[j] / D * T(K);
      // r_t = sum_j w_j V[A_j] / K
      const T* gr = L.g_read.data_ptr<T>() + bt * Dv;
      for (i64 j = 0; j < M; ++j) {
        const T* v = P.V + A[j] * Dv;
        T* gv_row = gV + A[j] * Dv;
        for (i64 e = 0; e < Dv; ++e) gv_row[e] += w[j] * gr[e] / T(K);
        dw[j] = gw_next[j] + dot(gr, v, Dv) / T(K);
      }
      // w_t = relu(a) / (sum relu(a) + eps) * K
      T dotw = 0;
      for (i64 j = 0; j < M; ++j) dotw += dw[j] * pos[j];
      for (i64 j = 0; j < M; ++j) {
        const T dpos = dw[j] * T(K) / D - dotw * T(K) / (D * D);
        da[j] = a[j] > T(0) ? dpos : T(0);
      }
      // a = sum_r coeff_r grid[r, :] + direct: to the coefficients, and to dL/dS_t on the grid
      for (i64 r = 0; r < R; ++r) {
        T acc = 0;
        for (i64 j = 0; j < M; ++j) {
          acc += da[j] * gv[r * M + j];
          Gs.at(gs[r * M + j]) += coeff[r] * da[j];
        }
        dcoeff[r] = acc;
      }
      for (i64 k = 0; k < K; ++k) dalpha[k] = gal_next[k];
      if (d.circuit_direct != 0.0)
        for (i64 k = 0; k < K; ++k)
          for (i64 j = 0; j < M; ++j)
            if (I[k] == A[j]) dalpha[k] += da[j] * T(d.circuit_direct / double(K));
      for (i64 k = 0; k < K; ++k) dalpha[k] += dcoeff[k] * scale[k] / T(K);
      std::fill(dw_prev.begin(), dw_prev.end(), T(0));
      std::fill(dal_prev.begin(), dal_prev.end(), T(0));
      if (d.persist != 0.0)
        for (i64 i = 0; i < M; ++i)
          for (i64 j = 0; j < M; ++j)
            if (a_prev[i] == A[j]) dw_prev[i] += da[j] * T(d.persist / double(K));
      if (d.spread) {
        for (i64 j = 0; j < M; ++j) {
          const T dc = dcoeff[K + j] * scale[K + j] / T(K);
          dw_prev[j] += dc * beta;
          gbeta += dc * w_prev[j];
        }
      }
      // the writes: dL/dvals = dL/dS_t (which now includes this step's own read) at each entry
      std::copy_n(L.g_gates.data_ptr<T>() + bt * G, G, dg.data());
      const int32_t* wslot = ws_b + t * W;
      const T* wfac = d.bound > 0 ? L.write_fac.data_ptr<T>() + bt * W : nullptr;
      // dL/d(planned change) = dL/dS_t at its entry, times its soft-bound factor (a constant)
      auto dv_at = [&](i64 e) { return wfac ? Gs.g[wslot[e]] * wfac[e] : Gs.g[wslot[e]]; };
      const T* al = pl.alpha.data();
      const T g_in = pl.gates[0], g_as = pl.gates[1];
      for (i64 i = 0; i < K; ++i)
        for (i64 j = 0; j < K; ++j) {
          const T dv = dv_at(i * K + j);
          dg[0] += dv * al[i] * al[j];
          dalpha[i] += dv * g_in * al[j];
          dalpha[j] += dv * g_in * al[i];
        }
      for (i64 j = 0; j < M; ++j)
        for (i64 k = 0; k < K; ++k) {
          const T dv = dv_at(d.off_assoc() + j * K + k);
          dg[1] += dv * w_prev[j] * al[k];
          dw_prev[j] += dv * g_as * al[k];
          dalpha[k] += dv * g_as * w_prev[j];
        }
      if (d.chain) {
        const T gc = cont * pl.gates[2];
        for (i64 i = 0; i < K; ++i)
          for (i64 k = 0; k < K; ++k) {
            const T dv = dv_at(d.off_chain() + i * K + k);
            dg[2] += dv * cont * al_prev[i] * al[k];
            dal_prev[i] += dv * gc * al[k];
            dalpha[k] += dv * gc * al_prev[i];
          }
      }
      if (d.reverse) {
        const T g_rev = pl.gates[3];
        for (i64 i = 0; i < K; ++i)
          for (i64 j = 0; j < M; ++j) {
            const T dv = dv_at(d.off_reverse() + i * M + j);
            dg[3] += dv * al[i] * w_prev[j];
            dalpha[i] += dv * g_rev * w_prev[j];
            dw_prev[j] += dv * g_rev * al[i];
          }
      }
      // gates = gate_scale tanh(o[1:])
      for (i64 g = 0; g < G; ++g) {
        const T th = pl.gates[g] / T(d.gate_scale);
        dout[g + 1] = dg[g] * T(d.gate_scale) * (T(1) - th * th);
      }
      // alpha = mask * softmax(L.scores) * K, the mask straight-through to k_soft
      T dk = L.g_k_soft.data_ptr<T>()[bt];
      T pdp = 0;
      for (i64 r = 0; r < K; ++r) {
        const T dmask = dalpha[r] * pl.p[r] * T(K);
        dp[r] = dalpha[r] * pl.mask[r] * T(K);
        pdp += dp[r] * pl.p[r];
        dk += dmask * pl.soft[r] * (T(1) - pl.soft[r]) * T(d.tau);
      }
      T* dsc = d_scores.data_ptr<T>() + bt * K;
      for (i64 r = 0; r < K; ++r) dsc[r] = pl.p[r] * (dp[r] - pdp);
      dout[0] = dk * T(K - d.k_min) * pl.sig0 * (T(1) - pl.sig0);
      // o = W_o hid + b_o; hid = gelu(u + W_z z)
      for (i64 i = 0; i < O; ++i) {
        gbo[i] += dout[i];
        for (i64 h = 0; h < H; ++h) gWo[i * H + h] += dout[i] * pl.hid[h];
      }
      T* dfe = d_features.data_ptr<T>() + bt * H;
      std::fill(dz.begin(), dz.end(), T(0));
      for (i64 h = 0; h < H; ++h) {
        T acc = 0;
        for (i64 i = 0; i < O; ++i) acc += P.Wo[i * H + h] * dout[i];
        const T dpre = acc * gelu_grad(pl.pre[h]);
        dfe[h] = dpre;
        const T* wz = P.Wz + h * Dv;
        for (i64 e = 0; e < Dv; ++e) { gWz[h * Dv + e] += dpre * pl.z[e]; dz[e] += wz[e] * dpre; }
      }
      // z = sum_j w_{t-1,j} V[A_{t-1,j}] / K
      for (i64 j = 0; j < M; ++j) {
        const T* v = P.V + a_prev[j] * Dv;
        T* gv_row = gV + a_prev[j] * Dv;
        for (i64 e = 0; e < Dv; ++e) gv_row[e] += w_prev[j] * dz[e] / T(K);
        dw_prev[j] += dot(dz.data(), v, Dv) / T(K);
      }
      std::copy(dw_prev.begin(), dw_prev.end(), gw_next.begin());
      std::copy(dal_prev.begin(), dal_prev.end(), gal_next.begin());
    }
  }
}

struct BwdOut { at::Tensor d_scores, d_features, d_value, d_w_summary, d_w_out, d_b_out, d_beta; };

template <typename T>
BwdOut backward_impl(const Dims& d, const Params<T>& P, const BwdLog& L) {
  const i64 B = d.B, T_ = d.T, N = d.N, K = d.K, H = d.H, Dv = d.Dv, O = d.O;
  TORCH_CHECK(L.grid_val.size(1) == T_, "obs_scan backward: the forward ran without saving for backward");
  auto f = L.scores.options();
  at::Tensor d_scores = at::zeros({B, T_, K}, f), d_features = at::zeros({B, T_, H}, f);
  // parameter gradients: one accumulator per chunk of streams (at most one chunk per thread)
  const i64 n_chunks = std::max<i64>(1, std::min<i64>(B, at::get_num_threads()));
  at::Tensor dV = at::zeros({n_chunks, N, Dv}, f), dWz = at::zeros({n_chunks, H, Dv}, f),
             dWo = at::zeros({n_chunks, O, H}, f), dbo = at::zeros({n_chunks, O}, f), dbeta = at::zeros({n_chunks}, f);
  at::parallel_for(0, n_chunks, 1, [&](i64 c0, i64 c1) {
    for (i64 c = c0; c < c1; ++c) {
      const i64 b0 = c * B / n_chunks, b1 = (c + 1) * B / n_chunks;
      T* gV = dV.data_ptr<T>() + c * N * Dv;
      T* gWz = dWz.data_ptr<T>() + c * H * Dv;
      T* gWo = dWo.data_ptr<T>() + c * O * H;
      T* gbo = dbo.data_ptr<T>() + c * O;
      T& gbeta = dbeta.data_ptr<T>()[c];
      backward_streams<T>(d, P, L, d_scores, d_features, gV, gWz, gWo, gbo, gbeta, b0, b1);
    }
  });
  const T beta = P.beta;
  return {d_scores, d_features, dV.sum(0), dWz.sum(0), dWo.sum(0), dbo.sum(0),
          (dbeta.sum() * beta * (T(1) - beta)).reshape({})};
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) { return t.numel() ? t.data_ptr<T>() : nullptr; }

void check_indices(const at::Tensor& idx, i64 N, const char* name) {
  if (!idx.numel()) return;
  const auto mm = at::aminmax(idx);
  TORCH_CHECK(std::get<0>(mm).item<i64>() >= 0 && std::get<1>(mm).item<i64>() < N,
              "obs_scan: ", name, " holds node indices outside [0, N=", N, ")");
}

struct Options {
  i64 n_nodes, k_min, k_max, m_active, s0_seed;
  double gate_scale, k_mask_temperature, circuit_direct, active_persist, eps, s0_std, state_bound;
  bool spread_from_active, reverse_assoc, row_norm, with_chain;
};

Dims make_dims(const Options& o, const at::Tensor& circuit_idx, const at::Tensor& features,
               const at::Tensor& value, const at::Tensor& w_out) {
  Dims d;
  d.B = circuit_idx.size(0); d.T = circuit_idx.size(1); d.K = circuit_idx.size(2);
  d.N = o.n_nodes; d.M = o.m_active; d.k_min = o.k_min;
  d.H = features.size(2); d.Dv = value.size(1); d.O = w_out.size(0);
  d.spread = o.spread_from_active; d.reverse = o.reverse_assoc; d.row_norm = o.row_norm; d.chain = o.with_chain;
  d.gate_scale = o.gate_scale; d.tau = o.k_mask_temperature; d.circuit_direct = o.circuit_direct; d.eps = o.eps;
  d.persist = o.active_persist;
  d.bound = o.state_bound;
  TORCH_CHECK(d.K == o.k_max, "obs_scan: circuit_idx must be [B, T, k_max=", o.k_max, "], got K=", d.K);
  TORCH_CHECK(d.O == (o.reverse_assoc ? 5 : 4), "obs_scan: w_out must have ", (o.reverse_assoc ? 5 : 4),
              " rows (k logit and the gates), got ", d.O);
  TORCH_CHECK(value.size(0) == d.N, "obs_scan: value must be [N=", d.N, ", Dv], got ", value.sizes());
  TORCH_CHECK(d.M <= d.N && d.K <= d.N, "obs_scan: k_max and m_active must be <= N");
  return d;
}

template <typename T>
Base<T> make_base(const Dims& d, const Options& o, const at::Tensor& dense_S, const at::Tensor& s0_table,
                  const at::Tensor& s0_row_sq, const at::Tensor& main_keys, const at::Tensor& main_vals, const at::Tensor& recent_keys,
                  const at::Tensor& recent_vals) {
  Base<T> base;
  base.N = d.N;
  if (dense_S.numel()) {
    const bool shared = dense_S.dim() == 2;
    TORCH_CHECK((shared || (dense_S.dim() == 3 && dense_S.size(0) == d.B)) && dense_S.size(-1) == d.N &&
                    dense_S.size(-2) == d.N,
                "obs_scan: the dense state must be [B=", d.B, ", N=", d.N, ", N] or a shared [N, N], got ",
                dense_S.sizes());
    base.dense = dense_S.data_ptr<T>();
    base.dense_stride = shared ? 0 : d.N * d.N;
    return base;
  }
  if (s0_table.numel()) {
    TORCH_CHECK(s0_table.numel() == d.N * d.N, "obs_scan: the S_0 table must be [N, N]");
    base.table = s0_table.data_ptr<T>();
    if (s0_row_sq.numel()) {
      TORCH_CHECK(s0_row_sq.numel() == d.N, "obs_scan: the S_0 table's squared row norms must be [N]");
      base.row_sq = s0_row_sq.data_ptr<T>();
    }
  } else if (o.s0_std != 0.0) {
    base.hashed = true;
  }
  base.hash = HashS0(o.s0_seed, o.s0_std);
  const at::Tensor* ks[2] = {&main_keys, &recent_keys};
  const at::Tensor* vs[2] = {&main_vals, &recent_vals};
  for (int r = 0; r < 2; ++r) {
    base.nkeys[r] = ks[r]->numel();
    base.keys[r] = ptr_or_null<i64>(*ks[r]);
    base.kvals[r] = ptr_or_null<T>(*vs[r]);
  }
  return base;
}

// ================================ the ops ========================================================
Options options(i64 n_nodes, i64 k_min, i64 k_max, i64 m_active, double gate_scale, double k_mask_temperature,
                bool spread_from_active, bool reverse_assoc, bool row_norm, double circuit_direct,
                double active_persist, double eps, bool with_chain, double s0_std, i64 s0_seed, double state_bound) {
  return Options{n_nodes, k_min, k_max, m_active, s0_seed, gate_scale, k_mask_temperature, circuit_direct,
                 active_persist, eps,
                 s0_std, state_bound, spread_from_active, reverse_assoc, row_norm, with_chain};
}

template <typename T>
Params<T> params(const at::Tensor& value, const at::Tensor& w_summary, const at::Tensor& w_out,
                 const at::Tensor& b_out, const at::Tensor& beta_logit) {
  const T bl = beta_logit.item<T>();
  return Params<T>{value.data_ptr<T>(), w_summary.data_ptr<T>(), w_out.data_ptr<T>(), b_out.data_ptr<T>(),
                   T(1) / (T(1) + std::exp(-bl))};
}

std::vector<at::Tensor> contiguous(std::initializer_list<at::Tensor> ts) {
  std::vector<at::Tensor> out;
  for (const auto& t : ts) out.push_back(t.contiguous());
  return out;
}

// every floating-point input in the scores' dtype
void check_dtypes(const std::vector<at::Tensor>& c, std::initializer_list<int> which) {
  for (int i : which)
    TORCH_CHECK(c[i].scalar_type() == c[1].scalar_type(), "obs_scan: every floating-point input must have the "
                "scores' dtype ", c[1].scalar_type(), "; input ", i, " has ", c[i].scalar_type());
}

using Tn = at::Tensor;
using Fwd = std::tuple<Tn, Tn, Tn, Tn, Tn, Tn, Tn, Tn, Tn, Tn, Tn, Tn, Tn, Tn, Tn>;
using Bwd = std::tuple<Tn, Tn, Tn, Tn, Tn, Tn, Tn>;

Fwd scan_forward(
    const at::Tensor& circuit_idx, const at::Tensor& scores, const at::Tensor& features,
    const at::Tensor& continuous, const at::Tensor& carry_idx, const at::Tensor& carry_w,
    const at::Tensor& carry_cidx, const at::Tensor& carry_alpha, const at::Tensor& value,
    const at::Tensor& w_summary, const at::Tensor& w_out, const at::Tensor& b_out, const at::Tensor& beta_logit,
    const at::Tensor& dense_S, const at::Tensor& s0_table, const at::Tensor& s0_row_sq, const at::Tensor& main_keys,
    const at::Tensor& main_vals, const at::Tensor& recent_keys, const at::Tensor& recent_vals,
    const at::Tensor& reg_pick, i64 n_nodes, i64 k_min, i64 k_max, i64 m_active, double gate_scale,
    double k_mask_temperature, bool spread_from_active, bool reverse_assoc, bool row_norm, double circuit_direct,
    double active_persist, double eps, bool with_chain, i64 direct_max_bytes, double s0_std, i64 s0_seed,
    double state_bound, bool save) {
  const Options o = options(n_nodes, k_min, k_max, m_active, gate_scale, k_mask_temperature, spread_from_active,
                            reverse_assoc, row_norm, circuit_direct, active_persist, eps, with_chain, s0_std, s0_seed,
                            state_bound);
  auto c = contiguous({circuit_idx, scores, features, continuous, carry_idx, carry_w, carry_cidx, carry_alpha,
                       value, w_summary, w_out, b_out, beta_logit, dense_S, s0_table, s0_row_sq, main_keys,
                       main_vals, recent_keys, recent_vals, reg_pick});
  const Dims d = make_dims(o, c[0], c[2], c[8], c[10]);
  TORCH_CHECK(c[0].scalar_type() == at::kLong && c[4].scalar_type() == at::kLong && c[6].scalar_type() == at::kLong,
              "obs_scan: circuit and active indices must be int64");
  check_indices(c[0], d.N, "circuit_idx");
  check_indices(c[4], d.N, "the carry's active_idx");
  check_indices(c[6], d.N, "the carry's circuit_idx");
  check_dtypes(c, {1, 2, 3, 5, 7, 8, 9, 10, 11, 12});
  FwdOut r;
  AT_DISPATCH_FLOATING_TYPES(c[1].scalar_type(), "obs_scan_forward", [&] {
    const Base<scalar_t> base = make_base<scalar_t>(d, o, c[13], c[14], c[15], c[16], c[17], c[18], c[19]);
    const Params<scalar_t> P = params<scalar_t>(c[8], c[9], c[10], c[11], c[12]);
    r = forward_impl<scalar_t>(d, base, P, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[20], save,
                               direct_max_bytes);
  });
  return {r.read, r.k_soft, r.gates, r.reg, r.k_hard, r.active, r.w, r.alpha, r.pos, r.vals, r.scale,
          r.write_slot, r.grid_slot, r.grid_val, r.write_fac};
}

Bwd scan_backward(
    const at::Tensor& circuit_idx, const at::Tensor& scores, const at::Tensor& features,
    const at::Tensor& continuous, const at::Tensor& carry_idx, const at::Tensor& carry_w,
    const at::Tensor& carry_cidx, const at::Tensor& carry_alpha, const at::Tensor& value,
    const at::Tensor& w_summary, const at::Tensor& w_out, const at::Tensor& b_out, const at::Tensor& beta_logit,
    const at::Tensor& k_hard, const at::Tensor& active, const at::Tensor& w_log, const at::Tensor& alpha_log,
    const at::Tensor& scale_log, const at::Tensor& write_slot, const at::Tensor& grid_slot,
    const at::Tensor& grid_val, const at::Tensor& write_fac, const at::Tensor& reg_pick, const at::Tensor& g_read,
    const at::Tensor& g_k_soft, const at::Tensor& g_gates, const at::Tensor& g_reg, i64 n_nodes, i64 k_min,
    i64 k_max, i64 m_active, double gate_scale, double k_mask_temperature, bool spread_from_active,
    bool reverse_assoc, bool row_norm, double circuit_direct, double active_persist, double eps, bool with_chain,
    double state_bound) {
  const Options o = options(n_nodes, k_min, k_max, m_active, gate_scale, k_mask_temperature, spread_from_active,
                            reverse_assoc, row_norm, circuit_direct, active_persist, eps, with_chain, 0.0, 0,
                            state_bound);
  auto c = contiguous({circuit_idx, scores, features, continuous, carry_idx, carry_w, carry_cidx, carry_alpha,
                       value, w_summary, w_out, b_out, beta_logit, k_hard, active, w_log, alpha_log, scale_log,
                       write_slot, grid_slot, grid_val, reg_pick, g_read, g_k_soft, g_gates, g_reg, write_fac});
  const Dims d = make_dims(o, c[0], c[2], c[8], c[10]);
  check_dtypes(c, {1, 2, 3, 5, 7, 8, 9, 10, 11, 12, 22, 23, 24, 25, 26});
  BwdOut r;
  AT_DISPATCH_FLOATING_TYPES(c[1].scalar_type(), "obs_scan_backward", [&] {
    const Params<scalar_t> P = params<scalar_t>(c[8], c[9], c[10], c[11], c[12]);
    const BwdLog L{c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[13], c[14], c[15], c[16], c[17],
                   c[18], c[19], c[20], c[21], c[22], c[23], c[24], c[25], c[26]};
    TORCH_CHECK(d.bound <= 0 || L.write_fac.numel() == d.B * d.T * d.W(),
                "obs_scan backward: state_bound > 0 needs the forward's write factors [B, T, W]");
    r = backward_impl<scalar_t>(d, P, L);
  });
  return {r.d_scores, r.d_features, r.d_value, r.d_w_summary, r.d_w_out, r.d_b_out, r.d_beta};
}

}  // namespace

TORCH_LIBRARY(obs_cpu, m) {
  m.def("scan_forward(Tensor circuit_idx, Tensor scores, Tensor features, Tensor continuous, "
        "Tensor carry_idx, Tensor carry_w, Tensor carry_cidx, Tensor carry_alpha, "
        "Tensor value, Tensor w_summary, Tensor w_out, Tensor b_out, Tensor beta_logit, "
        "Tensor dense_S, Tensor s0_table, Tensor s0_row_sq, Tensor main_keys, Tensor main_vals, Tensor recent_keys, "
        "Tensor recent_vals, Tensor reg_pick, int n_nodes, int k_min, int k_max, int m_active, "
        "float gate_scale, float k_mask_temperature, bool spread_from_active, bool reverse_assoc, "
        "bool row_norm, float circuit_direct, float active_persist, float eps, bool with_chain, "
        "int direct_max_bytes, float s0_std, "
        "int s0_seed, float state_bound, "
        "bool save) -> (Tensor read, Tensor k_soft, Tensor gates, Tensor reg_values, Tensor k_hard, "
        "Tensor active_idx, Tensor active_w, Tensor alpha, Tensor pos, Tensor vals, Tensor scale, "
        "Tensor write_slot, Tensor grid_slot, Tensor grid_val, Tensor write_fac)");
  m.def("scan_backward(Tensor circuit_idx, Tensor scores, Tensor features, Tensor continuous, "
        "Tensor carry_idx, Tensor carry_w, Tensor carry_cidx, Tensor carry_alpha, "
        "Tensor value, Tensor w_summary, Tensor w_out, Tensor b_out, Tensor beta_logit, "
        "Tensor k_hard, Tensor active, Tensor w_log, Tensor alpha_log, Tensor scale_log, Tensor write_slot, "
        "Tensor grid_slot, Tensor grid_val, Tensor write_fac, Tensor reg_pick, Tensor g_read, Tensor g_k_soft, "
        "Tensor g_gates, Tensor g_reg, int n_nodes, int k_min, int k_max, int m_active, float gate_scale, "
        "float k_mask_temperature, bool spread_from_active, bool reverse_assoc, bool row_norm, "
        "float circuit_direct, float active_persist, float eps, bool with_chain, float state_bound) -> "
        "(Tensor d_scores, "
        "Tensor d_features, "
        "Tensor d_value, Tensor d_w_summary, Tensor d_w_out, Tensor d_b_out, Tensor d_beta_logit)");
}

TORCH_LIBRARY_IMPL(obs_cpu, CPU, m) {
  m.impl("scan_forward", &scan_forward);
  m.impl("scan_backward", &scan_backward);
}

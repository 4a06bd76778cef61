// The 3x3x3 convs of the SegResNet family (stride 1 or 2, pad 1, no bias) as oneDNN
// primitives behind one XLA FFI handler, for the CPU, where oneDNN's brgconv kernels
// run them several times faster than XLA:CPU's own convs.
//
// Built at install time by `python -m assft_jax.models.onednn_build` against the
// onednn-cpu-gomp wheel; assft_jax/models/onednn.py loads it, registers the handler
// and falls back to the XLA path when it is absent.
//
// One handler, three kinds (the conv and its two gradients), all channels-last:
//   kind 0, forward:          a = src [B, D, H, W, IC], b = weights -> dst [B, d, h, w, OC]
//   kind 1, backward data:    a = diff_dst [B, d, h, w, OC], b = weights -> diff_src
//   kind 2, backward weights: a = src, b = diff_dst -> diff_weights
// Weights are stored [3, 3, 3, IC, OC] (wt = 0, the layers' own layout) or
// [3, 3, 3, OC, IC] (wt = 1: the transposed conv's kernel, whose forward is the
// backward data of a stride-2 conv with the roles of its channels swapped).
// The right pad follows from the shapes, so stride 2 on even sizes needs none.
// Every buffer's shape is checked against the kind before oneDNN sees it (CheckShapes):
// a wrong one returns InvalidArgument instead of reading or writing out of bounds.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dnnl::memory;
using Dims = memory::dims;

// A cached primitive for one conv geometry and kind: creating a primitive JIT-compiles
// its kernel (milliseconds), so it happens once per shape, not once per call.
struct Entry {
  memory::desc src, dst, user_w;
  dnnl::primitive prim;
  memory::desc prim_w;   // the weights layout the primitive reads (or writes)
  memory::desc scratch;  // its scratchpad, allocated per call (see Lookup)
};

dnnl::engine& Engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

// Guards the primitive cache (Lookup) only. Executing a cached primitive needs no lock:
// entries are never erased or changed once inserted, and in user scratchpad mode one
// primitive may run from several threads at once as long as each execution has its own
// scratchpad (Conv3Impl allocates one per call), so XLA can run independent convs in
// parallel.
std::mutex& Lock() {
  static std::mutex m;
  return m;
}

// [B, C, D, H, W] logical dims of a channels-last buffer.
Dims Logical(ffi::Span<const int64_t> d) { return {d[0], d[4], d[1], d[2], d[3]}; }

// The weights' logical (OC, IC, kd, kh, kw) over the stored [3, 3, 3, ., .] buffer.
memory::desc UserWeights(int64_t oc, int64_t ic, int64_t wt) {
  const int64_t o_stride = wt == 0 ? 1 : ic, i_stride = wt == 0 ? oc : 1;
  const int64_t tap = oc * ic;
  return memory::desc({oc, ic, 3, 3, 3}, memory::data_type::f32,
                      Dims{o_stride, i_stride, 9 * tap, 3 * tap, tap});
}

// Fills e from a primitive descriptor: the primitive, its weights layout, its scratchpad.
template <typename Prim>
void Fill(Entry& e, const typename Prim::primitive_desc& pd, const memory::desc& w) {
  e.prim = Prim(pd);
  e.prim_w = w;
  e.scratch = pd.scratchpad_desc();
}

std::string Shape(ffi::Span<const int64_t> d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

// Why the channels-last src [B, D, H, W, IC], dst [B, d, h, w, OC] (in the conv's own
// frame: src is its input, dst its output) and weights do not make one conv of this
// stride and weights layout; empty when they do.
std::string Mismatch(ffi::Span<const int64_t> src, ffi::Span<const int64_t> w,
                     ffi::Span<const int64_t> dst, int64_t stride, int64_t wt) {
  for (auto dims : {src, w, dst})
    for (int64_t n : dims)
      if (n < 1) return "every dimension must be positive";
  if (src[0] != dst[0]) return "src and dst differ in batch size";
  if (w[0] != 3 || w[1] != 3 || w[2] != 3) return "the kernel must have 3x3x3 taps";
  const int64_t ic = src[4], oc = dst[4];
  if (w[3] != (wt == 0 ? ic : oc) || w[4] != (wt == 0 ? oc : ic))
    return std::string("the kernel's channels do not match src's ") + std::to_string(ic) +
           " and dst's " + std::to_string(oc) +
           (wt == 0 ? " (weights [3, 3, 3, IC, OC])" : " (weights [3, 3, 3, OC, IC])");
  for (int i = 1; i < 4; ++i)
    if (dst[i] != (src[i] - 1) / stride + 1)
      return "dst's spatial size must be (src's - 1) // stride + 1 in each axis";
  return "";
}

Entry& Lookup(int64_t kind, int64_t stride, int64_t wt, const Dims& src, const Dims& dst) {
  using Key = std::tuple<int64_t, int64_t, int64_t, Dims, Dims>;
  static std::map<Key, std::unique_ptr<Entry>> cache;
  Key key{kind, stride, wt, src, dst};
  auto it = cache.find(key);
  if (it != cache.end()) return *it->second;

  auto& eng = Engine();
  const auto f32 = memory::data_type::f32;
  const auto nspc = memory::format_tag::ndhwc;
  const auto direct = dnnl::algorithm::convolution_direct;
  memory::desc src_md(src, f32, nspc), dst_md(dst, f32, nspc);
  memory::desc any_w({dst[1], src[1], 3, 3, 3}, f32, memory::format_tag::any);
  Dims strides{stride, stride, stride}, pad_l{1, 1, 1}, pad_r(3);
  for (int i = 0; i < 3; ++i) pad_r[i] = (dst[2 + i] - 1) * stride + 2 - src[2 + i];
  // User-managed scratchpads: oneDNN's default (one global scratchpad per thread) allows
  // a primitive to run only on the thread that created it, and XLA's thread pool runs a
  // cached primitive from any of its threads.
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  // The forward descriptor is also the backward ones' hint.
  dnnl::convolution_forward::primitive_desc fwd_pd(eng, dnnl::prop_kind::forward_training, direct,
                                                   src_md, any_w, dst_md, strides, pad_l, pad_r,
                                                   attr);
  auto e = std::make_unique<Entry>();
  e->src = src_md;
  e->dst = dst_md;
  e->user_w = UserWeights(dst[1], src[1], wt);
  if (kind == 0) {
    Fill<dnnl::convolution_forward>(*e, fwd_pd, fwd_pd.weights_desc());
  } else if (kind == 1) {
    using Prim = dnnl::convolution_backward_data;
    Prim::primitive_desc pd(eng, direct, src_md, any_w, dst_md, strides, pad_l, pad_r, fwd_pd,
                            attr);
    Fill<Prim>(*e, pd, pd.weights_desc());
  } else {
    using Prim = dnnl::convolution_backward_weights;
    Prim::primitive_desc pd(eng, direct, src_md, any_w, dst_md, strides, pad_l, pad_r, fwd_pd,
                            attr);
    Fill<Prim>(*e, pd, pd.diff_weights_desc());
  }
  return *cache.emplace(key, std::move(e)).first->second;
}

ffi::Error Conv3Impl(ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                     ffi::ResultBuffer<ffi::F32> out, int64_t kind, int64_t stride, int64_t wt) {
  if (kind < 0 || kind > 2 || (stride != 1 && stride != 2) || (wt != 0 && wt != 1))
    return ffi::Error::InvalidArgument("assft_onednn_conv3: bad kind/stride/wt attribute");
  // Which buffer is the src, the dst and the weights, by kind (see the top of the file).
  auto a_dims = a.dimensions(), b_dims = b.dimensions(), o_dims = out->dimensions();
  auto src_dims = a_dims, dst_dims = o_dims, w_dims = b_dims;
  auto* a_ptr = const_cast<float*>(a.typed_data());
  auto* b_ptr = const_cast<float*>(b.typed_data());
  float* o_ptr = out->typed_data();
  float *src_ptr = a_ptr, *dst_ptr = o_ptr, *w_ptr = b_ptr;
  if (kind == 1) {
    src_ptr = o_ptr, dst_ptr = a_ptr;
    src_dims = o_dims, dst_dims = a_dims;
  } else if (kind == 2) {
    dst_ptr = b_ptr, w_ptr = o_ptr;
    dst_dims = b_dims, w_dims = o_dims;
  }
  const std::string why = a_dims.size() != 5 || b_dims.size() != 5 || o_dims.size() != 5
                              ? "every operand must be 5-D"
                              : Mismatch(src_dims, w_dims, dst_dims, stride, wt);
  if (!why.empty()) {
    static const char* const kRoles[] = {
        "forward: a = src, b = weights, out = dst",
        "backward data: a = diff_dst, b = weights, out = diff_src",
        "backward weights: a = src, b = diff_dst, out = diff_weights"};
    return ffi::Error::InvalidArgument(
        "assft_onednn_conv3 kind " + std::to_string(kind) + " (" + kRoles[kind] + "; stride " +
        std::to_string(stride) + ", wt " + std::to_string(wt) + "): " + why + "; got a " +
        Shape(a_dims) + ", b " + Shape(b_dims) + ", out " + Shape(o_dims));
  }
  const Dims src = Logical(src_dims), dst = Logical(dst_dims);
  try {
    Entry* entry;
    {
      std::lock_guard<std::mutex> guard(Lock());
      entry = &Lookup(kind, stride, wt, src, dst);
    }
    const Entry& e = *entry;
    auto& eng = Engine();
    dnnl::stream s(eng);
    memory src_m(e.src, eng, src_ptr), dst_m(e.dst, eng, dst_ptr), user_w(e.user_w, eng, w_ptr);
    memory scratch(e.scratch, eng);
    // The weights in the primitive's layout: the user buffer itself when they agree.
    const bool same = e.prim_w == e.user_w;
    memory prim_w = same ? user_w : memory(e.prim_w, eng);
    if (kind != 2 && !same) dnnl::reorder(user_w, prim_w).execute(s, user_w, prim_w);
    e.prim.execute(s, {{kind == 1 ? DNNL_ARG_DIFF_SRC : DNNL_ARG_SRC, src_m},
                       {kind == 0 ? DNNL_ARG_DST : DNNL_ARG_DIFF_DST, dst_m},
                       {kind == 2 ? DNNL_ARG_DIFF_WEIGHTS : DNNL_ARG_WEIGHTS, prim_w},
                       {DNNL_ARG_SCRATCHPAD, scratch}});
    if (kind == 2 && !same) dnnl::reorder(prim_w, user_w).execute(s, prim_w, user_w);
    s.wait();
  } catch (const dnnl::error& err) {
    return ffi::Error::Internal(std::string("assft_onednn_conv3: oneDNN: ") + err.what());
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AssftOnednnConv3, Conv3Impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("kind")
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("wt"));

// The 3x3x3 convs of the SegResNet family (stride 1 or 2, pad 1, no bias) as oneDNN
// primitives behind one XLA FFI handler, for the CPU. XLA:CPU runs these convs at
// 20-46 GFLOP/s here and oneDNN's brgconv kernels at ~190 (BUILD_NOTES, issue 13).
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
  // User-managed scratchpads: with oneDNN's default (a thread-local global one) the
  // gemm weight gradient crashed on its second call from XLA's thread pool.
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
  if (a.dimensions().size() != 5 || b.dimensions().size() != 5 || out->dimensions().size() != 5)
    return ffi::Error::InvalidArgument("assft_onednn_conv3: every operand must be 5-D");
  // Which buffer is the src, the dst and the weights, by kind (see the top of the file).
  auto* a_ptr = const_cast<float*>(a.typed_data());
  auto* b_ptr = const_cast<float*>(b.typed_data());
  float* o_ptr = out->typed_data();
  float *src_ptr = a_ptr, *dst_ptr = o_ptr, *w_ptr = b_ptr;
  Dims src = Logical(a.dimensions()), dst = Logical(out->dimensions());
  if (kind == 1) {
    src_ptr = o_ptr, dst_ptr = a_ptr;
    src = Logical(out->dimensions()), dst = Logical(a.dimensions());
  } else if (kind == 2) {
    dst_ptr = b_ptr, w_ptr = o_ptr;
    dst = Logical(b.dimensions());
  }
  try {
    std::lock_guard<std::mutex> guard(Lock());
    Entry& e = Lookup(kind, stride, wt, src, dst);
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

// oneDNN convolutions for XLA:CPU, as XLA FFI custom calls (fixmatch_jax/models/onednn.py).
//
// Three handlers for a 2-D convolution of NHWC float32 activations with an HWIO float32
// kernel (no dilation, one feature group): the forward pass, the gradient with respect to
// the input and the gradient with respect to the kernel. Activations stay NHWC (oneDNN's
// "channels last", as in the PyTorch peer's channels_last step); the kernel is reordered
// into the layout oneDNN's primitive asks for on every call (and the weight gradient back
// to HWIO), which is what PyTorch does too.
//
// Primitives are built once per geometry and kept (oneDNN's own cache would rebuild the
// primitive descriptors on every call). Each call runs on the calling XLA thread with
// `threads` OpenMP threads (fixmatch_jax runs one XLA host device per core, so 1) and its
// own scratch memory, so that the devices' calls can run at the same time.
//
// Built by fixmatch_jax/models/onednn.py with g++ against the oneDNN wheel
// (onednn-cpu-gomp / onednn-devel-cpu-gomp) and jaxlib's FFI headers.

#include <omp.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;

namespace {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& Stream() {
  // One in-order stream per calling thread (streams are not thread-safe).
  thread_local dnnl::stream stream(Engine());
  return stream;
}

// The geometry of one convolution: batch, input height/width/channels, kernel height/width,
// output channels/height/width, strides, padding (top, bottom, left, right).
struct Geometry {
  std::array<int64_t, 15> v;
  bool operator<(const Geometry& other) const { return v < other.v; }
  int64_t n() const { return v[0]; }
  int64_t h() const { return v[1]; }
  int64_t w() const { return v[2]; }
  int64_t c() const { return v[3]; }
  int64_t kh() const { return v[4]; }
  int64_t kw() const { return v[5]; }
  int64_t o() const { return v[6]; }
  int64_t oh() const { return v[7]; }
  int64_t ow() const { return v[8]; }
};

struct Attrs {
  int64_t sh, sw, pt, pb, pl, pr, threads;
};

// Memory descriptors of a geometry in the layouts XLA hands us.
struct Descs {
  memory::desc src, dst, wei_user, wei_any;
  memory::dims strides, pad_l, pad_r;
  explicit Descs(const Geometry& g, const Attrs& a)
      : src({g.n(), g.c(), g.h(), g.w()}, memory::data_type::f32, memory::format_tag::nhwc),
        dst({g.n(), g.o(), g.oh(), g.ow()}, memory::data_type::f32, memory::format_tag::nhwc),
        wei_user({g.o(), g.c(), g.kh(), g.kw()}, memory::data_type::f32,
                 memory::format_tag::hwio),
        wei_any({g.o(), g.c(), g.kh(), g.kw()}, memory::data_type::f32,
                memory::format_tag::any),
        strides({a.sh, a.sw}),
        pad_l({a.pt, a.pl}),
        pad_r({a.pb, a.pr}) {}
};

// Every primitive takes its scratch memory from the caller (below, one buffer per thread):
// with oneDNN's default, primitives share one library-owned scratchpad, and XLA runs the
// custom calls of several devices (threads) at once.
dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

dnnl::convolution_forward::primitive_desc ForwardPd(const Descs& d) {
  return dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, d.src,
      d.wei_any, d.dst, d.strides, d.pad_l, d.pad_r, UserScratchpad());
}

// A primitive plus the reorder between the HWIO kernel and the kernel layout it wants.
struct Prepared {
  dnnl::primitive conv;
  memory::desc wei;      // The primitive's kernel (or kernel gradient) layout.
  memory::desc scratch;  // Its scratchpad.
  bool reorder = false;  // wei differs from HWIO.
  dnnl::reorder convert;
  memory::desc convert_scratch;
};

enum Kind { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

Prepared Prepare(Kind kind, const Descs& d) {
  Prepared p;
  auto forward = ForwardPd(d);
  if (kind == kForward) {
    p.conv = dnnl::convolution_forward(forward);
    p.wei = forward.weights_desc();
    p.scratch = forward.scratchpad_desc();
  } else if (kind == kBackwardData) {
    dnnl::convolution_backward_data::primitive_desc pd(
        Engine(), dnnl::algorithm::convolution_direct, d.src, d.wei_any, d.dst, d.strides,
        d.pad_l, d.pad_r, forward, UserScratchpad());
    p.conv = dnnl::convolution_backward_data(pd);
    p.wei = pd.weights_desc();
    p.scratch = pd.scratchpad_desc();
  } else {
    dnnl::convolution_backward_weights::primitive_desc pd(
        Engine(), dnnl::algorithm::convolution_direct, d.src, d.wei_any, d.dst, d.strides,
        d.pad_l, d.pad_r, forward, UserScratchpad());
    p.conv = dnnl::convolution_backward_weights(pd);
    p.wei = pd.diff_weights_desc();
    p.scratch = pd.scratchpad_desc();
  }
  p.reorder = p.wei != d.wei_user;
  if (p.reorder) {
    auto pd = kind == kBackwardWeights
        ? dnnl::reorder::primitive_desc(Engine(), p.wei, Engine(), d.wei_user, UserScratchpad())
        : dnnl::reorder::primitive_desc(Engine(), d.wei_user, Engine(), p.wei, UserScratchpad());
    p.convert = dnnl::reorder(pd);
    p.convert_scratch = pd.scratchpad_desc();
  }
  return p;
}

const Prepared& Lookup(Kind kind, const Geometry& g, const Descs& d) {
  static std::mutex mu;
  static std::map<std::pair<int, Geometry>, std::unique_ptr<Prepared>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& entry = cache[{kind, g}];
  if (!entry) entry = std::make_unique<Prepared>(Prepare(kind, d));
  return *entry;
}

// Per-thread buffers: `which` 0 holds the kernel in the primitive's layout, 1 a scratchpad.
memory Buffer(int which, const memory::desc& md) {
  thread_local std::vector<float> buffers[2];
  std::vector<float>& buffer = buffers[which];
  size_t floats = md.get_size() / sizeof(float) + 1;
  if (buffer.size() < floats) buffer.resize(floats);
  return memory(md, Engine(), buffer.data());
}

ffi::Error Check(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w,
                 ffi::Span<const int64_t> y) {
  if (x.size() != 4 || w.size() != 4 || y.size() != 4)
    return ffi::Error::InvalidArgument("oneDNN convolution: operands must be 4-D (NHWC, HWIO)");
  if (w[2] != x[3] || w[3] != y[3] || x[0] != y[0])
    return ffi::Error::InvalidArgument("oneDNN convolution: inconsistent NHWC/HWIO shapes");
  return ffi::Error::Success();
}

// Runs kind's primitive. x: input (or its gradient), w: kernel (or its gradient),
// y: output (or its gradient), each the caller's NHWC / HWIO buffer.
ffi::Error Run(Kind kind, float* x, ffi::Span<const int64_t> xd, float* w,
               ffi::Span<const int64_t> wd, float* y, ffi::Span<const int64_t> yd,
               const Attrs& a) {
  if (ffi::Error e = Check(xd, wd, yd); e.failure()) return e;
  try {
    omp_set_num_threads(static_cast<int>(a.threads));
    Geometry g{{xd[0], xd[1], xd[2], xd[3], wd[0], wd[1], wd[3], yd[1], yd[2], a.sh, a.sw, a.pt,
                a.pb, a.pl, a.pr}};
    Descs d(g, a);
    const Prepared& p = Lookup(kind, g, d);
    dnnl::stream& s = Stream();
    memory src(d.src, Engine(), x), dst(d.dst, Engine(), y), wei_user(d.wei_user, Engine(), w);
    memory wei = p.reorder ? Buffer(0, p.wei) : wei_user;
    auto convert = [&](const memory& from, const memory& to) {
      p.convert.execute(s, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to},
                            {DNNL_ARG_SCRATCHPAD, Buffer(1, p.convert_scratch)}});
    };
    if (kind != kBackwardWeights && p.reorder) convert(wei_user, wei);
    memory scratch = Buffer(1, p.scratch);
    if (kind == kForward) {
      p.conv.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst},
                         {DNNL_ARG_SCRATCHPAD, scratch}});
    } else if (kind == kBackwardData) {
      p.conv.execute(s, {{DNNL_ARG_DIFF_SRC, src}, {DNNL_ARG_WEIGHTS, wei},
                         {DNNL_ARG_DIFF_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}});
    } else {
      p.conv.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, dst},
                         {DNNL_ARG_DIFF_WEIGHTS, wei}, {DNNL_ARG_SCRATCHPAD, scratch}});
      if (p.reorder) convert(wei, wei_user);
    }
    s.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN convolution failed: ") + e.what());
  }
  return ffi::Error::Success();
}

using F32 = ffi::Buffer<ffi::F32>;
using F32Out = ffi::ResultBuffer<ffi::F32>;

ffi::Error Forward(F32 x, F32 w, F32Out y, int64_t sh, int64_t sw, int64_t pt, int64_t pb,
                   int64_t pl, int64_t pr, int64_t threads) {
  return Run(kForward, x.typed_data(), x.dimensions(), w.typed_data(), w.dimensions(),
             y->typed_data(), y->dimensions(), {sh, sw, pt, pb, pl, pr, threads});
}

// dx from the output gradient dy and the kernel w.
ffi::Error BackwardData(F32 dy, F32 w, F32Out dx, int64_t sh, int64_t sw, int64_t pt,
                        int64_t pb, int64_t pl, int64_t pr, int64_t threads) {
  return Run(kBackwardData, dx->typed_data(), dx->dimensions(), w.typed_data(), w.dimensions(),
             dy.typed_data(), dy.dimensions(), {sh, sw, pt, pb, pl, pr, threads});
}

// dw from the input x and the output gradient dy.
ffi::Error BackwardWeights(F32 x, F32 dy, F32Out dw, int64_t sh, int64_t sw, int64_t pt,
                           int64_t pb, int64_t pl, int64_t pr, int64_t threads) {
  return Run(kBackwardWeights, x.typed_data(), x.dimensions(), dw->typed_data(),
             dw->dimensions(), dy.typed_data(), dy.dimensions(),
             {sh, sw, pt, pb, pl, pr, threads});
}

auto Bind() {
  return ffi::Ffi::Bind()
      .Arg<F32>()
      .Arg<F32>()
      .Ret<F32>()
      .Attr<int64_t>("sh")
      .Attr<int64_t>("sw")
      .Attr<int64_t>("pt")
      .Attr<int64_t>("pb")
      .Attr<int64_t>("pl")
      .Attr<int64_t>("pr")
      .Attr<int64_t>("threads");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(FixmatchOnednnConvForward, Forward, Bind());
XLA_FFI_DEFINE_HANDLER_SYMBOL(FixmatchOnednnConvBackwardData, BackwardData, Bind());
XLA_FFI_DEFINE_HANDLER_SYMBOL(FixmatchOnednnConvBackwardWeights, BackwardWeights, Bind());

// The oneDNN version this library was built against, for run_info.json.
extern "C" const char* FixmatchOnednnVersion() {
  static std::string version = [] {
    const dnnl_version_t* v = dnnl_version();
    return std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
           std::to_string(v->patch);
  }();
  return version.c_str();
}

"""oneDNN convolutions on CPU: `config.train.cpu_convolutions="onednn"`.

XLA:CPU (jaxlib 0.10) runs convolutions with YNNPACK or Eigen; the PyTorch peer runs them
with oneDNN, whose NHWC ("channels last") kernels are 1.2-2.3x faster per WRN-28-2 layer
on the project's 2-core CPU (forward + both gradients, 60 images;
`python scripts/bench_conv.py`). This module calls oneDNN's kernels from JAX: a small C++
library (native/onednn_conv.cc) exposes a forward, an input-gradient and a weight-gradient
handler as XLA FFI custom calls, and `conv` ties them together with a custom VJP.

The library is compiled on first use (g++, about 3 s) against jaxlib's FFI headers and
the oneDNN wheels that setup.py installs on Linux x86-64 (`onednn-cpu-gomp`,
`onednn-devel-cpu-gomp`), and cached under ~/.cache/fixmatch_jax (or
$FIXMATCH_JAX_CACHE), keyed by the source, jaxlib's version and the oneDNN found.
`unavailable_reason()` says what is missing, if anything.

Data parallelism: XLA cannot split a custom call over devices, so inside a jitted function
traced under a mesh with a "data" axis (`jax.sharding.use_abstract_mesh`, as
steps.make_train_step does) every call is wrapped in `jax.shard_map` over that axis: each
device convolves its own images and the weight gradient is summed over devices (`psum`).
Outside a mesh (one device, eager code) the custom call runs as is.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax
from jax.sharding import PartitionSpec as P

from fixmatch_jax.models import conv as conv_lib

SOURCE = pathlib.Path(__file__).with_name("native") / "onednn_conv.cc"
DATA_AXIS = "data"  # steps.DATA_AXIS (not imported: steps imports the models).
_TARGETS = ("FixmatchOnednnConvForward", "FixmatchOnednnConvBackwardData",
            "FixmatchOnednnConvBackwardWeights")
_FIX = ("pip install onednn-cpu-gomp onednn-devel-cpu-gomp (Linux x86-64) and a C++ "
        "compiler (apt-get install g++), or use --config.train.cpu_convolutions=eigen")


class OneDnnUnavailable(RuntimeError):
  """The oneDNN convolution library cannot be built or loaded here."""


def _prefixes() -> list[pathlib.Path]:
  roots = [os.environ.get("FIXMATCH_ONEDNN_ROOT"), os.environ.get("DNNLROOT"), sys.prefix,
           sys.base_prefix, site.getuserbase()]
  seen, out = set(), []
  for root in roots:
    if root and root not in seen:
      seen.add(root)
      out.append(pathlib.Path(root))
  return out


def find_onednn() -> tuple[pathlib.Path, pathlib.Path]:
  """(include dir, lib dir) of an installed oneDNN 3.x with OpenMP threading.

  Looks in $FIXMATCH_ONEDNN_ROOT, $DNNLROOT, then the Python prefixes (where the pip
  wheels put include/ and lib/). Raises OneDnnUnavailable naming what is missing.
  """
  for root in _prefixes():
    header = root / "include" / "oneapi" / "dnnl" / "dnnl.hpp"
    libs = sorted((root / "lib").glob("libdnnl.so*"))
    if header.is_file() and libs:
      config = (root / "include" / "oneapi" / "dnnl" / "dnnl_config.h").read_text()
      if "DNNL_CPU_RUNTIME DNNL_RUNTIME_OMP" not in config:
        raise OneDnnUnavailable(f"the oneDNN in {root} is not built with OpenMP threading; "
                                f"fix: {_FIX}")
      return header.parents[2], root / "lib"
  raise OneDnnUnavailable(
      "oneDNN's headers and library were not found (looked for include/oneapi/dnnl/dnnl.hpp "
      f"and lib/libdnnl.so under {', '.join(map(str, _prefixes()))}); fix: {_FIX}")


def cache_dir() -> pathlib.Path:
  root = os.environ.get("FIXMATCH_JAX_CACHE") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fixmatch_jax")
  return pathlib.Path(root) / "native"


def _compile_command(include: pathlib.Path, lib: pathlib.Path, output: pathlib.Path,
                     compiler: str) -> list[str]:
  return [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-w",
          f"-I{jax.ffi.include_dir()}", f"-I{include}", str(SOURCE), "-o", str(output),
          f"-L{lib}", "-ldnnl", f"-Wl,-rpath,{lib}"]


def build() -> pathlib.Path:
  """Compiles native/onednn_conv.cc (once; cached) and returns the shared library's path."""
  if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
    raise OneDnnUnavailable(f"oneDNN convolutions are built for Linux x86-64 only (this is "
                            f"{sys.platform} {platform.machine()}); use "
                            "--config.train.cpu_convolutions=eigen")
  include, lib = find_onednn()
  compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
  if not compiler:
    raise OneDnnUnavailable(f"no C++ compiler (g++ or $CXX) to build the oneDNN "
                            f"convolutions; fix: {_FIX}")
  import jaxlib  # noqa: PLC0415
  key = hashlib.sha256()
  key.update(SOURCE.read_bytes())
  key.update(f"{jaxlib.__version__}|{include}|{lib}|{compiler}".encode())
  for so in sorted(lib.glob("libdnnl.so*")):
    key.update(f"{so.name}:{so.stat().st_size}".encode())
  out_dir = cache_dir()
  output = out_dir / f"onednn_conv-{key.hexdigest()[:16]}.so"
  if output.is_file():
    return output
  out_dir.mkdir(parents=True, exist_ok=True)
  # Compile to a private name, then rename: concurrent processes never see half a file.
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
  os.close(fd)
  command = _compile_command(include, lib, pathlib.Path(tmp), compiler)
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  if result.returncode != 0:
    os.unlink(tmp)
    raise OneDnnUnavailable("compiling the oneDNN convolutions failed:\n  "
                            + " ".join(command) + "\n" + result.stderr[-2000:]
                            + f"\nfix: {_FIX}")
  os.replace(tmp, output)
  return output


@functools.cache
def load() -> ctypes.CDLL:
  """Builds (if needed) and loads the library, and registers its FFI targets for the CPU."""
  library = ctypes.cdll.LoadLibrary(str(build()))
  for name in _TARGETS:
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)),
                                platform="cpu")
  library.FixmatchOnednnVersion.restype = ctypes.c_char_p
  return library


def unavailable_reason() -> str | None:
  """None when oneDNN convolutions work here; otherwise why not, with the fix."""
  try:
    load()
  except (OneDnnUnavailable, OSError) as e:
    return str(e)
  return None


def version() -> str:
  """The oneDNN version the library runs with (builds and loads it)."""
  return load().FixmatchOnednnVersion().decode()


def available_or_warn() -> bool:
  """Whether the library works here; if not, logs why (with the fix) and that the model
  gets Eigen's convolutions instead: the same arithmetic up to float32 rounding, and the
  XLA flags fixmatch_jax.main sets for "onednn" already chose Eigen for XLA's own."""
  reason = unavailable_reason()
  if reason:
    logging.warning("config.train.cpu_convolutions='onednn', but %s. Using Eigen's "
                    "convolutions instead (slower on CPU, same results).", reason)
  return reason is None


def cpu_convolutions_info(requested: str, model) -> dict[str, str]:
  """run_info.json entries naming the convolution kernels `model` runs with, for
  `config.train.cpu_convolutions` = `requested` (models.create decided)."""
  if jax.default_backend() != "cpu":
    return {"cpu_convolutions": "unused (not a CPU run)"}
  if getattr(model, "conv_kernels", "xla") == "onednn":
    return {"cpu_convolutions": "onednn", "onednn_version": version()}
  # "onednn" not taken (a model without oneDNN convolutions, or no oneDNN here): Eigen's.
  return {"cpu_convolutions": "eigen" if requested == "onednn" else requested}


def threads_per_call() -> int:
  """OpenMP threads per convolution: the cores (this process may use) per local device."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return max(1, (cores or 1) // max(1, jax.local_device_count()))


# ---------------------------------------------------------------------------------------
# The convolution.


def _attrs(strides: Sequence[int], pads: Sequence[tuple[int, int]]) -> dict:
  (pt, pb), (pl, pr) = pads
  return dict(sh=np.int64(strides[0]), sw=np.int64(strides[1]), pt=np.int64(pt),
              pb=np.int64(pb), pl=np.int64(pl), pr=np.int64(pr),
              threads=np.int64(threads_per_call()))


def _out_shape(x, w, strides, pads) -> tuple[int, int, int, int]:
  n, h, wd, _ = x.shape
  kh, kw, _, o = w.shape
  (pt, pb), (pl, pr) = pads
  return (n, (h + pt + pb - kh) // strides[0] + 1, (wd + pl + pr - kw) // strides[1] + 1, o)


def _data_mesh(batch: int):
  """The context mesh when calls should be split over its "data" axis, else None."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or DATA_AXIS not in mesh.axis_names:
    return None
  if DATA_AXIS in getattr(mesh, "manual_axes", ()):
    return None  # Inside a shard_map over "data" already: each device has its own images.
  size = mesh.shape[DATA_AXIS]
  if size == 1 or batch % size:
    return None  # Unsplittable: XLA runs the call on the gathered batch (correct, slower).
  return mesh


def _varying(x) -> frozenset:
  """The manual mesh axes `x` varies over (inside a shard_map with check_vma; else none)."""
  return jax.typeof(x).manual_axis_type.varying


def _call(target: str, shape, a, b, strides, pads):
  """ffi_call of `target` on (a, b). Inside a shard_map, both operands are first made to
  vary over the same manual axes (ffi_call requires it) and so does the result."""
  axes = _varying(a) | _varying(b)
  a, b = (lax.pcast(v, tuple(axes - _varying(v)), to="varying") if axes - _varying(v) else v
          for v in (a, b))
  mat = jax.typeof(a).manual_axis_type
  extra = {} if mat.empty else dict(
      manual_axis_type=mat, sharding=jax.sharding.NamedSharding(jax.typeof(a).sharding.mesh, P()))
  out = jax.ShapeDtypeStruct(shape, a.dtype, **extra)
  return jax.ffi.ffi_call(target, out)(a, b, **_attrs(strides, pads))


def _as_cotangent_of(grad, primal):
  """`grad` summed over the manual axes it varies over and `primal` does not (a replicated
  kernel used with each device's images gets the sum of their gradients)."""
  extra = _varying(grad) - _varying(primal)
  return lax.psum(grad, tuple(sorted(extra))) if extra else grad


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv(x: jax.Array, w: jax.Array, strides: tuple[int, int],
         pads: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """oneDNN's 2-D convolution of NHWC float32 `x` with HWIO float32 `w`.

  Args:
    x: [N, H, W, C] activations.
    w: [KH, KW, C, O] kernel.
    strides: (stride_h, stride_w).
    pads: ((top, bottom), (left, right)) zero padding.

  Returns:
    [N, OH, OW, O], as lax.conv_general_dilated with the same arguments (to float32
    rounding); differentiable in x and w.
  """
  return _conv_fwd(x, w, strides, pads)[0]


def _conv_fwd(x, w, strides, pads):
  def forward(x, w):
    return _call(_TARGETS[0], _out_shape(x, w, strides, pads), x, w, strides, pads)

  mesh = _data_mesh(x.shape[0])
  if mesh is None:
    return forward(x, w), (x, w)
  return jax.shard_map(forward, mesh=mesh, in_specs=(P(DATA_AXIS), P()),
                       out_specs=P(DATA_AXIS))(x, w), (x, w)


def _conv_bwd(strides, pads, residuals, dy):
  x, w = residuals

  def grads(x, w, dy):
    return (_as_cotangent_of(_call(_TARGETS[1], x.shape, dy, w, strides, pads), x),
            _as_cotangent_of(_call(_TARGETS[2], w.shape, x, dy, strides, pads), w))

  mesh = _data_mesh(x.shape[0])
  if mesh is None:
    return grads(x, w, dy)
  # Inside, w is replicated and x, dy vary over "data": the weight gradient is psum'd.
  return jax.shard_map(grads, mesh=mesh, in_specs=(P(DATA_AXIS), P(), P(DATA_AXIS)),
                       out_specs=(P(DATA_AXIS), P()))(x, w, dy)


conv.defvjp(_conv_fwd, _conv_bwd)




def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding,
                         lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                         feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None) -> jax.Array:
  """Drop-in for lax.conv_general_dilated (flax `nn.Conv(conv_general_dilated=...)`):
  `conv` for 2-D float32 NHWC/HWIO convolutions without dilation or groups,
  lax.conv_general_dilated otherwise (e.g. bfloat16)."""
  if (preferred_element_type is None and lhs.dtype == rhs.dtype == jnp.float32
      and conv_lib.is_plain_nhwc(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers,
                                 feature_group_count, batch_group_count)):
    strides = tuple(int(s) for s in window_strides)
    pads = (lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
            if isinstance(padding, str) else padding)
    load()
    return conv(lhs, rhs, strides, tuple(tuple(int(p) for p in pad) for pad in pads))
  return lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)

r"""Command line: the only module with flags.

  python -m fixmatch_jax.main \
      --config=experiments/fixmatch_cifar10.py:labels=40,seed=1 --workdir=runs/c10_40_s1

`--config.x=y` overrides any field (the config is locked: a misspelt key fails).
Re-running the same command resumes from the workdir's newest checkpoint; SIGTERM saves
one and exits (docs/reliability.md).

Multi-host: the same command on every host, plus `--distributed` (the cluster is read
from the environment) or, e.g. for two processes on one machine,
`--distributed --coordinator_address=127.0.0.1:1234 --num_processes=2 --process_id=0`
(and `--process_id=1`); the workdir must be shared by the processes.

On Linux the process restarts itself once with tcmalloc preloaded when the library is
installed (`--malloc`; Debian/Ubuntu: `apt-get install libtcmalloc-minimal4`): XLA:CPU
allocates each step's buffers anew, and glibc's malloc returns them to the kernel every step.

Compiled steps go to JAX's persistent compilation cache (`--compilation_cache`), so a
resumed run or another seed of the same config starts without compiling again.

On a CPU host, JAX is given one XLA device per core (data parallelism over the
cores roughly halves step time on a 2-core machine), and with
`config.train.cpu_convolutions` "onednn" (the paper recipes: the wide ResNets'
convolutions are oneDNN custom calls, models/onednn.py) or "eigen", XLA runs its own
convolutions with Eigen instead of YNNPACK; both are XLA_FLAGS, which must be set before
JAX starts, which is why this module imports JAX only inside `main`.
"""

from __future__ import annotations

import functools
import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment file with get_config(arg), e.g. experiments/x.py:labels=40.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and logs.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Call jax.distributed.initialize() (multi-host). Unset flags below are read from the "
    "environment: JAX_COORDINATOR_ADDRESS, or a detected cluster (SLURM, Open MPI, TPU pods).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "With --distributed: host:port of process 0's coordinator.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "With --distributed: number of processes.", lower_bound=1)
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", None,
    "Directory of JAX's persistent compilation cache (default: $JAX_COMPILATION_CACHE_DIR, "
    "else ~/.cache/fixmatch_jax/jax; 'none' turns it off). A run that restarts (resume "
    "after preemption, another seed of the same config) loads its compiled steps instead "
    "of compiling them again; the executables are the same, so are the numbers.")
_MALLOC_ARENA_MAX = flags.DEFINE_integer(
    "malloc_arena_max", 2,
    "With glibc's malloc (see --malloc): cap on its arenas (Linux; 0 = glibc's default of 8 "
    "per core). Freed memory "
    "stays in the arena of the thread that freed it, so XLA's and tf.data's many threads "
    "keep a high-water mark per arena; 2 lowered the FixMatch step's peak RSS by ~60 MB "
    "(docs/benchmarks.md). The MALLOC_ARENA_MAX environment variable, when set, wins.",
    lower_bound=0)
_MALLOC = flags.DEFINE_enum(
    "malloc", "auto", ["auto", "tcmalloc", "glibc"],
    "Memory allocator (Linux). XLA:CPU allocates each step's temporary buffers anew (0.25 "
    "GB per device for the B=8 FixMatch WRN-28-2 step, 1.9 GB for B=64); glibc's malloc maps "
    "and unmaps blocks that large every time, so each step pays page faults for all of them "
    "(B=64: 4.4 s of kernel time in a 9.7 s step). tcmalloc keeps them for the next step: "
    "1.2x (B=8) to 1.6x (B=64) faster steps (docs/benchmarks.md). 'auto': tcmalloc when "
    "its library is installed, else glibc; 'tcmalloc': fail when it is missing (Debian/"
    "Ubuntu: apt-get install libtcmalloc-minimal4). tcmalloc is preloaded by restarting the "
    "process once with LD_PRELOAD; an LD_PRELOAD already set is left alone.")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "With --distributed: this process, in [0, num_processes).", lower_bound=0)
flags.mark_flags_as_required(["config", "workdir"])


def cpu_device_count(config, cores: int | None = None) -> int:
  """Host devices to force on CPU: one per core, lowered until it divides the batches."""
  requested = config.train.cpu_devices or cores or os.cpu_count() or 1
  batches = (config.data.batch_size, config.data.batch_size * config.data.mu,
             config.data.eval_batch_size)
  for count in range(requested, 0, -1):
    if all(b % count == 0 for b in batches):
      return count
  return 1


def cpu_xla_flags(count: int, convolutions: str = "xla") -> str:
  """The XLA_FLAGS of our CPU default with `count` host devices (scripts/bench_* use it too).

  `convolutions`: "eigen" and "onednn" add `EIGEN_CONVOLUTIONS_FLAG` (see
  `config.train.cpu_convolutions`; the caller checks `xla_has_eigen_convolutions_flag()`;
  with "onednn" it serves the convolutions models/onednn.py leaves to XLA), "xla" leaves
  XLA's choice.
  """
  # XLA:CPU aborts a collective whose participants arrive more than 40 s apart (by default);
  # on a loaded machine with one device per core that can happen without any deadlock.
  flags_ = (f"--xla_force_host_platform_device_count={count} "
            "--xla_cpu_collective_call_terminate_timeout_seconds=600")
  if convolutions not in CPU_CONVOLUTIONS:
    raise ValueError(f"convolutions={convolutions!r}: expected one of {CPU_CONVOLUTIONS}.")
  eigen = convolutions == "eigen" or (convolutions == "onednn"
                                      and xla_has_eigen_convolutions_flag())
  return flags_ + (f" {EIGEN_CONVOLUTIONS_FLAG}" if eigen else "")


# config.train.cpu_convolutions: "xla" leaves XLA:CPU's choice of convolution kernels
# (YNNPACK in jaxlib 0.10); "eigen" keeps convolutions out of YNNPACK, so XLA runs them
# with Eigen: 0.86x the FixMatch WRN-28-2 step time at B = 8 on the project's 2-core CPU,
# mostly from the weight gradients (docs/benchmarks.md, "Eigen convolutions"); "onednn"
# runs the wide ResNets' convolutions with oneDNN's kernels as XLA custom calls
# (models/onednn.py) and the rest with Eigen.
CPU_CONVOLUTIONS = ("onednn", "eigen", "xla")
EIGEN_CONVOLUTIONS_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_YNN_FLAG_NAME = "xla_cpu_experimental_ynn_fusion_type"


@functools.cache
def xla_has_eigen_convolutions_flag() -> bool:
  """Whether the installed jaxlib knows `EIGEN_CONVOLUTIONS_FLAG`.

  The flag is experimental, and XLA kills the process on a flag it does not know, so it is
  only set when XLA's library (jaxlib's largest shared object) names both the flag and
  the fusion type it removes. Reads the file through mmap: ~10 ms, no JAX import.
  """
  import glob  # noqa: PLC0415
  import importlib.util  # noqa: PLC0415
  import mmap  # noqa: PLC0415

  spec = importlib.util.find_spec("jaxlib")
  if spec is None or not spec.origin:
    return False
  libraries = glob.glob(os.path.join(os.path.dirname(spec.origin), "**", "*.so"),
                        recursive=True)
  if not libraries:
    return False
  try:
    with open(max(libraries, key=os.path.getsize), "rb") as f, \
        mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
      return (data.find(_YNN_FLAG_NAME.encode()) >= 0
              and data.find(b"LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION") >= 0)
  except (OSError, ValueError):
    return False


def jax_backends_initialized() -> bool:
  """Whether XLA has read XLA_FLAGS already (it does so when the first backend starts).

  Importing JAX does not start a backend, and loading a config may import JAX (configs
  import the algorithm registry), so "jax" in sys.modules is not the test.
  """
  if "jax" not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge  # noqa: PLC0415 - private; guarded below.
    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):  # Another JAX version: assume the worst.
    return True


def recipe_cpu_convolutions() -> str:
  """The convolution kernels the paper recipes get here: configs.base_config's
  `train.cpu_convolutions`, or "xla" where that is "eigen" and this jaxlib lacks the flag
  (for the benchmarks; "onednn" falls back to Eigen at run time, in models.create)."""
  from fixmatch_jax import configs  # noqa: PLC0415 - no JAX import.
  choice = configs.base_config().train.cpu_convolutions
  return "xla" if choice == "eigen" and not xla_has_eigen_convolutions_flag() else choice


def set_cpu_xla_flags(config) -> list[str]:
  """Adds our CPU defaults to XLA_FLAGS before JAX starts; returns the flags added.

  One host device per core (`cpu_device_count`) unless XLA_FLAGS already sets a count, and
  with `config.train.cpu_convolutions` "eigen" or "onednn", `EIGEN_CONVOLUTIONS_FLAG` unless
  XLA_FLAGS already chooses the YNNPACK fusions (skipped, with a warning, where this
  jaxlib lacks the flag). Nothing once a JAX backend has started (XLA read its flags then).
  """
  xla_flags = os.environ.get("XLA_FLAGS", "")
  if jax_backends_initialized():
    return []
  added = []
  if "xla_force_host_platform_device_count" not in xla_flags:
    added.append(cpu_xla_flags(cpu_device_count(config)))
  if config.train.cpu_convolutions != "xla" and _YNN_FLAG_NAME not in xla_flags:
    if xla_has_eigen_convolutions_flag():
      added.append(EIGEN_CONVOLUTIONS_FLAG)
    else:
      logging.warning("config.train.cpu_convolutions=%r needs the XLA flag %s, which "
                      "this jaxlib lacks; XLA chooses the kernels of its convolutions. With "
                      "YNNPACK's, --config.model.matmul_wgrad_min_images=240 speeds up "
                      "large per-device batches (docs/benchmarks.md).",
                      config.train.cpu_convolutions, EIGEN_CONVOLUTIONS_FLAG)
  if added:
    os.environ["XLA_FLAGS"] = " ".join([xla_flags, *added]).strip()
  return added


def limit_malloc_arenas(count: int) -> bool:
  """Caps glibc's malloc arenas at `count` via mallopt(M_ARENA_MAX); True when applied.

  Arenas are created as threads first allocate, so this must run before JAX and tf.data
  start their thread pools. Skipped (False) when `count` is 0, when MALLOC_ARENA_MAX is set
  in the environment (glibc has read it already), when another allocator is preloaded, or
  when the C library is not glibc.
  """
  if count <= 0 or "MALLOC_ARENA_MAX" in os.environ or os.environ.get("LD_PRELOAD"):
    return False
  import ctypes  # noqa: PLC0415
  import platform  # noqa: PLC0415
  if platform.libc_ver()[0] != "glibc":
    return False
  m_arena_max = -8  # From glibc's malloc.h.
  return bool(ctypes.CDLL(None).mallopt(m_arena_max, count))


# Set in the environment of the restarted process (the library it preloaded), so that it
# does not restart again; also tells tests and benchmarks what was chosen.
MALLOC_ENV = "FIXMATCH_JAX_MALLOC"
TCMALLOC_INSTALL = "apt-get install libtcmalloc-minimal4 (Debian/Ubuntu)"


def find_tcmalloc() -> str | None:
  """The tcmalloc shared library as LD_PRELOAD accepts it (a soname or a path), or None."""
  import ctypes.util  # noqa: PLC0415
  for name in ("tcmalloc_minimal", "tcmalloc"):
    library = ctypes.util.find_library(name)
    if library:
      return library
  return None


def allocator_library(choice: str) -> str | None:
  """The library to preload for --malloc=`choice`; None means glibc's malloc.

  Raises:
    ValueError: `choice` is "tcmalloc" and no tcmalloc library is installed, or unknown.
  """
  if choice not in ("auto", "tcmalloc", "glibc"):
    raise ValueError(f"Unknown allocator {choice!r}; choose auto, tcmalloc or glibc.")
  if choice == "glibc" or not sys.platform.startswith("linux"):
    return None
  library = find_tcmalloc()
  if library is None and choice == "tcmalloc":
    raise ValueError(f"--malloc=tcmalloc, but no tcmalloc library was found. Install it "
                     f"({TCMALLOC_INSTALL}) or run with --malloc=glibc.")
  return library


def allocator_environment(choice: str) -> dict[str, str]:
  """Environment variables that make a new process use the allocator of --malloc=`choice`.

  For programs that start workers (benchmarks) and for `restart_with_allocator`.
  """
  library = allocator_library(choice)
  if library is None:
    return {MALLOC_ENV: "glibc"}
  return {MALLOC_ENV: library, "LD_PRELOAD": library}


def process_environment(choice: str, base: dict[str, str] | None = None) -> dict[str, str]:
  """The environment for a child process that should run with --malloc=`choice`.

  `base` (default: this process's environment) without any allocator setting of its own
  (LD_PRELOAD, MALLOC_ENV), plus `allocator_environment(choice)`. For benchmarks that
  compare allocators or start workers.
  """
  base = os.environ if base is None else base
  clean = {k: v for k, v in base.items() if k not in ("LD_PRELOAD", MALLOC_ENV)}
  return dict(clean, **allocator_environment(choice))


def restart_with_allocator(choice: str) -> None:
  """Replaces this process by the same command with tcmalloc preloaded, when it applies.

  Returns (and changes nothing) when the allocator is already settled: a restarted process,
  an LD_PRELOAD set by the user, or glibc chosen or the only one there. The process keeps
  its PID (exec), so signals from a scheduler reach the restarted training.
  """
  if MALLOC_ENV in os.environ or os.environ.get("LD_PRELOAD"):
    return
  environment = allocator_environment(choice)
  if "LD_PRELOAD" not in environment:
    os.environ.update(environment)
    return
  logging.info("Restarting with %s preloaded (--malloc=glibc: no restart).",
               environment["LD_PRELOAD"])
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, dict(os.environ, **environment))


def compilation_cache_dir(flag_value: str | None) -> str | None:
  """The persistent compilation cache directory to use, or None for no cache."""
  value = flag_value if flag_value is not None else os.environ.get(
      "JAX_COMPILATION_CACHE_DIR",
      os.path.join(os.path.expanduser("~"), ".cache", "fixmatch_jax", "jax"))
  return None if value.strip().lower() in ("", "none") else value


def use_compilation_cache(cache: str | None) -> None:
  """Points JAX's persistent compilation cache at `cache` (None: off), for every executable.

  JAX by default stores only executables that took over a second to compile; the small ones
  (initialisers, the EMA update) would then be compiled at every start, and the compiler's
  garbage stays in the process (~70 MB at peak for the FixMatch step, docs/benchmarks.md).
  """
  import jax  # noqa: PLC0415 - after XLA_FLAGS is final.
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    restart_with_allocator(_MALLOC.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  config = _CONFIG.value
  limit_malloc_arenas(_MALLOC_ARENA_MAX.value)
  set_cpu_xla_flags(config)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

  import jax  # noqa: PLC0415 - after XLA_FLAGS is final.

  from fixmatch_jax import metrics, train  # noqa: PLC0415

  cache = compilation_cache_dir(_COMPILATION_CACHE.value)
  use_compilation_cache(cache)
  if cache:
    logging.info("Compiled steps are cached in %s (--compilation_cache=none: off).", cache)
  if _DISTRIBUTED.value:
    # On CPU the processes' collectives go through gloo (jax's default for CPU).
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  elif any(f.present for f in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID)):
    raise app.UsageError("--coordinator_address, --num_processes and --process_id need "
                         "--distributed.")
  logging.info("JAX process %d/%d, devices: %s; malloc: %s", jax.process_index(),
               jax.process_count(), jax.devices(), metrics.allocator_description())
  train.train_and_evaluate(config, _WORKDIR.value)
  summary_path = os.path.join(_WORKDIR.value, train.SUMMARY_FILE)
  if jax.process_index() == 0 and os.path.exists(summary_path):
    with open(summary_path) as f:
      summary = json.load(f)
    print(json.dumps(summary, indent=2))
    last_n = config.train.summary_last_n
    print(f"Test accuracy (EMA model, median of the last {last_n} evaluations): "
          f"{summary[f'acc_ema_median_last{last_n}']:.4f}")


if __name__ == "__main__":
  app.run(main)

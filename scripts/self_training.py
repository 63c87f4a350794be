r"""Runs a self-training or deep label propagation driver (resumable) from an experiment config.

  python scripts/self_training.py \
      --config=experiments/self_training.py:stage=rounds,seed=1 \
      --teacher=runs/self_training/seed1/teacher --workdir=runs/self_training/seed1/rounds

stage=rounds runs fixmatch_jax.self_training.run_rounds; stage=deep_lp_driver runs
fixmatch_jax.deep_label_propagation.run. --teacher reuses a teacher run (trained there if
unfinished). Re-running the command resumes at the round (epoch) and step where it stopped.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fixmatch_jax import main as cli  # noqa: E402  (its flags; CPU devices before JAX)

# --config and --workdir are main.py's flags (a config file with overrides, locked).
_TEACHER = flags.DEFINE_string("teacher", None, "Teacher run directory (default: in workdir).")


def main(argv):
  del argv
  config = cli._CONFIG.value  # noqa: SLF001 - the flag main.py defines.
  cli.set_cpu_xla_flags(config.teacher)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from fixmatch_jax import deep_label_propagation, self_training  # noqa: PLC0415

  if "rounds" in config:
    results = self_training.run_rounds(config, cli._WORKDIR.value, _TEACHER.value)
  else:
    results = deep_label_propagation.run(config, cli._WORKDIR.value, _TEACHER.value)
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  app.run(main)

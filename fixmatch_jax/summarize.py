r"""Paper-style tables from run directories: `python -m fixmatch_jax.summarize`.

  python -m fixmatch_jax.summarize --script=experiments/runs/fashion_mnist.sh \
      --runs=runs/fashion_mnist --metric=accuracy [--write=docs/fashion_mnist.md]

Each run directory (workdir) holds `config.json` and `metrics.jsonl` (and, for runs made
after this module existed, `run_info.json` with the hardware and start date). Per run the
number is the papers' own: the median of the last N evaluations of the EMA model,
N = the run's `train.summary_last_n` (20 in the paper configs; Sohn et al. 2020,
arXiv:2001.07685, Sec. 4). Per table row (dataset, algorithm, labels) it is averaged over
the seeds, mean +/- sample standard deviation (ddof = 1). The best EMA accuracy seen during
a run ("best-of-run", what several other codebases report) is a separate, labelled column.
Two more columns describe the pseudo-labels at the end of training, mean +/- std over seeds
of each run's last logged `train/pseudo_label_acc` (accuracy, against the hidden labels,
of the pseudo-labels that pass the method's mask) and `train/mask_rate` (the fraction that
passes); "-" for methods that log neither (supervised).

Rules, so that a table never says more than its runs do:
- Runs in one row must have the same config except `seed` (and the keys of
  `NON_RESULT_KEYS`, which cannot change a result); otherwise the table is refused
  with the differing keys named.
- `--script` (an `experiments/runs/*.sh` file) gives the expected runs: the script is
  run with a stand-in `python` on PATH that only records its arguments, so its loops
  expand exactly as bash expands them, and every `python -m fixmatch_jax.main
  --config=... --workdir=...` it would run is one expected run. Missing runs (no
  metrics.jsonl) and unfinished ones (last logged step < train.num_steps) are listed
  under the table and left out of the numbers.
- The paper's number comes from the experiment file of the run's command: its
  `PAPER_ERROR` dict in error %, keyed by the label count or by a tuple such as
  (algorithm, labels) or (dataset, labels) (see `paper_error`); a bare mean or a std of
  None means the paper gives no std. Rows without one show "-".
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RUN_INFO_FILE = "run_info.json"
SUMMARY_FILE = "summary.json"
PSEUDO_LABEL_ACC, MASK_RATE = "train/pseudo_label_acc", "train/mask_rate"
# Config keys that may differ between the runs of one row: the seed, and bookkeeping
# that cannot change what is computed (where data live, how often to log/checkpoint,
# how many CPU devices carry the same global batch, which library runs the convolutions).
NON_RESULT_KEYS = frozenset({
    "seed", "data.data_dir", "data.prefetch", "data.num_parallel_calls",
    "train.log_every_steps", "train.checkpoint_every_steps", "train.keep_checkpoints",
    "train.allow_config_change", "train.cpu_devices", "train.cpu_convolutions"})
BEGIN_MARK, END_MARK = "<!-- summarize:begin {} -->", "<!-- summarize:end {} -->"


class MixedConfigsError(ValueError):
  """Runs of one table row differ in more than the seed."""


@dataclasses.dataclass
class Run:
  """One workdir as the summarizer sees it."""
  workdir: str
  config: dict[str, Any]          # flattened: {"data.num_labels": 40, ...}
  rows: list[dict[str, Any]]      # metrics.jsonl
  info: dict[str, Any]            # run_info.json, or what could be inferred
  experiment: str | None = None   # the experiment file of its command, if known

  @property
  def row_key(self) -> tuple[str, str, int]:
    return (self.config["data.dataset"], self.config["algorithm"],
            int(self.config["data.num_labels"]))

  @property
  def last_step(self) -> int:
    return max((int(r["step"]) for r in self.rows), default=0)

  @property
  def finished(self) -> bool:
    return self.last_step >= int(self.config["train.num_steps"])

  def ema_accuracies(self) -> list[float]:
    return [float(r["eval/acc_ema"]) for r in self.rows if "eval/acc_ema" in r]

  def median_last_n(self) -> float:
    """The paper's number for this run: median of the last N EMA evaluations."""
    n = int(self.config["train.summary_last_n"])
    evals = self.ema_accuracies()
    if not evals:
      raise ValueError(f"{self.workdir}: metrics.jsonl has no eval/acc_ema rows.")
    return statistics.median(evals[-n:])

  def best_of_run(self) -> float:
    return max(self.ema_accuracies())

  def last_logged(self, key: str) -> float | None:
    """The last value of a train metric (itself a mean over its logging interval), or None
    when the run never logs it (e.g. supervised runs have no pseudo-labels)."""
    values = [float(r[key]) for r in self.rows if key in r]
    return values[-1] if values else None


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}} -> {"a.b": 1}."""
  out: dict[str, Any] = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def load_run(workdir: str, experiment: str | None = None) -> Run:
  """Reads config.json, metrics.jsonl and run_info.json of `workdir`."""
  with open(os.path.join(workdir, CONFIG_FILE)) as f:
    config = flatten(json.load(f))
  path = os.path.join(workdir, METRICS_FILE)
  rows = []
  if os.path.exists(path):
    with open(path) as f:
      rows = [json.loads(line) for line in f if line.strip()]
  info_path = os.path.join(workdir, RUN_INFO_FILE)
  if os.path.exists(info_path):
    with open(info_path) as f:
      info = json.load(f)
  else:  # Runs made before run_info.json existed: the date of their last metrics only.
    mtime = os.path.getmtime(path) if os.path.exists(path) else None
    info = {"hardware": "not recorded",
            "date": (datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc)
                     .strftime("%Y-%m-%d") if mtime else "unknown")}
  summary_path = os.path.join(workdir, SUMMARY_FILE)
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      info.setdefault("wall_seconds", json.load(f).get("wall_seconds"))
  return Run(workdir=workdir, config=config, rows=rows, info=info, experiment=experiment)


def find_workdirs(root: str) -> list[str]:
  """Every directory under `root` (itself included) that holds a config.json."""
  found = []
  for directory, subdirs, files in os.walk(root):
    if CONFIG_FILE in files:
      found.append(directory)
      subdirs.clear()  # A workdir's checkpoints hold no further runs.
    subdirs.sort()
  return sorted(found)


def expected_runs(script: str, runs_dir: str | None = None) -> list[tuple[str, str]]:
  """(experiment file with its argument, workdir) of every training command of `script`.

  The script runs under bash with `python`/`python3` replaced by a stand-in that writes
  its arguments to a file and does nothing else, so loops and variables expand exactly as
  in a real run. Scripts must therefore reach Python only through `python`/`python3`.
  """
  if not os.path.exists(script):
    raise FileNotFoundError(f"Runs script {script!r} not found (see experiments/runs/).")
  with tempfile.TemporaryDirectory() as shim_dir:
    log = os.path.join(shim_dir, "calls.jsonl")
    stand_in = os.path.join(shim_dir, "python")
    with open(stand_in, "w") as f:
      f.write(f"#!{sys.executable}\nimport json, sys\n"
              f"open({log!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    os.chmod(stand_in, 0o755)
    os.symlink(stand_in, os.path.join(shim_dir, "python3"))
    env = dict(os.environ, PATH=f"{shim_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(["bash", script] + ([runs_dir] if runs_dir else []), env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
      raise RuntimeError(f"Dry run of {script} failed ({result.returncode}):\n{result.stderr}")
    calls = []
    if os.path.exists(log):
      with open(log) as f:
        calls = [json.loads(line) for line in f]
  commands = []
  for argv in calls:
    if argv[:2] != ["-m", "fixmatch_jax.main"]:
      continue
    flags = dict(arg[2:].split("=", 1) for arg in argv[2:] if arg.startswith("--") and "=" in arg)
    if "config" not in flags or "workdir" not in flags:
      raise ValueError(f"{script}: command {shlex.join(argv)} lacks --config= or --workdir=.")
    commands.append((flags["config"], flags["workdir"]))
  if not commands:
    raise ValueError(f"{script} runs no `python -m fixmatch_jax.main` command.")
  return commands


def _typed(value: str) -> Any:
  try:
    return int(value)
  except ValueError:
    return value


def paper_error(experiment: str | None, algorithm: str, labels: int,
                dataset: str | None = None) -> tuple[float, float | None] | None:
  """(mean, std or None) error % declared by the run's experiment file, or None.

  The file's `PAPER_ERROR` (or `PAPER_ERROR_MEDIAN_LAST20`) maps a key to an error %, or
  to (error %, std or None). A key is the label count, or a tuple of values that must all
  describe the run: its algorithm, dataset, label count or any value of the command's
  argument string (e.g. ("uda", 250) for `method=uda,labels=250`, ("svhn", 40) for
  `dataset=svhn,labels=40`). The most specific matching key wins.
  """
  if not experiment:
    return None
  path, _, arg = experiment.partition(":")
  if not os.path.exists(path):
    return None
  module = _load_experiment(path)
  table = (getattr(module, "PAPER_ERROR", None) or
           getattr(module, "PAPER_ERROR_MEDIAN_LAST20", None) or {})
  described = {algorithm, labels, dataset}
  described |= {_typed(item.split("=", 1)[1]) for item in arg.split(",") if "=" in item}
  best = None
  for key, value in table.items():
    parts = key if isinstance(key, tuple) else (key,)
    if all(part in described for part in parts) and (best is None or len(parts) > best[0]):
      best = (len(parts), value)
  if best is None:
    return None
  value = best[1]
  if isinstance(value, (tuple, list)):
    std = value[1] if len(value) > 1 else None
    return float(value[0]), None if std is None else float(std)
  return float(value), None  # A mean without a published std.


_EXPERIMENTS: dict[str, Any] = {}


def _load_experiment(path: str) -> Any:
  """Imports an experiment file once (by path)."""
  if path not in _EXPERIMENTS:
    spec = importlib.util.spec_from_file_location(f"_experiment_{len(_EXPERIMENTS)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _EXPERIMENTS[path] = module
  return _EXPERIMENTS[path]


def check_same_config(runs: Sequence[Run]) -> None:
  """Raises MixedConfigsError naming every key (besides the seed) on which runs differ."""
  keys = sorted(set().union(*(r.config for r in runs)) - NON_RESULT_KEYS)
  differing = {}
  for key in keys:
    # A key added to the code after a run started, at its null default, changes nothing
    # (the same rule as train.write_or_check_config): missing == None.
    values = {json.dumps(r.config.get(key), sort_keys=True) for r in runs}
    if len(values) > 1:
      differing[key] = [(r.workdir, r.config.get(key, "<missing>")) for r in runs]
  if differing:
    lines = [f"  {key}: " + ", ".join(f"{v!r} ({w})" for w, v in pairs)
             for key, pairs in differing.items()]
    raise MixedConfigsError(
        "Refusing to average runs whose configs differ in more than the seed:\n" +
        "\n".join(lines) + "\nSummarize them separately (one --runs directory or --script per "
        "configuration), or re-run them with one config.")


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
  """Mean and sample standard deviation (None for a single value)."""
  return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


@dataclasses.dataclass
class TableRow:
  dataset: str
  algorithm: str
  labels: int
  seeds: list[int]
  medians: list[float]            # accuracy per finished run (fraction)
  bests: list[float]
  paper: tuple[float, float | None] | None
  expected: int
  summary_last_n: int
  num_steps: int
  hardware: str
  dates: str
  wall_hours: float | None
  # End of training, per finished run that logs them (train/pseudo_label_acc: accuracy of
  # the pseudo-labels that pass the method's mask; train/mask_rate: the fraction passing).
  pseudo_label_accs: list[float] = dataclasses.field(default_factory=list)
  mask_rates: list[float] = dataclasses.field(default_factory=list)


def _join_sorted(values: Iterable[str]) -> str:
  return ", ".join(sorted(set(values)))


def build_table(runs: Sequence[Run], expected: Mapping[tuple[str, str, int], int] | None = None,
                templates: Mapping[tuple[str, str, int], tuple[str, dict[str, Any]]] | None = None
                ) -> list[TableRow]:
  """Groups finished runs by (dataset, algorithm, labels); checks each group's configs.

  `templates` gives, for rows whose runs are all missing, the command's experiment
  argument and config, so that such rows still show the paper's number, N and steps.
  """
  groups: dict[tuple[str, str, int], list[Run]] = {}
  for run in runs:
    groups.setdefault(run.row_key, []).append(run)
  table = []
  for key in sorted(set(groups) | set(expected or {})):
    group = groups.get(key, [])
    if group:
      check_same_config(group)
    done = [r for r in group if r.finished and r.ema_accuracies()]
    template = (templates or {}).get(key, (None, {}))
    experiment = next((r.experiment for r in group if r.experiment), template[0])
    walls = [r.info["wall_seconds"] for r in done if r.info.get("wall_seconds")]
    first = group[0].config if group else template[1]
    table.append(TableRow(
        dataset=key[0], algorithm=key[1], labels=key[2],
        seeds=sorted(int(r.config["seed"]) for r in done),
        medians=[r.median_last_n() for r in done], bests=[r.best_of_run() for r in done],
        paper=paper_error(experiment, key[1], key[2], key[0]),
        expected=(expected or {}).get(key, len(group)),
        summary_last_n=int(first.get("train.summary_last_n", 0)),
        num_steps=int(first.get("train.num_steps", 0)),
        hardware=_join_sorted(str(r.info.get("hardware", "not recorded")) for r in done) or "-",
        dates=_join_sorted(str(r.info.get("date", "unknown")) for r in done) or "-",
        wall_hours=statistics.fmean(walls) / 3600 if walls else None,
        pseudo_label_accs=_logged(done, PSEUDO_LABEL_ACC), mask_rates=_logged(done, MASK_RATE)))
  return table


def _logged(runs: Sequence[Run], key: str) -> list[float]:
  return [v for v in (r.last_logged(key) for r in runs) if v is not None]


def _cell(values: Sequence[float], metric: str) -> str:
  if not values:
    return "-"
  points = [100 * v if metric == "accuracy" else 100 * (1 - v) for v in values]
  mean, std = mean_std(points)
  return f"{mean:.2f}" if std is None else f"{mean:.2f} +/- {std:.2f}"


def _paper_cell(paper: tuple[float, float | None] | None, metric: str) -> str:
  if paper is None:
    return "-"
  mean = paper[0] if metric == "error" else 100 - paper[0]
  return f"{mean:.2f}" if paper[1] is None else f"{mean:.2f} +/- {paper[1]:.2f}"


def format_table(table: Sequence[TableRow], metric: str = "error") -> str:
  """The markdown table."""
  name = "error %" if metric == "error" else "accuracy %"
  lines = [
      f"| dataset | algorithm | labels | ours: {name} (median of last N EMA evals; "
      f"mean +/- std over seeds) | paper {name} | best-of-run {name} (not the paper's "
      "protocol) | runs (seeds) | N | steps | hardware | date | hours/run | "
      "pseudo-label acc % at end | mask rate % at end |",
      "|---|---|---:|---:|---:|---:|---|---:|---:|---|---|---:|---:|---:|"]
  for row in table:
    seeds = ",".join(str(s) for s in row.seeds) or "none"
    hours = "-" if row.wall_hours is None else f"{row.wall_hours:.2f}"
    lines.append(
        f"| {row.dataset} | {row.algorithm} | {row.labels} | {_cell(row.medians, metric)} | "
        f"{_paper_cell(row.paper, metric)} | {_cell(row.bests, metric)} | "
        f"{len(row.medians)}/{row.expected} ({seeds}) | {row.summary_last_n} | {row.num_steps} | "
        f"{row.hardware} | {row.dates} | {hours} | "
        # Fractions shown as percentages (never turned into error rates).
        f"{_cell(row.pseudo_label_accs, 'accuracy')} | {_cell(row.mask_rates, 'accuracy')} |")
  return "\n".join(lines)


def format_by_algorithm(table: Sequence[TableRow], metric: str = "accuracy") -> str:
  """A compact view for comparing methods: one row per (dataset, labels), one column per
  algorithm (median of the last N EMA evaluations, mean +/- std over seeds; run counts)."""
  algorithms = sorted({row.algorithm for row in table})
  name = "error %" if metric == "error" else "accuracy %"
  lines = ["| dataset | labels | " + " | ".join(f"{a} ({name})" for a in algorithms) + " |",
           "|---|---:|" + "---:|" * len(algorithms)]
  cells: dict[tuple[str, int], dict[str, str]] = {}
  for row in table:
    cell = _cell(row.medians, metric)
    cells.setdefault((row.dataset, row.labels), {})[row.algorithm] = (
        f"{cell} ({len(row.medians)}/{row.expected} runs)")
  for (dataset, labels), by_algorithm in sorted(cells.items()):
    lines.append(f"| {dataset} | {labels} | " +
                 " | ".join(by_algorithm.get(a, "-") for a in algorithms) + " |")
  return "\n".join(lines)


def format_problems(runs: Sequence[Run], missing: Sequence[tuple[str, str]]) -> str:
  """Lines naming missing and unfinished runs (empty when there are none)."""
  lines = [f"- missing: {workdir} (`--config={config}`)" for config, workdir in missing]
  for run in runs:
    if not run.finished:
      lines.append(f"- unfinished: {run.workdir} (step {run.last_step} of "
                   f"{run.config['train.num_steps']}; not in the table)")
    elif not run.ema_accuracies():
      lines.append(f"- no EMA evaluations: {run.workdir} (not in the table)")
  return "\n".join(lines)


def summarize(runs_dirs: Sequence[str] = (), script: str | None = None,
              runs_root: str | None = None, metric: str = "error",
              view: str = "full") -> str:
  """The whole report: table, then missing/unfinished runs.

  Args:
    runs_dirs: directories searched for workdirs (ignored when `script` is given).
    script: an experiments/runs/*.sh file; only its workdirs are read.
    runs_root: passed to the script as $1 (its runs directory), if given.
    metric: "error" (the papers' convention) or "accuracy".
    view: "full" (the paper-style table), "by_algorithm" (one column per algorithm, for
      comparing methods) or "both".
  """
  if view not in ("full", "by_algorithm", "both"):
    raise ValueError(f"view={view!r}: use 'full', 'by_algorithm' or 'both'.")
  if metric not in ("error", "accuracy"):
    raise ValueError(f"metric={metric!r}: use 'error' or 'accuracy'.")
  runs, missing = [], []
  expected: dict[tuple[str, str, int], int] = {}
  templates: dict[tuple[str, str, int], tuple[str, dict[str, Any]]] = {}
  if script:
    for config, workdir in expected_runs(script, runs_root):
      if os.path.exists(os.path.join(workdir, CONFIG_FILE)):
        run = load_run(workdir, experiment=config)
        runs.append(run)
        expected[run.row_key] = expected.get(run.row_key, 0) + 1
      else:
        missing.append((config, workdir))
    for config_arg, _ in missing:  # Place missing runs in their row via their config.
      template = _config_from_experiment(config_arg)
      if template is not None:
        key = (template["data.dataset"], template["algorithm"], int(template["data.num_labels"]))
        expected[key] = expected.get(key, 0) + 1
        templates.setdefault(key, (config_arg, template))
  else:
    for root in runs_dirs:
      if not os.path.isdir(root):
        raise FileNotFoundError(f"Runs directory {root!r} does not exist.")
      runs.extend(load_run(w) for w in find_workdirs(root))
    if not runs:
      raise ValueError(f"No workdir (a directory with {CONFIG_FILE}) under {list(runs_dirs)}.")
  table = build_table(runs, expected if script else None, templates)
  report = {"full": format_table(table, metric),
            "by_algorithm": format_by_algorithm(table, metric),
            "both": format_by_algorithm(table, metric) + "\n\n" + format_table(table, metric)
            }[view]
  problems = format_problems(runs, missing)
  return report + ("\n\n" + problems if problems else "") + "\n"


def _config_from_experiment(config_arg: str) -> dict[str, Any] | None:
  """The flattened config of a not-yet-run command, from its experiment file."""
  path, _, arg = config_arg.partition(":")
  if not os.path.exists(path):
    return None
  config = _load_experiment(path).get_config(arg or None)
  return flatten(json.loads(config.to_json_best_effort()))


def write_between_marks(path: str, name: str, text: str) -> None:
  """Replaces what lies between the `summarize:begin/end <name>` marks of a markdown file."""
  with open(path) as f:
    content = f.read()
  begin, end = BEGIN_MARK.format(name), END_MARK.format(name)
  if begin not in content or end not in content:
    raise ValueError(f"{path} lacks the marks {begin!r} ... {end!r}; add them where the "
                     "table goes.")
  head, rest = content.split(begin, 1)
  _, tail = rest.split(end, 1)
  with open(path, "w") as f:
    f.write(f"{head}{begin}\n{text.strip()}\n{end}{tail}")


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", nargs="*", default=[],
                      help="Directories searched for workdirs (without --script), or the "
                           "runs directory handed to --script as $1.")
  parser.add_argument("--script", help="experiments/runs/*.sh: the table's expected runs.")
  parser.add_argument("--metric", choices=("error", "accuracy"), default="error")
  parser.add_argument("--view", choices=("full", "by_algorithm", "both"), default="full",
                      help="full: the paper-style table; by_algorithm: one column per "
                           "algorithm (compact, for comparing methods); both.")
  parser.add_argument("--write", nargs="*", default=[],
                      help="Markdown files whose `<!-- summarize:begin NAME -->` ... "
                           "`<!-- summarize:end NAME -->` block gets the table "
                           "(NAME = the script's or runs directory's base name).")
  parser.add_argument("--name", help="The marks' NAME for --write (default: the script's "
                      "or runs directory's base name).")
  args = parser.parse_args(argv)
  if not args.script and not args.runs:
    parser.error("give --script=experiments/runs/<table>.sh or --runs=<dir> ...")
  if args.script and len(args.runs) > 1:
    parser.error("with --script, --runs is the single runs directory passed to the script.")
  runs_root = args.runs[0] if args.script and args.runs else None
  try:
    report = summarize(args.runs, script=args.script, runs_root=runs_root, metric=args.metric,
                       view=args.view)
  except (MixedConfigsError, FileNotFoundError, ValueError, RuntimeError) as error:
    sys.exit(f"summarize: {error}")
  command = ["python", "-m", "fixmatch_jax.summarize"]
  command += [f"--script={args.script}"] if args.script else []
  command += [f"--runs={r}" for r in args.runs] + [f"--metric={args.metric}"]
  command += [f"--view={args.view}"] if args.view != "full" else []
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  block = f"{report}\nGenerated {stamp} by `{shlex.join(command)}`.\n"
  print(block)
  name = args.name or os.path.splitext(
      os.path.basename(args.script or args.runs[0].rstrip("/")))[0]
  for path in args.write:
    write_between_marks(path, name, block)
    print(f"wrote the {name!r} table into {path}")


if __name__ == "__main__":
  main()

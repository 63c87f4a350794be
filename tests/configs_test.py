"""Experiment configs: built through the absl flag parser, carrying the papers' values."""

import json
import math
import os

import pytest
from absl import flags
from ml_collections import config_flags

from fixmatch_jax import algorithms, configs, summarize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# FixMatch Table 2 (Sohn et al. 2020): dataset file, label counts, model, weight decay.
TABLE2 = {
    "fixmatch_cifar10.py": ("cifar10", (40, 250, 4000), "wrn28_2", 5e-4, True),
    "fixmatch_cifar100.py": ("cifar100", (400, 2500, 10000), "wrn28_8", 1e-3, True),
    "fixmatch_svhn.py": ("svhn_cropped", (40, 250, 1000), "wrn28_2", 5e-4, False),
    "fixmatch_stl10.py": ("stl10", (1000,), "wrn37_2", 5e-4, True),
}


def parse(argv):
  """Parses flags as `main.py` does, into a fresh FlagValues."""
  flag_values = flags.FlagValues()
  argv = ["prog", *argv]
  # sys_argv: config_flags reads the overrides to define from it (default sys.argv).
  config_flags.DEFINE_config_file("config", None, flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  return flag_values.config


@pytest.mark.parametrize("filename", sorted(TABLE2))
def test_table2_configs_carry_the_paper_recipe(filename):
  dataset, label_counts, model, weight_decay, flip = TABLE2[filename]
  for labels in label_counts:
    for seed in range(1, 6):
      path = os.path.join(REPO, "experiments", filename)
      config = parse([f"--config={path}:labels={labels},seed={seed}"])
      configs.validate(config)
      assert config.data.dataset == dataset
      assert config.data.num_labels == labels
      assert config.seed == seed
      assert config.model.name == model
      # Sohn et al. 2020, Sec. 4 / App. B: the hyperparameters shared by every cell.
      assert config.algorithm == "fixmatch"
      assert config.algo.threshold == 0.95
      assert config.algo.lambda_u == 1.0
      assert config.data.batch_size == 64 and config.data.mu == 7
      assert config.optim.lr == 0.03 and config.optim.momentum == 0.9
      assert config.optim.nesterov and config.optim.schedule == "cosine"
      assert config.optim.cosine_cycles == 7 / 16
      assert config.optim.weight_decay == weight_decay
      assert config.optim.ema_decay == 0.999
      assert config.train.num_steps == 2**20 == config.optim.decay_steps
      assert config.train.eval_every_steps == 1024 and config.train.summary_last_n == 20
      assert config.data.weak.flip == flip and config.data.weak.pad_fraction == 0.125
      strong = config.data.strong
      assert (strong.num_ops, strong.prob, strong.min_level, strong.max_level) == (2, 0.5, 1, 9)
      assert strong.cutout == 0.5 and strong.variant == "fixmatch"


def test_overrides_and_typos_on_the_command_line():
  path = os.path.join(REPO, "experiments", "fixmatch_cifar10.py")
  config = parse([f"--config={path}:labels=250", "--config.optim.lr=0.01"])
  assert config.optim.lr == 0.01 and config.data.num_labels == 250
  with pytest.raises(Exception, match="lrr"):
    parse([f"--config={path}", "--config.optim.lrr=0.01"])
  with pytest.raises(Exception, match="labels"):
    parse([f"--config={path}:labels=41"])
  with pytest.raises(Exception, match="lables"):
    parse([f"--config={path}:lables=40"])


def test_parse_arg_types_and_errors():
  args = configs.parse_arg("labels=40,extra=true,lr=0.5,name=x", labels=1, extra=False, lr=1.0,
                           name="y")
  assert (args.labels, args.extra, args.lr, args.name) == (40, True, 0.5, "x")
  with pytest.raises(ValueError, match="not a int"):
    configs.parse_arg("labels=forty", labels=1)
  with pytest.raises(ValueError, match="Unknown config argument"):
    configs.parse_arg("label=40", labels=1)


@pytest.mark.parametrize("key,value,match", [
    ("algo.threshold", 1.5, "threshold"),
    ("algo.threshold", 0.0, "threshold"),
    ("data.mu", 0, "mu"),
    ("data.batch_size", 0, "batch_size"),
    ("optim.ema_decay", 1.0, "ema_decay"),
    ("optim.lr", float("nan"), "lr"),
    ("train.cpu_convolutions", "mkl", "cpu_convolutions.*'onednn', 'eigen' or 'xla'"),
])
def test_validate_names_the_bad_value(key, value, match):
  config = configs.base_config()
  section, name = key.split(".")
  config[section][name] = value
  with pytest.raises(ValueError, match=match):
    configs.validate(config)


@pytest.mark.parametrize("arg", [
    "fashion_mnist.py:algorithm=fixmatch,labels=40", "fashion_mnist.py:algorithm=supervised",
    "digits.py:algorithm=fixmatch,labels=50", "digits.py:algorithm=supervised",
    "tiny.py", "fixmatch_svhn.py:labels=250,extra=true",
    "fashion_mnist_15min.py:algorithm=fixmatch,labels=250",
    "fashion_mnist_15min.py:algorithm=supervised,labels=40"])
def test_cpu_and_variant_configs_build_and_validate(arg):
  config = parse([f"--config={os.path.join(REPO, 'experiments', arg)}"])
  configs.validate(config)
  assert config.algorithm in ("fixmatch", "supervised")
  if arg.startswith(("fashion_mnist", "digits")):
    # The CPU tables in docs/ were computed with XLA's kernels; their reruns keep them.
    assert config.train.cpu_convolutions == "xla"
    assert config.model.matmul_wgrad_min_images == -1
  if config.algorithm == "supervised":
    assert "threshold" not in config.algo


def test_15min_table_differs_from_the_fashion_mnist_recipe_only_where_documented():
  """experiments/fashion_mnist_15min.py is experiments/fashion_mnist.py with the changes its
  docstring lists (mu 3, lr 0.1, 6000 steps, FixMatch's tau 0.9, evaluations every 500 with
  the median of the last 4), and the two algorithms of a row share everything but the
  algorithm and its own hyperparameters."""
  base = os.path.join(REPO, "experiments", "fashion_mnist.py")
  fast = os.path.join(REPO, "experiments", "fashion_mnist_15min.py")
  for algorithm in ("fixmatch", "supervised"):
    old = summarize.flatten(json.loads(parse(
        [f"--config={base}:algorithm={algorithm},labels=250,steps=6000"]).to_json_best_effort()))
    new = summarize.flatten(json.loads(parse(
        [f"--config={fast}:algorithm={algorithm},labels=250"]).to_json_best_effort()))
    changed = {k: (old.get(k), new.get(k)) for k in set(old) | set(new) if old.get(k) != new.get(k)}
    expected = {"data.mu": (7, 3), "optim.lr": (0.03, 0.1),
                "train.eval_every_steps": (100, 500), "train.summary_last_n": (5, 4)}
    if algorithm == "fixmatch":
      expected["algo.threshold"] = (0.95, 0.9)
    assert changed == expected
    assert new["train.num_steps"] == new["optim.decay_steps"] == 6000
  pair = [summarize.flatten(json.loads(parse(
      [f"--config={fast}:algorithm={a},labels=250"]).to_json_best_effort()))
          for a in ("fixmatch", "supervised")]
  shared = {k for k in pair[0] if not k.startswith("algo")} - {"algorithm"}
  assert {k for k in shared if pair[0].get(k) != pair[1].get(k)} == set()


def test_family_table_configs_differ_only_in_the_algorithm():
  """experiments/fashion_mnist_family.py: one protocol; only the method (and its own
  hyperparameters) changes between the ten columns of the table, and its runs script asks
  for all 10 methods x {40, 250} labels x seeds 1-3."""
  path = os.path.join(REPO, "experiments", "fashion_mnist_family.py")
  methods = ("supervised", "pseudo_label", "entmin", "pi_model", "mean_teacher", "uda",
             "arazo", "fixmatch", "flexmatch", "freematch")
  protocol = None
  for labels in (40, 250):
    for method in methods:
      config = parse([f"--config={path}:algorithm={method},labels={labels},seed=2"])
      configs.validate(config)
      flat = summarize.flatten(json.loads(config.to_json_best_effort()))
      assert config.algorithm == method and config.seed == 2
      assert (flat["model.name"], flat["data.batch_size"], flat["data.mu"],
              flat["train.num_steps"], flat["train.summary_last_n"]) == ("wrn10_1", 32, 3, 300, 3)
      assert flat["optim.ema_decay"] == flat["model.bn_momentum"] == pytest.approx(0.96)
      shared = {k: v for k, v in flat.items() if not k.startswith("algo.") and k != "algorithm"}
      protocol = protocol or {k: v for k, v in shared.items() if k != "data.num_labels"}
      assert {k: v for k, v in shared.items() if k != "data.num_labels"} == protocol
      paper = algorithms.get(method).default_config()
      expected = {"arazo": {"warmup_steps": math.ceil(10 * labels / 32)},
                  "freematch": {"ema_momentum": 0.96}}.get(method, {})
      for key, value in config.algo.items():
        if key in ("rampup_end", "tsa_steps"):  # Rescaled to the run: 40% / all of 300 steps.
          assert value == {"rampup_end": 120, "tsa_steps": 300}[key]
        else:
          assert value == expected.get(key, paper[key]), (method, key)
  script = os.path.join(REPO, "experiments", "runs", "fashion_mnist_family.sh")
  runs = summarize.expected_runs(script, "/tmp/family")
  assert len(runs) == len(set(runs)) == 60
  assert {config.split(":")[1] for config, _ in runs} == {
      f"algorithm={m},labels={n},seed={s}" for m in methods for n in (40, 250) for s in (1, 2, 3)}


@pytest.mark.parametrize("script", sorted(
    f for f in os.listdir(os.path.join(REPO, "experiments", "runs")) if f.endswith(".sh")))
def test_every_runs_script_expands_to_valid_distinct_runs(script, tmp_path, monkeypatch):
  """Each table's script (experiments/runs/*.sh) names at least one run, no workdir twice,
  and every run's --config builds and validates (so a table never waits on a typo)."""
  monkeypatch.chdir(REPO)
  runs = summarize.expected_runs(os.path.join("experiments", "runs", script),
                                 str(tmp_path / "runs"))
  assert runs, f"{script} runs nothing"
  workdirs = [workdir for _, workdir in runs]
  assert len(set(workdirs)) == len(workdirs), f"{script} uses a workdir twice"
  for config_arg, _ in runs:
    path, _, arg = config_arg.partition(":")
    configs.validate(summarize._load_experiment(path).get_config(arg or None))


def test_the_convolution_library_may_change_when_a_run_resumes():
  # Runs started before train.cpu_convolutions existed (or with the other choice) resume:
  # it changes the kernels' rounding, not the recipe.
  from fixmatch_jax import train  # noqa: PLC0415 - imports JAX.
  new = json.loads(configs.base_config().to_json_best_effort())
  old = json.loads(configs.base_config().to_json_best_effort())
  del old["train"]["cpu_convolutions"]
  assert train.config_differences(old, new) == []
  old["train"]["cpu_convolutions"] = "xla"
  assert train.config_differences(old, new) == []
  old["train"]["cpu_devices"] = 1
  assert len(train.config_differences(old, new)) == 1

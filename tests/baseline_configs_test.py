"""Baseline experiment configs (FixMatch Table 2 baselines, Oliver et al. 2018, Lee 2013):
every row builds through the absl flag parser and carries the papers' hyperparameters."""

import os
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from fixmatch_jax import algorithms, configs, models, summarize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "experiments"))
import fixmatch_baselines  # noqa: E402
import lee2013  # noqa: E402
import oliver2018  # noqa: E402


def parse(filename, arg, *overrides):
  flag_values = flags.FlagValues()
  argv = ["prog", f"--config={os.path.join(REPO, 'experiments', filename)}:{arg}", *overrides]
  config_flags.DEFINE_config_file("config", None, flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  configs.validate(flag_values.config)
  return flag_values.config


@pytest.mark.parametrize("method", fixmatch_baselines.METHODS)
def test_fixmatch_table2_baselines(method):
  for labels in fixmatch_baselines.LABELS:
    config = parse("fixmatch_baselines.py", f"method={method},labels={labels},seed=2")
    assert (config.algorithm, config.data.num_labels, config.seed) == (method, labels, 2)
    assert config.data.dataset == "cifar10" and config.model.name == "wrn28_2"
    # FixMatch codebase recipe (recipes.md).
    assert config.data.batch_size == 64 and config.optim.lr == 0.03
    assert config.optim.name == "sgd" and config.optim.nesterov and config.optim.momentum == 0.9
    assert config.optim.weight_decay == 5e-4 and config.optim.ema_decay == 0.999
    assert config.train.num_steps == 2**20 and config.optim.cosine_cycles == 7 / 16
    assert set(config.algo) >= set(algorithms.get(method).default_config())
    assert config.data.mu == (7 if method == "uda" else 1)
  algo = config.algo
  if method == "uda":
    assert (algo.temperature, algo.threshold, algo.lambda_u) == (1.0, 0.95, 1.0)
    return
  assert algo.rampup == "linear" and algo.rampup_start == 0
  assert algo.rampup_end == int(0.4 * 2**20)
  assert algo.lambda_u == {"pseudo_label": 1.0, "mean_teacher": 50.0, "pi_model": 10.0}[method]
  if method == "pseudo_label":
    assert algo.threshold == 0.95


def test_fixmatch_baselines_ramp_follows_run_length_and_variants():
  config = parse("fixmatch_baselines.py", "method=pi_model,labels=4000",
                 "--config.train.num_steps=1000")
  assert config.algo.rampup_end == 400  # 40% of the overridden run
  uda = parse("fixmatch_baselines.py", "method=uda,labels=40,uda=paper")
  assert (uda.algo.temperature, uda.algo.threshold) == (0.4, 0.8)
  with pytest.raises(Exception, match="Table 2 has"):
    parse("fixmatch_baselines.py", "method=uda,labels=100")
  with pytest.raises(Exception, match="method"):
    parse("fixmatch_baselines.py", "method=mixmatch")


@pytest.mark.parametrize("dataset", ["cifar10", "svhn_cropped"])
def test_oliver2018_rows(dataset):
  lrs = {"supervised": 3e-3, "pi_model": 3e-4, "mean_teacher": 4e-4, "vat": 3e-3,
         "vat_entmin": 3e-3, "pseudo_label": 3e-4}
  weights = {"pi_model": 20.0, "mean_teacher": 8.0, "vat": 0.3, "vat_entmin": 0.3,
             "pseudo_label": 1.0}
  for method in oliver2018.PAPER_ERROR_BY_METHOD:
    config = parse("oliver2018.py", f"method={method},dataset={dataset},seed=3")
    assert config.data.num_labels == {"cifar10": 4000, "svhn_cropped": 1000}[dataset]
    assert config.model.name == "wrn28_2" and config.seed == 3
    assert config.optim.name == "adam" and config.optim.lr == lrs[method]
    assert config.optim.schedule == "step" and tuple(config.optim.boundaries) == (400_000,)
    assert config.optim.boundary_factor == 0.2 and config.train.num_steps == 500_000
    assert config.optim.weight_decay == 0.0 and config.optim.ema_decay == 0.95
    assert config.data.batch_size == 50 and config.data.mu == 1
    algorithms.get(config.algorithm)  # registered (vat+entmin on demand)
    if method == "supervised":
      assert config.algorithm == "supervised"
      continue
    algo = config.algo
    assert algo.lambda_u == weights[method]
    assert (algo.rampup, algo.rampup_start, algo.rampup_end) == ("sigmoid", 0, 200_000)
    if method.startswith("vat"):
      assert algo.eps == (6.0 if dataset == "cifar10" else 1.0) and algo.xi == 1e-6
    if method == "vat_entmin":
      assert config.algorithm == "vat+entmin" and algo.entmin_weight == 0.1
    if method == "pseudo_label":
      assert algo.threshold == 0.95


@pytest.mark.parametrize("labels", sorted(lee2013.LEE_TABLE))
def test_lee2013_rows(labels):
  config = parse("lee2013.py", f"labels={labels},seed=1")
  assert config.data.dataset == "mnist" and config.data.num_labels == labels
  assert config.algorithm == "pseudo_label" and "threshold" not in config.algo
  spe = 60000 // 256
  assert config.train.num_steps == 1000 * spe
  # alpha_f = 3, T1 = 100 and T2 = 600 epochs.
  assert (config.algo.lambda_u, config.algo.rampup) == (3.0, "linear")
  assert (config.algo.rampup_start, config.algo.rampup_end) == (100 * spe, 600 * spe)
  assert config.data.batch_size == 32 and config.data.mu == 8
  assert not config.data.weak.flip and config.data.weak.pad_fraction == 0.0
  model = models.create(config.model, 10)
  assert model.hidden_units == (5000,) and model.dropout_rate == 0.5
  drop_nn = parse("lee2013.py", f"labels={labels},pl=false")
  assert drop_nn.algorithm == "supervised" and drop_nn.model.name == "mlp_lee"


def test_lee2013_short_fashion_mnist_run_scales_the_schedule():
  config = parse("lee2013.py", "dataset=fashion_mnist_local,labels=600,epochs=10,"
                 "steps_per_epoch=100")
  assert config.train.num_steps == 1000
  assert (config.algo.rampup_start, config.algo.rampup_end) == (100, 600)
  with pytest.raises(Exception, match="Lee 2013 reports"):
    parse("lee2013.py", "labels=40")


def test_paper_numbers_reach_the_summarizer():
  """summarize.py looks PAPER_ERROR up by (algorithm, labels): each row finds its paper's."""
  path = lambda name: os.path.join(REPO, "experiments", name)
  # No published std: None (or NaN), never a made-up number.
  nan_std = lambda value: value is not None and (value[1] is None or value[1] != value[1])
  cases = [
      (path("fixmatch_baselines.py"), "pseudo_label", 250, 49.78),
      (path("fixmatch_baselines.py"), "uda", 40, 29.05),
      (path("fixmatch_baselines.py"), "pi_model", 40, None),  # "-" in Table 2
      (path("oliver2018.py"), "vat+entmin", 4000, 13.13),
      (path("oliver2018.py"), "vat+entmin", 1000, 5.35),
      (path("oliver2018.py"), "supervised", 1000, 12.83),
      (path("lee2013.py"), "supervised", 600, 8.57),
      (path("lee2013.py"), "pseudo_label", 600, 5.03),
  ]
  for experiment, algorithm, labels, error in cases:
    value = summarize.paper_error(experiment + ":x=1", algorithm, labels)
    if error is None:
      assert value is None
    else:
      assert value[0] == error and nan_std(value), (experiment, algorithm, labels)


def test_cpu_short_runs_scale_the_ramps_to_their_length():
  """configs.short_run: a 1000-step run warms up over 400 steps, not 40% of 2^20."""
  for algorithm in ("pseudo_label", "pi_model", "mean_teacher", "vat"):
    config = parse("fashion_mnist.py", f"algorithm={algorithm},steps=1000")
    assert config.algo.rampup_end == 400
    assert parse("fashion_mnist.py", f"algorithm={algorithm},steps=1000",
                 "--config.train.num_steps=500").algo.rampup_end == 200
  assert parse("fashion_mnist.py", "algorithm=uda,steps=1000").algo.tsa_steps == 1000

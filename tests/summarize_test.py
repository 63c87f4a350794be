"""The table summarizer on synthetic workdirs, against hand-computed medians and means."""

import json
import os
import textwrap

import pytest

from fixmatch_jax import summarize


def make_config(seed=1, labels=40, algorithm="fixmatch", num_steps=300, last_n=3, **extra):
  config = {"seed": seed, "algorithm": algorithm,
            "data": {"dataset": "cifar10", "num_labels": labels, "batch_size": 64, "mu": 7},
            "optim": {"lr": 0.03},
            "train": {"num_steps": num_steps, "summary_last_n": last_n,
                      "log_every_steps": 100}}
  for key, value in extra.items():
    section, name = key.split("__")
    config[section][name] = value
  return config


def make_run(workdir, ema_accs, *, last_step=None, hardware=None, **config_kw):
  """A workdir with config.json and metrics.jsonl: one eval row per 100 steps."""
  os.makedirs(workdir, exist_ok=True)
  config = make_config(**config_kw)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config, f)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for i, acc in enumerate(ema_accs):
      step = 100 * (i + 1)
      f.write(json.dumps({"step": step, "train/loss": 1.0}) + "\n")
      f.write(json.dumps({"step": step, "eval/acc": acc - 0.01, "eval/acc_ema": acc}) + "\n")
    if last_step is not None:  # A run stopped (or still going) at last_step.
      f.write(json.dumps({"step": last_step, "train/loss": 1.0}) + "\n")
  if hardware:
    with open(os.path.join(workdir, "run_info.json"), "w") as f:
      json.dump({"hardware": hardware, "date": "2026-11-25"}, f)
  return workdir


def test_run_median_of_last_n_and_best(tmp_path):
  # Last 3 EMA accuracies: 0.70, 0.60, 0.80 -> median 0.70; best over the run 0.90.
  run = summarize.load_run(make_run(str(tmp_path / "a"), [0.1, 0.9, 0.7, 0.6, 0.8],
                                    num_steps=500))
  assert run.median_last_n() == pytest.approx(0.70)
  assert run.best_of_run() == pytest.approx(0.90)
  assert run.finished


def test_row_is_mean_and_sample_std_over_seeds(tmp_path):
  # Seed medians (last 3): s1 [.6 .7 .8] -> .7; s2 [.5 .9 .6] -> .6; s3 [.8 .8 .9] -> .8.
  # Errors 30, 40, 20 %: mean 30, sample std sqrt(((0)^2 + 10^2 + 10^2) / 2) = 10.
  for seed, accs in ((1, [0.6, 0.7, 0.8]), (2, [0.5, 0.9, 0.6]), (3, [0.8, 0.8, 0.9])):
    make_run(str(tmp_path / f"s{seed}"), accs, seed=seed, hardware="1 x TPU v4")
  report = summarize.summarize([str(tmp_path)], metric="error")
  row = next(line for line in report.splitlines() if line.startswith("| cifar10"))
  cells = [c.strip() for c in row.split("|")[1:-1]]
  assert cells[:4] == ["cifar10", "fixmatch", "40", "30.00 +/- 10.00"]
  # Best-of-run: 0.8, 0.9, 0.9 -> errors 20, 10, 10: mean 13.33, std 5.77.
  assert cells[5] == "13.33 +/- 5.77"
  assert cells[6] == "3/3 (1,2,3)"
  assert cells[9] == "1 x TPU v4"
  accuracy = summarize.summarize([str(tmp_path)], metric="accuracy")
  assert "| 70.00 +/- 10.00 |" in accuracy


def test_refuses_to_mix_configs_naming_the_keys(tmp_path):
  make_run(str(tmp_path / "s1"), [0.5] * 3, seed=1)
  make_run(str(tmp_path / "s2"), [0.5] * 3, seed=2, optim__lr=0.1, data__mu=3)
  with pytest.raises(summarize.MixedConfigsError) as error:
    summarize.summarize([str(tmp_path)])
  message = str(error.value)
  assert "optim.lr" in message and "data.mu" in message
  assert "  seed:" not in message  # The seed may differ.


def test_bookkeeping_keys_and_new_null_keys_do_not_count_as_differences(tmp_path):
  make_run(str(tmp_path / "s1"), [0.5] * 3, seed=1, train__log_every_steps=10)
  make_run(str(tmp_path / "s2"), [0.7] * 3, seed=2, optim__init_from=None)
  assert "2/2 (1,2)" in summarize.summarize([str(tmp_path)])


def test_unfinished_runs_are_listed_and_left_out(tmp_path):
  make_run(str(tmp_path / "done"), [0.6, 0.6, 0.6], seed=1)
  make_run(str(tmp_path / "partial"), [0.1, 0.2], seed=2, last_step=250)
  report = summarize.summarize([str(tmp_path)])
  assert "| 40.00 |" in report  # Only seed 1: error 40 %, no std from one run.
  assert "1/2 (1)" in report
  assert "unfinished:" in report and "partial (step 250 of 300" in report


def test_script_gives_expected_runs_missing_ones_and_paper_numbers(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  os.makedirs("experiments/runs")
  with open("experiments/toy.py", "w") as f:
    f.write(textwrap.dedent("""\
        import ml_collections
        PAPER_ERROR = {40: (13.81, 3.37), 250: (5.07, 0.65)}
        def get_config(arg=None):
          labels, seed = (int(kv.split("=")[1]) for kv in arg.split(","))
          c = ml_collections.ConfigDict()
          c.algorithm, c.data = "fixmatch", ml_collections.ConfigDict()
          c.data.dataset, c.data.num_labels = "cifar10", labels
          return c
        """))
  with open("experiments/runs/toy.sh", "w") as f:
    f.write(textwrap.dedent("""\
        set -euo pipefail
        runs=${1:-runs/toy}
        for labels in 40 250; do
          for seed in 1 2; do
            python -m fixmatch_jax.main \\
                --config="experiments/toy.py:labels=${labels},seed=${seed}" \\
                --workdir="${runs}/labels${labels}_seed${seed}"
          done
        done
        python scripts/some_report.py --runs="${runs}"
        """))
  assert summarize.expected_runs("experiments/runs/toy.sh", "out") == [
      (f"experiments/toy.py:labels={n},seed={s}", f"out/labels{n}_seed{s}")
      for n in (40, 250) for s in (1, 2)]
  make_run("out/labels40_seed1", [0.8, 0.9, 0.85], seed=1)
  make_run("out/labels40_seed2", [0.8, 0.8, 0.8], seed=2)
  make_run("out/labels250_seed1", [0.9], seed=1, labels=250, last_step=120)
  make_run("out/stray_run", [0.1] * 3, seed=9)  # Not in the script: ignored.
  report = summarize.summarize(script="experiments/runs/toy.sh", runs_root="out")
  lines = report.splitlines()
  row40 = next(line for line in lines if "| 40 |" in line)
  # Medians 0.85 and 0.80 -> errors 15, 20: mean 17.5, std 3.54; paper 13.81 +/- 3.37.
  assert "| 17.50 +/- 3.54 | 13.81 +/- 3.37 |" in row40 and "2/2 (1,2)" in row40
  row250 = next(line for line in lines if "| 250 |" in line)
  assert "| - | 5.07 +/- 0.65 |" in row250 and "0/2 (none)" in row250
  assert "missing: out/labels250_seed2" in report
  assert "unfinished: out/labels250_seed1" in report
  assert "stray_run" not in report


def test_write_between_marks(tmp_path):
  path = tmp_path / "doc.md"
  path.write_text("intro\n<!-- summarize:begin t -->\nold\n<!-- summarize:end t -->\nafter\n")
  summarize.write_between_marks(str(path), "t", "| new |")
  assert path.read_text() == ("intro\n<!-- summarize:begin t -->\n| new |\n"
                              "<!-- summarize:end t -->\nafter\n")
  with pytest.raises(ValueError, match="lacks the marks"):
    summarize.write_between_marks(str(path), "other", "x")


def test_bad_input_names_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    summarize.summarize([str(tmp_path / "nope")])
  with pytest.raises(ValueError, match="No workdir"):
    summarize.summarize([str(tmp_path)])
  with pytest.raises(FileNotFoundError, match="Runs script"):
    summarize.summarize(script=str(tmp_path / "nope.sh"))


def test_by_algorithm_view_puts_methods_side_by_side(tmp_path):
  make_run(str(tmp_path / "fm"), [0.9, 0.8, 0.7], algorithm="fixmatch")
  make_run(str(tmp_path / "sup1"), [0.5, 0.6, 0.7], algorithm="supervised", seed=1)
  make_run(str(tmp_path / "sup2"), [0.7, 0.7, 0.7], algorithm="supervised", seed=2)
  report = summarize.summarize([str(tmp_path)], metric="accuracy", view="by_algorithm")
  # fixmatch: median 80; supervised: medians 60 and 70 -> 65 +/- 7.07.
  assert ("| cifar10 | 40 | 80.00 (1/1 runs) | 65.00 +/- 7.07 (2/2 runs) |"
          in report.splitlines())


def test_paper_error_keys_match_the_run_most_specific_first(tmp_path):
  path = tmp_path / "exp.py"
  path.write_text("PAPER_ERROR = {40: (9.0, 1.0), ('uda', 40): 29.05, ('svhn', 40): (7.65, None),"
                  " ('svhn', 'uda', 40): (1.0, 0.5)}\n")
  exp = f"{path}:method=uda,labels=40,seed=1"
  assert summarize.paper_error(exp, "uda", 40, "cifar10") == (29.05, None)
  assert summarize.paper_error(f"{path}:labels=40", "fixmatch", 40, "cifar10") == (9.0, 1.0)
  assert summarize.paper_error(f"{path}:dataset=svhn,labels=40", "fixmatch", 40,
                               "svhn_cropped") == (7.65, None)
  assert summarize.paper_error(f"{path}:dataset=svhn,labels=40", "uda", 40, "x") == (1.0, 0.5)
  assert summarize.paper_error(f"{path}:labels=250", "uda", 250, "cifar10") is None


def test_pseudo_label_accuracy_and_mask_rate_at_end(tmp_path):
  # Each run's last logged value counts (not the mean over the run): seed 1 ends at
  # (pl 0.80, mask 0.50), seed 2 at (0.90, 0.70) -> 85.00 +/- 7.07 and 60.00 +/- 14.14;
  # a supervised run logs neither -> "-".
  for seed, ends in ((1, (0.80, 0.50)), (2, (0.90, 0.70))):
    workdir = make_run(str(tmp_path / f"fm{seed}"), [0.5, 0.6, 0.7], seed=seed)
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
      f.write(json.dumps({"step": 200, "train/pseudo_label_acc": 0.1,
                          "train/mask_rate": 0.1}) + "\n")
      f.write(json.dumps({"step": 300, "train/pseudo_label_acc": ends[0],
                          "train/mask_rate": ends[1]}) + "\n")
  make_run(str(tmp_path / "sup"), [0.5, 0.6, 0.7], algorithm="supervised")
  report = summarize.summarize([str(tmp_path)], metric="accuracy")
  rows = {line.split("|")[2].strip(): [c.strip() for c in line.split("|")[1:-1]]
          for line in report.splitlines() if line.startswith("| cifar10")}
  assert rows["fixmatch"][-2:] == ["85.00 +/- 7.07", "60.00 +/- 14.14"]
  assert rows["supervised"][-2:] == ["-", "-"]

"""The mlhpc command line end to end: the digits example, and bad input that must fail in one line."""
import json, time
from pathlib import Path
import pytest, yaml
from helpers import ROOT, mlhpc, one_line_error, weights, stats

def test_digits_example_trains_to_90_percent(tmp_path):
    start = time.time()
    p = mlhpc("train", ROOT/"examples/digits.yaml", "--run-dir", tmp_path/"run", check=True)
    took = time.time() - start
    st = json.loads((tmp_path/"run/status.json").read_text())
    assert st["state"] == "completed" and st["update"] == 600
    acc = stats(tmp_path/"run").dropna(subset=["val_accuracy"])["val_accuracy"]
    assert acc.iloc[-1] >= 0.90, acc.tolist()
    assert "completed at update 600/600" in p.stdout
    cfg = yaml.safe_load((tmp_path/"run/config.yaml").read_text())
    assert cfg["inferred"]["n_train"] + cfg["inferred"]["n_valid"] == 1797 and cfg["inferred"]["world_size"] == 1
    assert set(weights(tmp_path/"run")) == {"1.weight", "1.bias", "4.weight", "4.bias", "7.weight", "7.bias"}
    print(f"digits: val_accuracy {acc.iloc[-1]:.3f} in {took:.1f} s (whole command, including start-up)")

def test_regression_example_uses_mse(tmp_path):
    mlhpc("train", ROOT/"examples/regression.yaml", "--run-dir", tmp_path/"r", "--set", "total_updates=300", check=True)
    df = stats(tmp_path/"r")
    val = df.dropna(subset=["val_loss"])
    assert "val_accuracy" not in df.columns and "ema_val_loss" in df.columns
    assert val["val_loss"].iloc[-1] < val["val_loss"].iloc[0]

@pytest.mark.parametrize("text,fragments", [
    ("total_updates: 10\noptimizer:\n  learnin_rate: 0.1\n", ["unknown config key 'optimizer.learnin_rate'", "did you mean 'optimizer.learning_rate'"]),
    ("batch_size: lots\n", ["'batch_size' has value 'lots', expected a whole number"]),
    ("total_updates: 10\n  model: [\n", ["is not valid YAML at line 2"]),
    ("total_updates: -3\n", ["'total_updates' has value -3", "at least 1"]),
    ("optimizer: {name: Adamax}\n", ["one of AdamW, Adam, SGD"]),
])
def test_bad_config_gives_one_line_error(tmp_path, text, fragments):
    (tmp_path/"c.yaml").write_text(text)
    one_line_error(mlhpc("train", tmp_path/"c.yaml", "--run-dir", tmp_path/"run"), *fragments)
    assert not (tmp_path/"run").exists()

def test_missing_file_and_bad_override(tmp_path):
    one_line_error(mlhpc("train", tmp_path/"nope.yaml", "--run-dir", tmp_path/"run"), "nope.yaml' not found")
    one_line_error(mlhpc("train", ROOT/"examples/digits.yaml", "--run-dir", tmp_path/"run", "--set", "amp"), "has no '='")
    one_line_error(mlhpc("train", ROOT/"examples/digits.yaml", "--run-dir", tmp_path/"run", "--set", "amp=maybe"), "'amp' has value 'maybe'")

def test_different_config_never_clobbers_a_run(tmp_path):
    run = tmp_path/"run"
    mlhpc("train", ROOT/"examples/digits.yaml", "--run-dir", run, "--set", "total_updates=60", check=True)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    one_line_error(mlhpc("train", ROOT/"examples/digits.yaml", "--run-dir", run, "--set", "total_updates=80"),
                   "holds a different config (total_updates: 60 -> 80)", "--overwrite")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    p = mlhpc("train", ROOT/"examples/digits.yaml", "--run-dir", run, "--set", "total_updates=80", "--overwrite", check=True)
    kept = [d for d in tmp_path.iterdir() if d.name.startswith("run.old-")]
    assert len(kept) == 1 and (kept[0]/"checkpoints/latest.pt").read_bytes() == before[run/"checkpoints/latest.pt"]

def test_help_for_every_subcommand():
    import argparse
    from ml_hpc.cli import parser
    cmds = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"train", "run", "submit", "sweep", "status", "results", "sync-wandb"} <= set(cmds), sorted(cmds)
    for cmd in cmds:
        p = mlhpc(cmd, "--help")
        assert p.returncode == 0 and f"usage: mlhpc {cmd}" in p.stdout, p.stderr
    assert "optimizer.learning_rate" in mlhpc("train", "--help").stdout

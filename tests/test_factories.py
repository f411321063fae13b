"""Your own model, data set and loss from a config: factory arguments in the YAML, checked before anything runs, recorded in config.yaml."""
import json, os, sys
from pathlib import Path
import pytest, yaml
from helpers import ROOT, mlhpc, one_line_error, weights, stats

MODELS = '''
from __future__ import annotations
import torch.nn as nn

def make_model(info:dict, # data facts
               width:int=32, # hidden units per layer
               depth:int=2): # hidden layers
    "An MLP sized by width and depth."
    layers, d = [nn.Flatten()], info["input_shape"][0]
    for _ in range(depth): layers += [nn.Linear(d, width), nn.ReLU()]; d = width
    return nn.Sequential(*layers, nn.Linear(d, info["num_classes"]))

def make_linear(n_in:int, n_out:int=1): return nn.Linear(n_in, n_out)
'''

DATA = '''
import torch
from torch.utils.data import TensorDataset

def load(n_train:int=200, # training samples
         noise:float=0.0, # target noise
         n_features=4):
    "A linear regression problem."
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + 50, n_features, generator=g)
    y = x.sum(1, keepdim=True) + noise * torch.randn(n_train + 50, 1, generator=g)
    return TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:]), dict(num_classes=0, output_dim=1, input_shape=[n_features])

def l1(out, y): return (out - y.view_as(out)).abs().mean()
'''

SHORT = "total_updates: 30\nupdates_per_epoch: 10\nbatch_size: 32\n"
USER_MODEL = SHORT + "model:\n  type: mymodels:make_model\n  width: 16\n"

def write(tmp_path, text, name="c.yaml"):
    (tmp_path/"mymodels.py").write_text(MODELS); (tmp_path/"mydata.py").write_text(DATA)
    (tmp_path/name).write_text(text)
    return tmp_path/name

def on_path(tmp_path): return {"PYTHONPATH": str(tmp_path)}

def test_user_model_trains_with_its_arguments_recorded_and_resume_refuses_a_change(tmp_path):
    cfg, run = write(tmp_path, USER_MODEL), tmp_path/"run"
    p = mlhpc("train", cfg, "--run-dir", run, env=on_path(tmp_path), check=True, timeout=120)
    assert "completed at update 30/30" in p.stdout, p.stdout
    recorded = yaml.safe_load((run/"config.yaml").read_text())["model"]
    assert recorded == {"type": "mymodels:make_model", "criterion": "cross_entropy", "width": 16, "depth": 2}, recorded
    w = weights(run)
    assert w["1.weight"].shape == (16, 64) and w["3.weight"].shape == (16, 16) and w["5.weight"].shape == (10, 16)
    assert "val_accuracy" in stats(run).columns
    before = (run/"config.yaml").read_bytes()
    one_line_error(mlhpc("train", cfg, "--run-dir", run, "--set", "model.width=8", env=on_path(tmp_path), timeout=120),
                   "holds a different config", "model.width: 16 -> 8")
    one_line_error(mlhpc("train", run/"config.yaml", "--run-dir", run, "--set", "model.depth=3", env=on_path(tmp_path), timeout=120),
                   "model.depth: 2 -> 3")
    assert (run/"config.yaml").read_bytes() == before
    again = mlhpc("train", run/"config.yaml", "--run-dir", run, env=on_path(tmp_path), check=True, timeout=120)
    assert "already completed" in again.stderr + again.stdout

@pytest.mark.parametrize("text,fragments", [
    (SHORT + "model:\n  type: mymodels:make_model\n  widht: 16\n", ["unknown config key 'model.widht'", "did you mean 'model.width'?"]),
    (SHORT + "model:\n  type: mymodels:make_model\n  width: sixteen\n", ["config key 'model.width' has value 'sixteen', expected a whole number"]),
    (SHORT + "model:\n  type: mymodels:make_model\n  width: 16.5\n", ["'model.width' has value 16.5, expected a whole number"]),
    (SHORT + "model:\n  type: mymodels:make_linear\n", ["config key 'model.n_in' is required"]),
    (SHORT + "model:\n  type: mymodels:make_model\n  info: {}\n", ["config key 'model.info' is reserved"]),
    (SHORT + "model:\n  type: mymodels:make_modle\n", ["cannot load model 'mymodels:make_modle'"]),
    (SHORT + "model:\n  type: mlp\n  width: 16\n", ["unknown config key 'model.width'"]),
    (SHORT + "data:\n  name: mydata:load\n  n_trian: 5\nmodel: {criterion: mse}\n", ["unknown config key 'data.n_trian'", "did you mean 'data.n_train'?"]),
    (SHORT + "model:\n  criterion: mydata:l2\n", ["cannot load loss 'mydata:l2'"]),
])
def test_bad_factory_arguments_fail_in_one_line_before_any_run_dir(tmp_path, text, fragments):
    one_line_error(mlhpc("train", write(tmp_path, text), "--run-dir", tmp_path/"run", env=on_path(tmp_path), timeout=120), *fragments)
    assert not (tmp_path/"run").exists()

def test_factory_module_in_the_current_directory_is_found(tmp_path):
    "The installed `mlhpc` script (its sys.path does not hold the current directory), no PYTHONPATH."
    exe = Path(sys.executable).with_name("mlhpc")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    write(tmp_path, USER_MODEL)
    import subprocess
    p = subprocess.run([str(exe), "train", "c.yaml", "--run-dir", "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path/"run/status.json").read_text())["state"] == "completed"
    elsewhere = subprocess.run([str(exe), "train", tmp_path/"c.yaml", "--run-dir", tmp_path/"run2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    one_line_error(elsewhere, "cannot load model 'mymodels:make_model'")

def test_data_factory_with_its_own_arguments_and_a_loss_function(tmp_path):
    text = SHORT + "data:\n  name: mydata:load\n  n_train: 300\n  noise: 1e-2\nmodel:\n  type: mymodels:make_linear\n  n_in: 4\n  criterion: mydata:l1\n"
    run = tmp_path/"run"
    mlhpc("train", write(tmp_path, text), "--run-dir", run, env=on_path(tmp_path), check=True, timeout=120)
    cfg = yaml.safe_load((run/"config.yaml").read_text())
    assert cfg["data"] == {"name": "mydata:load", "num_workers": 0, "n_train": 300, "noise": 0.01, "n_features": 4}, cfg["data"]
    assert cfg["model"] == {"type": "mymodels:make_linear", "criterion": "mydata:l1", "n_in": 4, "n_out": 1}, cfg["model"]
    assert cfg["inferred"]["input_shape"] == [4]
    df = stats(run).dropna(subset=["val_loss"])
    assert "val_accuracy" not in df.columns and df["val_loss"].iloc[-1] < df["val_loss"].iloc[0], df

def test_config_command_shows_every_value_and_where_it_came_from(tmp_path):
    p = mlhpc("config", write(tmp_path, USER_MODEL), "--set", "seed=7", env=on_path(tmp_path), check=True, timeout=120)
    lines = p.stdout.splitlines()
    for line in ("total_updates: 30  # from file", "seed: 7  # from --set", "amp: false  # from default",
                 "  type: 'mymodels:make_model'  # from file", "  # mymodels:make_model: An MLP sized by width and depth.",
                 "  width: 16  # from file: hidden units per layer", "  depth: 2  # from factory default: hidden layers"):
        assert line in lines, (line, p.stdout)
    assert "hidden_dim" not in p.stdout
    assert yaml.safe_load(p.stdout)["model"] == {"type": "mymodels:make_model", "criterion": "cross_entropy", "width": 16, "depth": 2}
    (tmp_path/"bad.yaml").write_text("model: {type: 'mymodels:make_model', widht: 3}\n")
    one_line_error(mlhpc("config", tmp_path/"bad.yaml", env=on_path(tmp_path)), "unknown config key 'model.widht'", "did you mean 'model.width'?")

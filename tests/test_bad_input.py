"""Hostile and mistaken input to the real `mlhpc` program: each case ends in one line `error: ... HINT: ...`, exit 2,
no traceback, naming the key or value at fault, and leaves an existing run directory exactly as it was."""
import os, sys
from pathlib import Path
import pytest
from helpers import ROOT, mlhpc, one_line_error

BASE = "total_updates: 20\nupdates_per_epoch: 10\nbatch_size: 16\nmodel: {hidden_dim: 8}\n"
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
DEEP = "[" * 20000 + "]" * 20000

def _yaml(extra): return lambda d: _write(d/"c.yaml", BASE + extra)
def _raw(data): return lambda d: _write(d/"c.yaml", data)
def _write(p, data):
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p
def _dir(d): (d/"c.yaml").mkdir(); return d/"c.yaml"
def _fifo(d): os.mkfifo(d/"c.yaml"); return d/"c.yaml"

# id: (make the config in a temporary folder, --set overrides, environment, fragments the error line must hold)
CONFIGS = {
    "binary":          (_raw(bytes(range(256)) * 4), [], {}, ["holds NUL bytes", "binary file"]),
    "nul bytes":       (_raw(b"seed: 1\x00\x00\n"), [], {}, ["holds NUL bytes"]),
    "latin-1":         (_raw("seed: 1 # caf\xe9\n".encode("latin-1")), [], {}, ["is not UTF-8 text (byte 0xe9 at offset 13)"]),
    "utf-16":          (_raw("seed: 1\n".encode("utf-16")), [], {}, ["holds NUL bytes"]),
    "control char":    (_raw(b"seed: 1\x01\n"), [], {}, ["unacceptable character #x0001"]),
    "directory":       (_dir, [], {}, ["c.yaml' is a directory, not a file"]),
    "fifo":            (_fifo, [], {}, ["c.yaml' is not a regular file"]),
    "read error":      (lambda d: Path("/proc/self/mem"), [], {}, ["config file '/proc/self/mem' cannot be read: Input/output error"]),
    "dangling link":   (lambda d: (d/"c.yaml").symlink_to(d/"gone.yaml") or d/"c.yaml", [], {}, ["c.yaml' not found"]),
    "deep list":       (_yaml(f"x: {DEEP}\n"), [], {}, ["nested more than 32 levels deep"]),
    "deep mapping":    (_raw("{a: " * 20000 + "1" + "}" * 20000), [], {}, ["nested more than 32 levels deep"]),
    "self alias":      (_yaml("optimizer: {betas: &a [*a]}\n"), [], {}, ["uses the YAML alias *a"]),
    "billion laughs":  (_raw(LAUGHS.replace("a: &a", "seed: &a") + "optimizer: {betas: *i}\n"), [], {}, ["uses the YAML alias *a at line 2"]),
    "model: 0":        (_yaml("model: 0\n"), [], {}, ["config key 'model' has value 0, expected a mapping"]),
    "model: false":    (_yaml("model: false\n"), [], {}, ["config key 'model' has value False"]),
    "lr_scheduler: 0": (_yaml("lr_scheduler: 0\n"), [], {}, ["config key 'lr_scheduler' has value 0"]),
    "betas length":    (_yaml("optimizer: {betas: [0.9]}\n"), [], {}, ["'optimizer.betas' has value [0.9]", "two numbers in [0, 1)"]),
    "betas range":     (_yaml("optimizer: {betas: [1.5, 0.999]}\n"), [], {}, ["'optimizer.betas' has value [1.5, 0.999]"]),
    "betas text":      (_yaml("optimizer: {betas: [a, b]}\n"), [], {}, ["'optimizer.betas' has value ['a', 'b'], expected a list of numbers"]),
    "betas nan":       (_yaml("optimizer: {betas: [.nan, 0.9]}\n"), [], {}, ["'optimizer.betas' has value [nan, 0.9]"]),
    "momentum < 0":    (_yaml("optimizer: {name: SGD, momentum: -1}\n"), [], {}, ["'optimizer.momentum' has value -1.0", "at least 0"]),
    "seed 2**64":      (_yaml("seed: 18446744073709551616\n"), [], {}, ["'seed' has value 18446744073709551616", "between -2**63 and 2**63-1"]),
    "seed < 0":        (_yaml("seed: -1\n"), [], {}, ["'seed' has value -1", "between 0 and 2**63-1"]),
    "lr inf":          (_yaml("optimizer: {learning_rate: .inf}\n"), [], {}, ["'optimizer.learning_rate' has value inf, expected a finite number"]),
    "lr nan":          (_yaml("optimizer: {learning_rate: .nan}\n"), [], {}, ["'optimizer.learning_rate' has value nan"]),
    "lr 1e400":        (_yaml("optimizer: {learning_rate: 1e400}\n"), [], {}, ["'optimizer.learning_rate' has value inf"]),
    "weight decay inf": (_yaml("optimizer: {weight_decay: .inf}\n"), [], {}, ["'optimizer.weight_decay' has value inf"]),
    "max_grad_norm nan": (_yaml("max_grad_norm: .nan\n"), [], {}, ["'max_grad_norm' has value nan"]),
    "max_grad_norm inf": (_yaml("max_grad_norm: .inf\n"), [], {}, ["'max_grad_norm' has value inf"]),
    "time_margin inf": (_yaml("time_margin: .inf\n"), [], {}, ["'time_margin' has value inf"]),
    "dist_timeout huge": (_yaml("dist_timeout: 1e300\n"), [], {}, ["'dist_timeout' has value 1e+300"]),
    "min_delta nan":   (_yaml("early_stopping: {patience: 2, min_delta: .nan}\n"), [], {}, ["'early_stopping.min_delta' has value nan"]),
    "noise inf":       (_yaml("data: {name: regression, noise: .inf}\nmodel: {criterion: mse}\n"), [], {}, ["'data.noise' has value inf"]),
    "no features":     (_yaml("data: {name: regression, n_features: 0}\nmodel: {criterion: mse}\n"), [], {}, ["'data.n_features' has value 0"]),
    "start_factor < 0": (_yaml("lr_scheduler: {warm: {name: LinearLR, start_factor: -1, num_updates: 5}}\n"), [], {}, ["'lr_scheduler.warm.start_factor' has value -1.0"]),
    "start_factor nan": (_yaml("lr_scheduler: {warm: {name: LinearLR, start_factor: .nan, num_updates: 5}}\n"), [], {}, ["'lr_scheduler.warm.start_factor' has value nan"]),
    "end_factor < 0":  (_yaml("lr_scheduler: {warm: {name: LinearLR, end_factor: -0.5, num_updates: 5}}\n"), [], {}, ["'lr_scheduler.warm.end_factor' has value -0.5"]),
    "num_updates 0":   (_yaml("lr_scheduler: {warm: {name: LinearLR, num_updates: 0}}\n"), [], {}, ["'lr_scheduler.warm.num_updates' has value 0"]),
    "num_updates -5":  (_yaml("lr_scheduler: {warm: {num_updates: -5}, rest: {num_updates: -1}}\n"), [], {}, ["'lr_scheduler.warm.num_updates' has value -5"]),
    "metric never reported": (_yaml("early_stopping: {metric: val_f1, patience: 2}\n"), [], {}, ["'early_stopping.metric' has value 'val_f1'", "val_loss, val_accuracy"]),
    "metric for best.pt": (_yaml("early_stopping: {metric: val_f1}\n"), [], {}, ["'early_stopping.metric' has value 'val_f1'"]),
    "accuracy of a regression": (_yaml("early_stopping: {metric: val_accuracy}\nmodel: {criterion: mse}\n"), [], {}, ["'early_stopping.metric' has value 'val_accuracy'", "reports: val_loss. HINT"]),
    "time_limit text": (_yaml("time_limit: abc\n"), [], {}, ["'time_limit' has value 'abc'"]),
    "stop_signal KILL": (_yaml("stop_signal: KILL\n"), [], {}, ["'stop_signal' has value 'KILL'"]),
    "total_updates 1e400": (_yaml("total_updates: 1e400\n"), [], {}, ["'total_updates' has value inf, expected a whole number"]),
    "checkpoint name": (_yaml("checkpoint: {checkpoint_name: newest}\n"), [], {}, ["'checkpoint.checkpoint_name' has value 'newest'"]),
    "--set =1":        (_yaml(""), ["=1"], {}, ["override '=1' has an empty key"]),
    "--set a..b=1":    (_yaml(""), ["a..b=1"], {}, ["override 'a..b=1' has an empty key part in 'a..b'"]),
    "--set list":      (_yaml(""), ["total_updates=[1,2]"], {}, ["'total_updates' has value [1, 2], expected a whole number"]),
    "--set alias":     (_yaml(""), ["seed=&a [*a]"], {}, ["override 'seed=&a [*a]' uses the YAML alias *a"]),
    "--set deep":      (_yaml(""), ["x=" + DEEP], {}, ["nested more than 32 levels deep"]),
    "--set huge seed": (_yaml(""), ["seed=1e30"], {}, ["'seed' has value 1e+30"]),
    "MASTER_PORT=abc": (_yaml(""), [], {"MASTER_PORT": "abc"}, ["environment variable MASTER_PORT has value 'abc'", "unset MASTER_PORT"]),
    "MASTER_PORT=99999": (_yaml(""), [], {"MASTER_PORT": "99999"}, ["MASTER_PORT has value '99999', expected a whole number from 1 to 65535"]),
    "SLURM_RESTART_COUNT=xyz": (_yaml(""), [], {"SLURM_RESTART_COUNT": "xyz"}, ["SLURM_RESTART_COUNT has value 'xyz'"]),
    "MLHPC_ATTEMPT=x": (_yaml(""), [], {"MLHPC_ATTEMPT": "x"}, ["MLHPC_ATTEMPT has value 'x'"]),
    "RANK=abc":        (_yaml(""), [], {"RANK": "abc", "WORLD_SIZE": "2"}, ["RANK has value 'abc'"]),
    "WORLD_SIZE=0":    (_yaml(""), [], {"RANK": "0", "WORLD_SIZE": "0"}, ["WORLD_SIZE has value '0'"]),
    "rank beyond world": (_yaml(""), [], {"RANK": "3", "WORLD_SIZE": "2"}, ["rank 3 is not below the world size 2"]),
    "LOCAL_RANK=1.5":  (_yaml(""), [], {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "1.5"}, ["LOCAL_RANK has value '1.5'"]),
    "SLURM_PROCID=x":  (_yaml(""), [], {"SLURM_PROCID": "x", "SLURM_STEP_NUM_TASKS": "2"}, ["SLURM_PROCID has value 'x'"]),
    "SLURM_STEP_NUM_TASKS=two": (_yaml(""), [], {"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "two"}, ["SLURM_STEP_NUM_TASKS has value 'two'"]),
}

def snapshot(d):
    "Every file under `d` with its bytes and modification time."
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(Path(d).rglob("*")) if p.is_file()}

@pytest.fixture(scope="module")
def existing_run(tmp_path_factory):
    "A small completed run that every bad invocation below is pointed at."
    d = tmp_path_factory.mktemp("existing")
    (d/"c.yaml").write_text(BASE)
    mlhpc("train", d/"c.yaml", "--run-dir", d/"run", check=True)
    return d/"run"

@pytest.mark.parametrize("case", CONFIGS, ids=list(CONFIGS))
def test_bad_config_or_environment_is_one_line_and_touches_nothing(tmp_path, existing_run, case):
    make, sets, env, fragments = CONFIGS[case]
    before = snapshot(existing_run)
    args = [x for s in sets for x in ("--set", s)]
    one_line_error(mlhpc("train", make(tmp_path), "--run-dir", existing_run, *args, env=env, timeout=120), *fragments)
    assert snapshot(existing_run) == before
    fresh = tmp_path/"fresh"; fresh.mkdir()
    one_line_error(mlhpc("train", make(fresh), "--run-dir", tmp_path/"new", *args, env=env, timeout=120), *fragments)
    assert not (tmp_path/"new").exists()

@pytest.mark.parametrize("text,fragment", [("data: {name: 'os:sep'}\n", "data set 'os:sep' is a str, not a function"),
                                           ("model: {type: 'math:pi'}\n", "model 'math:pi' is a float, not a function")])
def test_module_function_that_is_not_a_function(tmp_path, text, fragment):
    "Found when the config is loaded (before the run starts): exit 2 with the error as the last line and no traceback."
    (tmp_path/"c.yaml").write_text(BASE + text)
    p = mlhpc("train", tmp_path/"c.yaml", "--run-dir", tmp_path/"run", timeout=120)
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode == 2 and "Traceback" not in p.stderr and last.startswith("error: ") and fragment in last and "HINT:" in last, p.stderr

PROFILES = {
    "binary":      (lambda d: _write(d/"p.yaml", bytes(range(256))), ["cluster profile", "holds NUL bytes"]),
    "latin-1":     (lambda d: _write(d/"p.yaml", "partition: caf\xe9\n".encode("latin-1")), ["cluster profile", "is not UTF-8 text"]),
    "directory":   (lambda d: (d/"p.yaml").mkdir() or d/"p.yaml", ["cluster profile", "is a directory, not a file"]),
    "fifo":        (lambda d: os.mkfifo(d/"p.yaml") or d/"p.yaml", ["cluster profile", "is not a regular file"]),
    "self alias":  (lambda d: _write(d/"p.yaml", "setup: &s [*s]\n"), ["cluster profile", "uses the YAML alias *s"]),
    "billion laughs": (lambda d: _write(d/"p.yaml", LAUGHS.replace("a: &a", "partition: &a") + "setup: *i\n"), ["cluster profile", "uses the YAML alias *a"]),
    "deep":        (lambda d: _write(d/"p.yaml", f"setup: {DEEP}\n"), ["cluster profile", "nested more than 32 levels deep"]),
    "not a mapping": (lambda d: _write(d/"p.yaml", "- gpu\n"), ["cluster profile", "must hold a mapping"]),
}

@pytest.mark.parametrize("case", PROFILES, ids=list(PROFILES))
def test_bad_cluster_profile_is_one_line(tmp_path, case):
    make, fragments = PROFILES[case]
    (tmp_path/"c.yaml").write_text(BASE)
    prof = make(tmp_path)
    p = mlhpc("submit", tmp_path/"c.yaml", "--run-dir", tmp_path/"run", "--time", "10", "--dry-run", "--profile", prof, timeout=120)
    one_line_error(p, *fragments)
    one_line_error(mlhpc("submit", tmp_path/"c.yaml", "--run-dir", tmp_path/"run", "--time", "10", "--dry-run", env={"MLHPC_PROFILE": str(prof)}, timeout=120), *fragments)
    assert not (tmp_path/"run").exists()

def _nested(lines): return "".join("  " + l + "\n" for l in lines.splitlines())
BOMBS = {  # before: the first hung `submit --dry-run` (printing the bad seed walks 9**9 values), the second wrote an 8.5 MB config.yaml
    "bad value":  "inferred:\n" + _nested(LAUGHS) + "seed: *i\n",
    "list value": "inferred:\n" + _nested("\n".join(LAUGHS.splitlines()[:6])) + "optimizer: {betas: *f}\n",
}

@pytest.mark.parametrize("case", BOMBS)
def test_alias_bomb_is_refused_and_writes_nothing(tmp_path, case):
    (tmp_path/"bomb.yaml").write_text(BOMBS[case])
    print(f"{case}: {len(BOMBS[case].encode())} bytes")
    p = mlhpc("submit", tmp_path/"bomb.yaml", "--run-dir", tmp_path/"run", "--time", "10", "--dry-run", timeout=120)
    one_line_error(p, "bomb.yaml' uses the YAML alias *a at line 3")
    assert not (tmp_path/"run").exists()

MODULE = '''
import torch
class Boom(torch.nn.Module):
    def __init__(self): super().__init__(); self.lin = torch.nn.Linear(64, 10); self.calls = 0
    def forward(self, x):
        self.calls += 1
        if self.calls > 5: raise RuntimeError("boom in forward\\nsecond line")
        return self.lin(x.flatten(1))
def build(): return Boom()
'''

def test_failed_training_has_its_traceback_in_train_log(tmp_path):
    (tmp_path/"boom_model.py").write_text(MODULE)
    (tmp_path/"c.yaml").write_text(BASE + "model: {type: 'boom_model:build'}\n")
    p = mlhpc("train", tmp_path/"c.yaml", "--run-dir", tmp_path/"run", env={"PYTHONPATH": str(tmp_path)})
    assert p.returncode == 1, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last == f"error: training failed: RuntimeError: boom in forward (traceback in {tmp_path/'run'/'train.log'})", last
    log = (tmp_path/"run/train.log").read_text()
    assert "Traceback (most recent call last):" in log and "in forward" in log and "RuntimeError: boom in forward\nsecond line" in log

"""Shared helpers for the integration tests: run the real `mlhpc` program and read run directories."""
import os, subprocess, sys
from pathlib import Path
import pandas as pd
import torch
from ml_hpc.rundir import read_status

ROOT = Path(__file__).resolve().parents[1]
MLHPC = [sys.executable, "-c", "from ml_hpc.cli import main; main()"]

def mlhpc(*args, cwd=None, env=None, timeout=300, check=False):
    "Run the mlhpc command line; returns the CompletedProcess."
    p = subprocess.run(MLHPC + [str(a) for a in args], cwd=cwd or ROOT, env={**os.environ, **(env or {})},
                       capture_output=True, text=True, timeout=timeout)
    if check and p.returncode: raise AssertionError(f"mlhpc {args} exited {p.returncode}\n{p.stderr[-3000:]}")
    return p

status = read_status  # a run's status.json, {} before there is one (written atomically, so never half written)

def empty_profile(d:Path)->Path:
    "An empty cluster profile in folder `d`: a job runs with the defaults users get (margins, max_restarts), whatever ~/.config holds."
    (Path(d)/"cluster.yaml").write_text("")
    return Path(d)/"cluster.yaml"

def weights(run_dir, name="latest"):
    "The model state_dict of a run's checkpoint, loaded the safe way."
    return torch.load(Path(run_dir)/"checkpoints"/f"{name}.pt", weights_only=True)["model"]

def same_weights(a, b):
    "True if two state_dicts have the same keys and bit-identical tensors."
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

DETERMINISTIC = ["update", "loss", "lr", "val_loss", "val_accuracy", "ema_val_loss", "ema_val_accuracy"]

def stats(run_dir):
    "stats.csv without its wall-clock columns (samples_per_s, time), which differ between any two runs."
    df = pd.read_csv(Path(run_dir)/"stats.csv")
    return df[[c for c in DETERMINISTIC if c in df.columns]]

def one_line_error(p, *fragments):
    "The process failed with status 2 and exactly one line on stderr naming the problem, no traceback."
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr and "HINT:" in lines[0]
    for f in fragments: assert f in lines[0], (f, lines[0])

class Background:
    "`mlhpc ARGS` started now in the background; calling it waits for a successful end (within `timeout`) and returns `result`."
    def __init__(self, *args, result=None, timeout=900):
        self.proc, self.result, self.timeout = subprocess.Popen(MLHPC + [str(a) for a in args], cwd=ROOT, stdout=subprocess.DEVNULL,
                                                                 stderr=subprocess.PIPE, text=True), result, timeout
    def __call__(self):
        if self.proc.returncode is None:
            err = self.proc.communicate(timeout=self.timeout)[1]
            assert self.proc.returncode == 0, err[-3000:]
        return self.result
    def kill(self): self.proc.kill(); self.proc.wait()

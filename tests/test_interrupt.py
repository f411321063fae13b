"""Ctrl-C on a real `mlhpc train` process: the first SIGINT saves and stops (resumable), a second one aborts at once."""
import json, signal, subprocess, time
from pathlib import Path
import torch
from helpers import ROOT, MLHPC

SETS = ["total_updates=200000", "updates_per_epoch=4000", "log_every=50", "early_stopping.patience=0", "lr_scheduler={}"]

def start(run:Path, *sets:str)->subprocess.Popen:
    "`mlhpc train` on a long digits run, returned once it has made progress."
    args = MLHPC + ["train", str(ROOT/"examples/digits.yaml"), "--run-dir", str(run)] + sum([["--set", s] for s in SETS + list(sets)], [])
    p = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ((run/"stats.csv").exists() and len((run/"stats.csv").read_text().splitlines()) > 200):
        assert time.monotonic() < deadline and p.poll() is None, p.stderr.read() if p.poll() is not None else "no progress"
        time.sleep(0.05)
    return p

def test_first_ctrl_c_saves_and_stops_resumably(tmp_path):
    run = tmp_path/"run"
    p = start(run)
    t0 = time.monotonic(); p.send_signal(signal.SIGINT); code = p.wait(timeout=60); took = time.monotonic() - t0
    err = p.stderr.read()
    assert code == 75, (code, err)  # EXIT_RESUME: saved and stopped, resume me
    st = json.loads((run/"status.json").read_text())
    assert st["state"] == "stopped" and st["reason"] == "interrupted by the user (SIGINT)", st
    saved = torch.load(run/"checkpoints/latest.pt", weights_only=True)["update"]
    assert saved == st["update"] > 0, (saved, st)
    assert "Traceback" not in err, err
    print(f"Ctrl-C: stopped at update {saved} in {took:.2f} s, exit {code}")
    p = subprocess.Popen(MLHPC + ["train", str(run/"config.yaml"), "--run-dir", str(run), "--set", "total_updates=200000"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while f"resumed from update {saved}" not in ((run/"train.log").read_text() if (run/"train.log").exists() else ""):
        assert time.monotonic() < deadline and p.poll() is None, "the interrupted run did not resume from its checkpoint"
        time.sleep(0.05)
    p.send_signal(signal.SIGINT); assert p.wait(timeout=60) == 75

def test_second_ctrl_c_aborts_at_once(tmp_path):
    "The graceful stop waits for the update in progress; when that hangs (a stalled read), a second Ctrl-C aborts at once."
    run, pause = tmp_path/"run", tmp_path/"pause"
    p = start(run, "data.name=tests.slow_data:paused_digits", f"data.pause={pause}")
    pause.touch()  # the next training batch hangs until the file is gone: the trainer is inside an update, as in a long one
    deadline = time.monotonic() + 60
    while not Path(f"{pause}.waiting").exists(): assert time.monotonic() < deadline and p.poll() is None, "no batch waited"; time.sleep(0.05)
    p.send_signal(signal.SIGINT); time.sleep(1)
    assert p.poll() is None, "the first Ctrl-C must wait for the update in progress, then save"
    t0 = time.monotonic(); p.send_signal(signal.SIGINT)
    code = p.wait(timeout=30); took = time.monotonic() - t0
    err = p.stderr.read()
    assert code == 130 and err.rstrip().endswith("interrupted") and "Traceback" not in err, (code, err)  # aborted, not stopped (75)
    assert took < 15, took  # mostly interpreter shut-down; seconds only on a loaded machine
    print(f"double Ctrl-C: exit {code} {took:.2f} s after the second")

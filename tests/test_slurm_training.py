"""Real training jobs on the real loopback SLURM cluster: time limits, requeue, preemption, failures, stop latency.

Every job here is `mlhpc submit` of a real config: the generated batch script, real signals from SLURM, real
`scontrol requeue`. Each result is compared bit for bit with an uninterrupted local run of the same config."""
import re, signal, subprocess, time
from pathlib import Path
import pandas as pd
import pytest
from helpers import ROOT, MLHPC, empty_profile, mlhpc, weights, same_weights, stats, status
from time_limit_jobs import BASE, LONG, sets

pytestmark = pytest.mark.slurm

@pytest.fixture(scope="module")
def reference(time_limit_jobs):
    "The uninterrupted local run of LONG every SLURM run here is compared with, started beside the time-limit jobs; calling it waits for it."
    return time_limit_jobs["config"].reference

@pytest.fixture
def profile(tmp_path): return empty_profile(tmp_path)

def submit(slurm, run, profile, settings, *extra, time_limit="00:01:00"):
    p = mlhpc("submit", ROOT/"examples/digits.yaml", "--run-dir", run, "--time", time_limit, "--profile", profile,
              *sets(settings), *extra, env=slurm.env, check=True)
    return re.search(r"submitted job (\d+)", p.stdout).group(1)

def restarts(slurm, job_id):
    return int(re.search(r"\bRestarts=(\d+)", slurm.run(["scontrol", "-o", "show", "job", job_id]).stdout).group(1))

def test_time_limit_stop_requeue_complete(time_limit_jobs):
    "Default settings, a 1-minute limit shorter than the training: every attempt makes progress, the job requeues and completes bit-identical."
    j = time_limit_jobs["config"]
    state, n = j.wait()
    run, job, took, st = j.run, j.job, j.ended - j.submitted, status(j.run)
    assert state == "COMPLETED", j.info
    assert n >= 1, f"expected the 1-minute job to requeue, got {n} requeues"
    assert st["state"] == "completed" and st["attempt"] == n + 1 and st["job_id"] == job
    assert same_weights(weights(run), weights(j.reference())), "resumed SLURM run differs from the uninterrupted run"
    pd.testing.assert_frame_equal(stats(run), stats(j.reference()))
    log = (run/f"slurm-{job}.out").read_text()
    assert log.count("requeueing job") == n and "#SBATCH --signal=B:USR2@10" in (run/"job.sbatch").read_text(), log[-3000:]
    stops = [int(u) for u in re.findall(r"stopped at update (\d+) \(time limit", (run/"train.log").read_text())]
    assert len(stops) == n and stops == sorted(set(stops)) and stops[0] > 0, stops  # progress in every attempt
    warned = (run/"train.log").read_text().count("early warning SIGUSR2: stopping by")
    starts = [time.mktime(time.strptime(t, "%Y-%m-%d %H:%M:%S")) for t in re.findall(r"starting on \S+ at (\S+ \S+)", log)]
    cycle = (starts[-1] - starts[0]) / (len(starts) - 1) if len(starts) > 1 else 0
    print(f"time limit (defaults, --time 00:01:00): {n} requeues, stopped at updates {stops} of {st['total_updates']}, "
          f"{warned} early warnings turned into deadlines, {cycle:.0f} s per attempt (start to start), {took:.0f} s from submit to completed")

def test_preemption_saves_and_resumes(slurm, reference, time_limit_jobs, profile, tmp_path):
    for j in time_limit_jobs.values(): j.thread.join()  # they hold the node's two CPUs until they end (this test run alone waits for them)
    run = tmp_path/"run"
    job = submit(slurm, run, profile, LONG, time_limit="00:05:00")
    slurm.wait_state(job, "RUNNING", timeout=60)
    deadline = time.monotonic() + 120
    while not ((run/"stats.csv").exists() and len((run/"stats.csv").read_text().splitlines()) > 8):  # 400 updates in
        assert time.monotonic() < deadline, "no training progress"
        time.sleep(0.2)
    slurm.run(["scancel", "--full", "--signal=TERM", job])
    assert slurm.wait_state(job, "COMPLETED", timeout=300) == "COMPLETED"
    assert restarts(slurm, job) == 1
    log = (run/"train.log").read_text()
    m = re.search(r"stopped on signal SIGTERM: ([0-9.]+) s from the signal to a saved checkpoint", log)
    assert m and "stopped at update" in log, log[-2000:]
    assert same_weights(weights(run), weights(reference()))
    pd.testing.assert_frame_equal(stats(run), stats(reference()))
    print(f"preemption: {float(m.group(1)):.3f} s from SIGTERM to a saved checkpoint")

def test_failed_run_is_not_requeued(slurm, profile, tmp_path):
    run = tmp_path/"run"
    job = submit(slurm, run, profile, BASE + ["total_updates=4000"], "--set", "optimizer.name=SGD", "--set", "optimizer.learning_rate=1e6", time_limit="00:05:00")
    assert slurm.wait_state(job, "FAILED", timeout=120) == "FAILED"
    assert restarts(slurm, job) == 0
    st = status(run)
    assert st["state"] == "failed" and "at update" in st["reason"] and "learning_rate" in st["reason"]
    line = mlhpc("status", run, env=slurm.env, check=True).stdout
    assert "failed (the training loss is" in line and f"job {job}" in line, line
    assert "not requeueing" in (run/f"slurm-{job}.out").read_text()

def test_stop_latency_is_one_update_one_save_and_two_seconds(tmp_path):
    "From SIGUSR2 to a durable checkpoint and process exit, measured on a local run (the batch shell adds ~10 ms)."
    run = tmp_path/"run"
    args = MLHPC + ["train", str(ROOT/"examples/digits.yaml"), "--run-dir", str(run)] + sets(BASE + ["total_updates=1000000"])
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ((run/"stats.csv").exists() and len((run/"stats.csv").read_text().splitlines()) > 100):
        assert time.monotonic() < deadline and proc.poll() is None, "no training progress"
        time.sleep(0.05)
    t0 = time.monotonic(); proc.send_signal(signal.SIGUSR2); code = proc.wait(timeout=60); took = time.monotonic() - t0
    assert code == 75, proc.stderr.read()
    st = status(run)
    assert st["state"] == "stopped" and st["reason"] == "signal SIGUSR2"
    assert torch_update(run) == st["update"]
    df = pd.read_csv(run/"stats.csv").dropna(subset=["loss"])
    update_s = 64 / df["samples_per_s"].median()  # batch_size 64 in examples/digits.yaml
    m = re.search(r"([0-9.]+) s from the signal to a saved checkpoint", (run/"train.log").read_text())
    print(f"stop latency: {took:.3f} s from SIGUSR2 to exit (in-process: {m.group(1)} s to the saved checkpoint; one update {update_s * 1e3:.2f} ms)")
    assert took <= update_s + 2.0 + 1.0, "one update + one save (< 1 s for this model) + 2 s"

def torch_update(run):
    import torch
    return torch.load(Path(run)/"checkpoints/latest.pt", weights_only=True)["update"]

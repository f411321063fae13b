"""`mlhpc submit` without a cluster (--dry-run): time limits, --overwrite, --set on an existing run, signals."""
import json, re
from helpers import ROOT, mlhpc, one_line_error

DIGITS = ROOT/"examples/digits.yaml"

def submit(run, *args):
    return mlhpc("submit", DIGITS, "--run-dir", run, "--dry-run", *args)

def test_time_limit_slurm_cannot_store_is_refused(tmp_path):
    p = submit(tmp_path/"run", "--time", "99999999999999999999")
    one_line_error(p, "longer than SLURM accepts", "99999999999999999999")
    assert not (tmp_path/"run").exists()

def test_time_limit_too_short_to_train_is_refused(tmp_path):
    one_line_error(submit(tmp_path/"run", "--time", "00:00:30"), "too short to train", "ask for at least")
    one_line_error(submit(tmp_path/"run", "--time", "00:01:00", "--set", "time_margin=60"), "time_margin (60 s)")
    assert not (tmp_path/"run").exists()
    p = submit(tmp_path/"run", "--time", "00:01:00")  # a debug job with the default margins is fine
    assert p.returncode == 0, p.stderr
    script = (tmp_path/"run"/"job.sbatch").read_text()
    assert "#SBATCH --signal=B:USR2@10" in script and "MLHPC_SIGNAL_MARGIN=10 " in script

def test_set_values_reach_the_job_of_an_existing_run(tmp_path):
    run = tmp_path/"run"
    assert submit(run, "--time", "00:10:00").returncode == 0
    p = submit(run, "--time", "00:10:00", "--set", "checkpoint.every=7", "--set", "time_margin=9")
    assert p.returncode == 0, p.stderr
    line = next(l for l in (run/"job.sbatch").read_text().splitlines() if " train " in l)
    assert f"--run-dir {run} --set checkpoint.every=7 --set time_margin=9; echo" in line, line
    assert "--overwrite" not in line

def test_overwrite_sets_a_different_or_completed_run_aside(tmp_path):
    run = tmp_path/"run"
    assert submit(run, "--time", "00:10:00").returncode == 0
    p = submit(run, "--time", "00:10:00", "--set", "seed=1")
    one_line_error(p, "holds a different config", "--overwrite")
    p = submit(run, "--time", "00:10:00", "--set", "seed=1", "--overwrite")
    assert p.returncode == 0, p.stderr
    assert "seed: 1" in (run/"config.yaml").read_text()
    assert len(list(tmp_path.glob("run.old-*"))) == 1
    (run/"status.json").write_text(json.dumps({"state": "completed", "update": 5}))
    one_line_error(submit(run, "--time", "00:10:00", "--set", "seed=1"), "already completed", "--overwrite")
    assert submit(run, "--time", "00:10:00", "--set", "seed=1", "--overwrite").returncode == 0
    assert len(list(tmp_path.glob("run.old-*"))) == 2

def test_profile_signal_must_be_the_runs_stop_signal(tmp_path):
    prof = tmp_path/"cluster.yaml"; prof.write_text("signal: USR1\n")
    one_line_error(submit(tmp_path/"run", "--time", "00:10:00", "--profile", prof), "early-warning signal USR1 is not the run's stop_signal USR2")
    assert submit(tmp_path/"run", "--time", "00:10:00", "--profile", prof, "--set", "stop_signal=USR1").returncode == 0

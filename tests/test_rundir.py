"""One run directory, one writer, a status that tells the truth, and broken files handled without losing anything.

Every test runs the real `mlhpc` program in subprocesses: two trainings on one directory, SIGKILL (to the whole process
group, as when a node dies) then `mlhpc status` and a rerun, a full file system (a small tmpfs: needs root, skipped
otherwise), a completed run rerun, an unterminated last line in stats.csv, lost checkpoints, and run directories or
run files of the wrong type. The lock itself (same-job wait, forked children, a dead holder) is tested in
nbs/07_rundir.ipynb."""
import json, os, signal, socket, subprocess, time
from contextlib import contextmanager
from pathlib import Path
import pandas as pd
import pytest, yaml
from helpers import ROOT, MLHPC, mlhpc, one_line_error

TOTAL = 1000
CONFIG = {"data": {"name": "digits"}, "model": {"type": "mlp", "hidden_dim": 32, "num_layers": 2}, "batch_size": 32,
          "total_updates": TOTAL, "updates_per_epoch": 250, "log_every": 1, "seed": 0, "checkpoint": {"every": 50}}

def write_config(tmp_path, **changes):
    "CONFIG (with top-level `changes`) as tmp_path/config.yaml."
    p = tmp_path/"config.yaml"
    p.write_text(yaml.safe_dump({**CONFIG, **changes}))
    return p

def start(config, run_dir, *sets):
    "Start `mlhpc train` in its own process group; its output goes to run_dir.out."
    out = open(f"{run_dir}.out", "a")
    argv = MLHPC + ["train", str(config), "--run-dir", str(run_dir)] + [a for s in sets for a in ("--set", s)]
    p = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    p.out = Path(f"{run_dir}.out")
    return p

def wait_for(cond, p, timeout=240, what="a condition"):
    "Poll `cond()` until true while process `p` runs."
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond(): return
        if p.poll() is not None: raise AssertionError(f"mlhpc train exited {p.returncode} before {what}\n{p.out.read_text()[-3000:]}")
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL); raise AssertionError(f"timed out waiting for {what}")

def rows(run_dir)->int:
    "Lines in stats.csv."
    p = Path(run_dir)/"stats.csv"
    return p.read_bytes().count(b"\n") if p.exists() else 0

def holds_lock(run_dir, pid)->bool:
    "True once run.lock names `pid` as its holder."
    try: return json.loads((Path(run_dir)/"run.lock").read_text() or "{}").get("pid") == pid
    except (OSError, ValueError): return False

def killed_run(tmp_path, after_rows=120):
    "A run SIGKILLed (whole process group) after its first checkpoint and `after_rows` lines of stats.csv: (config, run_dir, pid)."
    cfg, run = write_config(tmp_path), tmp_path/"run"
    p = start(cfg, run)
    wait_for(lambda: (run/"checkpoints/latest.pt").exists() and rows(run) > after_rows, p, what="a checkpoint")
    os.killpg(p.pid, signal.SIGKILL); p.wait()
    return cfg, run, p.pid

def train_updates(run_dir)->list:
    "The update column of the training rows of stats.csv."
    df = pd.read_csv(Path(run_dir)/"stats.csv")
    return df.dropna(subset=["loss"])["update"].tolist()

def snapshot(run_dir)->dict:
    "Every file under run_dir with its bytes and modification time (ns)."
    return {str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(Path(run_dir).rglob("*")) if p.is_file()}

## One writer

def test_second_training_on_a_busy_run_directory_exits_at_once_naming_the_holder(tmp_path):
    pause = tmp_path/"pause"  # while it exists, the first training hangs in a read (tests/slow_data.py): it is busy whatever the load
    cfg, run = write_config(tmp_path, data={"name": "tests.slow_data:paused_digits", "pause": str(pause)}), tmp_path/"run"
    a = start(cfg, run)
    wait_for(lambda: holds_lock(run, a.pid) and rows(run) > 5, a, what="the first training to start")
    pause.touch(); wait_for(lambda: Path(f"{pause}.waiting").exists(), a, what="the first training to hang in a read")
    for sets in [(), ("seed=1",)]:
        t0 = time.monotonic()
        b = mlhpc("train", cfg, "--run-dir", run, *[x for s in sets for x in ("--set", s)])
        took = time.monotonic() - t0
        assert a.poll() is None, "the first training ended before the second tried"
        one_line_error(b, f"run directory {run} is in use by pid {a.pid} on {socket.gethostname()}", "mlhpc status")
        print(f"second mlhpc train refused in {took:.1f} s (whole command, including start-up)")
        assert took < 60
    one_line_error(mlhpc("submit", cfg, "--run-dir", run, "--time", "10:00", "--dry-run"), f"run {run} is already running")
    pause.unlink()
    assert a.wait(timeout=600) == 0, a.out.read_text()[-3000:]
    assert train_updates(run) == list(range(1, TOTAL + 1)) and not (run/"job.sbatch").exists()
    assert yaml.safe_load((run/"config.yaml").read_text())["seed"] == 0
    assert json.loads((run/"status.json").read_text())["state"] == "completed"
    assert (run/"run.lock").read_bytes() == b""

def test_sigkill_leaves_no_lock_that_blocks_the_resume(tmp_path):
    cfg, run, pid = killed_run(tmp_path)
    assert holds_lock(run, pid)
    p = mlhpc("train", cfg, "--run-dir", run, timeout=600)
    assert p.returncode == 0 and f"completed at update {TOTAL}/{TOTAL}" in p.stdout, p.stderr[-3000:]
    assert "resumed from update" in (run/"train.log").read_text()
    assert train_updates(run) == list(range(1, TOTAL + 1))

## A status that tells the truth

def test_status_after_sigkill_says_failed_and_how_to_resume(tmp_path):
    cfg, run, pid = killed_run(tmp_path)
    assert json.loads((run/"status.json").read_text())["state"] == "running"
    p = mlhpc("status", run)
    assert p.returncode == 0, p.stderr
    line = p.stdout.strip()
    assert line.startswith(f"{run}: failed (its process (pid {pid} on {socket.gethostname()}) is gone"), line
    assert f"mlhpc train {run}/config.yaml --run-dir {run}" in line and "running" not in line
    assert json.loads((run/"status.json").read_text())["state"] == "running", "mlhpc status must not write"

def test_status_of_a_live_run_says_running(tmp_path):
    cfg, run = write_config(tmp_path), tmp_path/"run"
    a = start(cfg, run)
    wait_for(lambda: (run/"status.json").exists() and rows(run) > 5, a, what="the training to start")
    line = mlhpc("status", run).stdout
    alive = a.poll() is None
    os.killpg(a.pid, signal.SIGKILL); a.wait()
    assert alive and f"{run}: running, update" in line, line

@contextmanager
def small_tmpfs(path, size="4m", ro=False):
    "A tmpfs of `size` mounted at `path` (root only), unmounted afterwards."
    if os.geteuid() != 0: pytest.skip("mounting a tmpfs needs root")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}" + (",ro" if ro else ""), "tmpfs", str(path)], check=True)
    try: yield path
    finally: subprocess.run(["umount", "-l", str(path)], check=True)

def test_full_disk_on_stats_csv_marks_the_run_failed(tmp_path):
    with small_tmpfs(tmp_path/"fs") as fs:
        cfg, run = write_config(tmp_path, total_updates=100000, updates_per_epoch=100000, checkpoint={"every": 0}), fs/"run"
        a = start(cfg, run)
        wait_for(lambda: rows(run) > 20, a, what="stats.csv rows")
        with open(fs/"filler", "wb") as f:
            try:
                while True: f.write(b"\0" * 65536); f.flush()
            except OSError: pass
        code = a.wait(timeout=300)
        st = json.loads((run/"status.json").read_text())
        out = a.out.read_text()
    assert code == 1, out[-3000:]
    assert st["state"] == "failed" and "No space left on device" in st["reason"], st
    assert "error: training failed: OSError: [Errno 28] No space left on device" in out, out[-3000:]

def test_rerunning_a_completed_run_changes_nothing(tmp_path):
    cfg, run = write_config(tmp_path, total_updates=60, updates_per_epoch=30), tmp_path/"run"
    mlhpc("train", cfg, "--run-dir", run, check=True)
    before = snapshot(run)
    time.sleep(0.05)
    p = mlhpc("train", cfg, "--run-dir", run)
    assert p.returncode == 0 and "completed at update 60/60" in p.stdout, p.stderr
    assert "has already completed: nothing to do" in p.stderr
    assert snapshot(run) == before
    st = json.loads((run/"status.json").read_text())
    assert st["attempt"] == 1 and set(st["metrics"]) == {"update", "val_loss", "val_accuracy"}

## Broken files

def test_an_unterminated_last_line_of_stats_csv_is_dropped_on_resume(tmp_path):
    cfg, run, _ = killed_run(tmp_path)
    with open(run/"stats.csv", "ab") as f: f.write(b"1")  # the first byte of a row such as "1xx,...", the rest never written
    p = mlhpc("train", cfg, "--run-dir", run, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert train_updates(run) == list(range(1, TOTAL + 1))

@pytest.mark.parametrize("how", ["missing", "file"])
def test_progress_without_checkpoints_is_refused(tmp_path, how):
    cfg, run, _ = killed_run(tmp_path)
    (run/"checkpoints").rename(tmp_path/"moved")
    if how == "file": (run/"checkpoints").write_text("not a folder")
    stats_before, moved = (run/"stats.csv").read_bytes(), snapshot(tmp_path/"moved")
    p = mlhpc("train", cfg, "--run-dir", run)
    one_line_error(p, f"run {run} has progress but no checkpoint to resume from", "is a file" if how == "file" else "is missing", "--overwrite")
    assert (run/"stats.csv").read_bytes() == stats_before and snapshot(tmp_path/"moved") == moved

BAD_FILES = {"a list": b"- 1\n- 2\n", "binary": bytes(range(256)), "latin-1": "état: é\n".encode("latin-1")}

@pytest.mark.parametrize("kind", BAD_FILES)
def test_status_json_of_the_wrong_type_is_one_line_and_kept(tmp_path, kind):
    run = tmp_path/"run"; run.mkdir()
    (run/"status.json").write_bytes(BAD_FILES[kind])
    one_line_error(mlhpc("status", run), f"{run}/status.json is not a run status")
    one_line_error(mlhpc("train", write_config(tmp_path), "--run-dir", run), f"{run}/status.json is not a run status")
    assert (run/"status.json").read_bytes() == BAD_FILES[kind] and sorted(os.listdir(run)) == ["status.json"]

@pytest.mark.parametrize("kind", BAD_FILES)
def test_config_yaml_of_the_wrong_type_is_one_line_and_kept(tmp_path, kind):
    run = tmp_path/"run"; run.mkdir()
    (run/"config.yaml").write_bytes(BAD_FILES[kind])
    one_line_error(mlhpc("train", write_config(tmp_path), "--run-dir", run), f"{run}/config.yaml cannot be read as a run config")
    assert (run/"config.yaml").read_bytes() == BAD_FILES[kind]

def test_run_directories_that_cannot_be_one(tmp_path):
    cfg, f = write_config(tmp_path), tmp_path/"afile"
    f.write_text("keep")
    one_line_error(mlhpc("status", f), f"{f} is a file")
    one_line_error(mlhpc("train", cfg, "--run-dir", f), f"{f} is a file")
    one_line_error(mlhpc("train", cfg, "--run-dir", f/"run"), f"{f} is a file")
    one_line_error(mlhpc("train", cfg, "--run-dir", "/"), "refusing the file-system root /")
    one_line_error(mlhpc("train", cfg, "--run-dir", ""), "the run directory '' is empty")
    one_line_error(mlhpc("train", cfg, env={"RESULTS_DIR": str(f)}), f"RESULTS_DIR={f} is not a directory")
    assert f.read_text() == "keep" and sorted(os.listdir(tmp_path)) == ["afile", "config.yaml"]
    assert not any(Path("/", n).exists() for n in ("checkpoints", "stats.csv", "run.lock"))

def test_read_only_run_directory_is_one_line(tmp_path):
    with small_tmpfs(tmp_path/"ro", size="1m", ro=True) as ro:
        one_line_error(mlhpc("train", write_config(tmp_path), "--run-dir", ro), f"cannot write to the run directory {ro} (Read-only file system)")
        one_line_error(mlhpc("train", write_config(tmp_path), "--run-dir", ro/"run"), "Read-only file system")

@pytest.mark.slurm
def test_status_of_a_run_whose_slurm_job_ended_says_failed(slurm, tmp_path):
    run = tmp_path/"run"; run.mkdir()
    jid = slurm.sbatch("--wrap", "sleep 300", "-o", str(tmp_path/"out"))
    slurm.wait_state(jid, "RUNNING", timeout=60)
    (run/"status.json").write_text(json.dumps({"state": "running", "job_id": jid, "update": 7, "total_updates": 10}))
    (run/"run.lock").write_text(json.dumps({"host": "a-node-elsewhere", "pid": 1234, "start": "x", "job_id": jid}))
    line = mlhpc("status", run, env=slurm.env).stdout
    assert f"{run}: running, update 7/10, attempt 1, job {jid} RUNNING" in line, line
    slurm.run(["scancel", jid]); slurm.wait_state(jid, "FINISHED", timeout=60)
    p = mlhpc("status", run, env=slurm.env)
    line = p.stdout
    assert line.startswith(f"{run}: failed (its SLURM job {jid} is "), p.stderr
    assert f"mlhpc train {run}/config.yaml --run-dir {run}" in line

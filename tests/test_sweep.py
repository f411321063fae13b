"""`mlhpc sweep` and `mlhpc status SWEEP_DIR` end to end on this machine: a grid of the digits example runs to completion,
a failing experiment is reported and retried alone, a notebook target works the same way, Ctrl-C stops a sweep so it can be retried,
and the sweep path never imports torch."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import yaml
from helpers import ROOT, MLHPC, mlhpc, one_line_error

QUIET = {"OMP_NUM_THREADS": "1"}  # the machine is shared: one thread per experiment

def write_spec(tmp_path, parameters, target="examples/digits.yaml", name="grid"):
    "A sweep spec in tmp_path whose sweep folder goes to tmp_path/out."
    spec = {"job_details": {"name": name, "output_dir": str(tmp_path/"out"), "target": str(ROOT/target)}, "parameters": parameters}
    (tmp_path/"spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return tmp_path/"spec.yaml"

def sweep_folder(tmp_path):
    (d,) = [p for p in (tmp_path/"out").iterdir() if ".old-" not in p.name]
    return d

def manifest(root):
    import csv
    with open(root/"manifest.csv", newline="") as f: return list(csv.DictReader(f))

def state(run_dir):
    return json.loads((run_dir/"status.json").read_text())

def mtimes(run_dir):
    return {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}

GRID = {"total_updates": 60, "updates_per_epoch": 20,
        "LIST_optimizer": [{"optimizer.name": "AdamW", "seed": [0, 1, 2, 3]},
                           {"optimizer.name": "SGD", "optimizer.learning_rate": 1.0e6, "seed": 0}]}  # a huge SGD step: the loss goes non-finite

def test_sweep_path_does_not_import_torch(tmp_path):
    spec = write_spec(tmp_path, GRID)
    code = ("import sys\nfrom ml_hpc.sweep import make_plan, write_sweep, show_status\nfrom pathlib import Path\n"
            f"p = make_plan({str(spec)!r}); write_sweep(p, Path({str(tmp_path/'s')!r})); show_status({str(tmp_path/'s')!r}, print)\n"
            "print(sorted(m for m in ('torch', 'pandas', 'papermill') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]", out

def test_dry_run_writes_nothing_and_bad_specs_fail_in_one_line(tmp_path):
    spec = write_spec(tmp_path, GRID)
    p = mlhpc("sweep", spec, "--dry-run", check=True)
    assert p.stdout.splitlines()[-1] == "5 experiments" and "optimizer.name" in p.stdout.splitlines()[0]
    assert not (tmp_path/"out").exists()
    one_line_error(mlhpc("sweep", write_spec(tmp_path, {**GRID, "seed": []})), "parameter 'seed' is an empty list")
    one_line_error(mlhpc("sweep", write_spec(tmp_path, {**GRID, "optimizer.momentun": 0.9})), "unknown config key 'optimizer.momentun'")
    one_line_error(mlhpc("sweep", write_spec(tmp_path, {**GRID, "batch_size": ["big"]})), "'batch_size' has value 'big'")
    one_line_error(mlhpc("sweep", write_spec(tmp_path, {"seed": [1, 1]})), "experiments 0 and 1 are the same")
    one_line_error(mlhpc("sweep", write_spec(tmp_path, GRID, target="examples/nothing.yaml")), "sweep target", "not found")
    assert not (tmp_path/"out").exists()

def test_local_sweep_runs_reports_the_failed_one_and_retries_only_it(tmp_path):
    spec = write_spec(tmp_path, GRID)
    start = time.time()
    p = mlhpc("sweep", spec, "--max-parallel", "2", env=QUIET, timeout=600)
    print(p.stdout, f"sweep of 5 took {time.time() - start:.0f} s")
    assert p.returncode == 1, p.stderr
    root = sweep_folder(tmp_path)
    assert root.name.endswith("_grid") and root.name[:4].isdigit()
    rows = manifest(root)
    assert [r["folder"] for r in rows] == [f"name=AdamW_seed={i}" for i in range(4)] + ["name=SGD_seed=0_learning_rate=1000000.0"]
    folders = [root/r["folder"] for r in rows]
    assert [state(d)["state"] for d in folders] == ["completed"] * 4 + ["failed"]
    assert yaml.safe_load((folders[4]/"spec.yaml").read_text())["optimizer.learning_rate"] == 1.0e6
    s = mlhpc("status", root)
    assert s.returncode == 1 and s.stdout.splitlines()[-1] == "4 completed, 1 failed (5 experiments)", s.stdout
    assert "60/60" in s.stdout and "val_accuracy" in s.stdout
    one_line_error(mlhpc("sweep", spec), "exists already", "--retry")
    before = {d: mtimes(d) for d in folders[:4]}
    r = mlhpc("sweep", spec, "--retry", env=QUIET, timeout=600)
    assert r.returncode == 1 and "1 of 5 experiments to run" in r.stdout, r.stdout + r.stderr
    assert state(folders[4])["attempt"] == 2 and state(folders[4])["state"] == "failed"
    assert {d: mtimes(d) for d in folders[:4]} == before

def test_overwrite_keeps_the_old_sweep_folder(tmp_path):
    spec = write_spec(tmp_path, {"total_updates": 60, "updates_per_epoch": 60, "seed": [0]})
    (tmp_path/"out").mkdir()
    root = tmp_path/"out"/f"{time.strftime('%Y-%m-%d')}_grid"
    root.mkdir(); (root/"keep.txt").write_text("x")
    p = mlhpc("sweep", spec, "--overwrite", env=QUIET, check=True)
    old = [d for d in (tmp_path/"out").iterdir() if ".old-" in d.name]
    assert len(old) == 1 and (old[0]/"keep.txt").read_text() == "x" and "moved to" in p.stdout
    assert state(root/"run")["state"] == "completed"

def test_notebook_target_runs_and_retry_leaves_completed_runs_alone(tmp_path):
    spec = write_spec(tmp_path, {"total_updates": 20, "updates_per_epoch": 10, "seed": [0, 1]}, target="examples/train_digits.ipynb", name="nb")
    p = mlhpc("sweep", spec, env=QUIET, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    root = sweep_folder(tmp_path)
    folders = [root/r["folder"] for r in manifest(root)]
    assert [d.name for d in folders] == ["seed=0", "seed=1"]
    assert all(state(d)["state"] == "completed" and state(d)["update"] == 20 for d in folders)
    assert all((d/"output.ipynb").exists() for d in folders)
    s = mlhpc("status", root)
    assert s.returncode == 0 and s.stdout.splitlines()[-1] == "2 completed (2 experiments)"
    before = {d: mtimes(d) for d in folders}
    r = mlhpc("sweep", spec, "--retry", check=True)
    assert "0 of 2 experiments to run" in r.stdout and {d: mtimes(d) for d in folders} == before
    one_line_error(mlhpc("sweep", write_spec(tmp_path, {"sed": [0, 1]}, target="examples/train_digits.ipynb", name="nb")), "unknown parameter 'sed'")

def test_ctrl_c_stops_running_experiments_so_they_can_be_retried(tmp_path):
    spec = write_spec(tmp_path, {"total_updates": 10**6, "updates_per_epoch": 50, "seed": [0, 1]})
    proc = subprocess.Popen(MLHPC + ["sweep", str(spec)], cwd=ROOT, env={**os.environ, **QUIET}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            running = [p for p in (tmp_path/"out").glob("*/seed=0/status.json") if json.loads(p.read_text() or "{}").get("state") == "running"]
            if running: break
            time.sleep(0.5)
        assert running, "the first experiment never started"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally: proc.kill()
    assert proc.returncode == 75, out + err
    root = sweep_folder(tmp_path)
    assert state(root/"seed=0")["state"] == "stopped" and not (root/"seed=1"/"status.json").exists()
    s = mlhpc("status", root)
    assert s.returncode == 0 and s.stdout.splitlines()[-1] == "1 stopped, 1 not started (2 experiments)", s.stdout

def test_array_task_entry_runs_its_own_experiment(tmp_path):
    "What each task of the --executor slurm array runs (`python -m ml_hpc.sweep SWEEP_DIR`), here outside SLURM with the index it would get."
    from ml_hpc.sweep import make_plan, prepare
    spec = write_spec(tmp_path, {"total_updates": 60, "updates_per_epoch": 60, "seed": [0, 1, 2]})
    root, todo = prepare(make_plan(spec), out=print)
    p = subprocess.run([sys.executable, "-m", "ml_hpc.sweep", str(root)], cwd=ROOT, env={**os.environ, **QUIET, "SLURM_ARRAY_TASK_ID": "1"},
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert state(root/"seed=1")["state"] == "completed" and state(root/"seed=1")["update"] == 60
    assert not (root/"seed=0"/"status.json").exists() and not (root/"seed=2"/"status.json").exists()
    s = mlhpc("status", root)
    assert s.stdout.splitlines()[-1] == "1 completed, 2 not started (3 experiments)", s.stdout

def test_the_example_spec_plans_eight_experiments(tmp_path):
    p = mlhpc("sweep", ROOT/"examples/sweep_digits.yaml", "--dry-run", "--executor", "slurm", cwd=tmp_path, check=True)
    assert p.stdout.splitlines()[-1] == "8 experiments" and not (tmp_path/"runs").exists(), p.stdout

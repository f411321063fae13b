"""A 1,000-experiment sweep of examples/digits.yaml (and of examples/train_digits.ipynb): how long `mlhpc sweep` takes to
expand, check every experiment against its target and write the sweep folder, and how long `mlhpc status` takes to read it.

Every figure is the wall time of a fresh process (Python start-up and imports included), the median of `--repeats` runs:
- `mlhpc sweep --dry-run`: expand and check (load_config of each of the 1,000 experiments), print the table;
- expand + check + write: `make_plan` and `prepare` of ml_hpc.sweep in a fresh process (what `mlhpc sweep` does before it
  starts the first experiment; no SLURM needed), then the folders are deleted for the next repeat;
- `mlhpc status SWEEP_DIR` with no experiment started, and with every experiment holding a completed status.json.
With `--slurm` (SLURM_CONF set, a cluster up, e.g. `python tests/slurm_cluster.py start /tmp/cl` prints the SLURM_CONF to export):
`mlhpc sweep --executor slurm` end to end with every task held (SBATCH_HOLD=1, so nothing runs), beside seed 003's way,
one `sbatch --hold` per experiment; both and the ratio. Measured on the idle loopback cluster: 1.10 s against 5.92 s (5.4x).
Targets (issue 10): the sweep path well under 2 s, status under 1 s, neither importing torch.
Usage: python bench/bench_sweep.py [--repeats 5] [--experiments 1000] [--slurm]"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import yaml

ROOT = Path(__file__).resolve().parents[1]
MLHPC = [sys.executable, "-c", "from ml_hpc.cli import main; main()"]

def wall(cmd, ok=(0,)):
    "Wall seconds of `cmd`, run from the repository."
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode not in ok: raise SystemExit(f"{cmd} exited {p.returncode}\n{p.stderr[-2000:]}")
    return time.perf_counter() - t0

def median(f, n): return statistics.median(f() for _ in range(n))

def spec(tmp:Path, n:int, target:str, name:str, resources:dict|None=None)->Path:
    "A spec of `n` experiments: seeds times learning rates (times hidden sizes for a config)."
    seeds = list(range(n // 10))
    params = ({"seed": seeds, "optimizer.learning_rate": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], "model.hidden_dim": [64, 128]} if target.endswith(".yaml")
              else {"seed": seeds, "learning_rate": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], "hidden_dim": [64, 128]})
    p = tmp/f"{name}.yaml"
    details = {"name": name, "output_dir": str(tmp/"out"), "target": str(ROOT/target), **({"resources": resources} if resources else {})}
    p.write_text(yaml.safe_dump({"job_details": details, "parameters": params}))
    return p

WRITE = ("import sys, time; from ml_hpc.sweep import make_plan, prepare; plan = make_plan(sys.argv[1]); t = time.perf_counter(); "
         "root, todo = prepare(plan, out=lambda s: None); print(time.perf_counter() - t); "
         "assert 'torch' not in sys.modules and 'pandas' not in sys.modules")

def write_once(s:Path)->tuple:
    "(wall seconds of the whole process, seconds of its writing alone)."
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", WRITE, str(s)], cwd=ROOT, capture_output=True, text=True, check=True)
    t = time.perf_counter() - t0
    for d in (s.parent/"out").iterdir(): shutil.rmtree(d)
    time.sleep(1)  # let the deletion settle before the next repeat
    return t, float(p.stdout.split()[-1])

def complete_all(root:Path):
    "Give every experiment a completed status.json, as a finished sweep has."
    from ml_hpc.rundir import write_status
    for d in root.iterdir():
        if d.is_dir(): write_status(d, state="completed", update=600, total_updates=600, attempt=1, metrics={"val_loss": 0.1, "val_accuracy": 0.97})

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5); ap.add_argument("--experiments", type=int, default=1000)
    ap.add_argument("--slurm", action="store_true", help="also submit against the cluster SLURM_CONF points at (tasks held)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"python start-up and `import ml_hpc.cli`: {median(lambda: wall(MLHPC + ['--help']), a.repeats):.3f} s")
        for target, name in [("examples/digits.yaml", "cfg"), ("examples/train_digits.ipynb", "nb")]:
            s = spec(tmp, a.experiments, target, name)
            dry = median(lambda: wall(MLHPC + ["sweep", str(s), "--dry-run"]), a.repeats)
            runs = [write_once(s) for _ in range(a.repeats)]
            write, disk = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
            print(f"{target}, {a.experiments} experiments: mlhpc sweep --dry-run {dry:.3f} s; expand + check + write {write:.3f} s (of which writing {disk:.3f} s)")
        wall([sys.executable, "-c", WRITE, str(s)])
        (root,) = (tmp/"out").iterdir()
        fresh = median(lambda: wall(MLHPC + ["status", str(root)]), a.repeats)
        complete_all(root)
        done = median(lambda: wall(MLHPC + ["status", str(root)]), a.repeats)
        print(f"mlhpc status of {a.experiments} experiments: {fresh:.3f} s none started, {done:.3f} s all completed")
        if a.slurm: bench_slurm(tmp, a.experiments)

def scancel_user():
    subprocess.run(["scancel", "-u", os.environ.get("USER", "root")], capture_output=True)

def bench_slurm(tmp:Path, n:int):
    "One array for the sweep against one sbatch per experiment, every job held."
    s = spec(tmp, n, "examples/digits.yaml", "arr", {"time": "00:10:00"})
    held = {**os.environ, "SBATCH_HOLD": "1"}
    t0 = time.perf_counter()
    p = subprocess.run(MLHPC + ["sweep", str(s), "--executor", "slurm", "--max-parallel", "50"], cwd=ROOT, env=held, capture_output=True, text=True)
    array = time.perf_counter() - t0
    if p.returncode or f": {n} experiments, 50 at a time" not in p.stdout: raise SystemExit(p.stdout + p.stderr)
    root = next((tmp/"out").glob("*_arr"))
    t0 = time.perf_counter()
    wall(MLHPC + ["status", str(root)])
    status = time.perf_counter() - t0
    scancel_user()
    script = tmp/"one.sbatch"; script.write_text("#!/bin/bash\n#SBATCH --time=00:10:00\ntrue\n")
    t0 = time.perf_counter()
    for i in range(n): subprocess.run(["sbatch", "--hold", "--parsable", f"--output={tmp}/o-%j.out", str(script)], check=True, capture_output=True)
    one_by_one = time.perf_counter() - t0
    scancel_user()
    print(f"SLURM, {n} experiments: mlhpc sweep --executor slurm {array:.3f} s (mlhpc status while queued {status:.3f} s); "
          f"one sbatch per experiment {one_by_one:.3f} s; ratio {one_by_one / array:.1f}x")

if __name__ == "__main__": main()

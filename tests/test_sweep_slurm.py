"""`mlhpc sweep --executor slurm` on the real loopback SLURM cluster: six experiments as one job array two at a time, one hitting its
1-minute limit and requeueing, one failing; `mlhpc status` followed while the states change; `--retry` resubmits only the failed one."""
import json, re, time
from pathlib import Path
import yaml
import pytest
from helpers import ROOT, mlhpc
from test_sweep import write_spec, sweep_folder, manifest, state, mtimes

pytestmark = pytest.mark.slurm

SLOW = "tests.slow_data:slow_digits"  # each batch takes 30 ms to read: wall time, little CPU
QUICK = {"total_updates": 60, "updates_per_epoch": 20}
GRID = {"LIST_runs": [{**QUICK, "seed": [0, 1, 2, 3]},
                      {**QUICK, "optimizer.name": "SGD", "optimizer.learning_rate": 1.0e6, "seed": 0},  # a huge SGD step: the loss goes non-finite
                      {"data.name": SLOW, "total_updates": 2000, "updates_per_epoch": 500, "seed": 0}]}  # > 60 s: more than one 1-minute attempt

def status_table(slurm, root):
    "`mlhpc status SWEEP_DIR` as (exit status, {experiment: state}, last line)."
    p = mlhpc("status", root, env=slurm.env)
    lines = p.stdout.splitlines()
    states = {}
    for line in lines[1:-1]:
        f = line.split()
        states[f[1]] = "not started" if f[2] == "not" else f[2]
    return p.returncode, states, lines[-1] if lines else p.stderr

def follow(slurm, root, array, stall=300):
    "Poll `mlhpc status` until the array has left the queue; return each experiment's states in the order they were seen."
    seen, last_change = {}, time.monotonic()
    while True:
        in_queue = slurm.run(["squeue", "-h", "-r", "-j", array, "-o", "%i"], check=False).stdout.split()
        _, states, _ = status_table(slurm, root)
        for name, s in states.items():
            if not seen.get(name) or seen[name][-1] != s: seen.setdefault(name, []).append(s); last_change = time.monotonic()
        if not in_queue and all(s in ("completed", "failed", "stopped") for s in states.values()): return seen
        assert time.monotonic() - last_change < stall, f"no state changed for {stall} s: {states}"
        time.sleep(0.5)

def array_id(out):
    return re.search(r"submitted job array (\d+): (\d+) experiments?, (\d+) at a time", out).groups()

def test_sweep_as_one_job_array_requeues_reports_and_retries_only_the_failed_task(slurm, tmp_path):
    profile = tmp_path/"cluster.yaml"
    profile.write_text("")  # the defaults users get, whatever ~/.config holds
    spec = write_spec(tmp_path, GRID, name="array")
    s = yaml.safe_load(spec.read_text())
    s["job_details"].update(resources={"time": "00:01:00"}, profile=str(profile))
    spec.write_text(yaml.safe_dump(s, sort_keys=False))
    t0 = time.monotonic()
    p = mlhpc("sweep", spec, "--executor", "slurm", "--max-parallel", "2", env=slurm.env, check=True)
    submit_s = time.monotonic() - t0
    array, n, k = array_id(p.stdout)
    assert (n, k) == ("6", "2"), p.stdout
    root = sweep_folder(tmp_path)
    assert "#SBATCH --array=0-5%2" in (root/"job.sbatch").read_text()
    names = [r["folder"] for r in manifest(root)]
    failing, slow = names[4], names[5]
    seen = follow(slurm, root, array)
    print(f"submit {submit_s:.1f} s; states seen: {json.dumps(seen)}")
    assert all(v[0] == "queued" for v in seen.values()), seen
    # stopped at the limit and requeued by its job: queued again (not stopped, which --retry would resubmit), then running again
    assert seen[slow][:4] == ["queued", "running", "queued", "running"] and seen[slow][-1] == "completed" and "stopped" not in seen[slow], seen[slow]
    assert all(seen[n][-1] == "completed" for n in names[:4]) and seen[failing][-1] == "failed", seen  # a quick one may run between two looks
    st = state(root/slow)
    assert st["attempt"] >= 2 and st["update"] == 2000 and st["job_id"] == f"{array}_5", st
    stops = re.findall(r"stopped at update (\d+) \(time limit", (root/slow/"train.log").read_text())
    assert len(stops) == st["attempt"] - 1 and int(stops[0]) > 0, stops
    code, states, last = status_table(slurm, root)
    assert code == 1 and last == "5 completed, 1 failed (6 experiments)", (states, last)
    assert states[failing] == "failed" and state(root/failing)["attempt"] == 1
    before = {d: mtimes(root/d) for d in names if d != failing}
    r = mlhpc("sweep", spec, "--retry", "--executor", "slurm", "--max-parallel", "2", env=slurm.env, check=True)
    assert "1 of 6 experiments to run" in r.stdout, r.stdout
    again, n, _ = array_id(r.stdout)
    assert n == "1" and "#SBATCH --array=4%2" in (root/"job.sbatch").read_text()
    follow(slurm, root, again)
    assert state(root/failing)["attempt"] == 2 and state(root/failing)["job_id"] == f"{again}_4"
    assert {d: mtimes(root/d) for d in names if d != failing} == before
    assert status_table(slurm, root)[2] == "5 completed, 1 failed (6 experiments)"

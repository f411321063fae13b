"""The two SLURM jobs whose training outlives a 1-minute time limit, a config job and a notebook job, submitted together.

Each job lasts about three minutes of the cluster's clock (two or three attempts and their requeues) and needs little CPU, since
its training data is read slowly (tests/slow_data.py). One after the other they held the cluster's pytest worker for 378 s
(fresh clone, make test); side by side, one on each of the node's two CPUs, for 177 s alone and 315 s beside the other worker's
tests, which leave them less CPU (more, shorter attempts). The `time_limit_jobs` fixture (conftest.py)
submits both, with their uninterrupted local references, when the first test asks for one. A thread follows each job to its end
and keeps its final state and requeue count, because slurmctld forgets a finished job after `MinJobAge` (60 s)."""
import re, threading, time
from pathlib import Path
import nbformat
from helpers import ROOT, Background, empty_profile, mlhpc, status
from slurm_cluster import TERMINAL

BASE = ["updates_per_epoch=4000", "log_every=50", "model.hidden_dim=64", "model.dropout=0.1", "lr_scheduler={}", "early_stopping.patience=0"]
# More than a 1-minute attempt holds, whatever the machine's load: every batch takes 30 ms to read (tests/slow_data.py), so the
# 2,000 updates last at least 60 s of wall time, and the SLURM job and its reference leave each other the CPU.
LONG = BASE + ["data.name=tests.slow_data:slow_digits", "total_updates=2000", "updates_per_epoch=500"]
NOTEBOOK_PARAMS = ["-p", "total_updates", "2000", "-p", "updates_per_epoch", "500", "-p", "learning_rate", "1e-3"]

def sets(settings): return sum([["--set", s] for s in settings], [])

def slow_notebook(dest:Path)->Path:
    "examples/train_digits.ipynb with its training data read slowly (tests/slow_data.py): 2,000 updates last more than 60 s at any load."
    nb = nbformat.read(ROOT/"examples"/"train_digits.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if "get_data(DataConfig(" in c.source]
    cell.source = f"import sys; sys.path.insert(0, {str(ROOT)!r})\nfrom tests.slow_data import slow_digits\ntrain_ds, valid_ds, info = slow_digits()\ninfo"
    nbformat.write(nb, dest/"slow_digits.ipynb")
    return dest/"slow_digits.ipynb"

class Followed:
    "A submitted job, its run directory and its uninterrupted reference; a thread follows the job until it ends (`ended`, epoch seconds)."
    def __init__(self, slurm, job:str, run:Path, reference:Background, stall:float=300):
        self.slurm, self.job, self.run, self.reference, self.submitted = slurm, job, run, reference, time.time()
        self.state = self.restarts = self.error = self.info = None
        self.thread = threading.Thread(target=self._follow, args=(stall,), daemon=True)
        self.thread.start()

    def _follow(self, stall):
        "Each second: the job's state and restarts; give up only when its attempts stop making progress (load only makes them slower)."
        best, since = -1, time.monotonic()
        try:
            while True:
                info = self.slurm.run(["scontrol", "-o", "show", "job", self.job], check=False).stdout
                fields = dict(f.split("=", 1) for f in info.split() if "=" in f)
                if "Restarts" in fields: self.restarts = int(fields["Restarts"])
                if fields.get("JobState") in TERMINAL: self.state, self.info, self.ended = fields["JobState"], info, time.time(); return
                if (u := status(self.run).get("update", -1)) > best: best, since = u, time.monotonic()
                if time.monotonic() - since > stall: self.error = f"job {self.job}: no progress for {stall} s (update {best})\n{info}"; return
                time.sleep(1)
        except Exception as e: self.error = f"following job {self.job} failed: {e!r}"

    def wait(self)->tuple[str, int]:
        "The job's final state and how many times it was requeued."
        self.thread.join()
        assert self.error is None, self.error
        return self.state, self.restarts

def submit(slurm, target:Path, run:Path, *args)->str:
    "`mlhpc submit TARGET --time 00:01:00` with the default margins; the job id."
    p = mlhpc("submit", target, "--run-dir", run, "--time", "00:01:00", "--profile", empty_profile(run.parent), *args, env=slurm.env, check=True)
    return re.search(r"submitted job (\d+)", p.stdout).group(1)

def submit_both(slurm, d:Path)->dict:
    "Submit the config job and the notebook job, then start their references: {'config': Followed, 'notebook': Followed}."
    (d/"config").mkdir(); (d/"notebook").mkdir()
    nb = slow_notebook(d/"notebook")
    config_job = submit(slurm, ROOT/"examples/digits.yaml", d/"config"/"run", *sets(LONG))
    notebook_job = submit(slurm, nb, d/"notebook"/"run", *NOTEBOOK_PARAMS)
    ref = d/"config"/"reference", d/"notebook"/"reference"
    return {"config": Followed(slurm, config_job, d/"config"/"run", Background("train", ROOT/"examples/digits.yaml", "--run-dir", ref[0], *sets(LONG), result=ref[0], timeout=600)),
            "notebook": Followed(slurm, notebook_job, d/"notebook"/"run", Background("run", nb, "--run-dir", ref[1], *NOTEBOOK_PARAMS, result=ref[1]))}

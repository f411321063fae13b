"""Notebooks as resumable batch jobs: `mlhpc run` of examples/train_digits.ipynb end to end, with a real kernel.

Every test runs the real program (papermill and an ipykernel of this interpreter) in a subprocess on the CPU. SIGKILL
goes to the whole job (the runner's process group and its kernel), as when a node dies or SLURM ends a job.
"""
import json, os, re, signal, subprocess, threading, time
from pathlib import Path
import nbformat, pytest, torch, yaml
from helpers import MLHPC, ROOT, mlhpc, one_line_error, same_weights, stats, status, weights

NB = ROOT/"examples"/"train_digits.ipynb"
LONG = ["-p", "total_updates", "300", "-p", "updates_per_epoch", "20", "-p", "learning_rate", "1e-3"]

def start(run_dir, *args):
    "Start `mlhpc run` in its own process group; its output goes to run_dir's sibling .out file."
    out = open(f"{run_dir}.out", "w")
    return subprocess.Popen(MLHPC + ["run", str(NB), "--run-dir", str(run_dir), *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

def kernel_of(pid):
    "The pid of the ipykernel a runner started (jupyter_client puts it in a session of its own)."
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and int((p/"stat").read_text().rsplit(")", 1)[1].split()[1]) == pid and b"ipykernel_launcher" in (p/"cmdline").read_bytes(): return int(p.name)
        except (OSError, IndexError): pass
    return None

def stop_with_sigterm(run_dir, at_least, *args):
    "Start `mlhpc run`, send SIGTERM to it once it trains past `at_least` with a checkpoint saved; its exit status."
    p = start(run_dir, *args)
    try:
        wait_for_update(p, run_dir, at_least)
        p.send_signal(signal.SIGTERM)
        return p.wait(timeout=120)
    finally:
        if p.poll() is None: os.killpg(p.pid, signal.SIGKILL)

def wait_for_update(p, run_dir, at_least, timeout=120):
    "Wait until the run is training past `at_least` with a checkpoint saved; fail if the job ended first."
    t0 = time.time()
    while time.time() - t0 < timeout:
        st = status(run_dir)
        if st.get("state") == "running" and st.get("update", 0) >= at_least and (Path(run_dir)/"checkpoints"/"latest.pt").exists(): return st
        assert p.poll() is None, f"the job ended (exit {p.returncode}) before update {at_least}: {Path(f'{run_dir}.out').read_text()[-2000:]}"
        time.sleep(0.02)
    raise AssertionError(f"no update {at_least} within {timeout} s")

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    "An uninterrupted notebook job: the weights every interrupted one must reproduce."
    d = tmp_path_factory.mktemp("ref")/"run"
    t0 = time.time()
    p = mlhpc("run", NB, "--run-dir", d, *LONG)
    assert p.returncode == 0, p.stdout + p.stderr
    return d, time.time() - t0

def test_parameters_are_typed_like_their_defaults_and_recorded(reference):
    d, _ = reference
    params = yaml.safe_load((d/"params.yaml").read_text())
    assert params == dict(total_updates=300, updates_per_epoch=20, batch_size=64, learning_rate=0.001, hidden_dim=64, seed=0)
    assert type(params["total_updates"]) is int and type(params["learning_rate"]) is float
    out = nbformat.read(d/"output.ipynb", as_version=4)
    injected = [c for c in out.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "total_updates = 300" in injected[0].source and "learning_rate = 0.001" in injected[0].source
    assert status(d)["state"] == "completed" and status(d)["update"] == 300

def test_output_notebook_stays_small_and_the_log_has_the_training(reference):
    d, _ = reference
    text = (d/"output.ipynb").read_text()
    assert len(text) < 40_000, f"output.ipynb is {len(text)} bytes"
    assert "it/s" not in text and "\\r" not in text and "update/s" not in text  # no progress-bar updates
    log = (d/"train.log").read_text()
    assert "update 300/300 val_loss" in log and "completed 300" in log  # the trainer's lines and the cell's own print

def test_a_completed_run_is_not_run_again(reference):
    d, _ = reference
    before = stats(d)
    p = mlhpc("run", NB, "--run-dir", d, *LONG)
    assert p.returncode == 0 and "already done" in p.stdout, p.stdout + p.stderr
    assert not list(d.glob("output.*.ipynb")) and stats(d).equals(before) and status(d)["attempt"] == 1

def test_other_parameters_on_the_same_run_directory_are_refused(reference):
    d, _ = reference
    one_line_error(mlhpc("run", NB, "--run-dir", d, *LONG[:-3], "-p", "learning_rate", "0.01"), "other parameters (learning_rate: 0.001 -> 0.01)", "overwrite")

def test_unknown_parameter_lists_the_valid_ones(tmp_path):
    one_line_error(mlhpc("run", NB, "--run-dir", tmp_path/"r", "-p", "total_update", "60"),
                   "unknown parameter 'total_update'", "total_updates, updates_per_epoch, batch_size, learning_rate, hidden_dim, seed")
    assert not (tmp_path/"r").exists()

def test_bad_value_names_the_parameter_and_the_type(tmp_path):
    one_line_error(mlhpc("run", NB, "--run-dir", tmp_path/"r", "-p", "total_updates", "sixty"), "parameter 'total_updates' has value 'sixty', expected a whole number")
    one_line_error(mlhpc("run", NB, "--run-dir", tmp_path/"r", "-p", "learning_rate", "fast"), "parameter 'learning_rate'", "expected a number")
    assert not (tmp_path/"r").exists()

def test_a_notebook_without_kernel_metadata_runs_and_a_broken_one_is_one_line(tmp_path):
    "Notebooks written by other tools may lack `kernelspec`: the job runs this interpreter's kernel anyway. A file that is not a notebook is a user mistake."
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("steps = 1", metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell("print('ran', steps * 2)")])
    nbformat.write(nb, tmp_path/"bare.ipynb")
    p = mlhpc("run", tmp_path/"bare.ipynb", "--run-dir", tmp_path/"r", "-p", "steps", "21")
    assert p.returncode == 0 and "ran 42" in (tmp_path/"r"/"train.log").read_text(), p.stdout + p.stderr
    (tmp_path/"bad.ipynb").write_text("x")
    one_line_error(mlhpc("run", tmp_path/"bad.ipynb", "--run-dir", tmp_path/"r2"), "is not a readable notebook")
    assert not (tmp_path/"r2").exists()

def test_secret_parameter_is_refused(tmp_path):
    (tmp_path/"p.yaml").write_text("wandb_api_key: abc\n")
    one_line_error(mlhpc("run", NB, "--run-dir", tmp_path/"r", "-f", tmp_path/"p.yaml"), "looks like a secret", "environment or .env")

def test_cell_error_fails_with_the_cell_and_error_in_the_log(tmp_path):
    d = tmp_path/"r"
    p = mlhpc("run", NB, "--run-dir", d, "-p", "total_updates", "20", "-p", "learning_rate", "-1")
    assert p.returncode == 1, p.stdout + p.stderr
    st = status(d)
    assert st["state"] == "failed" and "raised MlhpcError" in st["reason"] and "optimizer.learning_rate" in st["reason"]
    log = (d/"train.log").read_text()
    assert "raised MlhpcError" in log and "fit_run(" in log  # the error and the failing cell's traceback
    assert (d/"output.ipynb").exists()

def test_dead_kernel_fails(tmp_path):
    d = tmp_path/"r"
    p = start(d, *LONG)
    try:
        wait_for_update(p, d, 20)
        os.kill(kernel_of(p.pid), signal.SIGKILL)
        assert p.wait(timeout=120) == 1
    finally:
        if p.poll() is None: os.killpg(p.pid, signal.SIGKILL)
    assert status(d)["state"] == "failed" and "kernel died" in status(d)["reason"]
    assert "kernel died" in (d/"train.log").read_text()

def test_cell_timeout_fails_naming_the_cell(tmp_path):
    d = tmp_path/"r"
    p = mlhpc("run", NB, "--run-dir", d, "-p", "total_updates", "100000", "--cell-timeout", "3")
    assert p.returncode == 1, p.stdout + p.stderr
    assert status(d)["state"] == "failed" and "ran longer than --cell-timeout 3 s" in status(d)["reason"]
    assert "ran longer than --cell-timeout" in (d/"train.log").read_text() and (d/"output.ipynb").exists()

def test_sigterm_saves_stops_with_75_and_rerun_completes_bit_identical(reference, tmp_path):
    d = tmp_path/"r"
    code, st = stop_with_sigterm(d, 40, *LONG), status(d)
    assert code == 75, Path(f"{d}.out").read_text()[-2000:]
    assert st["state"] == "stopped" and st["reason"] == "signal SIGTERM" and 40 <= st["update"] < 300
    assert weights(d) and "RunStopped" in (d/"output.ipynb").read_text()  # a saved checkpoint; papermill wrote the notebook
    p2 = mlhpc("run", NB, "--run-dir", d, *LONG)
    assert p2.returncode == 0, p2.stdout + p2.stderr
    assert same_weights(weights(d), weights(reference[0]))
    assert stats(d).equals(stats(reference[0]))
    assert (d/"output.1.ipynb").exists() and status(d)["attempt"] == 2

def test_ctrl_c_during_start_up_is_held_and_stops_after_the_first_update(tmp_path):
    "Ctrl-C (SIGINT) before the kernel is up: held, delivered as SIGTERM, kept by job_setup, the run saves at update 1 and exits 75."
    d = tmp_path/"r"
    p = start(d, *LONG)
    try:
        t0 = time.time()
        while "notebook job:" not in ((d/"train.log").read_text() if (d/"train.log").exists() else ""):
            assert p.poll() is None and time.time() - t0 < 60, Path(f"{d}.out").read_text()[-2000:]
            time.sleep(0.01)
        p.send_signal(signal.SIGINT)
        code = p.wait(timeout=120)
    finally:
        if p.poll() is None: os.killpg(p.pid, signal.SIGKILL)
    st = status(d)
    assert code == 75, Path(f"{d}.out").read_text()[-2000:]
    assert st["state"] == "stopped" and st["reason"] == "signal SIGTERM" and 1 <= st["update"] < 300 and weights(d)

def test_sigkill_of_the_whole_job_then_rerun_is_bit_identical(reference, tmp_path):
    d = tmp_path/"r"
    p = start(d, *LONG)
    try:
        wait_for_update(p, d, 60)
        k = kernel_of(p.pid)
        os.killpg(p.pid, signal.SIGKILL); os.killpg(k, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None: os.killpg(p.pid, signal.SIGKILL)
    assert status(d)["state"] == "running" and status(d)["update"] < 300
    p2 = mlhpc("run", NB, "--run-dir", d, *LONG)
    assert p2.returncode == 0, p2.stdout + p2.stderr
    assert same_weights(weights(d), weights(reference[0]))
    assert "resumed from update" in (d/"train.log").read_text()
    assert (d/"output.1.ipynb").exists() and (d/"output.ipynb").exists()  # the killed attempt's partial notebook is kept

def test_interactive_parity_plain_kernel_trains_stops_and_resumes(tmp_path, monkeypatch):
    "Execute the notebook top to bottom without papermill, as Jupyter would; stop it with a signal; a second execution resumes."
    from nbclient import NotebookClient
    nb = nbformat.read(NB, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = cell.source.replace("total_updates = 200", "total_updates = 300").replace("updates_per_epoch = 50", "updates_per_epoch = 20")
    for k in ("MLHPC_BATCH", "MLHPC_RUN_DIR", "MLHPC_NOTEBOOK", "RESULTS_DIR"): monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path/"train_digits.ipynb"))  # what Jupyter server tells its kernels
    run = tmp_path/"runs"/"train_digits"
    def execute():
        return NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    def stop_at(update):
        t0 = time.time()
        while time.time() - t0 < 120 and not (status(run).get("state") == "running" and status(run).get("update", 0) >= update): time.sleep(0.02)
        os.kill(kernel_of(os.getpid()), signal.SIGUSR2)  # SLURM's early warning, straight to the kernel
    threading.Thread(target=stop_at, args=(20,), daemon=True).start()
    out = execute()
    st = status(run)
    assert st["state"] == "stopped" and 20 <= st["update"] < 300, st
    train_cell = next(c for c in out.cells if "fit_run(" in c.source)
    shown = json.dumps(train_cell.outputs)
    assert "widget-view" in shown or "update/s" in shown, shown[:2000]  # a progress bar in the cell
    assert "stopped" in shown and "RunStopped" not in shown  # interactively the notebook goes on
    execute()
    st2 = status(run)
    assert st2["state"] == "completed" and st2["update"] == 300 and st2["attempt"] == 2
    assert f"resumed from update {st['update']}" in (run/"train.log").read_text()
    assert stats(run)["update"].is_monotonic_increasing

@pytest.mark.slurm
def test_slurm_preemption_of_a_notebook_job_requeues_and_completes(slurm, tmp_path):
    "mlhpc submit NOTEBOOK on the real cluster; SIGTERM to the batch shell (preemption) reaches the kernel through mlhpc run; the job requeues and completes."
    run, prof = tmp_path/"run", tmp_path/"cluster.yaml"
    prof.write_text("")
    p = mlhpc("submit", NB, "--run-dir", run, "--time", "00:05:00", "--profile", prof, "-p", "total_updates", "1500", "-p", "updates_per_epoch", "50", env=slurm.env, check=True)
    job = re.search(r"submitted job (\d+)", p.stdout).group(1)
    slurm.wait_state(job, "RUNNING", timeout=60)
    t0 = time.time()
    while not (status(run).get("state") == "running" and status(run).get("update", 0) >= 50):
        assert time.time() - t0 < 180, f"no training progress: {status(run)}"
        time.sleep(0.05)
    slurm.run(["scancel", "--full", "--signal=TERM", job])
    assert slurm.wait_state(job, "COMPLETED", timeout=600) == "COMPLETED"
    restarts = int(re.search(r"\bRestarts=(\d+)", slurm.run(["scontrol", "-o", "show", "job", job]).stdout).group(1))
    st = status(run)
    assert restarts == 1 and st["state"] == "completed" and st["attempt"] == 2 and st["job_id"] == job, (restarts, st)
    assert "RunStopped" in (run/"output.1.ipynb").read_text() and (run/"output.ipynb").exists()
    assert "resumed from update" in (run/"train.log").read_text()
    assert "completed" in mlhpc("status", run, env=slurm.env, check=True).stdout

# ---------------------------------------------------------------- several processes

TWO = ["-p", "total_updates", "400", "-p", "updates_per_epoch", "40", "-p", "learning_rate", "1e-3"]
ATOL, RTOL = 1e-5, 1e-4  # 2 ranks x 32 against 1 process x 64: tests/test_distributed.py measures the float32 noise and explains

def inferred(run_dir): return yaml.safe_load((Path(run_dir)/"config.yaml").read_text())["inferred"]

def one_set_of_files(run_dir, total=400, every=40):
    "Rank 0 alone wrote the run directory: one output notebook, stats with each update once, one checkpoint set, no rank files."
    names = {p.name for p in Path(run_dir).iterdir()}
    assert names <= {"output.ipynb", "params.yaml", "config.yaml", "status.json", "stats.csv", "train.log", "run.lock", "checkpoints", "job.sbatch", "curves.png"} | {n for n in names if n.startswith("slurm-")}, names
    df = stats(run_dir)
    assert df.dropna(subset=["loss"])["update"].tolist() == list(range(1, total + 1))
    assert df.dropna(subset=["val_loss"])["update"].tolist() == list(range(every, total + 1, every))
    assert {p.name for p in (Path(run_dir)/"checkpoints").iterdir()} <= {"latest.pt", "best.pt"}
    assert inferred(run_dir)["world_size"] == 2 and inferred(run_dir)["global_batch_size"] == 64
    assert (Path(run_dir)/"train.log").read_text().count("notebook job:") == 1

@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    "A 2-process notebook job on this machine: `mlhpc run --nproc 2`, batch 32 per rank (64 per update, as one process at 64)."
    d = tmp_path_factory.mktemp("pair")/"run"
    p = mlhpc("run", NB, "--run-dir", d, "--nproc", "2", *TWO, "-p", "batch_size", "32")
    assert p.returncode == 0, p.stdout + p.stderr
    return d, p.stdout

def test_two_processes_train_one_model_into_one_run_directory(pair, tmp_path):
    d, out = pair
    single = tmp_path/"single"
    mlhpc("run", NB, "--run-dir", single, *TWO, "-p", "batch_size", "64", check=True)
    assert out.count("completed at update 400/400") == 1, out  # printed by rank 0 only
    assert status(d)["state"] == "completed" and status(d)["update"] == 400
    one_set_of_files(d)
    w, ref = weights(d), weights(single)
    bad = [k for k in ref if not torch.allclose(w[k], ref[k], atol=ATOL, rtol=RTOL)]
    assert not bad, f"the 2-process notebook job differs from one process beyond atol={ATOL}, rtol={RTOL} in {bad}"
    assert abs(status(d)["metrics"]["val_loss"] - status(single)["metrics"]["val_loss"]) <= RTOL * status(single)["metrics"]["val_loss"]

def test_two_processes_stop_together_on_sigterm_and_resume_bit_identical(pair, tmp_path):
    """SIGTERM to `mlhpc run --nproc 2` reaches both kernels; both ranks stop at the same update; a rerun completes to the same weights.

    The signal is sent when status.json shows update 45 or later with a checkpoint, which it records only at evaluations and saves
    (here every 40 updates): on a loaded machine the training may be near its end, or past it, when the signal lands. Both ends are
    correct: ranks agree on a stop at every update, including the last (stopped at 400/400, the rerun only marks it completed), and
    a signal after training is ignored by the kernels and the runners (completed, exit 0). What must never happen is a failure, or
    an exit status that disagrees with status.json (one rank stopping while the other completes)."""
    d = tmp_path/"r"
    code, st = stop_with_sigterm(d, 45, "--nproc", "2", *TWO, "-p", "batch_size", "32"), status(d)
    assert (code, st["state"]) in {(75, "stopped"), (0, "completed")}, (code, st, Path(f"{d}.out").read_text()[-3000:])
    stopped = code == 75
    print(f"SIGTERM at update >= 45: {st['state']} at update {st['update']}/400")
    if stopped: assert st["reason"] == "signal SIGTERM" and 45 <= st["update"] <= 400, st
    else: assert st["update"] == 400 and st["reason"] is None, st
    p2 = mlhpc("run", NB, "--run-dir", d, "--nproc", "2", *TWO, "-p", "batch_size", "32")
    assert p2.returncode == 0, p2.stdout + p2.stderr
    assert same_weights(weights(d), weights(pair[0])) and stats(d).equals(stats(pair[0]))
    assert (d/"output.1.ipynb").exists() == stopped and status(d)["attempt"] == (2 if stopped else 1)

def test_a_stop_signal_after_training_does_not_kill_the_job_kernel(tmp_path):
    "SIGTERM in the moment after training ended (the last callback's after_fit) is kept by the job's flag: the kernel lives on, the run stays completed."
    script = tmp_path/"late.py"
    script.write_text(
        "import os, signal, torch, torch.nn as nn, torch.nn.functional as F\n"
        "from ml_hpc.callback.core import Callback\n"
        "from ml_hpc.config import DataConfig\n"
        "from ml_hpc.data import get_data\n"
        "import ml_hpc.notebook as nb\n"
        "nb.job_setup()\n"
        "class Late(Callback):\n"
        "    order = 99\n"
        "    def after_fit(self): os.kill(os.getpid(), signal.SIGTERM)\n"
        "tr, va, _ = get_data(DataConfig())\n"
        "model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))\n"
        "t = nb.fit_run(model, tr, va, F.cross_entropy, cbs=[Late()], total_updates=20, updates_per_epoch=10)\n"
        "print('alive', t.state)\n")
    p = subprocess.run([MLHPC[0], str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "MLHPC_RUN_DIR": str(tmp_path/"r"), "MLHPC_BATCH": "1"})
    assert p.returncode == 0 and "alive completed" in p.stdout, (p.returncode, p.stdout + p.stderr)
    assert status(tmp_path/"r")["state"] == "completed"

def test_nproc_inside_a_launcher_is_refused(tmp_path):
    p = mlhpc("run", NB, "--run-dir", tmp_path/"r", "--nproc", "2", env={"RANK": "0", "WORLD_SIZE": "2"})
    one_line_error(p, "--nproc 2 inside a launcher that already started 2 processes", "drop --nproc")

@pytest.mark.slurm
def test_slurm_two_process_notebook_job_is_one_run(slurm, pair, tmp_path):
    "srun starts `mlhpc run` twice (SLURM_PROCID 0 and 1): the job completes with one run directory, bit-identical to --nproc 2 (both OMP_NUM_THREADS=1)."
    run, prof = tmp_path/"run", tmp_path/"cluster.yaml"
    prof.write_text("")
    env = {k: v for k, v in slurm.env.items() if k != "OMP_NUM_THREADS"}
    p = mlhpc("submit", NB, "--run-dir", run, "--time", "00:05:00", "--ntasks-per-node", "2", "--profile", prof, *TWO, "-p", "batch_size", "32", env=env, check=True)
    job = re.search(r"submitted job (\d+)", p.stdout).group(1)
    assert "srun --kill-on-bad-exit=1 --nodes=1 --ntasks=2" in (run/"job.sbatch").read_text()
    state = slurm.wait_state(job, "FINISHED", timeout=300)
    out = (run/f"slurm-{job}.out").read_text()
    assert state == "COMPLETED", out[-3000:]
    assert out.count("completed at update 400/400") == 1 and "mlhpc: run completed (exit 0)" in out, out[-3000:]
    assert status(run)["state"] == "completed" and status(run)["job_id"] == job
    one_set_of_files(run)
    assert same_weights(weights(run), weights(pair[0])) and stats(run).equals(stats(pair[0]))

# ---------------------------------------------------------------- SLURM time limit

@pytest.mark.slurm
def test_slurm_time_limit_requeues_a_notebook_job_to_the_same_weights(time_limit_jobs):
    "Default margins, --time 00:01:00, training longer than that: the notebook job stops in time, requeues itself and completes bit-identical to `mlhpc run`."
    j = time_limit_jobs["notebook"]
    state, n = j.wait()
    run, job, st = j.run, j.job, status(j.run)
    out = (run/f"slurm-{job}.out").read_text()
    assert state == "COMPLETED" and n >= 1, (state, n, out[-3000:])
    assert st["state"] == "completed" and st["attempt"] == n + 1 and st["job_id"] == job, st
    assert same_weights(weights(run), weights(j.reference())), "the requeued notebook job differs from the uninterrupted mlhpc run"
    assert stats(run).equals(stats(j.reference()))
    stops = [int(u) for u in re.findall(r"stopped at update (\d+) \(time limit", (run/"train.log").read_text())]
    assert len(stops) == n and stops == sorted(set(stops)) and stops[0] > 0, stops  # every attempt made progress
    assert out.count("requeueing job") == n and sorted(p.name for p in run.glob("output.*.ipynb")) == [f"output.{i}.ipynb" for i in range(1, n + 1)]
    assert all("RunStopped" in (run/f"output.{i}.ipynb").read_text() for i in range(1, n + 1))
    print(f"notebook job, --time 00:01:00 with default margins: {n} requeues, stopped at {stops} of {st['total_updates']}, {j.ended - j.submitted:.0f} s from submit to completed")

def test_the_runner_does_not_import_torch(tmp_path):
    "`mlhpc run` only starts the kernel: torch is imported there, not in the runner (start-up time and memory of every job)."
    code = ("import sys; from ml_hpc.cli import main\n"
            "try: main()\nexcept SystemExit as e: print('exit', e.code, 'torch' in sys.modules)")
    p = subprocess.run([MLHPC[0], "-c", code, "run", str(NB), "--run-dir", str(tmp_path/"r"), "-p", "total_updates", "20"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "completed at update 20/20" in p.stdout and p.stdout.strip().endswith("exit 0 False"), p.stdout + p.stderr

"""DDP on this CPU machine (gloo, 2 processes): the same training as one process, through `torchrun` and through `srun` on the
real loopback SLURM cluster; a failing rank ends every rank; a stop signal is agreed, saved and resumed exactly.

Everything runs the real program in real processes: `torchrun --no-python .venv/bin/mlhpc train ...` (there is no
`ml_hpc.__main__`, and `torchrun -m ml_hpc.cli` would exit 0 without training because cli.py has no `__main__` guard), and
`mlhpc submit` on the `slurm` fixture. Where a test needs each rank's own exit status it runs `WORKER` instead: the same
`ml_hpc.cli.main` in the same process, which also writes the status it exits with to a file (torchrun does not report it).

The comparison with one process: 2 ranks x batch 32 see the same 64 samples per update as 1 process x batch 64
(ShardedBatchSampler gives rank r perm[r::2]), DDP averages the two gradients, and the logged loss and validation metrics are
all-reduced, so the numbers agree up to float32 rounding: the batch mean is summed in another order, gloo adds the two halves,
and torchrun's OMP_NUM_THREADS=1 changes how matmuls split their sums. Measured here after 120 AdamW updates: at most
1.2e-7 between weights (of size ~0.3), 5e-7 between logged losses. A real mistake is far larger: one process at batch 32
instead of 64 ends 0.13 away, and a single Adam step moves a weight by about the learning rate (3e-3). So weights are
compared with `torch.allclose(atol=1e-5, rtol=1e-4)` (~150x the noise, ~100x below one step) and losses with rtol=1e-4.
The two 2-process runs (torchrun and srun, both with OMP_NUM_THREADS=1) are bit-identical to each other; with different
thread counts they are not. The generated script exports OMP_NUM_THREADS (the task's CPUs, here 1) for every srun task;
without it each task would use every core (2 tasks x 2 threads on 2 cores trained 6-15x slower here than with 1 thread).

The generated srun line needs no --overcommit: the job asks for --ntasks-per-node=2 on a node with CPUs=2 and the step fits
(--overcommit only matters for more tasks than CPUs)."""
import os, re, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pandas as pd
import pytest, torch, yaml
from pandas.testing import assert_frame_equal
from helpers import ROOT, mlhpc, weights, same_weights, stats, status
from slurm_cluster import alive, proc_environ, terminate

TORCHRUN, MLHPC_EXE = Path(sys.executable).with_name("torchrun"), Path(sys.executable).with_name("mlhpc")
TOTAL, EVERY, BATCH = 120, 40, 32
ATOL, RTOL = 1e-5, 1e-4
MARK, TOKEN = "MLHPC_TEST_DISTRIBUTED", f"{os.getpid()}-{time.time_ns()}"
TWO = {"OMP_NUM_THREADS": "1"}  # what torchrun sets anyway; the generated batch script sets it for srun tasks itself

WORKER = """\
import os, sys
from pathlib import Path
from ml_hpc.cli import main
try: main()
except SystemExit as e:
    Path(os.environ["MLHPC_TEST_EXITS"], "rank" + os.environ["RANK"]).write_text(str(e.code))
    raise
"""

FLAKY = """\
import os, time
from pathlib import Path
from torch.utils.data import Dataset
from ml_hpc.config import DataConfig
from ml_hpc.data import digits_data

def rank(): return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))

class Flaky(Dataset):
    "The digits training set; on one rank, reading fails after `fail_after` items (a bad file, a lost mount)."
    def __init__(self, ds, fail_after): self.ds, self.fail_after, self.n = ds, fail_after, 0
    def __len__(self): return len(self.ds)
    def __getitem__(self, i):
        self.n += 1
        if self.fail_after is not None and self.n > self.fail_after:
            Path(os.environ["FLAKY_MARK"]).write_text(repr(time.time()))
            raise OSError(f"flaky: rank {rank()} cannot read training item {i}")
        return self.ds[i]

def make(val_fraction:float=0.2):
    tr, va, info = digits_data(DataConfig(val_fraction=val_fraction))
    return Flaky(tr, int(os.environ["FLAKY_AFTER"]) if rank() == int(os.environ["FLAKY_RANK"]) else None), va, info
"""

# ---------------------------------------------------------------- processes

def ours()->list[int]:
    "Processes started by this test module (they carry MARK in their environment), torchrun and SLURM tasks alike."
    me = os.getpid()
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != me and alive(int(p))
            and proc_environ(int(p)).get(MARK) == TOKEN]

def wait_gone(timeout=15)->list[int]:
    "Wait until no process of ours is left; return those still there."
    end = time.monotonic() + timeout
    while (left := ours()) and time.monotonic() < end: time.sleep(0.1)
    return left

@pytest.fixture(autouse=True)
def reap():
    "Whatever a test leaves running is ended after it."
    yield
    terminate(ours(), grace=5)

def env_of(**kw)->dict:
    return {**os.environ, MARK: TOKEN, **{k: str(v) for k, v in kw.items()}}

def torchrun(entry:list, config, run_dir, out, env:dict, sets=()):
    "Start `torchrun --standalone --nproc_per_node=2 ENTRY train CONFIG --run-dir RUN_DIR`, output to `out`."
    argv = [TORCHRUN, "--standalone", "--nproc_per_node=2", *entry, "train", config, "--run-dir", run_dir]
    argv += [a for s in sets for a in ("--set", s)]
    with open(out, "a") as f:
        return subprocess.Popen([str(a) for a in argv], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)

def finish(p, out, timeout=120)->int:
    "Wait for a started launcher; its exit status."
    try: return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running after {timeout} s\n{Path(out).read_text()[-3000:]}") from None

def rank_exits(d:Path)->dict:
    "{rank: exit status} written by WORKER."
    return {int(f.name[4:]): int(f.read_text()) for f in Path(d).glob("rank*")}

def rank_pid(launch:str, rank:int)->int|None:
    "PID of one worker of one torchrun launch."
    return next((p for p in ours() if proc_environ(p).get("LAUNCH") == launch and proc_environ(p).get("RANK") == str(rank)), None)

def wait_for(cond, p, what, timeout=60):
    "Poll `cond()` until true; fail if the process `p` ends first or `timeout` passes."
    end = time.monotonic() + timeout
    while not (v := cond()):
        assert p.poll() is None, f"the launcher ended (exit {p.returncode}) before {what}"
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.002)
    return v

# ---------------------------------------------------------------- run directories

def inferred(run_dir)->dict: return yaml.safe_load((Path(run_dir)/"config.yaml").read_text())["inferred"]
def ckpt_update(run_dir)->int: return torch.load(Path(run_dir)/"checkpoints/latest.pt", weights_only=True)["update"]

def last_update(run_dir)->int:
    "The update of the last complete row of stats.csv (0 if none)."
    try: lines = (Path(run_dir)/"stats.csv").read_text().split("\n")[1:-1]
    except FileNotFoundError: return 0
    return int(float(lines[-1].split(",", 1)[0])) if lines else 0

def written_once(run_dir, total=TOTAL):
    "stats.csv has each update once and each evaluation once: one writer (rank 0), no duplicate rows."
    df = pd.read_csv(Path(run_dir)/"stats.csv")
    train, val = df[df["loss"].notna()], df[df["val_loss"].notna()]
    assert train["update"].tolist() == list(range(1, total + 1)), train["update"].tolist()
    assert val["update"].tolist() == list(range(EVERY, total + 1, EVERY)), val["update"].tolist()
    assert len(df) == len(train) + len(val)

def max_diff(a:dict, b:dict)->float: return max((a[k] - b[k]).abs().max().item() for k in a)

def assert_matches_single(run_dir, single_dir):
    "Weights and logged numbers of a 2-process run agree with the 1-process run to the tolerance in the module docstring."
    w, ref = weights(run_dir), weights(single_dir)
    assert w.keys() == ref.keys()
    bad = [k for k in ref if not torch.allclose(w[k], ref[k], atol=ATOL, rtol=RTOL)]
    assert not bad, f"weights differ beyond atol={ATOL}, rtol={RTOL} in {bad}: max |diff| {max_diff(w, ref):.3g}"
    a, b = stats(run_dir), stats(single_dir)
    assert a["update"].tolist() == b["update"].tolist()
    for col in ("loss", "val_loss", "val_accuracy"):
        x, y = a[col].dropna().to_numpy(), b[col].dropna().to_numpy()
        assert len(x) == len(y) and np.allclose(x, y, rtol=RTOL, atol=1e-6), (col, np.abs(x - y).max())
    fin = status(run_dir)["metrics"]["val_loss"], status(single_dir)["metrics"]["val_loss"]
    assert abs(fin[0] - fin[1]) <= RTOL * abs(fin[1]), fin
    return max_diff(w, ref)

# ---------------------------------------------------------------- shared runs

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    "The test config (the digits example, small and without dropout), the worker wrapper and the flaky data module."
    d = tmp_path_factory.mktemp("dist")
    cfg = yaml.safe_load((ROOT/"examples/digits.yaml").read_text())
    cfg["model"]["dropout"] = 0.0
    cfg.update(batch_size=BATCH, total_updates=TOTAL, updates_per_epoch=EVERY, log_every=1)
    (d/"config.yaml").write_text(yaml.safe_dump(cfg))
    (d/"worker.py").write_text(WORKER)
    (d/"mods").mkdir(); (d/"mods/flaky.py").write_text(FLAKY)
    return d

@pytest.fixture(scope="module")
def single(files):
    "The reference: one process, batch 2 x BATCH."
    run = files/"single"
    p = mlhpc("train", files/"config.yaml", "--run-dir", run, "--set", f"batch_size={2 * BATCH}", env={MARK: TOKEN}, check=True)
    assert f"completed at update {TOTAL}/{TOTAL}" in p.stdout
    return run

@pytest.fixture(scope="module")
def pair(files):
    "Two processes under torchrun, running the installed `mlhpc` program (`--no-python`), batch BATCH each."
    run, out = files/"pair", files/"pair.out"
    code = finish(torchrun(["--no-python", MLHPC_EXE], files/"config.yaml", run, out, env_of(**TWO)), out)
    assert code == 0, out.read_text()[-3000:]
    return run

# ---------------------------------------------------------------- tests

def test_torchrun_matches_single_process(single, pair, files):
    diff = assert_matches_single(pair, single)
    assert status(pair)["state"] == "completed" and ckpt_update(pair) == TOTAL
    assert inferred(pair)["world_size"] == 2 and inferred(pair)["global_batch_size"] == 2 * BATCH
    assert inferred(single)["world_size"] == 1 and inferred(single)["global_batch_size"] == 2 * BATCH
    written_once(pair)
    out = (files/"pair.out").read_text()
    assert out.count(f"completed at update {TOTAL}/{TOTAL}") == 1, out  # printed by rank 0 only
    log = (pair/"train.log").read_text()
    assert log.count("attempt 1: training from update 0") == 1 and "(2 processes)" in log, log
    assert not wait_gone(), "processes left after torchrun exited"
    print(f"torchrun 2x{BATCH} vs 1x{2 * BATCH}: max |weight diff| {diff:.3g}")

@pytest.mark.slurm
def test_srun_matches_single_process(slurm, single, pair, files, tmp_path):
    run = tmp_path/"srun"
    p = mlhpc("submit", files/"config.yaml", "--run-dir", run, "--time", "00:05:00", "--ntasks-per-node", "2",
              env={**{k: v for k, v in slurm.env.items() if k != "OMP_NUM_THREADS"}, MARK: TOKEN}, check=True)
    jid = re.search(r"submitted job (\d+)", p.stdout).group(1)
    script = (run/"job.sbatch").read_text()
    assert "srun --kill-on-bad-exit=1 --nodes=1 --ntasks=2 --ntasks-per-node=2 " in script and "--overcommit" not in script, script
    state = slurm.wait_state(jid, "FINISHED", timeout=180)
    out = (run/f"slurm-{jid}.out").read_text()
    assert state == "COMPLETED", out[-3000:]
    diff = assert_matches_single(run, single)
    assert same_weights(weights(run), weights(pair)), "srun and torchrun (both OMP_NUM_THREADS=1) should be bit-identical"
    assert_frame_equal(stats(run), stats(pair))
    st = status(run)
    assert st["state"] == "completed" and st["job_id"] == jid and ckpt_update(run) == TOTAL
    assert inferred(run)["world_size"] == 2 and inferred(run)["global_batch_size"] == 2 * BATCH
    written_once(run)
    assert out.count(f"completed at update {TOTAL}/{TOTAL}") == 1 and out.count(f"INFO completed at update {TOTAL}") == 1, out
    assert "mlhpc: run completed (exit 0)" in out and "(2 processes)" in out, out
    assert not wait_gone(), "processes left after the job completed"
    print(f"srun 2x{BATCH} vs 1x{2 * BATCH}: max |weight diff| {diff:.3g}")

FAIL_AT = 50  # rank 1 cannot read the first item of update FAIL_AT + 1 (after the checkpoint of update 40)

@pytest.mark.parametrize("launcher", ["torchrun", pytest.param("srun", marks=pytest.mark.slurm)])
def test_failing_rank_ends_every_rank(launcher, files, tmp_path, request):
    "Rank 1 raises in the middle of training: every rank exits non-zero within seconds and status.json says failed."
    run, out, mark, exits = tmp_path/"run", tmp_path/"run.out", tmp_path/"failed_at", tmp_path/"exits"
    exits.mkdir()
    flaky = dict(PYTHONPATH=files/"mods", FLAKY_RANK=1, FLAKY_AFTER=FAIL_AT * BATCH, FLAKY_MARK=mark)
    sets = ["data.name=flaky:make"]
    if launcher == "torchrun":
        p = torchrun([files/"worker.py"], files/"config.yaml", run, out, env_of(**TWO, **flaky, MLHPC_TEST_EXITS=exits), sets)
        code = finish(p, out, timeout=180)
        ended, text = time.time(), out.read_text()
        assert code != 0, text[-3000:]
        assert rank_exits(exits) == {0: 1, 1: 1}, (rank_exits(exits), text[-3000:])
    else:
        slurm = request.getfixturevalue("slurm")
        p = mlhpc("submit", files/"config.yaml", "--run-dir", run, "--time", "00:05:00", "--ntasks-per-node", "2", "--set", sets[0],
                  env={**slurm.env, **TWO, **{k: str(v) for k, v in flaky.items()}, MARK: TOKEN}, check=True)
        jid = re.search(r"submitted job (\d+)", p.stdout).group(1)
        state = slurm.wait_state(jid, "FINISHED", timeout=180)
        ended, text = time.time(), (run/f"slurm-{jid}.out").read_text()
        assert state == "FAILED", text[-3000:]
        assert "mlhpc: run failed (exit 1), not requeueing" in text, text[-3000:]
        assert re.search(r"task 0: (Exited with exit code [1-9]|Killed|Terminated)", text), text[-3000:]  # observed: exit code 1
    took = ended - float(mark.read_text())
    assert took < 60, f"{took:.1f} s from the failure to the end of every rank"
    assert "flaky: rank 1 cannot read training item" in text, text[-3000:]
    st = status(run)
    assert st["state"] == "failed" and st["update"] == FAIL_AT, st
    assert st["reason"].startswith("rank 1: OSError: flaky: rank 1 cannot read training item"), st["reason"]
    assert not wait_gone(), "processes left after the failure"
    print(f"{launcher}: failure of rank 1 to the end of every rank {took:.2f} s; status.json reason: {st['reason'][:80]!r}")

def test_stop_signal_is_agreed_saved_and_resumed_exactly(files, pair, tmp_path):
    """SIGTERM to torchrun (it forwards TERM to both workers), then SIGTERM to rank 1 alone: both times the ranks stop at the
    same update, rank 0 saves it, names the signal as the reason (the second time it had none itself) and both exit 75; the
    third start completes bit-identical to the uninterrupted `pair`."""
    run, out = tmp_path/"run", tmp_path/"run.out"
    def start(launch):
        (tmp_path/launch).mkdir()
        return torchrun([files/"worker.py"], files/"config.yaml", run, out, env_of(**TWO, MLHPC_TEST_EXITS=tmp_path/launch, LAUNCH=launch))

    p = start("a1")
    sent_at = wait_for(lambda: (u := last_update(run)) >= 20 and u, p, "update 20")
    p.send_signal(signal.SIGTERM)
    t0, code1 = time.monotonic(), finish(p, out)
    torchrun_exit_s = time.monotonic() - t0
    assert rank_exits(tmp_path/"a1") == {0: 75, 1: 75}, (rank_exits(tmp_path/"a1"), out.read_text()[-3000:])
    assert code1 != 0  # torchrun reports its own SignalException (exit 1), not the workers' 75
    st = status(run)
    n = st["update"]
    assert st["state"] == "stopped" and st["reason"] == "signal SIGTERM" and sent_at <= n < TOTAL, st
    assert ckpt_update(run) == n == last_update(run)
    log = (run/"train.log").read_text()
    assert f"stopped at update {n} (signal SIGTERM)" in log, log
    latency = float(re.search(r"stopped on signal SIGTERM: ([0-9.]+) s from the signal to a saved checkpoint", log).group(1))
    assert not wait_gone()

    p = start("a2")
    wait_for(lambda: last_update(run) >= n + 15, p, f"update {n + 15}")
    os.kill(rank_pid("a2", 1), signal.SIGTERM)
    code2 = finish(p, out)
    assert rank_exits(tmp_path/"a2") == {0: 75, 1: 75}, (rank_exits(tmp_path/"a2"), out.read_text()[-3000:])
    st = status(run)
    m = st["update"]
    assert st["state"] == "stopped" and st["reason"] == "signal SIGTERM" and n + 15 <= m < TOTAL, st
    assert ckpt_update(run) == m == last_update(run)
    assert not wait_gone()

    p = start("a3")
    assert finish(p, out) == 0, out.read_text()[-3000:]
    assert rank_exits(tmp_path/"a3") == {0: 0, 1: 0}
    assert status(run)["state"] == "completed" and status(run)["attempt"] == 3
    assert same_weights(weights(run), weights(pair)), f"max |diff| {max_diff(weights(run), weights(pair)):.3g}"
    assert_frame_equal(stats(run), stats(pair))
    written_once(run)
    log = (run/"train.log").read_text()
    assert f"resumed from update {n}" in log and f"resumed from update {m}" in log, log
    print(f"stops at updates {n} (torchrun TERM, sent at {sent_at}) and {m} (rank 1 TERM); signal to saved checkpoint "
          f"{latency:.2f} s; torchrun exited {torchrun_exit_s:.2f} s after TERM with {code1}; after rank 1's stop with {code2}")

EXIT_AFTER_TRAINING = """
import sys, time, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
rank, port, protect = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
if protect:
    from ml_hpc.env import JobEnv
    from ml_hpc.run import init_distributed
    init_distributed(JobEnv(rank=rank, world_size=2, master_port=port))
else: dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
class Trainer: "Holds its DDP model in a reference cycle, as a trainer and its callbacks do."
t = Trainer(); t.me = t
torch.manual_seed(0); t.model = DDP(torch.nn.Linear(100, 100))
for _ in range(10): t.model(torch.ones(8, 100)).sum().backward()
x = torch.ones(1000)
for _ in range(10): dist.all_reduce(x)
del t
if rank == 0: time.sleep(0.2)  # rank 0 writes the run's files last; rank 1 exits while it is still in the group
"""

def exit_codes(protect:bool)->list:
    "Exit statuses of two processes that join a gloo group (with `init_distributed`, or plainly), train a DDP model a little, and exit."
    from ml_hpc.notebook import free_port
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", EXIT_AFTER_TRAINING, str(r), str(port), "1" if protect else "0"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    return [(p.wait(timeout=120), p.stderr.read()[-300:]) for p in procs]

def test_processes_leave_the_group_at_exit_instead_of_aborting():
    """A gloo group left to the interpreter's teardown aborts a finished process now and then (SIGABRT, 'terminate called without an
    active exception'), and torchrun then fails the job. `init_distributed` leaves the group at exit, after freeing the finished
    trainer's DDP model (kept alive by a reference cycle, it holds the group too). Measured here with EXIT_AFTER_TRAINING: the plain
    group and the group only destroyed (no garbage collection first) each aborted about one process in ten (3/30, 8/80), ours
    0 of 80. First the plain group is run until it aborts (the test proves nothing if it never does), then ours ten times."""
    plain = []
    while len(plain) < 120 and not any(code for code, _ in plain):  # 60 pairs: P(no abort) < 0.1% even at half the rate seen here
        plain += exit_codes(protect=False)
    aborted = [c for c, err in plain if c]
    print(f"plain gloo group: {len(aborted)} of {len(plain)} processes aborted at exit ({aborted}); then 20 with init_distributed")
    assert aborted, f"no abort in {len(plain)} exits of the plain group: this machine does not show the defect, the test cannot tell"
    protected = [r for _ in range(10) for r in exit_codes(protect=True)]
    assert all(code == 0 for code, _ in protected), [r for r in protected if r[0]]

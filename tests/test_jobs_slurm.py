"""ml_hpc.jobs and the scripts of ml_hpc.sbatch on the real loopback SLURM cluster (the `slurm` fixture).

Nothing is faked: real sbatch/squeue/scontrol/scancel, real signals, real requeues. The "training" is a
small process that behaves like one (waits for the stop signal, exits 75 = resume me, or completes)."""
import re, sys, textwrap, time
from pathlib import Path
import pytest
from ml_hpc.jobs import submit, job_state, job_end_time, cancel
from ml_hpc.sbatch import JobSpec, ClusterProfile, sbatch_script
from ml_hpc.slurm import EXIT_RESUME

pytestmark = pytest.mark.slurm

def write_job(run_dir:Path, command:list, time_limit="00:05:00", profile=None, **kw)->Path:
    "Write RUN_DIR/job.sbatch for `command`; return its path."
    run_dir.mkdir(parents=True, exist_ok=True)
    script = run_dir/"job.sbatch"
    script.write_text(sbatch_script(JobSpec(run_dir.name, str(run_dir), command, time_limit, **kw), profile))
    return script

def job_field(slurm, job_id, key)->str:
    "One field of `scontrol -o show job`."
    return re.search(rf"\b{key}=(\S+)", slurm.run(["scontrol", "-o", "show", "job", job_id]).stdout).group(1)

def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline: raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)

# exits 75 on its first attempt and 0 on the next one, counting attempts in RUN_DIR/attempts
TWICE = ["sh", "-c", 'echo x >> "$1/attempts"; [ "$(wc -l < "$1/attempts")" -ge 2 ] || exit 75', "sh"]

def test_submit_state_end_time_cancel(slurm, tmp_path):
    script = write_job(tmp_path/"sleeper", ["sleep", "120"], "00:05:00", ClusterProfile(max_restarts=0))
    t0 = time.time()
    jid = submit(script, slurm.env)
    assert re.fullmatch(r"[0-9]+", jid)
    slurm.wait_state(jid, "RUNNING", timeout=30)
    assert job_state(jid, slurm.env) == "RUNNING"
    log = tmp_path/"sleeper"/f"slurm-{jid}.out"
    wait_for(lambda: log.exists() and "starting on" in log.read_text(), 30, "the batch script to start")
    time.sleep(1)  # let it start the child, so the TERM below is forwarded rather than arriving during set-up
    end = job_end_time(jid, slurm.env)
    assert end is not None and abs(end - (t0 + 300)) < 30, (end, t0)
    cancel(jid, "TERM", full=True, env=slurm.env)
    slurm.wait_state(jid, "FINISHED", timeout=30)
    assert job_state(jid, slurm.env) in {"FAILED", "CANCELLED"}
    assert job_end_time(jid, slurm.env) is None
    log = (tmp_path/"sleeper"/f"slurm-{jid}.out").read_text()
    assert "mlhpc: got SIGTERM, forwarding it to the training process" in log, log
    # `sleep` has no handler: the SIGTERM the script forwarded ended it, which is a stop to resume, not a failure (max_restarts=0 here)
    assert "before it could handle it: a stop, not a failure" in log, log
    assert "reached max_restarts=0 after 0 restarts: not requeueing" in log and "run failed" not in log, log

def test_unknown_job(slurm):
    assert job_state("999999", slurm.env) is None
    assert job_end_time("999999", slurm.env) is None

def test_requeue_until_completed(slurm, tmp_path):
    run = tmp_path/"requeue"
    jid = submit(write_job(run, [*TWICE, str(run)], "00:02:00"), slurm.env)
    assert slurm.wait_state(jid, "COMPLETED", timeout=90) == "COMPLETED"
    assert job_field(slurm, jid, "Restarts") == "1"
    log = (run/f"slurm-{jid}.out").read_text()
    assert f"mlhpc: run stopped (exit {EXIT_RESUME}), requeueing job {jid} (restart 1 of 100)" in log, log
    assert log.count("mlhpc: job") == 2 and log.rstrip().endswith("mlhpc: run completed (exit 0)"), log

def test_failed_run_is_not_requeued(slurm, tmp_path):
    run = tmp_path/"fails"
    jid = submit(write_job(run, ["sh", "-c", "exit 3"]), slurm.env)
    assert slurm.wait_state(jid, "FINISHED", timeout=60) == "FAILED"
    assert job_field(slurm, jid, "Restarts") == "0" and job_field(slurm, jid, "ExitCode") == "3:0"
    assert "mlhpc: run failed (exit 3), not requeueing" in (run/f"slurm-{jid}.out").read_text()

def test_restart_cap(slurm, tmp_path):
    run = tmp_path/"capped"
    jid = submit(write_job(run, ["sh", "-c", f"exit {EXIT_RESUME}"], profile=ClusterProfile(max_restarts=1)), slurm.env)
    assert slurm.wait_state(jid, "FINISHED", timeout=90) == "FAILED"
    assert "reached max_restarts=1 after 1 restarts: not requeueing" in (run/f"slurm-{jid}.out").read_text()
    assert job_field(slurm, jid, "Restarts") == "1"

def test_array_tasks_resubmit_themselves(slurm, tmp_path):
    "requeue_mode=resubmit: each array task submits a follow-up for itself that appends to the task's log."
    run = tmp_path/"array"
    (run/"t1").mkdir(parents=True); (run/"t2").mkdir()
    # arguments are quoted (a literal $SLURM_ARRAY_TASK_ID would stay literal): the command resolves the task's folder itself
    cmd = ["sh", "-c", 'd="$1/t$SLURM_ARRAY_TASK_ID"; ' + TWICE[2].replace('"$1', '"$d'), "sh", str(run)]
    jid = submit(write_job(run, cmd, array="1-2", profile=ClusterProfile(requeue_mode="resubmit")), slurm.env)
    logs = [run/f"slurm-{jid}_{i}.out" for i in (1, 2)]
    wait_for(lambda: all(l.exists() and "run completed (exit 0)" in l.read_text() for l in logs), 90, "both follow-ups")
    for i, l in enumerate(logs, 1):
        text = l.read_text()
        assert f"submitting a follow-up job after job {jid}_{i} (restart 1 of 100)" in text, text
        assert text.count("mlhpc: job") == 2, text
        assert (run/f"t{i}"/"attempts").read_text().count("x") == 2
    assert sorted(p.name for p in run.glob("slurm-*.out")) == sorted(l.name for l in logs)

STOPPER = textwrap.dedent("""\
    import os, sys, time
    from ml_hpc.slurm import StopSignal, EXIT_RESUME
    stop = StopSignal().install()
    if os.environ.get("MLHPC_ATTEMPT") != "0": print("resumed"); sys.exit(0)
    t0 = time.time()
    while not stop.requested and time.time() - t0 < 100: time.sleep(0.05)
    print(f"stopping on {stop.reason} after {time.time() - t0:.1f} s", flush=True)
    sys.exit(EXIT_RESUME if stop.requested else 1)
    """)

def test_early_warning_signal_stops_and_requeues(slurm, tmp_path):
    "--signal=B:USR2@40 with a 1-minute limit: Slurm sends USR2 to the batch shell (about 20 s in), which forwards it."
    run = tmp_path/"warned"
    jid = submit(write_job(run, [sys.executable, "-c", STOPPER], "00:01:00", ClusterProfile(signal_margin=40)), slurm.env)
    assert slurm.wait_state(jid, "COMPLETED", timeout=150) == "COMPLETED"
    log = (run/f"slurm-{jid}.out").read_text()
    assert "mlhpc: got SIGUSR2, forwarding it to the training process" in log, log
    assert "stopping on signal SIGUSR2" in log and "resumed" in log, log
    assert f"requeueing job {jid} (restart 1 of 100)" in log, log

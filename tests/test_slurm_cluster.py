"Smoke tests of the loopback SLURM cluster: the behaviours the library relies on, checked for real."
import time
import pytest
from slurm_cluster import ClusterError

pytestmark = pytest.mark.slurm

def write_script(path, body):
    "A batch script at `path` with a bash shebang."
    path.write_text("#!/bin/bash\n" + body); return path

def wait_for_text(path, text, timeout=30):
    "Wait until `text` appears in the file at `path`."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(): return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in {path} after {timeout} s: {path.read_text() if path.exists() else '(missing)'}")

def test_cluster_is_up(slurm):
    assert slurm.env["SLURM_CONF"].endswith("slurm.conf")
    assert slurm.run(["sinfo", "-h", "-o", "%P %a %l %T"]).stdout.split() == ["debug*", "up", "infinite", "idle"]

def test_wrap_job_writes_output(slurm, tmp_path):
    out = tmp_path/"out.txt"
    job = slurm.sbatch("-D", tmp_path, "-o", out, "--wrap", "echo hello from job $SLURM_JOB_ID")
    assert slurm.wait_state(job, "COMPLETED", timeout=30) == "COMPLETED"
    assert out.read_text() == f"hello from job {job}\n"

def test_failing_job_reports_failed(slurm, tmp_path):
    job = slurm.sbatch("-D", tmp_path, "-o", tmp_path/"out.txt", "--wrap", "exit 3")
    assert slurm.wait_state(job, "FINISHED", timeout=30) == "FAILED"
    with pytest.raises(ClusterError, match="ended in state FAILED"): slurm.wait_state(job, "COMPLETED", timeout=5)

REQUEUE_ONCE = """\
#SBATCH --requeue --open-mode=append
echo "start restart=${SLURM_RESTART_COUNT:-0} t=$(date +%s.%N)"
if [ "${SLURM_RESTART_COUNT:-0}" = 0 ]; then
    scontrol requeue "$SLURM_JOB_ID"
    sleep 60
fi
echo "done restart=$SLURM_RESTART_COUNT"
"""

def test_job_requeues_itself_once(slurm, tmp_path):
    out = tmp_path/"out.txt"
    t0 = time.monotonic()
    job = slurm.sbatch("-D", tmp_path, "-o", out, write_script(tmp_path/"job.sh", REQUEUE_ONCE))
    assert slurm.wait_state(job, "COMPLETED", timeout=40) == "COMPLETED"
    assert time.monotonic() - t0 < 30
    text = out.read_text()
    assert f"JOB {job} ON" in text and "DUE TO JOB REQUEUE" in text
    lines = [l for l in text.splitlines() if l.startswith(("start", "done"))]
    assert [l.split(" t=")[0] for l in lines] == ["start restart=0", "start restart=1", "done restart=1"]
    starts = [float(l.split(" t=")[1]) for l in lines if l.startswith("start")]
    print(f"requeue-restart latency: {starts[1]-starts[0]:.1f} s")
    assert 0 < starts[1] - starts[0] < 25

TRAP_TERM = """\
trap 'echo "got TERM"; exit 0' TERM
echo ready
while true; do sleep 0.2; done
"""

def test_scancel_full_signal_reaches_batch_shell(slurm, tmp_path):
    out = tmp_path/"out.txt"
    job = slurm.sbatch("-D", tmp_path, "-o", out, write_script(tmp_path/"job.sh", TRAP_TERM))
    wait_for_text(out, "ready")
    slurm.run(["scancel", "--full", "--signal=TERM", job])
    assert slurm.wait_state(job, "COMPLETED", timeout=30) == "COMPLETED"
    lines = out.read_text().splitlines()
    assert lines[0] == "ready" and lines[-1] == "got TERM", lines

def test_srun_two_tasks(slurm, tmp_path):
    r = slurm.run(["srun", "--ntasks=2", "--overcommit", "-D", tmp_path, "bash", "-c", "echo $SLURM_PROCID/$SLURM_NTASKS"], timeout=60)
    assert sorted(r.stdout.split()) == ["0/2", "1/2"]

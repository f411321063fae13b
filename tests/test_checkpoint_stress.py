"""Checkpoint files under real failure: SIGKILL during saves, a full file system, a read-only one, and exit with a save in flight.

Everything here runs for real: real processes killed with SIGKILL, real tmpfs mounts (these need root and are skipped, with
the reason, where mounting is not allowed)."""
import os, queue, random, signal, statistics, subprocess, sys, threading, time
import pytest, torch
from ml_hpc.core import MlhpcError
from ml_hpc.checkpoint import AsyncSaver, CheckpointDir, FORMAT_VERSION, load_checkpoint

NUMEL = 256 * 1024  # a checkpoint of 16 * NUMEL bytes: 4 MB
MIN_KILLS, MIN_KILLS_MID_SAVE, MAX_KILLS, BUDGET_S = 25, 12, 150, 45

def ckpt_state(u, numel=NUMEL):
    "A checkpoint whose every tensor holds its update number (negated in the optimizer), so a mix of two saves shows."
    return {"format_version": FORMAT_VERSION, "update": u,
            "model": {"a": torch.full((numel,), float(u)), "b": torch.full((numel // 4, 4), float(u), dtype=torch.float64)},
            "optimizer": {"state": {0: {"exp_avg": torch.full((numel,), -float(u))}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
            "scheduler": {}, "scaler": None, "ema": None, "callbacks": {}, "rng": {},
            "data": {"epoch": u // 10, "batch": u % 10}, "config": {"numel": numel}}

def assert_consistent(sd, what):
    "Every part of `sd` belongs to the same update."
    u = sd["update"]
    assert all(bool((t == u).all()) for t in sd["model"].values()), f"{what}: model tensors are not all {u}"
    assert bool((sd["optimizer"]["state"][0]["exp_avg"] == -u).all()), f"{what}: optimizer state is not from update {u}"
    assert sd["data"] == {"epoch": u // 10, "batch": u % 10}, f"{what}: data position is not from update {u}"
    return u

# A "zygote" imports torch once and forks one training child per request, so that each of the many kills costs
# milliseconds instead of the 1.7 s a fresh `import torch` takes here. Each child is a separate process that resumes
# from latest.pt (like a rerun of the same command), then saves one checkpoint per update, printing a line before
# and after each save, until it is killed. The zygote itself never runs a tensor operation, so forking it is safe.
ZYGOTE = r'''
import os, sys, traceback
sys.path.insert(0, sys.argv[1])
from test_checkpoint_stress import ckpt_state
from ml_hpc.checkpoint import CheckpointDir

def say(line): os.write(1, (line + "\n").encode())

def train(root):
    ck = CheckpointDir(root, keep_last=2)
    u = ck.load()["update"] + 1 if ck.exists() else 1
    while True:
        s = ckpt_state(u)
        say(f"saving {u}"); ck.save(s, best=u % 3 == 0); say(f"saved {u}")
        u += 1

while line := sys.stdin.readline():
    pid = os.fork()
    if pid == 0:
        try: train(line.strip())
        except BaseException: traceback.print_exc()
        finally: os._exit(3)
    say(f"pid {pid}")
    say(f"exit {pid} {os.waitpid(pid, 0)[1]}")
'''

def check_after_kill(root, previous):
    "latest.pt loads and is whole, the checkpoint before it is still there, nothing piles up; return latest's update."
    u = assert_consistent(load_checkpoint(root/"latest.pt"), "latest.pt")
    assert u >= previous, f"latest.pt went back from update {previous} to {u}"
    numbered = CheckpointDir(root).updates()
    assert u in numbered and (u == 1 or u - 1 in numbered), f"latest is update {u}, numbered files are {numbered}"
    assert len(numbered) <= 3, numbered
    for n in numbered: assert assert_consistent(load_checkpoint(root/f"update_{n}.pt"), f"update_{n}.pt") == n
    if (root/"best.pt").exists(): assert assert_consistent(load_checkpoint(root/"best.pt"), "best.pt") % 3 == 0
    temps = [p.name for p in root.iterdir() if p.name.startswith(".")]
    assert len(temps) <= 1, f"temporary files pile up: {temps}"
    return u

def test_sigkill_during_saves_never_loses_a_checkpoint(tmp_path):
    root, seed = tmp_path/"checkpoints", random.randrange(2**32)
    rnd = random.Random(seed); print(f"random seed {seed}")
    err = open(tmp_path/"stderr.txt", "w")
    zyg = subprocess.Popen([sys.executable, "-c", ZYGOTE, os.path.dirname(__file__)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l.strip()) for l in zyg.stdout], daemon=True).start()
    def next_line():
        try: return lines.get(timeout=30)
        except queue.Empty: raise AssertionError(f"no output for 30 s; stderr: {(tmp_path/'stderr.txt').read_text()}")
    kills = mid_save = latest = 0; durations, start = [], time.monotonic()
    try:
        while (kills < MIN_KILLS or mid_save < MIN_KILLS_MID_SAVE) and kills < MAX_KILLS and time.monotonic() - start < BUDGET_S:
            zyg.stdin.write(f"{root}\n"); zyg.stdin.flush()
            kind, pid = next_line().split(); assert kind == "pid"
            target, seen, began = rnd.randint(2 if kills == 0 else 1, 3), 0, None
            while seen < target:
                line = next_line()
                assert not line.startswith("exit"), f"child died by itself: {line}; stderr: {(tmp_path/'stderr.txt').read_text()}"
                if line.startswith("saving"): seen, began = seen + 1, time.monotonic()
                elif began: durations.append(time.monotonic() - began)
            time.sleep(rnd.uniform(0, 1.5 * statistics.median(durations or [0.01])))
            os.kill(int(pid), signal.SIGKILL)
            tail = []
            while not (line := next_line()).startswith("exit"): tail.append(line)
            assert line == f"exit {pid} {signal.SIGKILL}", line
            kills += 1; mid_save += (tail or ["saving"])[-1].startswith("saving")
            latest = check_after_kill(root, latest)
    finally:
        zyg.stdin.close(); zyg.kill(); zyg.wait(); err.close()
    print(f"{kills} kills, {mid_save} during a save, reached update {latest}, median save {statistics.median(durations)*1e3:.1f} ms")
    assert kills >= 20 and mid_save >= MIN_KILLS_MID_SAVE, (kills, mid_save)
    assert "resuming from" not in (tmp_path/"stderr.txt").read_text(), "a child had to fall back: latest.pt was unreadable"

EXIT_SCRIPT = r'''
import sys, time, torch
from ml_hpc.checkpoint import AsyncSaver, CheckpointDir, FORMAT_VERSION
ck, saver = CheckpointDir(sys.argv[1]), AsyncSaver()
def slow(s):
    time.sleep(1.0)
    if sys.argv[2] == "fail": raise OSError(28, "No space left on device")
    ck.save(s)
saver.save({"format_version": FORMAT_VERSION, "model": {"w": torch.ones(1000)}, "update": 7}, slow)
print("save returned", flush=True)
if sys.argv[2] == "exit": sys.exit(0)
'''

@pytest.mark.parametrize("how", ["end", "exit"])
def test_process_does_not_exit_with_a_save_in_flight(tmp_path, how):
    r = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, str(tmp_path), how], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "save returned\n", r
    assert load_checkpoint(tmp_path/"latest.pt")["update"] == 7

def test_background_failure_at_exit_is_reported(tmp_path):
    r = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, str(tmp_path), "fail"], capture_output=True, text=True, timeout=60)
    assert "ml_hpc: a background checkpoint save failed: [Errno 28] No space left on device" in r.stderr, r
    assert not (tmp_path/"latest.pt").exists()

@pytest.fixture
def tiny_fs(tmp_path):
    "A 6 MB tmpfs mounted for the test (needs root)."
    if os.geteuid() != 0: pytest.skip("mounting a tmpfs needs root; the notebook covers this with a failing writer")
    mnt = tmp_path/"tiny"; mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode: pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try: yield mnt
    finally: subprocess.run(["umount", "-l", str(mnt)], check=True)

def test_disk_full_keeps_the_previous_checkpoint(tiny_fs):
    ck = CheckpointDir(tiny_fs/"checkpoints", keep_last=2)
    small = NUMEL // 16  # 256 KB checkpoints; 16 * NUMEL = 4 MB ones do not fit twice
    ck.save(ckpt_state(1, small)); ck.save(ckpt_state(2, small), best=True)
    with pytest.raises(MlhpcError, match=r"update_3\.pt: No space left on device\. HINT: the disk or quota is full"):
        ck.save(ckpt_state(3, 2 * NUMEL))
    assert assert_consistent(load_checkpoint(ck.root/"latest.pt"), "latest.pt") == 2
    assert sorted(os.listdir(ck.root)) == ["best.pt", "latest.pt", "update_1.pt", "update_2.pt"]
    saver = AsyncSaver()
    saver.save(ckpt_state(3, 2 * NUMEL), ck.save)
    with pytest.raises(MlhpcError, match="No space left on device"): saver.wait()
    assert ck.load()["update"] == 2
    ck.save(ckpt_state(3, small))
    assert ck.load()["update"] == 3 and ck.updates() == [2, 3]

def test_read_only_file_system_keeps_the_previous_checkpoint(tiny_fs):
    ck = CheckpointDir(tiny_fs/"checkpoints", keep_last=2)
    ck.save(ckpt_state(1, 1024))
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    with pytest.raises(MlhpcError, match=r"could not write checkpoint .*update_2\.pt: Read-only file system\. HINT: the directory is not writable"):
        ck.save(ckpt_state(2, 1024))
    assert ck.load()["update"] == 1 and sorted(os.listdir(ck.root)) == ["latest.pt", "update_1.pt"]

"""Run figures across a hard kill: `mlhpc train examples/digits.yaml` with TensorBoard on, SIGKILLed mid-run after its first
checkpoint, then rerun with the same command. The finished run's curves.png shows the whole history (it is exactly the drawing
of the final stats.csv), every training row of stats.csv has the system columns, and the TensorBoard stream, read the way
TensorBoard reads it, has each update exactly once. Everything runs the real program on the CPU."""
import io, os, re, signal, subprocess, time
from pathlib import Path
import pandas as pd
from PIL import Image
from helpers import ROOT, MLHPC, DETERMINISTIC
from ml_hpc.callback.figures import Curves, draw_curves, read_scalars
from ml_hpc.callback.log import WALL_CLOCK_COLS

TOTAL, EVAL_EVERY, KILL_AFTER = 200, 100, 130
SETS = [f"total_updates={TOTAL}", "tensorboard=true"]

def start(run_dir, out):
    argv = MLHPC + ["train", "examples/digits.yaml", "--run-dir", str(run_dir)] + [a for s in SETS for a in ("--set", s)]
    with open(out, "a") as f: return subprocess.Popen(argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)

def last_update(run_dir)->int:
    try: lines = (Path(run_dir)/"stats.csv").read_text().split("\n")[1:-1]
    except FileNotFoundError: return 0
    return int(float(lines[-1].split(",", 1)[0])) if lines else 0

def test_killed_and_resumed_run_keeps_whole_curves_system_columns_and_one_tensorboard_stream(tmp_path):
    run, out = tmp_path/"run", tmp_path/"train.out"
    p = start(run, out)
    try:
        end = time.monotonic() + 120
        while last_update(run) < KILL_AFTER:
            assert p.poll() is None, f"mlhpc ended (exit {p.returncode}) before update {KILL_AFTER}:\n{out.read_text()[-2000:]}"
            assert time.monotonic() < end, "timed out waiting for training to progress"
            time.sleep(0.005)
    finally:
        alive = p.poll() is None
        if alive: os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert alive, "the first attempt ended by itself before the kill"
    assert last_update(run) < TOTAL
    p = start(run, out)
    assert p.wait(timeout=300) == 0, out.read_text()[-3000:]
    log = (run/"train.log").read_text()
    assert re.search(r"attempt 2: training from update (\d+) ", log).group(1) == str(EVAL_EVERY), log
    assert f"completed at update {TOTAL}" in log

    df = pd.read_csv(run/"stats.csv")
    train = df[df["loss"].notna()]
    assert train["update"].tolist() == list(range(1, TOTAL + 1))
    assert train["rss_mb"].notna().all() and (train["rss_mb"] > 10).all()
    assert train["cpu_percent"].notna().all() and (train["cpu_percent"] >= 0).all()
    assert "gpu_mem_mb" not in df.columns  # no GPU here
    assert not set(DETERMINISTIC) & set(WALL_CLOCK_COLS), "exact-resume tests must not compare wall-clock columns"

    png = (run/"curves.png").read_bytes()
    im = Image.open(io.BytesIO(png))
    assert im.size == (800, 600) and im.text == {"Software": "ml_hpc"}
    assert png == draw_curves(Curves.from_stats(run/"stats.csv", TOTAL)), "curves.png is not the drawing of the whole stats.csv"

    s = read_scalars(run/"tensorboard")
    for tag in ("loss", "lr", "rss_mb", "cpu_percent", "samples_per_s"): assert s[tag][0] == list(range(1, TOTAL + 1)), tag
    assert s["val_loss"][0] == s["val_accuracy"][0] == list(range(EVAL_EVERY, TOTAL + 1, EVAL_EVERY))
    assert s["loss"][1] == [float(v) for v in train["loss"].astype("float32")]
    assert len(list((run/"tensorboard").glob("events.out.tfevents.*"))) == 2

"""`ml_hpc.results.load_runs` on run directories written by the real trainer: a local sweep, a plain run, a notebook run,
copies of a run damaged the ways runs get damaged (stats.csv cut mid-line, binary garbage in it, no stats.csv, a broken
status.json), and a run loaded while it trains, after SIGUSR2 stopped it, and after its resumed process was killed. The loader must never write into a run."""
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import numpy as np, pandas as pd, pytest, yaml
from helpers import ROOT, MLHPC
from ml_hpc.results import load_runs, read_index

QUIET = {"OMP_NUM_THREADS": "1"}  # the machine is shared: one thread per run

def snapshot(root:Path)->dict:
    "Every file and folder under `root` with its size and modification time."
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in [root, *root.rglob("*")]}

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "A folder of real runs: a 2-experiment sweep, a plain run, a notebook run, and damaged copies of the plain run."
    tmp = tmp_path_factory.mktemp("results"); root = tmp/"runs"
    spec = {"job_details": {"name": "pair", "output_dir": str(root), "target": str(ROOT/"examples/digits.yaml")},
            "parameters": {"total_updates": 60, "updates_per_epoch": 20, "optimizer.learning_rate": [1e-3, 3e-3]}}
    (tmp/"spec.yaml").write_text(yaml.safe_dump(spec))
    commands = [["sweep", tmp/"spec.yaml"], ["train", ROOT/"examples/digits.yaml", "--run-dir", root/"plain", "--set", "total_updates=60", "--set", "updates_per_epoch=20"],
                ["run", ROOT/"examples/train_digits.ipynb", "--run-dir", root/"nb", "-p", "total_updates", "20", "-p", "updates_per_epoch", "10"]]
    ps = [subprocess.Popen(MLHPC + [str(a) for a in c], cwd=ROOT, env={**os.environ, **QUIET}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for c in commands]
    assert [p.wait(timeout=300) for p in ps] == [0, 0, 0], [p.stderr.read()[-2000:] for p in ps]  # side by side: most of their time is starting up
    for name in ("truncated", "garbage", "no_stats", "bad_status"): shutil.copytree(root/"plain", root/"damaged"/name)
    d = root/"damaged"
    text = (d/"truncated/stats.csv").read_bytes(); (d/"truncated/stats.csv").write_bytes(text[:len(text) // 2 + 7])
    lines = (d/"garbage/stats.csv").read_bytes().splitlines(keepends=True)
    (d/"garbage/stats.csv").write_bytes(b"".join(lines[:10] + [b"\x00\xff\xfe\x9c garbage \x01,\x02\n"] + lines[10:]))
    (d/"no_stats/stats.csv").unlink()
    (d/"bad_status/status.json").write_bytes(b'{"state": "compl')
    return root

@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    "The default index goes under this test's own folder, not ~/.cache."
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path/"cache"))
    return tmp_path/"cache"

def test_a_sweep_and_single_runs_load_as_one_table(runs, cache_home):
    df = load_runs(runs)
    sweep = next(p for p in runs.iterdir() if p.name.endswith("_pair"))
    exps = [f"{sweep.name}/learning_rate=0.001", f"{sweep.name}/learning_rate=0.003"]
    assert sorted(df.index) == sorted(exps + ["nb", "plain"] + [f"damaged/{n}" for n in ("bad_status", "garbage", "no_stats", "truncated")]), df.index
    assert df.loc[exps, "optimizer.learning_rate"].tolist() == [0.001, 0.003]
    assert df.loc[exps + ["plain"], "state"].tolist() == ["completed"] * 3 and df.loc[exps, "attempts"].tolist() == [1, 1]
    assert df.loc[exps, "total_updates"].tolist() == [60, 60] and df.loc[exps, "model.hidden_dim"].tolist() == [128, 128]
    for run in exps + ["plain"]:
        st, stats = json.loads((runs/run/"status.json").read_text()), pd.read_csv(runs/run/"stats.csv")
        row = df.loc[run]
        assert row.path == str(runs/run) and pd.isna(row.problem)
        assert row.final_val_accuracy == st["metrics"]["val_accuracy"] and row.final_val_loss == st["metrics"]["val_loss"]
        assert row.best_val_loss == stats.val_loss.min() and row.best_val_accuracy == stats.val_accuracy.max()
        assert row.best_val_loss <= row.final_val_loss and row.best_val_accuracy >= row.final_val_accuracy
        pd.testing.assert_frame_equal(row.stats, stats, check_dtype=False)
    assert len(df.loc[exps[0], "stats"]) == 60 + 3  # one row per update and per evaluation

def test_a_notebook_run_has_its_parameters(runs, cache_home):
    row = load_runs(runs).loc["nb"]
    params = yaml.safe_load((runs/"nb/params.yaml").read_text())
    assert params["total_updates"] == 20 and row.total_updates == 20 and row.updates_per_epoch == 10
    assert row.hidden_dim == params["hidden_dim"] and row.learning_rate == params["learning_rate"] == 3e-3
    assert row.state == "completed" and row["update"] == 20 and pd.isna(row.problem)
    assert list(row.stats["update"].dropna().astype(int)[-2:]) == [20, 20] and row.best_val_accuracy == row.stats.val_accuracy.max()

def test_damaged_runs_are_rows_with_their_state_and_what_went_wrong(runs, cache_home):
    df = load_runs(runs)
    whole = pd.read_csv(runs/"plain/stats.csv")
    t = df.loc["damaged/truncated"]
    kept = (runs/"damaged/truncated/stats.csv").read_bytes().count(b"\n") - 1
    assert 0 < kept < len(whole) and pd.isna(t.problem) and t.state == "completed"
    pd.testing.assert_frame_equal(t.stats, whole.iloc[:kept], check_dtype=False)
    g = df.loc["damaged/garbage"]
    assert g.problem == "stats.csv: 1 unreadable line left out" and g.state == "completed"
    pd.testing.assert_frame_equal(g.stats, whole, check_dtype=False)
    n = df.loc["damaged/no_stats"]
    assert n.state == "completed" and len(n.stats) == 0 and np.isnan(n.best_val_loss) and n.final_val_loss == df.loc["plain", "final_val_loss"]
    b = df.loc["damaged/bad_status"]
    assert pd.isna(b.state) and "status.json is not a run status (not JSON)" in b.problem and b["optimizer.learning_rate"] == 0.003
    assert len(b.stats) == len(whole)

def test_a_file_that_changes_is_read_again(runs, cache_home, tmp_path):
    root = tmp_path/"copy"; shutil.copytree(runs/"plain", root/"plain")
    before = load_runs(root).loc["plain"]
    with open(root/"plain/stats.csv", "ab") as f: f.write(b"61,0.01,0.0,1.0,1.0,,\n61,,,,,0.001,0.999\n")
    after = load_runs(root).loc["plain"]
    assert len(after.stats) == len(before.stats) + 2 and after.best_val_loss == 0.001 and after.best_val_accuracy == 0.999
    assert len(list(cache_home.rglob("*.pkl"))) == 1

def test_loading_writes_nothing_into_the_runs(runs, cache_home):
    before = snapshot(runs)
    time.sleep(0.05)
    load_runs(runs); load_runs(runs); load_runs(runs, cache=False)
    assert snapshot(runs) == before
    assert len(list(cache_home.rglob("*.pkl"))) == 1  # the index is in the cache folder, outside the runs

def test_a_run_in_progress_is_running_then_stopped_then_failed_when_killed(tmp_path, cache_home):
    run = tmp_path/"runs"/"live"
    args = MLHPC + ["train", str(ROOT/"examples/digits.yaml"), "--run-dir", str(run), "--set", "total_updates=200000", "--set", "updates_per_epoch=4000"]
    p = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **QUIET}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ((run/"stats.csv").exists() and (run/"stats.csv").stat().st_size > 20_000):
            assert time.monotonic() < deadline and p.poll() is None, "the run made no progress"
            time.sleep(0.05)
        row = load_runs(tmp_path/"runs").loc["live"]
        assert row.state == "running" and pd.isna(row.problem) and len(row.stats) > 100, row
        assert (row.stats["update"].diff().dropna() >= 0).all()  # whole rows only, though the run is appending
        p.send_signal(signal.SIGUSR2)
        assert p.wait(timeout=60) == 75, p.stderr.read()
        stopped = load_runs(tmp_path/"runs").loc["live"]
        assert stopped.state == "stopped" and "USR2" in stopped.reason and stopped.attempts == 1
        assert len(stopped.stats) > len(row.stats) and stopped.stats["update"].max() == stopped["update"]
        size = (run/"stats.csv").stat().st_size
        p = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **QUIET}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while json.loads((run/"status.json").read_text()).get("attempt") != 2 or (run/"stats.csv").stat().st_size < size + 5_000:
            assert time.monotonic() < deadline and p.poll() is None, "the run did not resume"
            time.sleep(0.05)
        p.kill(); p.wait()
        killed = load_runs(tmp_path/"runs").loc["live"]
        assert json.loads((run/"status.json").read_text())["state"] == "running"  # its process died without a word
        assert killed.state == "failed" and "is gone" in killed.reason and killed.attempts == 2, killed
    finally:
        if p.poll() is None: p.kill(); p.wait()

def test_loaders_sharing_an_index_never_see_half_of_one(runs, tmp_path):
    ix = tmp_path/"index.pkl"
    code = f"from ml_hpc.results import load_runs\nfor _ in range(3): assert len(load_runs({str(runs)!r}, cache={str(ix)!r})) == 8"
    ps = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    assert [p.wait(timeout=120) for p in ps] == [0, 0, 0], [p.stderr.read() for p in ps]
    assert len(read_index(ix)) == 8 and [p.name for p in tmp_path.iterdir()] == ["index.pkl"]  # no temporary file left behind

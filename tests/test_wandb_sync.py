"""`mlhpc sync-wandb ROOT` on real offline W&B runs made by the trainer: a finished run, a requeued run, a running run.

What cannot run here: the upload itself. There is no W&B server on this machine and no network, so no test can see
`wandb sync` succeed. W&B's own proof of a successful upload is the `run-<id>.wandb.synced` file that wandb-core writes
next to the piece (`RunSyncer.markSynced`); after the failed upload attempts, the test writes that file itself where
wandb-core would, to check what the next call does. Everything before the upload runs for real: discovery under a sweep,
choice of the newest piece, skipping the running run, dry-run output, the fast one-line errors (no API key, server
unreachable, a server that accepts connections but never answers, bounded by --timeout), and that the newest piece of a
requeued run holds the whole history (so uploading it alone gives one complete W&B run)."""
import os, signal, socket, subprocess, time
from pathlib import Path
import pandas as pd
from helpers import ROOT, MLHPC, mlhpc, one_line_error
from test_wandb import history

OFFLINE = ["--set", "wandb.enabled=true", "--set", "wandb.mode=offline", "--set", "log_every=10", "--set", "lr_scheduler={}"]

def train(run, total, *more):
    return MLHPC + ["train", str(ROOT/"examples/digits.yaml"), "--run-dir", str(run), "--set", f"total_updates={total}",
                    "--set", "updates_per_epoch=100", *OFFLINE, *more]

def lines_of(run): return len((run/"stats.csv").read_text().splitlines()) if (run/"stats.csv").exists() else 0

def wait_for(cond, p, what, timeout=180):
    deadline = time.monotonic() + timeout
    while not cond():
        assert p.poll() is None, f"{what}: the training ended ({p.returncode}): {p.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"{what}: no progress within {timeout} s"
        time.sleep(0.05)

def sync(root, *args, env=None, timeout=120):
    "mlhpc sync-wandb in a folder without .env, with no W&B key unless `env` gives one."
    base = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return subprocess.run(MLHPC + ["sync-wandb", str(root), *args], cwd=root.parent, env={**base, "HOME": str(root.parent/"home"), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)

def all_files(d): return sorted(str(f.relative_to(d)) for f in Path(d).rglob("*"))

def test_sync_wandb_picks_the_newest_piece_of_finished_runs_skips_running_ones_and_fails_fast_offline(tmp_path):
    root = tmp_path/"sweep"; (tmp_path/"home").mkdir()
    done, requeued, live = root/"lr_0.1", root/"lr_0.01", root/"nested"/"lr_0.001"
    subprocess.run(train(done, 60), cwd=tmp_path, capture_output=True, timeout=300, check=True)
    p = subprocess.Popen(train(requeued, 2000), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: lines_of(requeued) > 300, p, "requeued run")
    p.send_signal(signal.SIGUSR2); assert p.wait(timeout=120) == 75, p.stderr.read()
    running = subprocess.Popen(train(live, 10**6), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: lines_of(live) > 2 and list((live/"wandb").glob("offline-run-*/*.wandb")), running, "running run")
        before = all_files(root/"lr_0.1") + all_files(requeued)

        dry = sync(root, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        out = dry.stdout.splitlines()
        assert out[-1] == "3 runs with offline W&B data: 2 to sync, 0 up to date, 1 in progress (skipped)", out
        assert any(l.startswith("would sync  lr_0.1  (piece 1 of 1, offline-run-") for l in out), out
        assert any(l.startswith("would sync  lr_0.01  (piece 1 of 1, offline-run-") for l in out), out
        assert "skipped     nested/lr_0.001  (running: synced when it ends)" in out, out

        t = time.monotonic(); no_key = sync(root)
        one_line_error(no_key, "no W&B API key", "WANDB_API_KEY")
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0)); port = closed.getsockname()[1]
        unreachable = sync(root, env={"WANDB_API_KEY": "k" * 40, "WANDB_BASE_URL": f"http://127.0.0.1:{port}"})
        one_line_error(unreachable, f"cannot reach the W&B server http://127.0.0.1:{port}")
        assert time.monotonic() - t < 60, "the offline errors must come fast"
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0)); silent.listen(16)
            t = time.monotonic()
            hung = sync(root, "--timeout", "8", env={"WANDB_API_KEY": "k" * 40, "WANDB_BASE_URL": f"http://127.0.0.1:{silent.getsockname()[1]}"})
            one_line_error(hung, "wandb sync did not finish within 8 s")
            assert time.monotonic() - t < 60
        assert "syncing    lr_0.1  to http://127.0.0.1:" in hung.stdout, hung.stdout
        assert not list(root.rglob("*.synced")) and not (tmp_path/"wandb").exists() and not (root/"wandb").exists()
        assert all_files(root/"lr_0.1") + all_files(requeued) == before, "a failed sync changed a run directory"

        for piece in [*done.glob("wandb/offline-run-*/*.wandb"), *requeued.glob("wandb/offline-run-*/*.wandb")]:
            piece.with_suffix(".wandb.synced").touch()  # what wandb-core writes after an upload, which cannot happen here
        again = sync(root, "--dry-run")
        assert again.stdout.splitlines()[-1] == "3 runs with offline W&B data: 0 to sync, 2 up to date, 1 in progress (skipped)", again.stdout
        nothing = sync(root)
        assert nothing.returncode == 0 and "0 synced, 2 up to date" in nothing.stdout, (nothing.stdout, nothing.stderr)
    finally:
        running.kill(); running.wait()
    assert not list(live.rglob("*.synced")), "the running run's directory was written to"

    subprocess.run(train(requeued, 2000), cwd=tmp_path, capture_output=True, timeout=600, check=True)
    pieces = sorted(requeued.glob("wandb/offline-run-*/*.wandb"))
    assert len(pieces) == 2
    after = sync(root, "--dry-run").stdout.splitlines()
    assert f"would sync  lr_0.01  (piece 2 of 2, {pieces[-1].parent.name})" in after, after
    assert "up to date  lr_0.1  (piece 1 of 1, " in "\n".join(after), after
    assert after[-1].startswith("3 runs with offline W&B data: 2 to sync, 1 up to date"), after  # the killed run counts as failed: its piece is synced too
    h, df = history(pieces[-1]), pd.read_csv(requeued/"stats.csv")
    assert sorted(k for k in h if "loss" in h[k]) == df.dropna(subset=["loss"])["update"].tolist() == list(range(1, 2001)), \
        "the newest piece must hold the whole history for a sync of it alone to be complete"

"""`mlhpc run` of examples/train_digits.ipynb against `mlhpc train` of the equivalent config, same updates.

The notebook's DigitsNet is the config's MLP (two hidden layers of `hidden_dim`, AdamW at a constant learning rate),
and both train with the same seed: they compute the same thing (the script checks the final val_loss is equal).
Fixed overhead: the difference in wall time for a tiny run (kernel start-up, papermill, the notebook's imports).
Ratio: wall time of the notebook job over the config run for a run of about a minute (`--updates`).
Runs alternate between the two, and which one starts a pair alternates too; each pair and the median of `--pairs` pairs are printed. Wall time is what users wait for; CPU time
(user + system of the whole process tree, the kernel included) is what to trust on a loaded machine; training time (stats.csv's
`time`, start-up and exit left out) shows whether an update costs more in the notebook's kernel.
`--threads 1` sets OMP_NUM_THREADS for both programs: on this 2-core virtual machine, a 2-thread run's speed flips between two
levels (about 70,000 and 46,000 samples/s) in phases of seconds, whichever program runs, so 2-thread pairs differ by up to 30% either
way; with one thread, nearly as fast for this small model, pairs fell between 0.99 and 1.06.
Usage: python bench/bench_notebook.py [--pairs 3] [--updates 22000 (half a minute to a minute here; 0: fixed overhead only)] [--hidden 256] [--threads N]"""
import argparse, csv, json, os, resource, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MLHPC = [sys.executable, "-c", "from ml_hpc.cli import main; main()"]

def cpu(): r = resource.getrusage(resource.RUSAGE_CHILDREN); return r.ru_utime + r.ru_stime

def wall(cmd):
    "(wall, CPU) seconds of `cmd` and every process it waited for."
    t0, c0 = time.perf_counter(), cpu()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode: raise SystemExit(f"{cmd} exited {p.returncode}\n{p.stderr[-2000:]}")
    return time.perf_counter() - t0, cpu() - c0

def pair(updates, hidden, tmp, notebook_first=False):
    "(train, run) (wall, CPU, training) seconds of one pair; `notebook_first` swaps which of the two starts, so an order effect cancels out over pairs."
    every = max(updates // 10, 1)
    cfg = Path(tmp)/"digits.yaml"
    cfg.write_text(f"total_updates: {updates}\nupdates_per_epoch: {every}\nbatch_size: 64\nseed: 0\nmodel: {{hidden_dim: {hidden}, num_layers: 2}}\noptimizer: {{name: AdamW, learning_rate: 1e-3}}\n")
    a, b = Path(tempfile.mkdtemp(dir=tmp)), Path(tempfile.mkdtemp(dir=tmp))
    train = lambda: wall(MLHPC + ["train", str(cfg), "--run-dir", str(a/"run")])
    run = lambda: wall(MLHPC + ["run", "examples/train_digits.ipynb", "--run-dir", str(b/"run"), "-p", "total_updates", str(updates),
                                "-p", "updates_per_epoch", str(every), "-p", "hidden_dim", str(hidden), "-p", "learning_rate", "1e-3"])
    if notebook_first: t_run, t_train = run(), train()
    else: t_train, t_run = train(), run()
    la, lb = (json.loads((d/"run"/"status.json").read_text())["metrics"]["val_loss"] for d in (a, b))
    if la != lb: print(f"warning: the two runs differ (val_loss {la} vs {lb})")
    return t_train + (fit_seconds(a/"run"),), t_run + (fit_seconds(b/"run"),)

def fit_seconds(run:Path)->float:
    "Seconds from the start of training to its last update (stats.csv's `time` column): the run without start-up and exit."
    with open(run/"stats.csv") as f: return max(float(r["time"]) for r in csv.DictReader(f) if r["time"])

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3); ap.add_argument("--updates", type=int, default=22000); ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of both programs (default: torch's choice)")
    a = ap.parse_args()
    if a.threads: os.environ["OMP_NUM_THREADS"] = str(a.threads)
    print(f"threads per process: {os.environ.get('OMP_NUM_THREADS', 'torch default')}")
    with tempfile.TemporaryDirectory() as tmp:
        tiny = [pair(20, a.hidden, tmp, i % 2 == 1) for i in range(a.pairs)]
        for i, what in enumerate(("wall", "CPU")):
            t, r = statistics.median(t[i] for t, _ in tiny), statistics.median(r[i] for _, r in tiny)
            print(f"tiny run (20 updates), {what}: mlhpc train {t:.2f} s, mlhpc run {r:.2f} s; fixed overhead {statistics.median(r[i] - t[i] for t, r in tiny):.2f} s (target <= 3 s)")
        if not a.updates: return
        long = []
        for i in range(a.pairs):
            long.append(pair(a.updates, a.hidden, tmp, i % 2 == 1))
            (tw, tc, tf), (rw, rc, rf) = long[-1]
            print(f"  pair {i + 1} ({'notebook' if i % 2 else 'config'} first): train {tw:.1f} s wall {tc:.1f} s CPU ({tf:.1f} s training), "
                  f"run {rw:.1f} s wall {rc:.1f} s CPU ({rf:.1f} s training)", flush=True)
        for i, what in enumerate(("wall", "CPU", "training")):
            t, r = statistics.median(t[i] for t, _ in long), statistics.median(r[i] for _, r in long)
            print(f"{a.updates} updates, {what}: mlhpc train {t:.1f} s, mlhpc run {r:.1f} s; ratio {statistics.median(r[i] / t[i] for t, r in long):.3f} (target <= 1.05)")

if __name__ == "__main__": main()

"""The Trainer's own cost against a hand-written PyTorch loop, measured in one process on one thread.

Both train the same MLP (width 512: about 7 ms per update on one thread of this machine when it is quiet; width 160: about 2 ms) on the same in-memory data for the same number of
updates, then evaluate once and save one checkpoint. The hand-written loop is the fastest sensible one (a seeded
permutation per pass sliced into index batches, zero_grad/forward/backward/step, a no_grad evaluation, one torch.save).
The Trainer runs with the callbacks `mlhpc train` gives a run with default settings (RunLogger writing stats.csv, train.log and status.json;
CheckpointCallback; StopCallback), built by `ml_hpc.run.build_callbacks`. Runs alternate between the two (the first
round is a warm-up and is dropped); the script prints, for wall-clock and CPU time, the ratio of the medians, the
median (min, max) of the per-round ratios and the ratio of the best runs (the least disturbed by other load). Both loops first prove they compute the same weights, bit for bit.
If PyTorch Lightning is importable, its Trainer (no logger, no checkpointing, no progress bar) joins the rounds.
With --long N each round also runs N updates: the difference gives the cost of one more update apart from the per-run cost.
Measured on the quiet machine (1 thread, 11 rounds, 300 and 1200 updates): width 200 (1.7 ms/update) ratio of medians 0.98, best runs 1.03,
one more update 1.039x; width 160 (1.4 ms) 1.02, 1.02 and 1.040x.
Usage: python bench/bench_trainer.py [--rounds 11] [--updates 300] [--long 1200] [--threads 1] [--hidden 512]
Default callbacks include CurvesCallback since curves.png (issue 11): it draws once per run here (the run's only evaluation, about 0.1 s),
which shows in the per-run cost, not per update. Measured beside a running test suite, width 200, 11 rounds, 300 and 1200 updates: one more
update 1.058x wall, 1.016x CPU (before: 1.003x, 1.042x); per-run cost trainer 99 ms wall, 144 ms CPU (before: 10, -30); ratio of medians at 300 updates 1.29 (before 1.03).
To compare with an older version, copy its ml_hpc/ package somewhere and run with PYTHONPATH pointing there."""
import argparse, statistics, tempfile, time
from pathlib import Path
import torch, torch.nn.functional as F
from torch.utils.data import TensorDataset
from ml_hpc.config import Config
from ml_hpc.data import ShardedBatchSampler
from ml_hpc.env import JobEnv
from ml_hpc.models import MLP
from ml_hpc.run import build_callbacks, setup_logging
from ml_hpc.trainer import Trainer, seed_everything

N, D, C, BS, N_TRAIN = 8192, 256, 10, 128, 7168
HIDDEN = 512  # --hidden; a small width makes the loop's fixed cost stand out

def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g); y = (x[:, :C].argmax(1) + (x[:, C] > 1).long()) % C
    return TensorDataset(x[:N_TRAIN], y[:N_TRAIN]), TensorDataset(x[N_TRAIN:], y[N_TRAIN:])

def hand_loop(train, valid, updates, run_dir):
    seed_everything(0); model = MLP(D, C, HIDDEN, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    x, y = train.tensors; done, epoch = 0, 0
    start, cpu = time.perf_counter(), time.process_time()
    model.train()
    while done < updates:
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for i in range(len(x) // BS):
            if done == updates: break
            idx = perm[i * BS:(i + 1) * BS]
            opt.zero_grad(); F.cross_entropy(model(x[idx]), y[idx]).backward(); opt.step(); done += 1
        epoch += 1
    model.eval(); vx, vy = valid.tensors
    with torch.no_grad(): val_loss = sum(F.cross_entropy(model(vx[i:i + BS]), vy[i:i + BS], reduction="sum") for i in range(0, len(vx), BS)) / len(vx)
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "val_loss": val_loss}, Path(run_dir)/"latest.pt")
    return time.perf_counter() - start, time.process_time() - cpu, model

def trainer_run(train, valid, updates, run_dir):
    seed_everything(0); model = MLP(D, C, HIDDEN, 2)
    cfg = Config(total_updates=updates, updates_per_epoch=updates, batch_size=BS)
    setup_logging(Path(run_dir)/"train.log", quiet=True)
    cbs = build_callbacks(cfg, run_dir, JobEnv.from_environ(), 1, show_progress=False)
    t = Trainer(model, train, valid, F.cross_entropy, cfg, cbs=cbs)
    start, cpu = time.perf_counter(), time.process_time(); t.fit()
    return time.perf_counter() - start, time.process_time() - cpu, model

def lightning_run(train, valid, updates, run_dir):
    import lightning as L
    class Module(L.LightningModule):
        def __init__(self): super().__init__(); self.model = MLP(D, C, HIDDEN, 2)
        def training_step(self, b, i): return F.cross_entropy(self.model(b[0]), b[1])
        def validation_step(self, b, i): self.log("val_loss", F.cross_entropy(self.model(b[0]), b[1]))
        def configure_optimizers(self): return torch.optim.AdamW(self.parameters(), lr=1e-3, weight_decay=0.0)
    seed_everything(0); m = Module()
    sampler = ShardedBatchSampler(len(train), BS, seed=0)
    loader = torch.utils.data.DataLoader(train, sampler=sampler, batch_size=None)
    vloader = torch.utils.data.DataLoader(valid, batch_size=BS)
    tr = L.Trainer(max_steps=updates, val_check_interval=None, check_val_every_n_epoch=None, logger=False,
                   enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", default_root_dir=run_dir)
    start, cpu = time.perf_counter(), time.process_time(); tr.fit(m, loader, vloader); tr.save_checkpoint(Path(run_dir)/"latest.ckpt")
    return time.perf_counter() - start, time.process_time() - cpu, m.model

def lightning_available()->bool:
    try: import lightning  # noqa: F401
    except ImportError: return False
    return True

def run(name, train, valid, updates):
    fn = {"hand": hand_loop, "trainer": trainer_run, "lightning": lightning_run}[name]
    with tempfile.TemporaryDirectory() as d: return fn(train, valid, updates, d)

def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--rounds", type=int, default=11); ap.add_argument("--updates", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--long", type=int, default=0, help="also run this many updates: the difference to --updates separates the cost of one more update from the per-run cost (the final evaluation, the durable checkpoint save)")
    ap.add_argument("--hidden", type=int, default=HIDDEN, help="MLP width (512: about 7 ms per update on one quiet thread here; 160: about 2 ms)")
    a = ap.parse_args()
    globals()["HIDDEN"] = a.hidden
    torch.set_num_threads(a.threads)
    train, valid = data()
    m1, m2 = run("hand", train, valid, 20)[-1], run("trainer", train, valid, 20)[-1]
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters())), "the two loops must compute the same weights"
    names = ["hand", "trainer"] + (["lightning"] if lightning_available() else [])
    runs, longer = {n: [] for n in names}, {n: [] for n in names}
    for i in range(a.rounds + 1):
        for name in (names if i % 2 else names[::-1]):
            wall, cpu, _ = run(name, train, valid, a.updates)
            if i: runs[name].append((wall, cpu))
            if a.long and i: longer[name].append(run(name, train, valid, a.long)[:2])
    print(f"MLP width {HIDDEN}, {a.updates} updates per run, {a.rounds} alternating rounds (+1 warm-up dropped), {torch.get_num_threads()} torch thread(s)"
          + ("" if "lightning" in names else "; Lightning not installed, not compared"))
    for k, what in ((0, "wall"), (1, "CPU")):
        h = [r[k] for r in runs["hand"]]
        print(f"{what:>4}: hand-written {statistics.median(h) / a.updates * 1e3:.3f} ms/update")
        for n in names[1:]:
            m = [r[k] for r in runs[n]]; ratios = [x / y for x, y in zip(m, h)]
            print(f"{what:>4}: {n:<9} {statistics.median(m) / a.updates * 1e3:.3f} ms/update, "
                  f"+{(statistics.median(m) - statistics.median(h)) / a.updates * 1e3:.3f} ms/update; ratio of medians {statistics.median(m) / statistics.median(h):.3f}, "
                  f"paired ratios median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}), "
                  f"ratio of best runs {min(m) / min(h):.3f}; target <= 1.05")
    if not a.long: return
    for k, what in ((0, "wall"), (1, "CPU")):
        slope = {n: (statistics.median(r[k] for r in longer[n]) - statistics.median(r[k] for r in runs[n])) / (a.long - a.updates) for n in names}
        fixed = {n: statistics.median(r[k] for r in runs[n]) - slope[n] * a.updates for n in names}
        print(f"{what:>4}, one more update ({a.updates} -> {a.long} updates): " + ", ".join(f"{n} {slope[n] * 1e3:.3f} ms" for n in names)
              + "; " + ", ".join(f"{n} {slope[n] / slope['hand']:.3f}x" for n in names[1:])
              + "; per-run cost: " + ", ".join(f"{n} {fixed[n] * 1e3:.0f} ms" for n in names))

if __name__ == "__main__": main()

"""Trainer overhead against a hand-written PyTorch loop, measured in one process.

Both train the same MLP on the same in-memory data for the same number of updates. The hand-written loop is the
fastest sensible one (shuffled index batches on tensors, zero_grad/forward/backward/step, nothing else); the Trainer
runs with its default logging on (stats.csv rows for every update, train.log, status.json). Runs alternate between the
two, the first pair is a warm-up and is dropped, and the median of the per-pair ratios is printed.
Usage: python bench/bench_trainer.py [--pairs 9] [--updates 300]"""
import argparse, statistics, tempfile, time
import torch, torch.nn.functional as F
from torch.utils.data import TensorDataset
from ml_hpc.config import Config
from ml_hpc.data import ShardedBatchSampler
from ml_hpc.models import MLP
from ml_hpc.trainer import Trainer, seed_everything
from ml_hpc.callback.log import RunLogger

N, D, C, HIDDEN, BS = 8192, 256, 10, 512, 128

def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g); y = (x[:, :C].argmax(1) + (x[:, C] > 1).long()) % C
    return TensorDataset(x[:7168], y[:7168]), TensorDataset(x[7168:], y[7168:])

def hand_loop(train, updates):
    seed_everything(0); model = MLP(D, C, HIDDEN, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    x, y = train.tensors; sampler = ShardedBatchSampler(len(x), BS, seed=0); done, epoch = 0, 0
    start, cpu = time.perf_counter(), time.process_time()
    while done < updates:
        sampler.set_position(epoch)
        for idx in sampler:
            if done == updates: break
            opt.zero_grad(); F.cross_entropy(model(x[idx]), y[idx]).backward(); opt.step(); done += 1
        epoch += 1
    return time.perf_counter() - start, time.process_time() - cpu, model

def trainer_run(train, valid, updates):
    seed_everything(0); model = MLP(D, C, HIDDEN, 2)
    with tempfile.TemporaryDirectory() as d:
        t = Trainer(model, train, valid, F.cross_entropy, Config(), cbs=[RunLogger(d)], total_updates=updates,
                    updates_per_epoch=updates, batch_size=BS)
        start, cpu = time.perf_counter(), time.process_time(); t.fit()
        return time.perf_counter() - start, time.process_time() - cpu, model

def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--pairs", type=int, default=15); ap.add_argument("--updates", type=int, default=300)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    train, valid = data()
    m1, m2 = hand_loop(train, 20)[-1], trainer_run(train, valid, 20)[-1]
    # parity first: the comparison is only fair if both loops compute exactly the same weights
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters())), "the two loops must compute the same thing"
    runs = {"hand": [], "trainer": []}
    for i in range(a.pairs + 1):
        order = ["hand", "trainer"] if i % 2 else ["trainer", "hand"]
        for name in order:
            wall, cpu, _ = hand_loop(train, a.updates) if name == "hand" else trainer_run(train, valid, a.updates)
            if i: runs[name].append((wall, cpu))
    print(f"updates per run: {a.updates}, pairs: {a.pairs} (+1 warm-up dropped), torch threads: {torch.get_num_threads()}")
    for k, what in ((0, "wall-clock"), (1, "CPU time")):
        h, m = [r[k] for r in runs["hand"]], [r[k] for r in runs["trainer"]]
        ratios = [x / y for x, y in zip(m, h)]
        ms = lambda xs: statistics.median(xs) / a.updates * 1e3
        print(f"{what:>10}: hand-written {ms(h):.3f} ms/update, Trainer + logging {ms(m):.3f} ms/update (incl. one evaluation of {N - 7168} samples); "
              f"ratio of medians {statistics.median(m) / statistics.median(h):.3f}, median of pair ratios {statistics.median(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f}); target <= 1.02")

if __name__ == "__main__": main()

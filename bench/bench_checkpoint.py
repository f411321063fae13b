"""How long a checkpoint save blocks training: a synchronous `CheckpointDir.save` against `AsyncSaver.save`, in one run.

A model of at least `--mb` megabytes (fp32 weights) is trained with AdamW, so a checkpoint holds the weights and twice as
much optimizer state. Each repetition does one synchronous save and one asynchronous save (alternating which goes first),
each after a training update, and times the call from entry to return: that is how long training waits. While the
asynchronous write runs, training continues. A warm-up save of each kind is dropped (the saver's first call also
allocates its CPU buffers; that figure is printed apart). Target: median async / median sync <= 0.20.

Usage: python bench/bench_checkpoint.py [--mb 130] [--reps 7] [--dir DIR] [--no-reuse]"""
import argparse, statistics, tempfile, time
from pathlib import Path
import torch, torch.nn as nn
from ml_hpc.checkpoint import AsyncSaver, CheckpointDir, FORMAT_VERSION, load_checkpoint, model_state, rng_state

def make_model(mb:float)->nn.Module:
    "An MLP of 2048-wide layers with at least `mb` MB of fp32 weights."
    layers, size = [], 0
    while size < mb * 1e6:
        layers += [nn.Linear(2048, 2048), nn.ReLU()]; size += (2048 * 2048 + 2048) * 4
    return nn.Sequential(*layers)

def train_step(model, opt):
    "One update on a random batch, changing every parameter."
    opt.zero_grad(); model(torch.randn(16, 2048)).square().mean().backward(); opt.step()

def checkpoint(model, opt, update:int)->dict:
    "The checkpoint dict the Trainer would save."
    return {"format_version": FORMAT_VERSION, "model": model_state(model), "optimizer": opt.state_dict(), "scheduler": {},
            "scaler": None, "ema": None, "callbacks": {}, "update": update, "data": {"epoch": 0, "batch": update},
            "rng": rng_state(), "config": {}}

def nbytes(obj)->int:
    "Bytes of tensor data in a nested state."
    if isinstance(obj, torch.Tensor): return obj.numel() * obj.element_size()
    if isinstance(obj, dict): return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)): return sum(nbytes(v) for v in obj)
    return 0

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=130, help="model weights in MB (at least 100 for the issue's figure)")
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions of each kind")
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    ap.add_argument("--no-reuse", action="store_true", help="AsyncSaver(reuse_buffers=False): allocate a new CPU copy each save")
    a = ap.parse_args()
    torch.manual_seed(0)
    model = make_model(a.mb); opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        ck, saver, u = CheckpointDir(Path(d)/"checkpoints", keep_last=2), AsyncSaver(reuse_buffers=not a.no_reuse), 0
        def step():
            nonlocal u; train_step(model, opt); u += 1; return checkpoint(model, opt, u)
        def sync_save():
            s = step(); t = time.perf_counter(); ck.save(s); return time.perf_counter() - t
        def async_save():
            s = step(); t = time.perf_counter(); saver.save(s, ck.save); blocked = time.perf_counter() - t
            expected, steps = u, 0
            while saver.busy: step(); steps += 1
            saver.wait(); written.append((time.perf_counter() - t, steps))
            assert load_checkpoint(ck.root/f"update_{expected}.pt")["update"] == expected
            return blocked
        written, sync, asyn = [], [], []
        step(); size = nbytes(checkpoint(model, opt, u))
        sync_save(); cold = async_save(); written.clear()
        for r in range(a.reps):
            if r % 2: asyn.append(async_save()); sync.append(sync_save())
            else: sync.append(sync_save()); asyn.append(async_save())
    ms, ma = statistics.median(sync), statistics.median(asyn)
    wt, ws = statistics.median(w for w, _ in written), statistics.median(s for _, s in written)
    print(f"checkpoint: {size/1e6:.1f} MB (model {nbytes(model_state(model))/1e6:.1f} MB + AdamW state), "
          f"{a.reps} repetitions after a warm-up, medians")
    print(f"synchronous CheckpointDir.save blocks training: {ms*1e3:8.1f} ms  (all: {', '.join(f'{x*1e3:.0f}' for x in sync)})")
    print(f"AsyncSaver.save blocks training:                {ma*1e3:8.1f} ms  (all: {', '.join(f'{x*1e3:.0f}' for x in asyn)}; "
          f"first call, allocating buffers: {cold*1e3:.0f} ms)")
    print(f"background write: {wt*1e3:.0f} ms from the call, while training did {ws:.0f} updates")
    print(f"ratio async/sync: {ma/ms:.3f}  (target <= 0.20: {'met' if ma/ms <= 0.20 else 'NOT met'})")

if __name__ == "__main__": main()

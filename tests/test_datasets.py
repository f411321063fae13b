"""Image-folder preparation when many processes start at once on one node (a sweep): the images are decoded and cached
exactly once, and every process gets the same tensors. The same start without the lock (check, then build; 3 processes
to save time) builds more than once, which shows the test can fail. To make the race wide, each process's decoding sleeps
0.5 s (it counts itself in a log first); the processes wait for each other at a barrier before loading.

And a tensor file through `mlhpc train`, as a user would use one."""
import os, subprocess, sys, time
from pathlib import Path
import numpy as np
import pandas as pd
import pytest, yaml
from PIL import Image
from helpers import ROOT, mlhpc
from ml_hpc.data import digits_file

N = 6
SCRIPT = r'''
import hashlib, os, sys, time
from pathlib import Path
import ml_hpc.datasets as ds
from ml_hpc.config import DataConfig
root, log, ready, naive = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "naive"
decode = ds.decode_images
def counted(*a, **k):
    with open(log, "a") as f: f.write(f"{os.getpid()}\n")
    time.sleep(0.5)
    return decode(*a, **k)
ds.decode_images = counted
if naive:
    def prepare_without_lock(target, build):
        if not target.exists(): ds.atomic_write(target, build, durable=False)
    ds.prepare_once = prepare_without_lock
(ready/str(os.getpid())).touch()
while len(os.listdir(ready)) < int(sys.argv[5]): time.sleep(0.001)
tr, va, info = ds.image_folder(DataConfig(name="image_folder", root=str(root)))
print(hashlib.sha256(b"".join(t.numpy().tobytes() for t in tr.tensors + va.tensors)).hexdigest(), info["n_train"], info["num_classes"])
'''

def image_folder(root, seed):
    "Three classes of 40 random 12x12 RGB PNGs."
    rng = np.random.default_rng(seed)
    for c in ("ant", "bee", "cat"):
        (root/c).mkdir(parents=True)
        for i in range(40): Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root/c/f"{i}.png")
    return root

def start_at_once(tmp_path, mode, n=N):
    "`n` processes that load the same image folder at the same moment; returns their outputs and the number of builds."
    seed = int.from_bytes(os.urandom(2), "little"); print(f"seed {seed}")
    root, log, ready = image_folder(tmp_path/"images", seed), tmp_path/"builds.log", tmp_path/"ready"
    ready.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, root, log, ready, mode, str(n)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs): assert p.returncode == 0, err[-3000:]
    return root, [o for o, _ in outs], len(log.read_text().splitlines())

def test_six_processes_at_once_decode_the_folder_once(tmp_path):
    t0 = time.time()
    root, outs, builds = start_at_once(tmp_path, "locked")
    assert builds == 1, f"{builds} processes decoded the images"
    assert len(set(outs)) == 1 and outs[0].split()[1:] == ["96", "3"], outs
    assert len(list(root.glob(".mlhpc-cache-*.pt"))) == 1 and not list(root.glob(".*.tmp"))
    print(f"{N} processes, 1 build, identical tensors in {time.time() - t0:.1f} s")

def test_without_the_lock_the_same_start_builds_more_than_once(tmp_path):
    root, outs, builds = start_at_once(tmp_path, "naive", n=3)
    assert builds > 1, "the race did not show: this test cannot tell the lock from no lock"
    print(f"without the lock: {builds} of 3 processes decoded the images")

def test_tensor_file_trains_through_mlhpc_train(tmp_path):
    "A .npz of the digits (explicit train/valid split) read from $DATA_DIR by data.name: tensor_file, trained by the built-in MLP."
    d = np.loadtxt(digits_file(), delimiter=",", dtype=np.float32)
    x, y = d[:, :64] / 16, d[:, 64].astype(np.int64)
    np.savez(tmp_path/"digits.npz", train_x=x[:1500], train_y=y[:1500], valid_x=x[1500:], valid_y=y[1500:])
    (tmp_path/"c.yaml").write_text("data: {name: tensor_file, root: digits.npz}\nmodel: {hidden_dim: 32}\noptimizer: {learning_rate: 1e-2}\ntotal_updates: 60\nupdates_per_epoch: 30\n")
    mlhpc("train", tmp_path/"c.yaml", "--run-dir", tmp_path/"run", env={"DATA_DIR": str(tmp_path)}, check=True)
    inferred = yaml.safe_load((tmp_path/"run/config.yaml").read_text())["inferred"]
    assert (inferred["num_classes"], inferred["input_shape"], inferred["n_train"], inferred["n_valid"]) == (10, [64], 1500, 297)
    acc = pd.read_csv(tmp_path/"run/stats.csv")["val_accuracy"].dropna()
    assert acc.iloc[-1] > 0.8, acc.tolist()

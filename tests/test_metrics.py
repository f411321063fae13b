"""Evaluation metrics under DDP (gloo, 2 real processes): the sums of both ranks, reduced with one all_reduce and then
finished, give the metrics of one process evaluating the same samples.

The digits validation split has an odd number of samples, so the two shards differ in size (rank 0 holds one sample more)
and the evaluation batch of 7 leaves a short last batch on each rank: a mean of per-rank or per-batch means would be off,
sums are not. Each rank writes what `Trainer.evaluate` returned; the test compares them with one process in this
interpreter. Counts (accuracies) are exact; the loss of a batch is a float32 mean whose rounding depends on the thread count
(each worker computes with one thread), measured 2e-8 relative here, so numbers are compared to 1e-6 relative. Counting
mistakes are far larger: skipping the all_reduce makes the ranks disagree (asserted first), and a rank's shard alone is
another data set.

With `eval_iters: 3` each rank evaluates the first 3 batches of 7 of its shard perm[r::2] of the unshuffled split: together
the first 42 samples, which one process evaluates with `eval_iters: 6`."""
import json, os, subprocess, sys
from pathlib import Path
import pytest
from ml_hpc.notebook import free_port

WORKER = """\
import json, os, sys
import torch.distributed as dist
from ml_hpc.config import DataConfig, ModelConfig
from ml_hpc.data import get_data
from ml_hpc.env import JobEnv
from ml_hpc.models import get_model
from ml_hpc.trainer import Trainer, seed_everything
import torch.nn.functional as F
dist.init_process_group("gloo")
kw = json.loads(sys.argv[1])
tr, va, info = get_data(DataConfig())
seed_everything(0)
t = Trainer(get_model(ModelConfig(hidden_dim=32), info), tr, va, F.cross_entropy, env=JobEnv.from_environ(), **kw)
assert t.ddp and t.env.world_size == 2
out = {**t.evaluate(), **(t.evaluate(prefix="train_", data="train") if t.cfg.eval_train else {})}
open(sys.argv[2] + "/rank" + os.environ["RANK"] + ".json", "w").write(json.dumps(out))
dist.barrier()  # then exit as `mlhpc train` does: destroying the group while the peer exits can abort in gloo
"""

METRIC = "def abs_error(out, y): return (out.argmax(1) - y).abs().float()\n"
METRICS = ["top5_accuracy", "per_class_accuracy", "perplexity", "my_metrics:abs_error"]


def two_ranks(tmp_path: Path, kw: dict) -> list:
    "Run the worker as two gloo ranks; return each rank's metrics."
    (tmp_path/"worker.py").write_text(WORKER); (tmp_path/"my_metrics.py").write_text(METRIC)
    port, procs = free_port(), []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tmp_path)}
        procs.append(subprocess.Popen([sys.executable, str(tmp_path/"worker.py"), json.dumps(kw), str(tmp_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out
    return [json.loads((tmp_path/f"rank{r}.json").read_text()) for r in range(2)]


def one_process(tmp_path: Path, kw: dict) -> dict:
    import torch.nn.functional as F
    from ml_hpc.config import DataConfig, ModelConfig
    from ml_hpc.data import get_data
    from ml_hpc.env import JobEnv
    from ml_hpc.models import get_model
    from ml_hpc.trainer import Trainer, seed_everything
    sys.path.insert(0, str(tmp_path))
    try:
        tr, va, info = get_data(DataConfig())
        seed_everything(0)
        t = Trainer(get_model(ModelConfig(hidden_dim=32), info), tr, va, F.cross_entropy, env=JobEnv(), **kw)
        return {**t.evaluate(), **(t.evaluate(prefix="train_", data="train") if t.cfg.eval_train else {})}
    finally: sys.path.remove(str(tmp_path)); sys.modules.pop("my_metrics", None)


def assert_close(a: dict, b: dict, rel=1e-6):
    assert list(a) == list(b)
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, list): assert [v is None for v in x] == [v is None for v in y] and all(v is None or v == pytest.approx(w, rel=rel) for v, w in zip(x, y)), k
        else: assert x == pytest.approx(y, rel=rel), k


@pytest.mark.parametrize("eval_iters", [0, 3])
def test_two_ranks_report_the_metrics_of_one_process(tmp_path, eval_iters):
    kw = dict(metrics=METRICS, eval_batch_size=7, eval_iters=eval_iters, eval_train=True)
    r0, r1 = two_ranks(tmp_path, kw)
    assert r0 == r1  # every rank reports the all-reduced numbers
    single = one_process(tmp_path, {**kw, "eval_iters": 2 * eval_iters})
    assert_close({k: v for k, v in r0.items() if k.startswith("val_")}, {k: v for k, v in single.items() if k.startswith("val_")})
    assert len(r0["val_per_class_accuracy"]) == 10 and 0 < r0["val_accuracy"] < 1
    assert list(r0) == ["val_loss", "val_accuracy"] + [f"val_{m.rpartition(':')[2]}" for m in METRICS] + \
        ["train_loss", "train_accuracy"] + [f"train_{m.rpartition(':')[2]}" for m in METRICS]

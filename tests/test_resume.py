"""Resume that is exact: `mlhpc train` killed with SIGKILL at random moments (once at least while a checkpoint is being written)
and rerun with the same command ends bit-identical to an uninterrupted run, with the same stats.csv, row for row. Then the
bad cases: a corrupt latest.pt, a checkpoint of another shape, a newer format, and fine-tuning from weights only.

A run directory holding a different config is refused with its files untouched: tests/test_cli.py,
test_different_config_never_clobbers_a_run.

Everything runs the real program in subprocesses on the CPU. SIGKILL goes to the whole process group, as when a node dies,
so DataLoader workers die with their trainer."""
import json, os, random, re, shutil, signal, subprocess, time
from pathlib import Path
import pandas as pd
import pytest, torch, yaml
from pandas.testing import assert_frame_equal
from helpers import ROOT, MLHPC, mlhpc, one_line_error, weights, same_weights, stats
from ml_hpc.checkpoint import FORMAT_VERSION, CorruptCheckpointError, load_checkpoint
from ml_hpc.config import load_config
from ml_hpc.data import ShardedBatchSampler, get_data
from ml_hpc.models import get_model
from ml_hpc.trainer import seed_everything

TOTAL, EVAL_EVERY, SAVE_EVERY = 120, 25, 3
CONFIG = {"data": {"name": "digits"}, "model": {"type": "mlp", "hidden_dim": 64, "num_layers": 2, "dropout": 0.2},
          "batch_size": 32, "total_updates": TOTAL, "updates_per_epoch": EVAL_EVERY, "log_every": 1, "seed": 0,
          "optimizer": {"name": "AdamW", "learning_rate": 3e-3, "weight_decay": 0.01},
          "lr_scheduler": {"first_stage": {"name": "LinearLR", "start_factor": 0.1, "end_factor": 1.0, "num_updates": 20},
                           "second_stage": {"name": "CosineAnnealingLR", "num_updates": -1, "end_factor": 0.01}},
          "checkpoint": {"every": SAVE_EVERY, "keep_last": 2}, "early_stopping": {"metric": "val_accuracy", "mode": "max"}}

def train_argv(config, run_dir, sets=()):
    "The argv of `mlhpc train config --run-dir run_dir --set ...`."
    return MLHPC + ["train", str(config), "--run-dir", str(run_dir)] + [a for s in sets for a in ("--set", s)]

def start(config, run_dir, sets=(), out=None):
    "Start `mlhpc train` in its own process group, output to `out` (default: beside the run directory)."
    out = Path(out or f"{run_dir}.out")
    with open(out, "a") as f:
        p = subprocess.Popen(train_argv(config, run_dir, sets), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    p.out = out
    return p

def finish(p, run_dir, timeout=300):
    "Wait for a started `mlhpc train` and check that it completed."
    try: code = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL); raise
    out = p.out.read_text()
    assert code == 0 and f"completed at update {TOTAL}/{TOTAL}" in out, f"exit {code}\n{out[-3000:]}"
    return run_dir

class References:
    "Uninterrupted runs, started in the background when first asked for and shared by the tests of this file."
    def __init__(self, root): self.root, self.runs = root, {}
    def start(self, sets=()):
        key = tuple(sets)
        if key not in self.runs:
            d = self.root/f"ref{len(self.runs)}"
            self.runs[key] = (d, start(self.root/"config.yaml", d, sets))
        return self.runs[key]
    def get(self, sets=()):
        d, p = self.start(sets)
        return finish(p, d)
    def stop(self):
        for _, p in self.runs.values():
            if p.poll() is None: os.killpg(p.pid, signal.SIGKILL); p.wait()

@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    r = References(tmp_path_factory.mktemp("refs"))
    (r.root/"config.yaml").write_text(yaml.safe_dump(CONFIG))
    r.start()
    try: yield r
    finally: r.stop()

@pytest.fixture
def config(refs): return refs.root/"config.yaml"

def last_update(run_dir)->int:
    "The update of the last complete row of stats.csv (0 if none)."
    try: lines = (Path(run_dir)/"stats.csv").read_text().split("\n")[1:-1]
    except FileNotFoundError: return 0
    return int(float(lines[-1].split(",", 1)[0])) if lines else 0

def wait_for(cond, p, what, timeout=60):
    "Poll `cond()` until it returns something other than None or False; fail if the process `p` ends first or `timeout` passes."
    end = time.monotonic() + timeout
    while (v := cond()) is None or v is False:
        assert p.poll() is None, f"mlhpc ended (exit {p.returncode}) before {what}:\n{p.out.read_text()[-2000:]}"
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.002)
    return v

def started_from(run_dir, attempt:int):
    "The update attempt `attempt` resumed from, once its train.log line is there."
    try: m = re.search(rf"attempt {attempt}: training from update (\d+) ", (Path(run_dir)/"train.log").read_text())
    except FileNotFoundError: return None
    return int(m.group(1)) if m else None

def temps(run_dir)->set:
    "Temporary files of checkpoint writes in progress (or killed)."
    return {p.name for p in (Path(run_dir)/"checkpoints").glob(".*.tmp")}

def kill_and_resume(config, run_dir, sets=(), *, rnd, kills=3, need_mid_save=False, max_aimed=8, span=15):
    """Start `mlhpc train`, SIGKILL it and rerun, `kills` times at random moments after some progress (then, if
    `need_mid_save` and none of those landed during a checkpoint write, aimed at writes in progress, at most `max_aimed`
    more times); finally let it complete. Returns counts."""
    n = dict(starts=0, kills=0, aimed=0, mid_save=0, resumed_from=[])
    while True:
        before, p = temps(run_dir), start(config, run_dir, sets)
        n["starts"] += 1
        aim = n["kills"] >= kills and need_mid_save and not n["mid_save"]
        if (n["kills"] >= kills and not aim) or n["aimed"] >= max_aimed: finish(p, run_dir); break
        try:
            u0 = wait_for(lambda: started_from(run_dir, n["starts"]), p, f"attempt {n['starts']} started")
            n["resumed_from"].append(u0)
            hi = min(u0 + span, TOTAL - 20)
            if hi <= u0: finish(p, run_dir); break
            target = rnd.randint(u0 + 1, hi)
            wait_for(lambda: last_update(run_dir) >= target, p, f"update {target}")
            if aim: wait_for(lambda: bool(temps(run_dir) - before), p, "a checkpoint write")
            else: time.sleep(rnd.uniform(0, 0.05))
        finally:
            alive = p.poll() is None
            if alive: os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        assert alive, f"attempt {n['starts']} ended by itself before the kill (exit {p.returncode})"
        n["kills"] += 1; n["aimed"] += aim
        left = temps(run_dir) - before
        n["mid_save"] += bool(left)
        latest = Path(run_dir)/"checkpoints/latest.pt"
        got = f"latest.pt is update {load_checkpoint(latest)['update']}" if latest.exists() else "no checkpoint yet"
        print(f"kill {n['kills']}{' (aimed)' if aim else ''}: past update {target}, {got}" + (f", mid-save: {sorted(left)}" if left else ""))
    return n

def differences(a, b, path="checkpoint")->list:
    "Paths where two nested checkpoint states differ (tensors compared bit for bit)."
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ok = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        return [] if ok else [path]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys(): return [f"{path} keys"]
        return [d for k in a for d in differences(a[k], b[k], f"{path}[{k!r}]")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b): return [f"{path} length"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]

def assert_same_run(run, ref):
    "Final weights bit-identical, the whole checkpoint state but its config equal, stats.csv equal row for row, no duplicated rows."
    assert same_weights(weights(run), weights(ref)), "final weights differ from the uninterrupted run"
    a, b = (load_checkpoint(Path(d)/"checkpoints/latest.pt") for d in (run, ref))
    diff = differences({k: v for k, v in a.items() if k != "config"}, {k: v for k, v in b.items() if k != "config"})
    assert not diff, f"checkpoint state differs from the uninterrupted run at: {diff[:10]}"
    assert_frame_equal(stats(run), stats(ref))
    raw = pd.read_csv(Path(run)/"stats.csv")
    train, val = raw[raw["loss"].notna()]["update"].tolist(), raw[raw["val_loss"].notna()]["update"].tolist()
    assert train == list(range(1, TOTAL + 1)), "update rows are duplicated or missing"
    assert val == sorted(set(range(EVAL_EVERY, TOTAL + 1, EVAL_EVERY)) | {TOTAL}), val

VARIANTS = {"plain": [], "workers": ["data.num_workers=2"], "bf16": ["amp=true"], "accum": ["grad_accum_steps=2"],
            "ema": ["ema.enabled=true"]}

@pytest.mark.parametrize("variant", VARIANTS)
def test_sigkill_and_rerun_is_bit_identical(refs, config, tmp_path, variant):
    sets, seed = VARIANTS[variant], random.randrange(2**32)
    refs.start(sets)
    print(f"{variant}: random seed {seed}")
    plain = variant == "plain"
    n = kill_and_resume(config, tmp_path/"run", sets, rnd=random.Random(seed), need_mid_save=plain, span=15 if plain else 30)
    print(f"{variant}: {n}")
    assert n["kills"] >= 3, n
    if plain: assert n["mid_save"] >= 1, f"no kill landed during a checkpoint write in {n['kills']} kills"
    assert not temps(tmp_path/"run"), "temporary files of killed saves were left behind"
    st = yaml.safe_load((tmp_path/"run/status.json").read_text())
    assert st["state"] == "completed" and st["attempt"] == n["starts"], (st, n)
    ref = refs.get(sets)
    assert_same_run(tmp_path/"run", ref)
    if variant == "ema": assert {"ema_val_loss", "ema_val_accuracy"} <= set(stats(ref).columns)

def partial_run(config, run_dir, upto:int):
    "Run until stats.csv reaches update `upto`, then SIGKILL."
    p = start(config, run_dir)
    try: wait_for(lambda: last_update(run_dir) >= upto, p, f"update {upto}")
    finally: os.killpg(p.pid, signal.SIGKILL); p.wait()

def test_corrupt_latest_falls_back_to_newest_valid_checkpoint(refs, config, tmp_path):
    run = tmp_path/"run"
    partial_run(config, run, 70)
    ck = run/"checkpoints"
    was = load_checkpoint(ck/"latest.pt")["update"]
    os.truncate(ck/"latest.pt", (ck/"latest.pt").stat().st_size // 2)
    with pytest.raises(CorruptCheckpointError): load_checkpoint(ck/"latest.pt")
    valid = []
    for f in sorted(ck.glob("update_*.pt"), key=lambda f: int(f.stem[7:])):
        try: valid.append((load_checkpoint(f)["update"], f))
        except CorruptCheckpointError: pass
    u, f = valid[-1]
    assert u != was, f"update_{was}.pt is a hard link of latest.pt: truncating one truncates both"
    print(f"latest.pt (update {was}) truncated; expecting a fallback to {f.name}")
    finish(start(config, run), run)
    log = (run/"train.log").read_text()
    assert re.search(rf"WARNING checkpoint {re.escape(str(ck/'latest.pt'))} is corrupt or truncated .*; resuming from {re.escape(str(f))} instead", log), log
    assert f"attempt 2: training from update {u} " in log
    assert_same_run(run, refs.get())

def test_checkpoint_of_another_shape_lists_the_mismatch(refs, tmp_path):
    (tmp_path/"c.yaml").write_text(yaml.safe_dump({**CONFIG, "model": {**CONFIG["model"], "hidden_dim": 32}}))
    p = mlhpc("train", tmp_path/"c.yaml", "--run-dir", tmp_path/"run", "--set", f"checkpoint.load_from={refs.get()}")
    one_line_error(p, "checkpoint does not fit the model: shape mismatch:", "1.weight (checkpoint (64, 64), model (32, 64))",
                   "4.weight (checkpoint (64, 64), model (32, 32))", "7.weight (checkpoint (10, 64), model (10, 32))")
    assert yaml.safe_load((tmp_path/"run/status.json").read_text())["state"] == "failed"
    assert not (tmp_path/"run/checkpoints").exists()

def test_checkpoint_of_a_newer_format_is_refused(refs, config, tmp_path):
    run = tmp_path/"run"
    shutil.copytree(refs.get(), run)
    sd = load_checkpoint(run/"checkpoints/latest.pt")
    (run/"checkpoints/latest.pt").unlink()
    torch.save({**sd, "format_version": FORMAT_VERSION + 1}, run/"checkpoints/latest.pt")
    st = json.loads((run/"status.json").read_text()); st["state"] = "stopped"  # a completed run is not resumed at all
    (run/"status.json").write_text(json.dumps(st))
    one_line_error(mlhpc("train", config, "--run-dir", run), f"has format version {FORMAT_VERSION + 1}",
                   f"reads up to version {FORMAT_VERSION}", "upgrade ml_hpc")

def first_batch_loss(cfg, sd)->float:
    """The loss of `cfg`'s first training batch for a model holding weights `sd`, with the dropout masks of update 1:
    the seed fixes the initial weights (overwritten here), the data order and the dropout that follows them."""
    seed_everything(cfg.seed)
    train, _, info = get_data(cfg.data)
    model = get_model(cfg.model, info); model.load_state_dict(sd)
    x, y = train[ShardedBatchSampler(len(train), cfg.batch_size, cfg.seed).indices()[:cfg.batch_size]]
    with torch.no_grad(): return torch.nn.functional.cross_entropy(model.train()(x), y).item()

def test_fine_tune_loads_weights_only(refs, config, tmp_path):
    ref, run = refs.get(), tmp_path/"run"
    sets = [f"checkpoint.load_from={ref}", "checkpoint.restart=false", "total_updates=30"]
    mlhpc("train", config, "--run-dir", run, *[a for s in sets for a in ("--set", s)], check=True)
    log = (run/"train.log").read_text()
    assert f"loaded the weights of update {TOTAL} from {ref}" in log and "attempt 1: training from update 0 to 30" in log, log
    rows, ref_rows = stats(run), stats(ref)
    assert rows["update"].iloc[0] == 1 and rows["lr"].iloc[0] == ref_rows["lr"].iloc[0], "the schedule did not start afresh"
    assert rows["loss"].iloc[0] == first_batch_loss(load_config(config, sets), weights(ref)), "update 1 did not start from the reference weights"
    assert rows["loss"].iloc[0] < 0.5 * ref_rows["loss"].iloc[0]
    opt = load_checkpoint(run/"checkpoints/latest.pt")["optimizer"]
    assert {float(s["step"]) for s in opt["state"].values()} == {30.0}, "the optimizer state was carried over, not fresh"

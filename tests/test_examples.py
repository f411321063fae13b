"""The two realistic examples end to end, as a user runs them from the repository root (`examples.MODULE:FUNCTION` in
the YAML is importable from the current directory): a small CNN on an image folder (scikit-learn's digits written as
PNG files in class folders and packed as a tar) and a character-level transformer language model reporting perplexity.

Each trains through `mlhpc train`; a run SIGKILLed at a random update and rerun ends bit-identical to the uninterrupted
one; and each trains through `mlhpc submit` on the real loopback SLURM cluster, the image example with `--stage` so it
reads the unpacked tar from $MLHPC_DATA_DIR, again bit-identical to the local run. Settings are cut down (tens of
updates) to keep the suite short; the YAML files hold the full settings. Runs keep the default thread count users get."""
import json, os, random, re, signal, subprocess, sys, tarfile, time
from pathlib import Path
import numpy as np
import pandas as pd
import pytest, torch, yaml
from helpers import ROOT, MLHPC, mlhpc, one_line_error, weights, same_weights
from ml_hpc.callback.log import WALL_CLOCK_COLS
from ml_hpc.data import digits_file

CNN, LM = ROOT/"examples/image_cnn.yaml", ROOT/"examples/char_lm.yaml"
CNN_SETS = ["total_updates=60", "updates_per_epoch=20", "checkpoint.every=4", "log_every=1"]
LM_SETS = ["total_updates=40", "updates_per_epoch=20", "checkpoint.every=4", "log_every=1", "eval_iters=2"]

def sets(s): return [a for x in s for a in ("--set", x)]

def table(run):
    "stats.csv without its wall-clock columns (time, speed, memory, CPU use)."
    df = pd.read_csv(Path(run)/"stats.csv")
    return df.drop(columns=[c for c in WALL_CLOCK_COLS if c in df.columns])

def last_update(run)->int:
    try: lines = (Path(run)/"stats.csv").read_text().split("\n")[1:-1]
    except FileNotFoundError: return 0
    return int(float(lines[-1].split(",", 1)[0])) if lines else 0

def train(config, run, s, env=None, timeout=300):
    "`mlhpc train` to completion; returns its wall time."
    t0 = time.time()
    mlhpc("train", config, "--run-dir", run, *sets(s), env=env, check=True, timeout=timeout)
    return time.time() - t0

def kill_then_finish(config, run, s, total, env=None, seed=None):
    "Start `mlhpc train`, SIGKILL its process group past a random update, rerun it to completion; returns the update resumed from."
    seed = random.randrange(2**32) if seed is None else seed
    target = random.Random(seed).randint(6, total - 10)
    print(f"random seed {seed}: SIGKILL past update {target}")
    argv = MLHPC + ["train", str(config), "--run-dir", str(run)] + sets(s)
    with open(f"{run}.out", "w") as out:
        p = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while last_update(run) < target:
            assert p.poll() is None, f"mlhpc ended (exit {p.returncode}) before update {target}:\n{Path(f'{run}.out').read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"timed out waiting for update {target}"
            time.sleep(0.002)
    finally:
        if p.poll() is None: os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert p.returncode == -signal.SIGKILL, f"the run ended by itself before the kill (exit {p.returncode})"
    train(config, run, s, env)
    m = re.search(r"attempt 2: training from update (\d+) ", (Path(run)/"train.log").read_text())
    assert m, (Path(run)/"train.log").read_text()[-2000:]
    return int(m.group(1))

def assert_same(run, ref):
    assert same_weights(weights(run), weights(ref)), "final weights differ from the uninterrupted run"
    pd.testing.assert_frame_equal(table(run), table(ref))

@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    "The digits as PNGs in class folders (data/digits) and packed as a tar (data/digits.tar), written the way users are told to."
    d = tmp_path_factory.mktemp("data")
    p = subprocess.run(MLHPC[:1] + ["-m", "examples.image_cnn", str(d)], cwd=ROOT, capture_output=True, text=True, check=True)
    tar = Path(p.stdout.strip())
    assert tar == d/"digits.tar"
    with tarfile.open(tar) as t: names = t.getnames()
    pngs = [n for n in names if n.endswith(".png")]
    assert len(pngs) == 1797 and {n.split("/")[1] for n in pngs} == {str(i) for i in range(10)} and all(n == "digits" or n.startswith("digits/") for n in names)
    return d

@pytest.fixture(scope="module")
def cnn_ref(digits, tmp_path_factory):
    run = tmp_path_factory.mktemp("cnn")/"ref"
    took = train(CNN, run, CNN_SETS, env={"DATA_DIR": str(digits)})
    print(f"image_cnn: {took:.1f} s for the reference run")
    return run

@pytest.fixture(scope="module")
def lm_ref(tmp_path_factory):
    run = tmp_path_factory.mktemp("lm")/"ref"
    took = train(LM, run, LM_SETS)
    print(f"char_lm: {took:.1f} s for the reference run")
    return run

def test_image_cnn_trains_from_the_png_folder(cnn_ref, digits):
    st = json.loads((cnn_ref/"status.json").read_text())
    assert st["state"] == "completed" and st["update"] == 60
    cfg = yaml.safe_load((cnn_ref/"config.yaml").read_text())
    assert {k: cfg["model"][k] for k in ("type", "channels", "depth", "dropout")} == {"type": "examples.image_cnn:make_cnn", "channels": 16, "depth": 2, "dropout": 0.1}
    inf = cfg["inferred"]
    assert inf["classes"] == [str(i) for i in range(10)] and inf["input_shape"] == [1, 8, 8] and inf["n_train"] + inf["n_valid"] == 1797
    assert len(list((digits/"digits").glob(".mlhpc-cache-*.pt"))) == 1
    cache = torch.load(next((digits/"digits").glob(".mlhpc-cache-*.pt")), weights_only=True)
    ref = np.loadtxt(digits_file(), delimiter=",", dtype=np.float32)
    got = sorted(map(tuple, np.c_[(cache["x"].float() / 255 * 16).round().reshape(-1, 64).numpy(), cache["y"].numpy()].tolist()))
    assert got == sorted(map(tuple, ref.tolist())), "the PNG round trip changed the digits"
    val = table(cnn_ref).dropna(subset=["val_accuracy"])
    assert val["val_accuracy"].iloc[-1] >= 0.8 and val["val_loss"].iloc[-1] < val["val_loss"].iloc[0], val
    print(f"image_cnn: val_accuracy {val['val_accuracy'].iloc[-1]:.3f} after 60 updates")

def test_image_cnn_resumes_exactly_after_sigkill(cnn_ref, digits, tmp_path):
    u = kill_then_finish(CNN, tmp_path/"run", CNN_SETS, 60, env={"DATA_DIR": str(digits)})
    assert u > 0, "the rerun started from scratch"
    assert_same(tmp_path/"run", cnn_ref)

def test_char_lm_trains_and_reports_perplexity(lm_ref):
    cfg = yaml.safe_load((lm_ref/"config.yaml").read_text())
    assert cfg["data"]["name"] == "examples.char_lm:char_text" and cfg["data"]["block_size"] == 64 and cfg["model"]["n_embd"] == 64
    assert cfg["inferred"]["text"].endswith("argparse.py") and cfg["inferred"]["num_classes"] == len(cfg["inferred"]["vocab"])
    val = table(lm_ref).dropna(subset=["val_loss"])
    assert val["update"].tolist() == [20, 40]
    ppl = val["val_perplexity"]
    assert ppl.iloc[-1] < ppl.iloc[0] < cfg["inferred"]["num_classes"], val
    assert np.allclose(ppl, np.exp(val["val_loss"]), rtol=1e-6), "perplexity is not exp of the mean per-character loss"
    sys.path.insert(0, str(ROOT))
    from examples.char_lm import make_gpt, sample
    model = make_gpt(cfg["inferred"], **{k: cfg["model"][k] for k in ("n_layer", "n_head", "n_embd", "block_size", "dropout")})
    model.load_state_dict(weights(lm_ref))
    text = sample(model, cfg["inferred"]["vocab"], "def ", 40)
    assert text.startswith("def ") and len(text) == 44 and set(text) <= set(cfg["inferred"]["vocab"])
    print(f"char_lm: val_perplexity {ppl.tolist()} after {val['update'].tolist()} updates; sample {text!r}")

def test_char_lm_resumes_exactly_after_sigkill(lm_ref, tmp_path):
    u = kill_then_finish(LM, tmp_path/"run", LM_SETS, 40)
    assert u > 0, "the rerun started from scratch"
    assert_same(tmp_path/"run", lm_ref)

def test_image_cnn_mistakes_are_one_line_errors(digits, tmp_path):
    "No data where the config says, and a network too deep for the images: one line each, naming the path or the key."
    one_line_error(mlhpc("train", CNN, "--run-dir", tmp_path/"a", env={"DATA_DIR": str(tmp_path)}),
                   f"data.root 'digits' not found: {tmp_path}/digits does not exist (a relative root is read under $DATA_DIR)")
    one_line_error(mlhpc("train", CNN, "--run-dir", tmp_path/"b", "--set", "model.depth=4", env={"DATA_DIR": str(digits)}),
                   "model.depth 4 halves the 8x8 images below one pixel", "use depth 3 or less")

@pytest.mark.slurm
def test_both_examples_through_submit_on_slurm(slurm, digits, cnn_ref, lm_ref, tmp_path):
    "The image example reads the tar staged by --stage ($DATA_DIR points nowhere); both end bit-identical to the local runs."
    profile = tmp_path/"cluster.yaml"; profile.write_text("")
    env = {**slurm.env, "DATA_DIR": str(tmp_path/"nowhere")}
    jobs, t0 = {}, time.time()
    for name, config, s, extra in [("cnn", CNN, CNN_SETS, ["--stage", digits/"digits.tar"]), ("lm", LM, LM_SETS, [])]:
        p = mlhpc("submit", config, "--run-dir", tmp_path/name, "--time", "00:05:00", "--profile", profile, *sets(s), *extra, env=env, check=True)
        jobs[name] = re.search(r"submitted job (\d+)", p.stdout).group(1)
    for name, job in jobs.items():
        state = slurm.wait_state(job, "FINISHED", timeout=300)
        log = next((tmp_path/name).glob("slurm-*.out")).read_text()
        assert state == "COMPLETED", f"{name}: {state}\n{log[-3000:]}"
    print(f"both examples through SLURM in {time.time() - t0:.0f} s")
    log = (tmp_path/"cnn"/f"slurm-{jobs['cnn']}.out").read_text()
    assert f"staging {digits/'digits.tar'} into" in log, log[-2000:]
    assert len(list((digits/"digits").glob(".mlhpc-cache-*.pt"))) == 1, "the job wrote into the original folder, not the staged copy"
    assert_same(tmp_path/"cnn", cnn_ref)
    assert_same(tmp_path/"lm", lm_ref)

"""Canary secrets in the environment and in `.env` appear in none of a run's files.

Real runs, each started from a folder holding a `.env` (which ml_hpc loads) and with more secrets in the environment:
a config run with W&B offline (with TensorBoard and curves.png), a notebook run (`mlhpc run`), and a
config run submitted to the real loopback SLURM cluster (`mlhpc submit`: job script, slurm-*.out). Then every byte of
every file under the runs' folders is searched for each canary: raw, UTF-16, hex and base64 (all three alignments).
The test also checks that the scan covered each kind of file a run writes, so it cannot pass by scanning nothing.
Not scanned: SLURM's own spool (slurmctld keeps each job's environment there by design; that is SLURM, not ml_hpc)."""
import base64, os, secrets, subprocess
from pathlib import Path
import pytest
from helpers import ROOT, MLHPC

SEED = secrets.token_hex(4)
CANARY = {name: f"canary{SEED}{name.lower().replace('_', '')}{secrets.token_hex(8)}" for name in
          ("WANDB_API_KEY", "HF_TOKEN", "DOTENV_WANDB_API_KEY", "DB_PASSWORD")}
ENV = {"WANDB_API_KEY": CANARY["WANDB_API_KEY"], "HF_TOKEN": CANARY["HF_TOKEN"]}
DOTENV = f"WANDB_API_KEY={CANARY['DOTENV_WANDB_API_KEY']}\nDB_PASSWORD={CANARY['DB_PASSWORD']}\n"  # WANDB_API_KEY is shadowed by the environment's
SMALL = ["--set", "total_updates=60", "--set", "updates_per_epoch=20", "--set", "log_every=10", "--set", "wandb.enabled=true", "--set", "wandb.mode=offline",
         "--set", "tensorboard=true"]

def encodings(s:str)->dict:
    "The forms a leaked value could take in a file: raw, UTF-16, hex, and base64 at each of the three alignments."
    b = s.encode()
    forms = {"raw": b, "utf-16": s.encode("utf-16-le"), "hex": b.hex().encode(), "HEX": b.hex().upper().encode()}
    for k in range(3):
        e = base64.b64encode(b"\0" * k + b)
        forms[f"base64+{k}"] = e[4 * ((k + 2) // 3) + 2: -4]  # the part that depends only on the canary
    return forms

def run(cmd, cwd, env, timeout=600):
    p = subprocess.run(MLHPC + [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return p

def kind(f:Path)->str:
    n = f.name
    if n.startswith("events.out.tfevents"): return "tfevents"
    if n.startswith("slurm-") and n.endswith(".out"): return "slurm-out"
    return f.suffix or n

@pytest.mark.slurm
def test_canary_secrets_appear_in_no_file_of_config_notebook_and_slurm_runs(slurm, tmp_path):
    print(f"canary seed {SEED}")
    (tmp_path/".env").write_text(DOTENV)
    (tmp_path/"cluster.yaml").write_text("")
    env = {**os.environ, **ENV}
    run(["train", ROOT/"examples/digits.yaml", "--run-dir", tmp_path/"runs/config", *SMALL], tmp_path, env)
    run(["run", ROOT/"examples/train_digits.ipynb", "--run-dir", tmp_path/"runs/notebook", "-p", "total_updates", "40", "-p", "updates_per_epoch", "20"], tmp_path, env)
    p = run(["submit", ROOT/"examples/digits.yaml", "--run-dir", tmp_path/"runs/slurm", "--time", "00:05:00", "--profile", tmp_path/"cluster.yaml", *SMALL],
            tmp_path, {**env, **slurm.env})
    job = p.stdout.split("submitted job ")[1].split()[0]
    assert slurm.wait_state(job, "COMPLETED", timeout=400) == "COMPLETED"

    files = [f for f in tmp_path.rglob("*") if f.is_file() and f != tmp_path/".env"]
    forms = {(name, how): v for name, c in CANARY.items() for how, v in encodings(c).items()}
    leaks = [f"{name} ({how}) in {f.relative_to(tmp_path)}" for f in files if (data := f.read_bytes()) for (name, how), v in forms.items() if v in data]
    kinds = {kind(f) for f in files}
    print(f"scanned {len(files)} files, {sum(f.stat().st_size for f in files)} bytes, kinds: {sorted(kinds)}")
    assert not leaks, leaks
    assert all(v in (tmp_path/".env").read_bytes() for (name, how), v in forms.items() if name in ("DB_PASSWORD", "DOTENV_WANDB_API_KEY") and how == "raw")  # the detector sees what is there
    expected = {".yaml", ".csv", ".json", ".log", ".pt", ".wandb", ".ipynb", ".sbatch", "slurm-out", "tfevents", ".png"}
    assert expected <= kinds, f"the scan missed {expected - kinds}"
    for run_dir in ("config", "notebook", "slurm"):
        assert (tmp_path/"runs"/run_dir/"stats.csv").stat().st_size > 0
    for run_dir in ("config", "slurm"): assert list((tmp_path/"runs"/run_dir).rglob("*.wandb")), f"no W&B file in {run_dir}"

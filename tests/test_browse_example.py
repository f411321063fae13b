"""examples/browse_results.ipynb runs headless (papermill, a real kernel) on real runs: on runs made here, and on the demo
runs when `make demo` has written them. It must show the browser widget and a table of the runs it drew."""
import json, os, subprocess, sys
from pathlib import Path
import pytest
from helpers import ROOT, MLHPC

def run_example(runs:Path, out:Path)->dict:
    "The output notebook of examples/browse_results.ipynb run by papermill with `runs`."
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "papermill", str(ROOT/"examples/browse_results.ipynb"), str(out), "-p", "runs", str(runs), "--cwd", str(ROOT/"examples")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(out.read_text())

def outputs(nb:dict)->list: return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]

def printed(nb:dict)->str: return "".join("".join(o["text"]) for o in outputs(nb) if o["output_type"] == "stream")

def check(nb:dict, names:list):
    "The browser widget is shown, the line naming the runs drawn names `names`, and the table has one row per run."
    outs = outputs(nb)
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outs), outs
    text = printed(nb)
    assert f"{len(names)} runs; metric val_loss; drawn: {', '.join(names)}" in text, text
    html = next(o["data"]["text/html"] for o in outs if "text/html" in o.get("data", {}))
    html = "".join(html)
    assert all(f"<th>{n}</th>" in html for n in names) and "best_val_loss" in html, html[:2000]

def test_the_example_browses_runs_made_here(tmp_path):
    root = tmp_path/"runs"
    for lr in (0.001, 0.003):
        args = ["train", ROOT/"examples/digits.yaml", "--run-dir", root/f"lr={lr}", "--set", f"optimizer.learning_rate={lr}", "--set", "total_updates=30",
                "--set", "updates_per_epoch=10", "--set", "lr_scheduler.first_stage.num_updates=10"]
        subprocess.run(MLHPC + [str(a) for a in args], cwd=ROOT, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    check(run_example(root, tmp_path/"out.ipynb"), ["lr=0.001", "lr=0.003"])
    assert not (root/"browser.png").exists()  # showing the browser writes nothing; only Save does
    p = subprocess.run(MLHPC + ["results", str(root), "--plot", str(tmp_path/"summary.png")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = p.stdout.splitlines()
    assert p.returncode == 0 and lines[-1] == f"summary figure: {tmp_path/'summary.png'}", (p.stdout, p.stderr[-2000:])
    assert [l.split()[0] for l in lines[2:-1]] == ["lr=0.003", "lr=0.001"] or [l.split()[0] for l in lines[2:-1]] == ["lr=0.001", "lr=0.003"], lines
    assert (tmp_path/"summary.png").read_bytes()[:4] == b"\x89PNG"

@pytest.mark.skipif(not (ROOT/"runs/demo-digits/status.json").exists() or not (ROOT/"runs/demo-notebook/status.json").exists(), reason="make demo writes runs/demo-digits and runs/demo-notebook")
def test_the_example_browses_the_demo_runs(tmp_path):
    nb = run_example(ROOT/"runs", tmp_path/"out.ipynb")
    text = printed(nb)
    assert "demo-digits" in text and "demo-notebook" in text, text

"""W&B with the real library in offline mode: one W&B run per ml_hpc run across attempts, with the whole history,
and the API key (from a .env file) written nowhere."""
import json, signal, struct, subprocess, time
from pathlib import Path
import pandas as pd
from helpers import ROOT, MLHPC, mlhpc
from wandb.proto import wandb_internal_pb2 as pb

SECRET = "0123456789abcdef0123456789abcdef01234567"
ARGS = ["--set", "wandb.enabled=true", "--set", "wandb.mode=offline", "--set", "total_updates=3000", "--set", "updates_per_epoch=1000",
        "--set", "log_every=10", "--set", "lr_scheduler={}"]

def records(path):
    "Records of a .wandb file (a LevelDB-style log of protobuf Records: 7-byte header, 32 KiB blocks, 7-byte record headers)."
    data, pos, buf, out = Path(path).read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7: pos += 32768 - pos % 32768; continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7]); pos += 7
        if kind == 0: break
        buf += data[pos:pos + n]; pos += n
        if kind in (1, 4): r = pb.Record(); r.ParseFromString(buf); out.append(r); buf = b""
    return out

def history(path):
    "Step -> logged values of an offline W&B run file."
    h = {}
    for r in records(path):
        if r.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            h.setdefault(items["_step"], {}).update({k: v for k, v in items.items() if not k.startswith("_")})
    return h

def test_requeued_run_is_one_wandb_run_with_whole_history_and_no_secret(tmp_path):
    (tmp_path/".env").write_text(f"WANDB_API_KEY={SECRET}\n")
    run = tmp_path/"run"
    cmd = MLHPC + ["train", str(ROOT/"examples/digits.yaml"), "--run-dir", str(run)] + ARGS
    p = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ((run/"stats.csv").exists() and len((run/"stats.csv").read_text().splitlines()) > 1200):
        assert time.monotonic() < deadline and p.poll() is None, p.stderr.read() if p.poll() is not None else "no progress"
        time.sleep(0.05)
    p.send_signal(signal.SIGUSR2)
    assert p.wait(timeout=120) == 75, p.stderr.read()
    first = json.loads((run/"status.json").read_text())
    assert first["state"] == "stopped" and 1000 < first["update"] < 3000
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    pieces = sorted((run/"wandb").glob("offline-run-*"))
    ids = {json.loads((run/"status.json").read_text())["wandb_id"]}
    assert len(pieces) == 2 and {d.name.rsplit("-", 1)[1] for d in pieces} == ids, pieces
    h = history(next(pieces[-1].glob("*.wandb")))
    df = pd.read_csv(run/"stats.csv")
    train = df.dropna(subset=["loss"]).set_index("update")["loss"]
    assert sorted(k for k in h if "loss" in h[k]) == list(range(1, 3001))
    assert all(abs(h[u]["loss"] - train[u]) < 1e-9 for u in train.index)
    assert [k for k in sorted(h) if "val_loss" in h[k]] == [1000, 2000, 3000]
    leaked = [str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*") if f.is_file() and f.name != ".env" and SECRET.encode() in f.read_bytes()]
    assert not leaked, f"the API key was written to {leaked}"

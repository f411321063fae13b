"""Safety rules that hold for the whole library: safe YAML, safe checkpoint loading, a torch without the weights_only hole."""
import re
from pathlib import Path
import torch
from helpers import ROOT

def library_sources():
    return {p: p.read_text() for p in (ROOT/"ml_hpc").rglob("*.py")}

def test_yaml_is_loaded_safely():
    bad = [f"{p.name}:{i}" for p, s in library_sources().items() for i, l in enumerate(s.splitlines(), 1) if re.search(r"yaml\.(load|unsafe_load|full_load)\(", l)]
    assert not bad, f"use yaml.safe_load: {bad}"

def test_every_torch_load_is_weights_only():
    bad = []
    for p, s in library_sources().items():
        for m in re.finditer(r"torch\.load\(", s):
            call = s[m.start(): s.find(")", m.end()) + 1]
            if "weights_only=True" not in call: bad.append(f"{p.name}: {call}")
    assert not bad, f"torch.load without weights_only=True: {bad}"

def test_the_rule_catches_a_violation():
    s = "x = torch.load(path, map_location='cpu')"
    assert "weights_only=True" not in s[s.find("torch.load("):]

def test_torch_is_recent_enough():
    major, minor = map(int, torch.__version__.split(".")[:2])
    assert (major, minor) >= (2, 6), "torch < 2.6 can run code from a checkpoint even with weights_only=True"
    assert "torch>=2.6" in (ROOT/"settings.ini").read_text()

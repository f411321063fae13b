"""oneMKL's vector math functions pick their kernel on the first call in a process, and a first call split across
intra-op threads can run one thread's chunk with a low-accuracy kernel (pytorch/pytorch#188792). `ml_hpc.trainer` warms
every such function up, single-threaded, when it is imported (`warm_up_vml`, nbs/11_trainer.ipynb).

The race only shows in fresh processes, so this test starts many: half only import torch, half import ml_hpc.trainer
first; each then calls every function twice, multi-threaded, in float32 and float64, and reports the functions whose
first call differs from the second. Processes run a few at a time, protected and unprotected side by side, so both see
the same load (upstream reproduces the race best under CPU oversubscription)."""
import os, re, subprocess, sys
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
import pytest

PER_KIND, AT_ONCE = 16, 4
PROBE = """
import sys, torch
if sys.argv[1] == "protected": import ml_hpc.trainer
torch.set_num_threads(max(2, torch.get_num_threads()))
y = torch.ones(1 << 16); y = y + y  # wake the intra-op pool before the first math call
bad = []
for dtype in (torch.float32, torch.float64):
    x = torch.rand(8192, dtype=dtype) * 1e-6 + 1e-9 if dtype == torch.float32 else torch.rand(8192, dtype=dtype) * 0.9 + 0.05
    for name in sys.argv[2:]:
        f = getattr(torch, name); a, b = f(x), f(x)
        if not torch.equal(a, b): bad.append(f"{name}/{str(dtype)[6:]}")
print(" ".join(bad))
"""
# ATen's MKL-backed functions (IMPLEMENT_VML_MKL in ATen/cpu/vml.h), plus neighbours ATen computes itself, which must
# never differ either
FUNCS = ["sqrt", "exp", "log", "log2", "log10", "sin", "cos", "tan", "tanh", "asin", "acos", "atan", "erf", "erfc",
         "erfinv", "trunc", "expm1", "log1p", "rsqrt", "sigmoid"]

def probe(kind:str)->list:
    "Start a fresh Python, return the functions whose first multi-threaded call differed from the second."
    p = subprocess.run([sys.executable, "-c", PROBE, kind, *FUNCS], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout.split()

def cpu_model()->str:
    "The CPU's model name (from /proc/cpuinfo on Linux)."
    m = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text()) if Path("/proc/cpuinfo").exists() else None
    return m.group(1) if m else "unknown CPU"

def test_first_call_equals_second_in_fresh_processes():
    kinds = ["plain", "protected"] * PER_KIND
    with ThreadPoolExecutor(AT_ONCE) as ex: results = list(ex.map(probe, kinds))
    found = {k: [r for kind, r in zip(kinds, results) if kind == k] for k in ("plain", "protected")}
    hit = {k: sum(bool(r) for r in rs) for k, rs in found.items()}
    which = {k: sorted({f for r in rs for f in r}) for k, rs in found.items()}
    counted = (f"{cpu_model()}, {os.cpu_count()} CPUs: the first multi-threaded call of {len(FUNCS)} functions in float32 and "
               f"float64 differed from the second in {hit['plain']}/{PER_KIND} fresh processes without the warm-up {which['plain']} "
               f"and in {hit['protected']}/{PER_KIND} with it {which['protected']}")
    print(counted)
    assert hit["protected"] == 0, f"the warm-up did not protect: {counted}"
    if hit["plain"] == 0:
        pytest.skip(f"the oneMKL race did not show on this CPU, so the protected half (asserted: 0 mismatches) cannot show "
                    f"that the warm-up is what prevents it; upstream reproduced it on an Intel Xeon. Counted: {counted}")

"""How long a process that imported torch takes to exit, with and without `skip_exit_gc` (ml_hpc.core).

Every `mlhpc` process and every notebook job's kernel imports torch; the interpreter's final garbage collections then walk
all of torch's objects. Each sample is a fresh `python -c` that imports torch (and trains a few updates of a small MLP, so
the process looks like a training), notes the time, and exits; the exit time is from that note to the process's end, seen
by the parent. Samples alternate between the two variants; medians of `--samples` each are printed, and their ratio.
Usage: python bench/bench_exit.py [--samples 7]"""
import argparse, statistics, subprocess, sys, time

WORK = """import torch, time, os
m = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)); o = torch.optim.AdamW(m.parameters())
for _ in range(20): o.zero_grad(); m(torch.randn(32, 64)).sum().backward(); o.step()
{skip}
os.write(1, repr(time.monotonic()).encode())
"""

def exit_seconds(skip:bool)->float:
    code = WORK.format(skip="from ml_hpc.core import skip_exit_gc; skip_exit_gc()" if skip else "")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return time.monotonic() - float(p.stdout)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0]); ap.add_argument("--samples", type=int, default=7)
    n = ap.parse_args().samples
    plain, skip = [], []
    for _ in range(n): plain.append(exit_seconds(False)); skip.append(exit_seconds(True))
    a, b = statistics.median(plain), statistics.median(skip)
    print(f"exit of a process that trained with torch, median of {n}: {a:.3f} s plain, {b:.3f} s with skip_exit_gc "
          f"(ratio {b / a:.2f}, {a - b:.2f} s saved per process)")

if __name__ == "__main__": main()

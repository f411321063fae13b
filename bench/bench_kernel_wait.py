"""What waiting in steps costs the process that runs a notebook: jupyter_client's channels against `SteppedChannel`.

A notebook job's runner waits for each cell's reply (shell) and outputs (iopub) while the kernel computes. jupyter_client's
channels wait with one poll; `JobKernelClient`'s wait in `WAIT_STEP`-second polls, so a wake-up that pyzmq misses costs one step
instead of the whole job (nbs/26_notebook). This runs a cell that sleeps `--seconds` with each client, `--pairs` times in
alternation, and prints the CPU time of the waiting process (user + system) and the delay from the cell's end to its reply being
read. The cost of the steps is their ratio in CPU; the delay should not grow.
Usage: python bench/bench_kernel_wait.py [--seconds 20] [--pairs 3]"""
import argparse, asyncio, statistics, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jupyter_client.manager import AsyncKernelManager
from ml_hpc.notebook import JobKernelClient

async def one(client_factory, seconds:float)->tuple:
    "(CPU seconds of this process, seconds from the cell's end to its reply) while a kernel sleeps `seconds`."
    km = AsyncKernelManager(client_factory=client_factory); await km.start_kernel()
    kc = km.client(); kc.start_channels(); await kc.wait_for_ready(timeout=60)
    try:
        c0 = time.process_time()
        msg_id = kc.execute(f"import time; time.sleep({seconds}); end = time.time()")
        while (await kc.shell_channel.get_msg(timeout=None))["parent_header"].get("msg_id") != msg_id: pass
        got, cpu = time.time(), time.process_time() - c0
        kc.execute("end", user_expressions={"end": "end"}); reply = await kc.shell_channel.get_msg(timeout=30)
        return cpu, got - float(reply["content"]["user_expressions"]["end"]["data"]["text/plain"])
    finally: kc.stop_channels(); await km.shutdown_kernel(now=True)

def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--seconds", type=float, default=20); ap.add_argument("--pairs", type=int, default=3); a = ap.parse_args()
    from jupyter_client.asynchronous import AsyncKernelClient
    res = {"jupyter_client": [], "stepped": []}
    for i in range(a.pairs):
        for name, f in ([("jupyter_client", AsyncKernelClient), ("stepped", JobKernelClient)][::1 if i % 2 == 0 else -1]):
            res[name].append(asyncio.run(one(f, a.seconds)))
            print(f"pair {i + 1} {name:15s} CPU {res[name][-1][0] * 1000:7.1f} ms   reply read {res[name][-1][1] * 1000:6.1f} ms after the cell ended", flush=True)
    base, new = (statistics.median(c for c, _ in res[k]) for k in ("jupyter_client", "stepped"))
    print(f"median CPU of the waiting process over a {a.seconds:g} s cell: jupyter_client {base * 1000:.1f} ms, stepped {new * 1000:.1f} ms "
          f"({new / base:.2f}x, +{(new - base) / a.seconds * 1000:.2f} ms per second of cell)")
    print("median delay to read the reply: " + ", ".join(f"{k} {statistics.median(d for _, d in res[k]) * 1000:.1f} ms" for k in res))

if __name__ == "__main__": main()

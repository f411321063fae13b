"""Stress of exact resume: `mlhpc train` (dropout on, a linear LR warm-up over the first 20 updates, a checkpoint every 3
updates, an evaluation every 25) is SIGKILLed many times at chosen kinds of moments and rerun each time; every chain of
kills must end bit-identical to one uninterrupted run (torch.equal on every tensor of the final checkpoint, stats.csv
equal row for row). The kinds of moments, drawn in turn so each is hit:

- `after_resume`: within 30 ms of the attempt's "training from update N" log line (the first attempt too);
- `mid_save`: while a checkpoint write is in progress (a temporary file exists), the kill is counted as mid-save only if
  the temporary file is still there after it;
- `eval_boundary`: as soon as the training row of an evaluation update is written, while it evaluates and saves;
- `warmup`: at a random update of the LR warm-up stage (only while the run is still in it);
- `random`: at a random update up to 15 past the resume point, plus up to 50 ms.

The size fits the CI budget (KILLS, default 15 in chains of 5, about 1-2 minutes on an idle 2-core machine; MLHPC_STRESS_KILLS
overrides it, MLHPC_STRESS_SEED replays a seed). The seed and the counts are printed."""
import os, random, signal, time
import pytest, yaml
from test_resume import CONFIG, TOTAL, EVAL_EVERY, start, finish, wait_for, last_update, started_from, temps, assert_same_run

KILLS = int(os.environ.get("MLHPC_STRESS_KILLS", 15))
PER_CHAIN = 5
WARMUP = CONFIG["lr_scheduler"]["first_stage"]["num_updates"]
KINDS = ("after_resume", "mid_save", "eval_boundary", "warmup", "random")

def moment(kind, run_dir, p, attempt, before, rnd):
    "Wait for a moment of `kind` in attempt `attempt` (process `p`); the update it aimed at, or None if that kind cannot happen any more in this run."
    u0 = wait_for(lambda: started_from(run_dir, attempt), p, f"attempt {attempt} started")
    if kind == "after_resume": time.sleep(rnd.uniform(0, 0.03)); return u0
    if kind == "mid_save":
        if u0 >= TOTAL - 15: return None
        wait_for(lambda: bool(temps(run_dir) - before) or last_update(run_dir) >= TOTAL - 10, p, "a checkpoint write")
        return last_update(run_dir)
    if kind == "eval_boundary":
        b = (u0 // EVAL_EVERY + 1) * EVAL_EVERY
        if b >= TOTAL: return None
        wait_for(lambda: last_update(run_dir) >= b, p, f"update {b}")
        return b
    hi = WARMUP - 1 if kind == "warmup" else min(u0 + 15, TOTAL - 10)
    if hi <= u0: return None
    target = rnd.randint(u0 + 1, hi)
    wait_for(lambda: last_update(run_dir) >= target, p, f"update {target}")
    if kind == "random": time.sleep(rnd.uniform(0, 0.05))
    return target

def chain(config, run_dir, rnd, kinds, counts):
    "Kill one run at the moments `kinds` (skipping those no longer possible), then let it complete."
    attempt = 0
    for kind in kinds:
        before, p = temps(run_dir), start(config, run_dir)
        attempt += 1
        try: at = moment(kind, run_dir, p, attempt, before, rnd)
        finally:
            alive = p.poll() is None
            if alive: os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        assert alive, f"attempt {attempt} ended by itself before the kill (exit {p.returncode})"
        mid = bool(temps(run_dir) - before)
        counts["kills"] += 1; counts[kind] += at is not None; counts["mid_save_hits"] += mid
        print(f"  kill {counts['kills']}: {kind if at is not None else 'skipped ' + kind + ' (no longer possible), at once'}"
              f"{f' at update {at}' if at is not None else ''}{' [mid-save]' if mid else ''}")
    finish(start(config, run_dir), run_dir)
    assert not temps(run_dir), "temporary files of killed saves were left behind"
    st = yaml.safe_load((run_dir/"status.json").read_text())
    assert st["state"] == "completed" and st["attempt"] == attempt + 1, st

def test_many_sigkills_at_chosen_moments_end_bit_identical(tmp_path):
    seed = int(os.environ.get("MLHPC_STRESS_SEED", random.randrange(2**32)))
    rnd = random.Random(seed)
    print(f"stress: random seed {seed} (MLHPC_STRESS_SEED={seed} replays it), {KILLS} kills")
    config = tmp_path/"config.yaml"; config.write_text(yaml.safe_dump(CONFIG))
    ref = finish(start(config, tmp_path/"ref"), tmp_path/"ref")
    order = [KINDS[i % len(KINDS)] for i in range(KILLS)]
    rnd.shuffle(order)
    counts = {k: 0 for k in ("kills", "mid_save_hits", *KINDS)}
    chains, mismatches, t0 = 0, [], time.monotonic()
    for i in range(0, KILLS, PER_CHAIN):
        kinds = order[i:i + PER_CHAIN]
        kinds = sorted(kinds, key=lambda k: k != "warmup")  # warm-up kills first, while the run is still in that stage
        chains += 1; run = tmp_path/f"run{chains}"
        print(f"chain {chains}: {kinds}")
        chain(config, run, rnd, kinds, counts)
        try: assert_same_run(run, ref)
        except AssertionError as e: mismatches.append(f"chain {chains}: {e}")
    print(f"stress: seed {seed}, {chains} chains, {counts['kills']} kills {counts}, "
          f"{len(mismatches)} mismatches, {time.monotonic() - t0:.0f} s")
    assert not mismatches, mismatches
    assert counts["kills"] == KILLS and all(counts[k] for k in KINDS) and counts["mid_save_hits"], counts

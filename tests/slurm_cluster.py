"""A real single-node SLURM cluster on loopback, for the test suite.

    python tests/slurm_cluster.py start DIR   # prints `export SLURM_CONF=DIR/slurm.conf`
    python tests/slurm_cluster.py status DIR
    python tests/slurm_cluster.py stop DIR

`start` writes `DIR/slurm.conf` (free ports, state, spool and logs inside DIR), starts
`slurmctld` and `slurmd` as root and waits until the node is idle. Every client call needs
`SLURM_CONF` pointing at that file. `stop` cancels the cluster's jobs and ends its daemons by
the PIDs recorded in DIR (TERM, then KILL). Both are idempotent and cope with a stale DIR.
Needs the Debian packages `slurmctld slurmd slurm-client` (`make test` installs them).
"""
from __future__ import annotations
import os, shutil, signal, socket, subprocess, sys, time
from pathlib import Path

DAEMONS = ("slurmctld", "slurmd")
CLIENTS = ("sinfo", "squeue", "sbatch", "srun", "scontrol", "scancel")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
            "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "FINISHED"}
MARKER, OWNER = "MLHPC_TEST_SLURM_DIR", "MLHPC_TEST_SLURM_OWNER"
UP = {"idle", "mixed", "allocated", "completing"}

class ClusterError(RuntimeError):
    "The test cluster could not be started, stopped or used."

def find_binary(name:str # a Slurm command such as `slurmctld`
               )->str|None:
    "Full path of a Slurm binary, looking in PATH and the sbin directories."
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
    return shutil.which(name, path=path)

def check_binaries()->dict:
    "Paths of every Slurm binary the tests use; fail loudly when any is missing."
    found = {n: find_binary(n) for n in DAEMONS + CLIENTS}
    missing = [n for n, p in found.items() if p is None]
    if missing: raise ClusterError(
        f"Slurm binaries not found: {', '.join(missing)}. HINT: run `make test`, which installs "
        "them (apt-get install -y slurmctld slurmd slurm-client).")
    if os.geteuid() != 0: raise ClusterError(
        "the loopback test cluster runs its daemons as root (SlurmUser=root). HINT: run the tests as root, as CI does.")
    return found

def free_ports(n:int=2 # how many distinct ports
              )->list[int]:
    "Ports on 127.0.0.1 that nobody listens on right now."
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks: s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks: s.close()

def real_memory_mb()->int:
    "A RealMemory (MB) safely below this machine's total, so slurmd accepts the node."
    kb = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal:"))
    return max(1, int(kb / 1024 * 0.9))

def node_name()->str:
    "The short host name slurmd will look for in `NodeName`."
    return socket.gethostname().split(".")[0]

def slurm_conf(d:Path, # the cluster directory
               ctld_port:int, # SlurmctldPort
               slurmd_port:int, # SlurmdPort
               host:str, # NodeName and SlurmctldHost
               cpus:int, # CPUs of the node
               mem_mb:int, # RealMemory of the node
              )->str:
    "Text of a single-node `slurm.conf` that keeps every file inside `d`."
    return f"""\
ClusterName=mlhpctest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/none
CredType=cred/none
AuthInfo=cred_expire=5
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SwitchType=switch/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ReturnToService=2
SchedulerParameters=sched_interval=2,bf_interval=1
KillWait=5
JobRequeue=1
MinJobAge=60
MaxJobCount=10000
InactiveLimit=0
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""

def cluster_env(d:Path # the cluster directory
               )->dict:
    "`os.environ` plus the `SLURM_CONF` of the cluster in `d`."
    return {**os.environ, "SLURM_CONF": str(Path(d).resolve()/"slurm.conf")}

def read_pid(d:Path, # the cluster directory
             daemon:str # `slurmctld` or `slurmd`
            )->int|None:
    "PID recorded for `daemon` in `d`, if any."
    try: return int((Path(d)/f"{daemon}.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError): return None

def proc_environ(pid:int)->dict:
    "Environment of process `pid` (empty when it is gone or unreadable)."
    try: raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError: return {}
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)

def alive(pid:int|None)->bool:
    "Is `pid` a running (not zombie) process?"
    if not pid: return False
    try: stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError: return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")

def ours(pid:int|None, # a PID read from the cluster directory
         d:Path # the cluster directory
        )->bool:
    "Is `pid` alive and started for the cluster in `d` (guards against reused PIDs)?"
    return alive(pid) and proc_environ(pid).get(MARKER) == str(Path(d).resolve())

def daemon_pids(d:Path # the cluster directory
               )->dict:
    "`{daemon: pid}` for the daemons of `d` that are running now."
    return {n: p for n in DAEMONS if ours(p := read_pid(d, n), d)}

def spool_sockets(d:Path # the cluster directory
                 )->set[str]:
    "Inodes of the unix sockets bound under `d/spool` (slurmstepd binds one per job step)."
    spool = str(Path(d).resolve()/"spool") + "/"
    try: rows = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError: return set()
    return {r.split()[6] for r in rows if len(r.split()) > 7 and r.split()[7].startswith(spool)}

def holds_socket(pid:int, # a process
                 inodes:set[str] # socket inodes
                )->bool:
    "Does `pid` have one of the sockets `inodes` open?"
    try: return any(os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] in inodes for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError: return False

def strays(d:Path # the cluster directory
          )->list[int]:
    "Processes the cluster in `d` left behind: slurmstepd (by its spool socket) and job processes (by SLURM_CONF)."
    root, me = Path(d).resolve(), os.getpid()
    conf, inodes = str(root/"slurm.conf"), spool_sockets(root)
    def match(pid):
        env = proc_environ(pid)
        return (env.get(MARKER) == str(root) or (env.get("SLURM_CONF") == conf and "SLURM_JOB_ID" in env)
                or (bool(inodes) and holds_socket(pid, inodes)))
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != me and match(int(p))]

def terminate(pids:list[int], # processes to end
              grace:float=10 # seconds between TERM and KILL
             ):
    "Send TERM, wait up to `grace` seconds, then KILL whatever is left."
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try: os.kill(p, sig)
            except ProcessLookupError: pass
        deadline = time.monotonic() + grace
        while (pids := [p for p in pids if alive(p)]) and time.monotonic() < deadline: time.sleep(0.05)
        if not pids: return

def log_tail(d:Path, # the cluster directory
             n:int=25 # lines per log
            )->str:
    "The last `n` lines of each daemon log, for error messages."
    out = []
    for name in DAEMONS:
        f = Path(d)/"log"/f"{name}.log"
        lines = f.read_text(errors="replace").splitlines()[-n:] if f.exists() else ["(no log)"]
        out.append(f"--- {f} ---\n" + "\n".join(lines))
    return "\n".join(out)

def run_client(args:list, # a client command, e.g. ['sinfo', '-h']
               env:dict, # environment with SLURM_CONF
               timeout:float=15 # seconds
              )->subprocess.CompletedProcess:
    "Run a Slurm client command, capturing text output; never raises on failure."
    try: return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(args, 124, e.stdout or "", f"timed out after {timeout} s")

def node_state(d:Path # the cluster directory
              )->str:
    "State of the node as `sinfo` reports it (e.g. `idle`), or the error text."
    r = run_client(["sinfo", "-h", "-N", "-o", "%30T"], cluster_env(d), timeout=5)
    return r.stdout.strip() if r.returncode == 0 else f"sinfo failed: {r.stderr.strip()}"

def wait_idle(d:Path, # the cluster directory
              timeout:float=60 # seconds
             ):
    "Wait until the node is idle; raise with the daemon logs if it is not."
    deadline, state = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        if (state := node_state(d)) == "idle": return
        if dead := [n for n in DAEMONS if not ours(read_pid(d, n), d)]:
            raise ClusterError(f"{', '.join(dead)} exited while starting\n{log_tail(d)}")
        time.sleep(0.2)
    reason = run_client(["sinfo", "-h", "-N", "-o", "%E"], cluster_env(d), timeout=5).stdout.strip()
    raise ClusterError(f"node not idle after {timeout} s (state {state!r}, reason {reason!r})\n{log_tail(d)}")

def start_daemon(d:Path, # the cluster directory
                 args:list, # command line
                 daemon:str, # `slurmctld` or `slurmd`
                 owner:int|None=None, # PID of the process the cluster lives for, if any
                 timeout:float=20 # seconds to wait for its PID file
                ):
    "Start a daemonising Slurm daemon and wait until it has recorded its PID in `d`."
    env = {**os.environ, MARKER: str(Path(d).resolve()), "SLURM_CONF": str(Path(d).resolve()/"slurm.conf")}
    if owner: env[OWNER] = str(owner)
    r = subprocess.run(args, env=env, capture_output=True, text=True, cwd=d, timeout=timeout)
    if r.returncode != 0:
        raise ClusterError(f"{' '.join(map(str, args))} exited {r.returncode}: {r.stderr.strip()}\n{log_tail(d)}")
    deadline = time.monotonic() + timeout
    while not ours(read_pid(d, daemon), d):
        if time.monotonic() > deadline: raise ClusterError(f"{daemon} did not start\n{log_tail(d)}")
        time.sleep(0.05)

def start_cluster(d, # directory for config, state, spool and logs; created if needed
                  timeout:float=60, # seconds to wait for the node to become idle
                  owner:int|None=None # PID whose death makes the cluster an orphan (see `stop_orphans`)
                 )->dict:
    "Start (or reuse) the cluster in `d`; return the environment clients need."
    bins, d = check_binaries(), Path(d).resolve()
    if len(f"{d}/spool/{node_name()}_4294967294.4294967294") > 107: raise ClusterError(
        f"cluster directory {d} is too long for slurmstepd's unix sockets. HINT: use a shorter path (e.g. under /tmp).")
    if set(daemon_pids(d)) == set(DAEMONS) and node_state(d) in UP: return cluster_env(d)
    stop_cluster(d)
    for sub in ("state", "spool", "log"):
        shutil.rmtree(d/sub, ignore_errors=True); (d/sub).mkdir(parents=True)
    for n in DAEMONS: (d/f"{n}.pid").unlink(missing_ok=True)
    conf = d/"slurm.conf"
    conf.write_text(slurm_conf(d, *free_ports(2), node_name(), os.cpu_count() or 1, real_memory_mb()))
    try:
        start_daemon(d, [bins["slurmctld"], "-c", "-f", conf], "slurmctld", owner)
        start_daemon(d, [bins["slurmd"], "-f", conf], "slurmd", owner)
        wait_idle(d, timeout)
    except BaseException:
        stop_cluster(d); raise
    return cluster_env(d)

def cancel_jobs(d:Path, # the cluster directory
                timeout:float=15 # seconds to wait for the queue to drain
               ):
    "Cancel every job of the cluster and wait until none is left running."
    env = cluster_env(d)
    jobs = run_client(["squeue", "-h", "-o", "%i"], env, timeout=5).stdout.split()
    if not jobs: return
    run_client(["scancel", "--full", *jobs], env, timeout=5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not run_client(["squeue", "-h", "-t", "PD,R,CG,S,CF,RQ,RS,SE", "-o", "%i"], env, timeout=5).stdout.split(): return
        time.sleep(0.2)

def stop_cluster(d # the cluster directory
                ):
    "Stop the cluster in `d`: cancel its jobs, end its daemons by PID, then any process it left."
    d = Path(d).resolve()
    if not d.exists(): return
    running = daemon_pids(d)
    if "slurmctld" in running and (d/"slurm.conf").exists(): cancel_jobs(d)
    terminate(list(running.values()))
    terminate(strays(d), grace=2)
    for n in DAEMONS: (d/f"{n}.pid").unlink(missing_ok=True)

def stop_orphans()->list[str]:
    "Stop clusters whose owner (a test session) died without stopping them; return their directories."
    orphans = {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        env = proc_environ(int(p))
        if MARKER in env and env.get(OWNER, "").isdigit() and not alive(int(env[OWNER])):
            orphans.setdefault(env[MARKER], []).append(int(p))
    for d, pids in orphans.items():
        terminate(pids); terminate(strays(d), grace=2)
        for n in DAEMONS: (Path(d)/f"{n}.pid").unlink(missing_ok=True)
    return list(orphans)

def status(d # the cluster directory
          )->str:
    "One line per daemon plus the node state."
    d, pids = Path(d).resolve(), daemon_pids(d)
    lines = [f"{n}: " + (f"running, pid {pids[n]}" if n in pids else "not running") for n in DAEMONS]
    return "\n".join(lines + [f"node: {node_state(d) if 'slurmctld' in pids else 'unknown'}"])

class SlurmCluster:
    "A started cluster: its directory, client environment and helpers for tests."
    def __init__(self, d): # directory for the cluster's files
        "Stop clusters left by dead test sessions, then start one in `d` owned by this process."
        stop_orphans()
        self.dir, self.env = Path(d).resolve(), start_cluster(d, owner=os.getpid())
    def __repr__(self): return f"SlurmCluster({str(self.dir)!r})"
    def stop(self): stop_cluster(self.dir)

    def run(self, cmd:list, # command and arguments, e.g. ['sbatch', '--parsable', ...]
            check:bool=True, # raise, showing stderr, when the command fails
            timeout:float=60, # seconds
            **kwargs # passed on to `subprocess.run`
           )->subprocess.CompletedProcess:
        "Run `cmd` with the cluster's environment, capturing text output."
        r = subprocess.run([str(c) for c in cmd], env=self.env, capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and r.returncode != 0:
            raise ClusterError(f"{' '.join(map(str, cmd))} exited {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}")
        return r

    def sbatch(self, *args)->str:
        "Submit a batch job with `sbatch --parsable ARGS`; return its id."
        return self.run(["sbatch", "--parsable", *args]).stdout.strip().split(";")[0]

    def job_state(self, job_id)->str:
        "Current state of `job_id`: from `squeue` while queued or running, else `scontrol`, else `FINISHED`."
        r = self.run(["squeue", "-h", "-j", job_id, "-o", "%T"], check=False)
        if r.returncode == 0 and r.stdout.strip(): return r.stdout.split()[0]
        r = self.run(["scontrol", "-o", "show", "job", job_id], check=False)
        if r.returncode != 0 and "Invalid job id" not in r.stderr:
            raise ClusterError(f"cannot read job {job_id}: {r.stderr.strip()}")
        fields = dict(f.split("=", 1) for f in r.stdout.split() if "=" in f)
        return fields.get("JobState", "FINISHED")

    def wait_state(self, job_id, # the job to watch
                   states, # a state or states to wait for; `FINISHED` means any final state
                   timeout:float=60 # seconds
                  )->str:
        "Poll until `job_id` is in one of `states`; return the state, raise if it cannot get there."
        want = {states} if isinstance(states, str) else set(states)
        deadline = time.monotonic() + timeout
        while True:
            state = self.job_state(job_id)
            if state in want or ("FINISHED" in want and state in TERMINAL): return state
            if state in TERMINAL or time.monotonic() > deadline:
                why = "ended" if state in TERMINAL else f"still there after {timeout} s"
                info = self.run(["scontrol", "show", "job", job_id], check=False).stdout
                raise ClusterError(f"job {job_id} {why} in state {state}, wanted {sorted(want)}\n{info}")
            time.sleep(0.2)

def main(argv:list[str]):
    "Command line: `start DIR`, `stop DIR` or `status DIR`."
    if len(argv) != 2 or argv[0] not in ("start", "stop", "status"):
        sys.exit("usage: python tests/slurm_cluster.py {start|stop|status} DIR")
    cmd, d = argv[0], Path(argv[1])
    try:
        if cmd == "start":
            t = time.monotonic(); env = start_cluster(d)
            print(f"export SLURM_CONF={env['SLURM_CONF']}")
            print(f"cluster up in {time.monotonic()-t:.1f} s", file=sys.stderr)
        elif cmd == "stop":
            t = time.monotonic(); stop_cluster(d)
            print(f"cluster stopped in {time.monotonic()-t:.1f} s", file=sys.stderr)
        else:
            print(status(d)); sys.exit(0 if set(daemon_pids(d)) == set(DAEMONS) and node_state(d) in UP else 1)
    except ClusterError as e: sys.exit(f"error: {e}")

if __name__ == "__main__": main(sys.argv[1:])

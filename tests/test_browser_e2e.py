"""`RunBrowser` end to end: real runs, a notebook showing `RunBrowser(root)` served by Voilà on loopback, opened in headless
Chromium (Debian's chromium and chromium-driver); choosing another value in a filter must change the plot and the runs it names.
The screenshot is kept in $MLHPC_TEST_ARTIFACTS (default <repo>/.test-artifacts/).

Voilà runs with the kernel client that the README tells Voilà users to pass (`ml_hpc.notebook.JobKernelClient`). With Voilà's
own, the page hung once on "Running ..." in about a dozen `make test` runs: Voilà waits for the cell's reply with one poll of a
pyzmq asyncio socket and no time limit, and pyzmq can miss the socket's wake-up. Loading the page in a loop while Voilà kept the
sockets of killed kernels reproduced it 8 times out of 8, within 16 to 93 loads (ipykernel 7; once with 6, so not the kernel).
At the hang the kernel answered another client at once, and the reply was waiting unread in Voilà's shell socket: reading that
socket's events released the page. The same loop with JobKernelClient, whose channels poll in one-second steps, loaded the page
400 times without a hang (nbs/26_notebook, "Waiting for the kernel's replies")."""
import json, os, shutil, signal, socket, subprocess, sys, time
from pathlib import Path
from types import SimpleNamespace
import pytest
from helpers import ROOT, MLHPC

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1400,2000"]  # ../shared/NOTES.md: without the networking flags it stalls here
VOILA_CLIENT = "--KernelManager.client_factory=ml_hpc.notebook.JobKernelClient"  # README: Voilà's own client can wait for ever (above)
SERVE_WAIT, PAGE_WAIT, CHANGE_WAIT = 180, 240, 120  # seconds: Voilà starting, the first kernel and widgets (10+ s on a loaded machine), a redraw

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a dev requirement (make install)")
pytest.importorskip("voila", reason="voila is a dev requirement (make install)")
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()): pytest.skip("needs Debian's chromium and chromium-driver (make sysdeps)", allow_module_level=True)
from selenium.webdriver.common.by import By
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.support.ui import Select, WebDriverWait

def artifacts()->Path:
    "The folder for test artifacts: $MLHPC_TEST_ARTIFACTS, or <repo>/.test-artifacts."
    d = Path(os.environ.get("MLHPC_TEST_ARTIFACTS") or ROOT/".test-artifacts"); d.mkdir(parents=True, exist_ok=True)
    return d

def free_port()->int:
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def wait_for_port(port:int, proc:subprocess.Popen, timeout:float):
    "Until something listens on 127.0.0.1:`port`; fails if `proc` ends first."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"voila exited {proc.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1): return
        except OSError: time.sleep(0.2)
    raise AssertionError(f"voila did not listen on port {port} within {timeout} s")

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "Three real runs: learning rates 1e-3 (seeds 0, 1) and 3e-3 (seed 0), 40 updates each."
    root = tmp_path_factory.mktemp("browser")/"runs"
    sets = ["total_updates=40", "updates_per_epoch=10", "lr_scheduler.first_stage.num_updates=10", "model.hidden_dim=16"]
    ps = [subprocess.Popen(MLHPC + ["train", str(ROOT/"examples/digits.yaml"), "--run-dir", str(root/f"lr={lr}"/f"seed={seed}"), "--set", f"optimizer.learning_rate={lr}",
                                    "--set", f"seed={seed}"] + [a for s in sets for a in ("--set", s)], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for lr, seed in [(0.001, 0), (0.001, 1), (0.003, 0)]]
    assert [p.wait(timeout=300) for p in ps] == [0, 0, 0], [p.stderr.read()[-2000:] for p in ps]
    return root

def browser_notebook(path:Path, root:Path):
    "A notebook whose only cell shows `RunBrowser(root)`."
    cell = {"cell_type": "code", "execution_count": None, "id": "browse", "metadata": {}, "outputs": [],
            "source": f"from ml_hpc.browser import RunBrowser\nRunBrowser({str(root)!r}, png_path={str(path.parent/'saved.png')!r}, cache=False)"}
    path.write_text(json.dumps({"cells": [cell], "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}},
                                "nbformat": 4, "nbformat_minor": 5}))

@pytest.fixture
def voila(runs, tmp_path):
    "The browser notebook served by Voilà on loopback (default settings): its `.url` and the server's `.proc`, stopped by PID afterwards."
    nb = tmp_path/"browse.ipynb"; browser_notebook(nb, runs)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep), "OMP_NUM_THREADS": "1",
           "PYTHONFAULTHANDLER": "1"}  # a server or kernel that hangs prints its threads' stacks into voila.log when `dump_stacks` aborts it
    log = open(tmp_path/"voila.log", "w")
    p = subprocess.Popen([sys.executable, "-m", "voila", str(nb), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1", VOILA_CLIENT],
                         cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, p, SERVE_WAIT)
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}/", proc=p)
    finally:
        p.terminate()
        try: p.wait(timeout=30)
        except subprocess.TimeoutExpired: p.kill(); p.wait()
        log.close()
        print(f"voila log: {tmp_path/'voila.log'}\n" + (tmp_path/"voila.log").read_text()[-20000:])

def dump_stacks(proc:subprocess.Popen):
    "Abort Voilà's kernels, then Voilà: with PYTHONFAULTHANDLER each prints every thread's stack into voila.log, so a hang says where it hangs."
    kids = [pid for t in Path(f"/proc/{proc.pid}/task").iterdir() for pid in (t/"children").read_text().split()]
    for pid in kids + [str(proc.pid)]:
        try: os.kill(int(pid), signal.SIGABRT)
        except ProcessLookupError: pass
    time.sleep(2)

@pytest.fixture
def chromium(tmp_path):
    "Headless Chromium with a fresh profile, quit afterwards."
    o = webdriver.ChromeOptions(); o.binary_location = CHROMIUM
    for f in CHROME_FLAGS + [f"--user-data-dir={tmp_path/'chromium-profile'}"]: o.add_argument(f)
    d = webdriver.Chrome(options=o, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try: yield d
    finally: d.quit()

def runs_drawn(d)->str:
    "The text of the browser's line naming the runs drawn ('' until it is shown)."
    return next((e.text for e in d.find_elements(By.CSS_SELECTOR, ".widget-html") if "runs drawn" in e.text), "")

def plot_src(d)->str:
    "The src of the figure's image in the browser's output area ('' until it is shown)."
    imgs = d.find_elements(By.CSS_SELECTOR, ".widget-output img")
    return imgs[0].get_attribute("src") if imgs else ""

def filter_select(d, key:str):
    "The <select multiple> of the filter on `key`."
    box = next(e for e in d.find_elements(By.CSS_SELECTOR, ".widget-select-multiple") if e.find_element(By.TAG_NAME, "label").text == key)
    return Select(box.find_element(By.TAG_NAME, "select"))

def test_choosing_a_filter_value_changes_the_plot_in_a_real_browser(voila, chromium):
    shot = artifacts()/"browser_e2e.png"
    try:
        t0 = time.monotonic()
        chromium.get(voila.url)
        WebDriverWait(chromium, PAGE_WAIT, poll_frequency=0.5).until(lambda d: "3 of 3 runs drawn" in runs_drawn(d) and plot_src(d).startswith("data:image/png"),
                                                                     "the browser did not show its figure and the three runs")
        t_shown = time.monotonic() - t0
        before, src = runs_drawn(chromium), plot_src(chromium)
        assert all(r in before for r in ("lr=0.001/seed=0", "lr=0.001/seed=1", "lr=0.003/seed=0")), before
        keys = [e.text for e in chromium.find_elements(By.CSS_SELECTOR, ".widget-select-multiple label")]
        assert keys == ["seed", "optimizer.learning_rate"], keys  # the keys that vary, and only those
        lr = filter_select(chromium, "optimizer.learning_rate")
        assert [o.text for o in lr.options] == ["0.001", "0.003"], lr._el.get_attribute("outerHTML")
        assert [o.is_selected() for o in lr.options] == [True, True]  # every value chosen at first
        ActionChains(chromium).click(lr.options[1]).perform()  # a plain click in a list box chooses that value alone
        t1 = time.monotonic()
        WebDriverWait(chromium, CHANGE_WAIT, poll_frequency=0.2).until(lambda d: "1 of 3 runs drawn" in runs_drawn(d) and plot_src(d) not in ("", src),
                                                                       "the figure and the runs drawn did not change after the filter changed")
        t_change = time.monotonic() - t1
        after = runs_drawn(chromium)
        assert "lr=0.003/seed=0" in after and "lr=0.001" not in after, after
        rows = [r.text for r in chromium.find_elements(By.CSS_SELECTOR, "table.mlhpc-summary tbody tr")]
        assert len(rows) == 1 and rows[0].startswith("lr=0.003/seed=0"), rows
        print(f"widgets shown after {t_shown:.1f} s, redrawn {t_change:.1f} s after the filter changed")
    except BaseException:
        dump_stacks(voila.proc)
        raise
    finally:
        assert chromium.save_screenshot(str(shot)) and shot.read_bytes()[:4] == b"\x89PNG"
        print(f"screenshot: {shot}")

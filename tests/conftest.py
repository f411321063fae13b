"""Shared pytest set-up: the `slurm` marker, a real loopback SLURM cluster for the session, and how `make test` splits the tests
between its two pytest-xdist workers."""
import os
import pytest
from slurm_cluster import SlurmCluster

def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: needs the real loopback SLURM cluster (the `slurm` fixture)")

@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    "A single-node SLURM cluster on 127.0.0.1: `.env`, `.run(cmd)`, `.sbatch(*args)`, `.wait_state(id, states, timeout)`."
    if os.environ.get("PYTEST_XDIST_WORKER"):  # one cluster per session: a second one would run its own job 1 (same rendezvous port)
        owner = tmp_path_factory.getbasetemp().parent/"slurm-cluster-worker"
        try: os.close(os.open(owner, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError: pytest.fail("a second SLURM cluster in this test session: mark the test `slurm` (pytest.mark.slurm) so it runs in the cluster's worker")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try: yield cluster
    finally: cluster.stop()

@pytest.fixture(scope="session")
def time_limit_jobs(slurm, tmp_path_factory):
    "The config and notebook jobs that outlive a 1-minute limit, submitted side by side when a test first asks (tests/time_limit_jobs.py)."
    from time_limit_jobs import submit_both
    jobs = submit_both(slurm, tmp_path_factory.mktemp("time-limit"))
    try: yield jobs
    finally:
        for j in jobs.values(): j.reference.kill()

@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns the xdist_group marks into the groups it schedules by
def pytest_collection_modifyitems(config, items):
    """`make test` runs two pytest-xdist workers (`--dist loadgroup`). Every test that uses the cluster (the `slurm` fixture or
    marker) goes to one worker, so one cluster is started; the long SLURM tests mostly wait for the cluster's clock, so the other worker runs the rest beside them.
    Other tests stay with their module (module-scoped fixtures, such as the reference runs, are computed once)."""
    for item in items:
        cluster = "slurm" in item.fixturenames or item.get_closest_marker("slurm") is not None  # the marker: tests that ask for it later
        item.add_marker(pytest.mark.xdist_group("slurm" if cluster else item.module.__name__))

UNGROUPED = ("pytest-xdist did not group the tests with this pytest (pytest-xdist issue 1386): two SLURM clusters would run at once; "
             "reinstall with `make test` (dev_requirements pins pytest<9.2)")

def pytest_collection_finish(session):
    "Notice when pytest-xdist did not turn the groups into its schedule (it silently stopped grouping with pytest 9.2)."
    items = session.items
    session.config.ungrouped = getattr(session.config.option, "loadgroup", False) and bool(items) and not any("@" in i.nodeid for i in items)

def pytest_runtest_setup(item):
    if getattr(item.config, "ungrouped", False): pytest.fail(UNGROUPED)

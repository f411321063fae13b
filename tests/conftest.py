"""Shared pytest set-up: the `slurm` marker, a real loopback SLURM cluster for the session, and how `make test` splits the tests
between its two pytest-xdist workers."""
import pytest
from slurm_cluster import SlurmCluster

def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: needs the real loopback SLURM cluster (the `slurm` fixture)")

@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    "A single-node SLURM cluster on 127.0.0.1: `.env`, `.run(cmd)`, `.sbatch(*args)`, `.wait_state(id, states, timeout)`."
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try: yield cluster
    finally: cluster.stop()

def pytest_collection_modifyitems(config, items):
    """`make test` runs two pytest-xdist workers (`--dist loadgroup`). Every test that uses the cluster goes to one worker, so one
    cluster is started; the long SLURM tests mostly wait for the cluster's clock, so the other worker runs the rest beside them.
    Other tests stay with their module (module-scoped fixtures, such as the reference runs, are computed once)."""
    for item in items:
        item.add_marker(pytest.mark.xdist_group("slurm" if "slurm" in item.fixturenames else item.module.__name__))

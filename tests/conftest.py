"Shared pytest set-up: the `slurm` marker and a real loopback SLURM cluster for the session."
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

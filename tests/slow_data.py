"""A data set that is slow to read, like one on a busy network file system: its training takes wall time, not CPU.

Tests that need a training longer than a SLURM attempt use it (`data.name: tests.slow_data:slow_digits`, from the repository root):
the wall time per update is set by `delay`, so such a run outlasts a 1-minute limit whatever the machine's load, and leaves the CPU to
the rest of the test suite."""
import time
from types import SimpleNamespace
from torch.utils.data import Dataset
from ml_hpc.data import digits_data

class SlowDataset(Dataset):
    "A dataset whose every sample takes `delay` seconds to read."
    def __init__(self, ds, delay): self.ds, self.delay = ds, delay
    def __len__(self): return len(self.ds)
    def __getitem__(self, i):
        time.sleep(self.delay)
        return self.ds[i]

def slow_digits(delay:float=0.0005, # seconds to read one training sample
                val_fraction:float=0.2): # share held out for validation
    "scikit-learn's digits, the training samples read slowly."
    tr, va, info = digits_data(SimpleNamespace(val_fraction=val_fraction))
    return SlowDataset(tr, delay), va, info

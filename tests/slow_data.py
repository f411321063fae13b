"""A data set that is slow to read, like one on a busy network file system: its training takes wall time, not CPU.

Tests that need a training longer than a SLURM attempt use it (`data.name: tests.slow_data:slow_digits`, from the repository root):
every batch of training samples takes `delay` seconds to read, so 2,000 updates last more than 60 s whatever the machine's load,
and such a run leaves the CPU to the rest of the suite (its uninterrupted reference can run beside the SLURM job it is compared with)."""
import time
from pathlib import Path
from types import SimpleNamespace
from torch.utils.data import Dataset
from ml_hpc.data import digits_data

class SlowDataset(Dataset):
    "A dataset whose every batch takes `delay` seconds to read."
    def __init__(self, ds, delay): self.ds, self.delay = ds, delay
    def __len__(self): return len(self.ds)
    def __getitem__(self, i): return self.ds[i]
    def __getitems__(self, indices):  # what DataLoader calls for a whole batch
        time.sleep(self.delay)
        return [self.ds[i] for i in indices]

def slow_digits(delay:float=0.03, # seconds to read one batch of training samples
                val_fraction:float=0.2): # share held out for validation
    "scikit-learn's digits, the training batches read slowly."
    tr, va, info = digits_data(SimpleNamespace(val_fraction=val_fraction))
    return SlowDataset(tr, delay), va, info

class PausedDataset(SlowDataset):
    "A dataset whose batches hang while the file `pause` exists, as a read from a stalled file system does; `pause`.waiting says one hangs."
    def __init__(self, ds, pause): super().__init__(ds, 0.); self.pause = Path(pause)
    def __getitems__(self, indices):
        if self.pause.exists():
            Path(f"{self.pause}.waiting").touch()
            while self.pause.exists(): time.sleep(0.05)
        return [self.ds[i] for i in indices]

def paused_digits(pause:str, # while this file exists, reading a training batch hangs
                  val_fraction:float=0.2): # share held out for validation
    "scikit-learn's digits, the training batches hanging while the file `pause` exists."
    tr, va, info = digits_data(SimpleNamespace(val_fraction=val_fraction))
    return PausedDataset(tr, pause), va, info

import os

from pfbench import limit_blas_threads

limit_blas_threads()  # one BLAS thread, as in production: before numpy/torch load their BLAS

import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _one_thread():
    # Small tensors: a second thread only adds contention on the 2-core CI machine.
    torch.set_num_threads(1)
    yield

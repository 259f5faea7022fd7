"""pfbench: do GANs and VAEs learn pushforward distributions x = F(g), g ~ N(0, I)?

Ground-truth families (``pfbench.families``), learned generators (``pfbench.models``),
provable/moment estimators (``pfbench.recovery``) and one shared evaluation
(``pfbench.metrics``), wired together by ``python -m pfbench.train``.
"""

import os
from pathlib import Path

__version__ = "0.1.0"

#: Repository root (holds ``conf/``); the package is installed editable (``pip install -e .``).
ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"


class ConfigError(ValueError):
    """A bad configuration or input, reported as one line naming the value and the fix."""


def limit_blas_threads() -> None:
    """Default numpy's BLAS to one thread (call before numpy is imported; entry points do).

    Small matrix products dominate the evaluation and the downstream tasks; with 2 BLAS threads on
    a loaded 2-core machine they ran ~40x slower than with one. Export OPENBLAS_NUM_THREADS /
    MKL_NUM_THREADS to override; torch's threads are the config's ``threads`` key.
    """
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

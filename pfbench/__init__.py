"""pfbench: do GANs and VAEs learn pushforward distributions x = F(g), g ~ N(0, I)?

Ground-truth families (``pfbench.families``), learned generators (``pfbench.models``),
provable/moment estimators (``pfbench.recovery``) and one shared evaluation
(``pfbench.metrics``), wired together by ``python -m pfbench.train``.
"""

from pathlib import Path

__version__ = "0.1.0"

#: Repository root (holds ``conf/``); the package is installed editable (``pip install -e .``).
ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"


class ConfigError(ValueError):
    """A bad configuration or input, reported as one line naming the value and the fix."""

"""Regenerate the README's headline table from a gan_vs_moments sweep.

    python scripts/update_readme_headline.py multirun/<date>/<time>

Runs the report (python -m pfbench.report) on the sweep and replaces the block between
``<!-- headline:start -->`` and ``<!-- headline:end -->`` in README.md with its headline table.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pfbench.report import build_report

START, END = "<!-- headline:start -->", "<!-- headline:end -->"


def main(sweep: str) -> None:
    out = build_report(Path(sweep), figures=True)
    table = (out / "headline.md").read_text().strip()
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    note = f"\n_Regenerated from `{sweep}` by `scripts/update_readme_headline.py`._\n\n"
    readme.write_text(head + START + note + table + "\n" + END + tail)
    print(f"updated {readme}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])

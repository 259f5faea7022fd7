"""Serve a directory of wheels as a local package index (PEP 503 layout), for offline Docker builds.

    python scripts/wheel_index.py WHEEL_DIR [WHEEL_DIR ...] [--port 0] [--bind 127.0.0.1] [--exclude GLOB]

Prints ``index: http://<bind>:<port>/simple/`` once the server listens, then serves until killed.
Hand that URL to the image build as ``--build-arg PIP_INDEX_URL=<url>`` together with
``--build-arg PIP_EXTRA_INDEX_URL=`` and ``--network host`` (docker/README.md, "Offline").

Each wheel appears under ``simple/<normalized project name>/`` (a symlink, nothing is copied) in a
temporary directory that disappears with the process. pip treats 127.0.0.0/8 and localhost as secure
origins, so plain HTTP needs no ``--trusted-host`` there; any other bind address does.
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import http.server
import re
import sys
import tempfile
from pathlib import Path


def project_name(wheel: str) -> str:
    """The PEP 503 normalized project name of a wheel file name (the part before the version)."""
    if not wheel.endswith(".whl") or wheel.count("-") < 4:
        raise ValueError(f"{wheel}: not a wheel file name (name-version-python-abi-platform.whl)")
    return re.sub(r"[-_.]+", "-", wheel.split("-", 1)[0]).lower()


def build_layout(dirs: list[Path], root: Path, exclude: list[str]) -> dict[str, list[str]]:
    """Make root/simple/<project>/<wheel> symlinks; returns {project: [wheel, ...]}. A file name
    found in two directories is served once (the first)."""
    found: dict[str, list[str]] = {}
    for whl in sorted(w for d in dirs for w in d.glob("*.whl")):
        if any(fnmatch.fnmatchcase(whl.name, pat) for pat in exclude):
            continue
        name = project_name(whl.name)
        if whl.name in found.get(name, []):
            continue
        (root / "simple" / name).mkdir(parents=True, exist_ok=True)
        (root / "simple" / name / whl.name).symlink_to(whl.resolve())
        found.setdefault(name, []).append(whl.name)
    if not found:
        raise ValueError(f"{', '.join(map(str, dirs))}: no wheels (*.whl) to serve; fill it with "
                         "`pip wheel --no-deps -r requirements.lock -w DIR` first")
    return found


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheels", type=Path, nargs="+", help="directories of .whl files")
    ap.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                    help="leave out wheels whose file name matches (repeatable)")
    args = ap.parse_args(argv)
    for d in args.wheels:
        if not d.is_dir():
            print(f"wheel_index: {d} is not a directory", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="wheel-index-") as tmp:
        try:
            found = build_layout(args.wheels, Path(tmp), args.exclude)
        except ValueError as e:
            print(f"wheel_index: {e}", file=sys.stderr)
            return 2
        handler = functools.partial(QuietHandler, directory=tmp)
        with http.server.ThreadingHTTPServer((args.bind, args.port), handler) as server:
            host, port = server.server_address[:2]
            print(f"index: http://{host}:{port}/simple/ ({len(found)} projects, "
                  f"{sum(map(len, found.values()))} wheels)", flush=True)
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

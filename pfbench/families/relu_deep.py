"""Deep expanding ReLU pushforward (MATH sections 1, 5) and its gauge-aligned error modulo
positive rescaling and permutation of hidden units and a latent rotation (section 8)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.optimize
import torch
from torch import nn

from pfbench import ConfigError
from pfbench.families.alignment import as_f64, polar
from pfbench.families.base import FamilyArgs, Pushforward, random_rotation


@dataclass
class DeepReLUArgs(FamilyArgs):
    hidden: list[int] = field(default_factory=lambda: [100])  # hidden widths h_1..h_{L-1}
    bias: bool = False
    output_relu: bool = True

    def check(self) -> None:
        self.hidden = [int(h) for h in self.hidden]
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"data.hidden={self.hidden}: every hidden width must be >= 1")


class DeepReLUPushforward(Pushforward):
    """x = act(W_L ReLU(... ReLU(W_1 z + b_1) ...) + b_L), widths [k, h_1, ..., d].

    ``output_relu=True`` (default) puts a ReLU on the output layer too, the expanding random net
    of Lei, Jalal, Dhillon, Dimakis (2019), e.g. 20-100-500. Gauge: latent rotation W_1 -> W_1 U,
    permutation and positive rescaling of hidden units.

    Random instance: W_l entries N(0, 2/fan_in) (He scaling: activations keep their scale through
    depth), biases (if enabled) N(0, 0.1^2).
    """

    family = "relu_deep"
    Args = DeepReLUArgs
    is_relu_net = True

    def __init__(self, latent_dim: int, out_dim: int, hidden: list[int] | tuple[int, ...] = (100,),
                 bias: bool = DeepReLUArgs.bias, output_relu: bool = DeepReLUArgs.output_relu,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.latent_dim, self.out_dim = int(latent_dim), int(out_dim)
        self.widths = [self.latent_dim, *[int(h) for h in hidden], self.out_dim]
        self.output_relu = bool(output_relu)
        self.layers = nn.ModuleList(
            nn.Linear(a, b, bias=bias, dtype=dtype) for a, b in zip(self.widths[:-1], self.widths[1:])
        )
        self.reset_random_(torch.Generator().manual_seed(0))

    @torch.no_grad()
    def reset_random_(self, generator: torch.Generator) -> DeepReLUPushforward:
        for lin in self.layers:
            w = lin.weight
            w.copy_(torch.randn(w.shape, generator=generator, dtype=w.dtype) * (2.0 / w.shape[1]) ** 0.5)
            if lin.bias is not None:
                lin.bias.copy_(0.1 * torch.randn(lin.bias.shape, generator=generator, dtype=w.dtype))
        return self

    @torch.no_grad()
    def random_symmetry_(self, generator: torch.Generator) -> torch.Tensor:
        """Hidden units permuted and rescaled by c in [0.5, 2] (ReLU(c t) = c ReLU(t)), W_1 -> W_1 U: F(U z)."""
        u = random_rotation(self.latent_dim, generator, self.layers[0].weight.dtype)
        self.layers[0].weight.copy_(self.layers[0].weight @ u)
        for lin, nxt in zip(self.layers[:-1], self.layers[1:]):
            h = lin.weight.shape[0]
            perm = torch.randperm(h, generator=generator)
            c = 0.5 + 1.5 * torch.rand(h, generator=generator, dtype=lin.weight.dtype)
            lin.weight.copy_(lin.weight[perm] * c[:, None])
            if lin.bias is not None:
                lin.bias.copy_(lin.bias[perm] * c)
            nxt.weight.copy_(nxt.weight[:, perm] / c[None, :])
        return u

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for i, lin in enumerate(self.layers):
            h = lin(h)
            if i < len(self.layers) - 1 or self.output_relu:
                h = torch.relu(h)
        return h

    def extra_repr(self) -> str:
        return f"widths={self.widths}, output_relu={self.output_relu}"

    @property
    def hidden(self) -> list[int]:
        return self.widths[1:-1]

    @property
    def bias(self) -> bool:
        return self.layers[0].bias is not None

    def _args_mismatch(self, other: Pushforward) -> str | None:
        same_bias = [lin.bias is None for lin in other.layers] == [lin.bias is None for lin in self.layers]
        if other.widths != self.widths or not same_bias:
            return f"architectures differ ({other.widths} vs {self.widths})"
        return None

    @classmethod
    def aligned_error(cls, true: Mapping[str, Any], est: Mapping[str, Any], *, args: FamilyArgs,
                      restarts: int, seed: int) -> dict[str, Any]:
        """:func:`deep_relu_gauge_error` (block coordinate descent over permutations and O(k))."""
        out = deep_relu_gauge_error(true, est)
        out["param_error_search"] = ("upper bound on the minimum over hidden-unit permutations and O(k): block "
                                     "coordinate descent from two starts; no certificate for this family")
        return out


def _deep_layers(p: Mapping[str, Any], tag: str) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    n = 0
    while f"layers.{n}.weight" in p:
        n += 1
    if n == 0 or len(p) != n + sum(f"layers.{i}.bias" in p for i in range(n)):
        raise ConfigError(
            f"relu_deep {tag} parameters must be exactly 'layers.{{i}}.weight' (and optional "
            f"'layers.{{i}}.bias') as DeepReLUPushforward.params() returns; got {sorted(p)}"
        )
    ws = [as_f64(p[f"layers.{i}.weight"], f"{tag} layers.{i}.weight") for i in range(n)]
    bs = [as_f64(p[f"layers.{i}.bias"], f"{tag} layers.{i}.bias") if f"layers.{i}.bias" in p else None
          for i in range(n)]
    return ws, bs


def _canonical_scaling(ws: list[np.ndarray], bs: list[np.ndarray | None]) -> None:
    """In place: rescale every hidden unit so its incoming row [W_l[i, :], b_l[i]] has unit norm.

    ReLU(c t) = c ReLU(t) for c > 0, so dividing a unit's incoming weights by c and multiplying its
    outgoing column by c leaves the network unchanged; after this forward pass the only gauge left
    is permutations of hidden units and the latent rotation. Dead units (zero row) stay as they are.
    """
    for l in range(len(ws) - 1):
        n2 = np.sum(ws[l] ** 2, axis=1) + (bs[l] ** 2 if bs[l] is not None else 0.0)
        n = np.sqrt(n2)
        s = np.where(n > 0, n, 1.0)
        ws[l] = ws[l] / s[:, None]
        if bs[l] is not None:
            bs[l] = bs[l] / s
        ws[l + 1] = ws[l + 1] * s[None, :]


def deep_relu_gauge_error(true: Mapping[str, Any], est: Mapping[str, Any], *, max_sweeps: int = 20
                          ) -> dict[str, float]:
    """Error of deep ReLU nets modulo positive rescaling and permutation of hidden units and latent rotation.

    Both nets are first put in the canonical scaling (every hidden unit's incoming weights and bias
    of unit norm, :func:`_canonical_scaling`), which removes the rescaling gauge. Then

    .. math::
        e = \\min_{\\pi_1..\\pi_{L-1}, U \\in O(k)}
            \\Big(\\sum_l \\|W_l^{\\pi,U} - \\hat W_l\\|_F^2 + \\|b_l^{\\pi} - \\hat b_l\\|^2\\Big)^{1/2}
            \\Big/ \\Big(\\sum_l \\|W_l\\|_F^2 + \\|b_l\\|^2\\Big)^{1/2}

    over hidden-unit permutations pi_l and the rotation U (W_1 -> W_1 U), by block coordinate
    descent, each block solved exactly: for one layer's permutation the objective is a linear
    assignment (incoming row, bias and outgoing column of every unit); for U it is orthogonal
    Procrustes. The start matches units from the output backwards by their outgoing columns (the
    output coordinates carry no gauge). The objective never increases, so the result is an upper
    bound on the minimum, exact (0) for any gauge copy of the truth.

    Returns ``param_error`` and ``param_error_layer{l}`` (relative error of layer l's weights and
    bias in the canonical form). Cost: O(sweeps * sum_l (h_l^3 + h_l^2 h_{l-1})) (assignments).
    """
    ws, bs = _deep_layers(true, "true")
    wh, bh = _deep_layers(est, "estimated")
    shapes = [w.shape for w in ws], [b is None for b in bs]
    shapes_h = [w.shape for w in wh], [b is None for b in bh]
    if shapes != shapes_h:
        raise ConfigError(
            f"relu_deep gauge error needs equal architectures; truth layers {shapes[0]} (no-bias "
            f"{shapes[1]}), estimate {shapes_h[0]} (no-bias {shapes_h[1]})"
        )
    _canonical_scaling(ws, bs)
    _canonical_scaling(wh, bh)
    nl = len(ws)
    k = ws[0].shape[1]
    perms = [np.arange(w.shape[0]) for w in ws[:-1]]
    u = np.eye(k)

    def aligned(l: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Layer l of the truth after the current permutations (rows pi_l, columns pi_{l-1}) and U."""
        w = ws[l]
        if l < nl - 1:
            w = w[perms[l]]
        w = w @ u if l == 0 else w[:, perms[l - 1]]
        b = bs[l]
        if b is not None and l < nl - 1:
            b = b[perms[l]]
        return w, b

    def total() -> float:
        s = 0.0
        for l in range(nl):
            w, b = aligned(l)
            s += float(np.sum((w - wh[l]) ** 2))
            if b is not None:
                s += float(np.sum((b - bh[l]) ** 2))
        return s

    def assign(cost: np.ndarray) -> np.ndarray:
        # cost[i, j]: estimate unit i vs truth unit j; returns perm with perm[i] = truth unit for i.
        ri, ci = scipy.optimize.linear_sum_assignment(cost)
        out = np.empty_like(ci)
        out[ri] = ci
        return out

    def sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Pairwise squared distances between rows of a (estimate) and rows of b (truth)."""
        return np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None, :] - 2 * a @ b.T

    def outgoing(l: int) -> np.ndarray:
        """Columns of layer l+1 (one per unit of layer l) with layer l+1's permutation applied."""
        w = ws[l + 1] if l + 1 == nl - 1 else ws[l + 1][perms[l + 1]]
        return w.T

    def first_layer_rotation() -> np.ndarray:
        rows = ws[0][perms[0]] if nl > 1 else ws[0]
        return polar(rows.T @ wh[0])  # min_U ||rows U - W_hat_1||_F

    def descend() -> float:
        """Block coordinate descent from the current (perms, u); returns the final objective."""
        nonlocal u
        best = total()
        for _ in range(max_sweeps):
            for l in range(nl - 1):
                inc = ws[l] @ u if l == 0 else ws[l][:, perms[l - 1]]
                inc_h = wh[l]
                if bs[l] is not None:
                    inc = np.concatenate([inc, bs[l][:, None]], axis=1)
                    inc_h = np.concatenate([inc_h, bh[l][:, None]], axis=1)
                perms[l] = assign(sqdist(inc_h, inc) + sqdist(wh[l + 1].T, outgoing(l)))
                if l == 0:
                    u = first_layer_rotation()
            if nl == 1:
                u = first_layer_rotation()
            cur = total()
            if cur >= best - 1e-14 * best:
                return min(best, cur)
            best = cur
        return best

    # Start 1: units in their given order, U = I (so the result never exceeds that alignment).
    results = [(descend(), [p.copy() for p in perms], u.copy())]
    # Start 2: match units from the output backwards by outgoing columns (the output has no gauge).
    for l in range(nl - 2, -1, -1):
        perms[l] = assign(sqdist(wh[l + 1].T, outgoing(l)))
    u = first_layer_rotation()
    results.append((descend(), [p.copy() for p in perms], u.copy()))
    _, perms, u = min(results, key=lambda t: t[0])

    out: dict[str, float] = {}
    num = den = 0.0
    for l in range(nl):
        w, b = aligned(l)
        e2 = float(np.sum((w - wh[l]) ** 2))
        n2 = float(np.sum(ws[l] ** 2))
        if b is not None:
            e2 += float(np.sum((b - bh[l]) ** 2))
            n2 += float(np.sum(bs[l] ** 2))
        num, den = num + e2, den + n2
        out[f"param_error_layer{l}"] = math.sqrt(e2 / n2) if n2 > 0 else (0.0 if e2 == 0 else math.inf)
    if den == 0.0:
        raise ConfigError("relu_deep gauge error: the true network is zero, so a relative error is undefined")
    return {"param_error": math.sqrt(num / den), **out}

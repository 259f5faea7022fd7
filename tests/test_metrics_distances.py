"""Sample distances: closed forms, 1-D references, invariances, floors, and honest non-convergence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import scipy.spatial.distance
import scipy.stats
import torch

from pfbench import ConfigError
from pfbench.metrics.distances import (
    OTNotConverged,
    birthday_support,
    collision_threshold,
    kmeans,
    median_bandwidth,
    mmd2_permutation_null,
    mmd2_unbiased,
    mmd2_unbiased_many,
    nearest_rows,
    neural_net_distance,
    random_directions,
    sliced_wasserstein,
    sliced_wasserstein_to,
    true_atoms,
    wasserstein,
    wasserstein_1d,
    wasserstein_result,
)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------------ exact W


@pytest.mark.parametrize("n,m", [(300, 300), (250, 410)])
def test_w1_in_1d_equals_scipy(n, m):
    r = rng(n + m)
    x = r.standard_normal(n)
    y = 1.5 * r.standard_normal(m) + 0.4
    ref = scipy.stats.wasserstein_distance(x, y)
    assert abs(wasserstein(x[:, None], y[:, None], 1) - ref) <= 1e-10
    assert 0.3 <= ref <= 1.0  # a non-trivial reference


def monotone_cost(x: np.ndarray, y: np.ndarray, p: float) -> float:
    """W_p^p between uniform empirical measures on the line by the north-west-corner rule.

    The monotone (sorted) coupling is optimal for the convex cost |s - t|^p, p >= 1. Masses are
    counted in units of 1/(n m) (x atoms weigh m, y atoms n), so the coupling itself is exact.
    """
    xs, ys = np.sort(np.ravel(x)), np.sort(np.ravel(y))
    n, m = len(xs), len(ys)
    i = j = 0
    rx, ry = m, n
    total = []
    while i < n and j < m:
        t = min(rx, ry)
        total.append(t * abs(xs[i] - ys[j]) ** p)
        rx, ry = rx - t, ry - t
        if rx == 0:
            i, rx = i + 1, m
        if ry == 0:
            j, ry = j + 1, n
    return math.fsum(total) / (n * m)


def assignment_cost(x: np.ndarray, y: np.ndarray, p: float) -> float:
    """Exact W_p^p by brute force: copy each of the n (m) atoms L/n (L/m) times, L = lcm(n, m).

    Both empirical measures become uniform on L points, where an optimal transport plan is a
    permutation (Birkhoff), found by the Hungarian method.
    """
    x, y = np.reshape(x, (len(x), -1)), np.reshape(y, (len(y), -1))
    big = math.lcm(len(x), len(y))
    c = scipy.spatial.distance.cdist(np.repeat(x, big // len(x), 0), np.repeat(y, big // len(y), 0)) ** p
    rows, cols = scipy.optimize.linear_sum_assignment(c)
    return float(c[rows, cols].mean())


def test_w2_in_1d_equals_monotone_coupling():
    # The LP (POT) against the sorted coupling, an independent exact algorithm for the same number;
    # unequal sizes, so that the fractional masses of the plan matter.
    r = rng(1)
    x, y = r.standard_normal(200), r.exponential(size=333)
    ref = math.sqrt(monotone_cost(x, y, 2))
    assert abs(wasserstein(x, y, 2) - ref) <= 1e-9
    # the batched quantile formula used by the sliced distance, on the same pair
    assert abs(float(wasserstein_1d(np.sort(x)[None], np.sort(y)[None], 2)[0]) - ref**2) <= 1e-9
    assert 0.5 <= ref <= 2.0
    # an exact shift: every coupling of x and x + 0.7 along the sorted order costs 0.7
    assert abs(wasserstein(x, x + 0.7, 2) - 0.7) <= 1e-9


@pytest.mark.parametrize("d,p", [(1, 1), (1, 2), (3, 1), (3, 2)])
def test_exact_w_equals_brute_force_assignment(d, p):
    r = rng(20 + 2 * d + p)
    x = r.standard_normal((30, d))
    y = 0.8 * r.standard_normal((45, d)) + 0.5
    ref = assignment_cost(x, y, p) ** (1 / p)
    assert abs(wasserstein(x, y, p) - ref) <= 1e-9 * max(1.0, ref)
    if d == 1:
        assert abs(ref**p - monotone_cost(x, y, p)) <= 1e-9
    assert 0.3 <= ref <= 3.0


def test_identical_symmetric_and_permutation_invariant():
    r = rng(2)
    x = r.standard_normal((200, 6))
    y = r.standard_normal((150, 6)) + 0.3
    for p in (1, 2):
        assert 0.0 <= wasserstein(x, x.copy(), p) <= 1e-12
        wxy, wyx = wasserstein(x, y, p), wasserstein(y, x, p)
        assert abs(wxy - wyx) <= 1e-10
        assert abs(wasserstein(x[r.permutation(200)], y[r.permutation(150)], p) - wxy) <= 1e-10
        assert 0.3 <= wxy <= 10.0


def test_w2_two_gaussians_brenier_map_matches_closed_form():
    # X ~ N(0, S1); Y_i = T(X_i) with T(x) = m + A x, A = S1^-1/2 (S1^1/2 S2 S1^1/2)^1/2 S1^-1/2, the
    # optimal (gradient of a convex function) map, so the identity coupling is optimal between the
    # two empirical measures: W2^2 = mean ||X_i - T X_i||^2 exactly, whose expectation is the
    # closed form ||m||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), with error O(n^-1/2).
    d = 3
    r = rng(3)
    b1, b2 = r.standard_normal((d, d)), r.standard_normal((d, d))
    s1, s2 = b1 @ b1.T / d + 0.5 * np.eye(d), b2 @ b2.T / d + 0.5 * np.eye(d)
    mean = np.array([0.5, -0.2, 0.1])
    r1 = scipy.linalg.sqrtm(s1).real
    mid = scipy.linalg.sqrtm(r1 @ s2 @ r1).real
    a = np.linalg.inv(r1) @ mid @ np.linalg.inv(r1)
    closed = math.sqrt(mean @ mean + np.trace(s1 + s2 - 2 * mid))
    for n in (100, 400, 1600):
        x = r.multivariate_normal(np.zeros(d), s1, size=n)
        y = mean + x @ a.T
        emp = wasserstein(x, y, 2)
        assert abs(emp - math.sqrt(np.mean(np.sum((x - y) ** 2, axis=1)))) <= 1e-9
        # tolerance shrinking like n^-1/2 (the relative sd of mean ||X - TX||^2 is below 1.5 here)
        assert abs(emp - closed) <= 1.5 * closed / math.sqrt(n)
    assert 0.2 <= closed <= 3.0


def test_w2_independent_gaussian_samples_1d_closed_form():
    # 1-D: W2(N(0,1), N(1, 2^2)) = sqrt((0-1)^2 + (1-2)^2) = sqrt(2); empirical bias is O(sqrt(log n / n)).
    r = rng(4)
    for n, tol in ((200, 0.25), (1000, 0.12)):
        x, y = r.standard_normal(n), 1 + 2 * r.standard_normal(n)
        assert abs(wasserstein(x, y, 2) - math.sqrt(2)) <= tol


def test_non_converged_solve_is_reported_not_returned():
    r = rng(5)
    x, y = r.standard_normal((300, 5)), r.standard_normal((300, 5))
    res = wasserstein_result(x, y, 1, max_iter=50)
    assert res.converged is False
    assert res.value is None
    assert "max_iter=50" in res.reason
    with pytest.raises(OTNotConverged, match="optimality"):
        wasserstein(x, y, 1, max_iter=50)
    ok = wasserstein_result(x, y, 1)
    assert ok.converged is True and ok.reason is None
    assert 0.0 <= ok.dual_violation <= 1e-9 * 10
    # equal sizes: exact W1 is the optimal assignment's mean cost (an independent exact solver)
    cost = scipy.spatial.distance.cdist(x, y)
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    assert abs(ok.value - cost[rows, cols].mean()) <= 1e-10


def test_memory_guard_says_what_to_do():
    r = rng(6)
    x = r.standard_normal((100, 3))
    with pytest.raises(ConfigError, match=r"eval\.w1\.n.*sliced"):
        wasserstein(x, x, 1, max_memory_gb=1e-6)
    with pytest.raises(ConfigError, match="non-finite"):
        wasserstein(np.full((3, 2), np.nan), x[:, :2])
    with pytest.raises(ConfigError, match="different dimensions"):
        wasserstein(x, x[:, :2])


# ------------------------------------------------------------------------------------------ sliced W


@pytest.mark.parametrize("n,m", [(500, 500), (300, 700)])
def test_sliced_in_1d_equals_w(n, m):
    r = rng(7)
    x, y = r.standard_normal(n), r.gamma(2.0, size=m)
    # in 1-D every direction is +-1 and W_p is invariant under the reflection
    assert abs(sliced_wasserstein(x, y, 5, 1, generator=r) - scipy.stats.wasserstein_distance(x, y)) <= 1e-10
    assert abs(sliced_wasserstein(x, y, 3, 2, generator=r) - math.sqrt(monotone_cost(x, y, 2))) <= 1e-9


@pytest.mark.parametrize("n,m,p", [(200, 200, 2), (150, 260, 1), (150, 260, 2)])
def test_sliced_equals_mean_of_projected_1d_distances(n, m, p):
    # SW_p^p with given directions is the mean over them of exact 1-D W_p^p of the projections:
    # the reference projects and solves each 1-D problem by the monotone coupling.
    r = rng(30 + n + p)
    x = r.standard_normal((n, 4))
    y = r.standard_normal((m, 4)) @ np.diag([1.5, 1.0, 0.5, 1.0]) + np.array([0.5, 0.0, 0.0, -0.3])
    dirs = r.standard_normal((7, 4))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    ref = (math.fsum(monotone_cost(x @ th, y @ th, p) for th in dirs) / len(dirs)) ** (1 / p)
    assert abs(sliced_wasserstein(x, y, p=p, directions=dirs) - ref) <= 1e-9
    assert 0.1 <= ref <= 2.0


def test_sliced_invariances_and_closed_form_for_translation():
    r = rng(8)
    x = r.standard_normal((400, 10))
    y = r.standard_normal((400, 10))
    dirs = np.random.default_rng(0).standard_normal((64, 10))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    assert sliced_wasserstein(x, x.copy(), directions=dirs) == 0.0
    v = sliced_wasserstein(x, y, directions=dirs)
    assert abs(v - sliced_wasserstein(y, x, directions=dirs)) <= 1e-12
    assert abs(v - sliced_wasserstein(x[r.permutation(400)], y, directions=dirs)) <= 1e-12
    # y = x + delta: every 1-D projection is a pure shift <theta, delta>, so
    # SW_2^2 = mean <theta, delta>^2 exactly, and its expectation over the sphere is |delta|^2 / d.
    delta = np.full(10, 0.3)
    sw2 = sliced_wasserstein(x, x + delta, p=2, directions=dirs)
    assert abs(sw2**2 - np.mean((dirs @ delta) ** 2)) <= 1e-12
    many = sliced_wasserstein(x, x + delta, 4000, p=2, generator=np.random.default_rng(1))
    assert abs(many**2 - delta @ delta / 10) <= 0.1 * delta @ delta / 10


def test_sliced_needs_explicit_randomness():
    with pytest.raises(ConfigError, match="generator"):
        sliced_wasserstein(np.zeros((3, 2)), np.ones((3, 2)), 10)


# ---------------------------------------------------------------------------------------------- MMD


def gaussian_mmd2(mu: float, s1: float, s2: float, h: float, d: int) -> float:
    """Population MMD^2 between N(0, s1^2 I) and N(mu 1, s2^2 I) with k = exp(-|x-y|^2 / (2 h^2))."""
    def ek(va: float, shift2: float) -> float:  # E k(A - B) for A - B ~ N(shift, va I)
        return (h * h / (h * h + va)) ** (d / 2) * math.exp(-shift2 / (2 * (h * h + va)))

    return ek(2 * s1**2, 0) + ek(2 * s2**2, 0) - 2 * ek(s1**2 + s2**2, mu * mu * d)


def mmd2_direct(x: np.ndarray, y: np.ndarray, h: float, unbiased: bool = True) -> float:
    """MMD^2 by explicit double sums over pairs (U-statistic; V-statistic with ``unbiased=False``)."""
    def k(a: np.ndarray, b: np.ndarray) -> float:
        return math.exp(-math.fsum((a - b) ** 2) / (2 * h * h))

    n, m = len(x), len(y)
    off = 1 if unbiased else 0
    kxx = math.fsum(k(x[i], x[j]) for i in range(n) for j in range(n) if not (unbiased and i == j))
    kyy = math.fsum(k(y[i], y[j]) for i in range(m) for j in range(m) if not (unbiased and i == j))
    kxy = math.fsum(k(x[i], y[j]) for i in range(n) for j in range(m))
    return kxx / (n * (n - off)) + kyy / (m * (m - off)) - 2 * kxy / (n * m)


def test_mmd_unbiased_equals_direct_double_sum():
    r = rng(100)
    x = r.standard_normal((40, 3))
    y = 0.3 + 1.2 * r.standard_normal((55, 3))
    for h in (0.7, 1.5):
        ref = mmd2_direct(x, y, h)
        for block in (7, 2048):  # several row blocks, and one
            assert abs(mmd2_unbiased(x, y, h, block=block) - ref) <= 1e-10 * abs(ref) + 1e-14
        # the biased V-statistic is a different number at these sizes
        assert abs(mmd2_direct(x, y, h, unbiased=False) - ref) >= 1e-3
    # the default bandwidth is the median heuristic on the pooled sample (95 points, 4465 pairs: an
    # odd count, so the median is one pair's distance)
    h0 = float(np.median(scipy.spatial.distance.pdist(np.concatenate([x, y]))))
    assert abs(mmd2_unbiased(x, y) - mmd2_direct(x, y, h0)) <= 1e-10 * abs(mmd2_direct(x, y, h0)) + 1e-14


def test_mmd_unbiased_has_the_closed_form_expectation_at_small_n():
    # E[MMD^2_u] equals the population MMD^2 at every sample size; the V-statistic is biased upward by
    # (1 - E k(X, X'))/n + (1 - E k(Y, Y'))/m, which at n = m = 20 is about 30 standard errors of
    # the mean of 1000 replicates: the two are told apart, for P != Q and for P = Q.
    d, h, n, reps = 3, 1.5, 20, 1000
    for mu, s2 in ((0.3, 1.2), (0.0, 1.0)):
        ref = gaussian_mmd2(mu, 1.0, s2, h, d)
        r = rng(101 + int(10 * mu))
        vals = np.array([mmd2_unbiased(r.standard_normal((n, d)), mu + s2 * r.standard_normal((n, d)), h)
                         for _ in range(reps)])
        se = float(np.std(vals) / math.sqrt(reps))
        assert abs(float(np.mean(vals)) - ref) <= 4.5 * se
        ekxx = (h * h / (h * h + 2)) ** (d / 2)
        ekyy = (h * h / (h * h + 2 * s2 * s2)) ** (d / 2)
        v_bias = (1 - ekxx) / n + (1 - ekyy) / n
        assert v_bias >= 15 * se  # the test has the power to reject the biased statistic
    assert 0.02 <= gaussian_mmd2(0.3, 1.0, 1.2, h, d) <= 0.2


def test_mmd_null_mean_zero_symmetric_and_permutation_invariant():
    d, h = 4, 2.0
    null = [mmd2_unbiased(rng(s).standard_normal((300, d)), rng(50 + s).standard_normal((300, d)), h)
            for s in range(6)]
    assert abs(np.mean(null)) <= 0.002  # unbiased: E = 0 under P = Q
    r = rng(9)
    x, y = r.standard_normal((200, d)), r.standard_normal((250, d)) + 0.2
    v = mmd2_unbiased(x, y, h)
    assert abs(v - mmd2_unbiased(y, x, h)) <= 1e-14
    assert abs(v - mmd2_unbiased(x[r.permutation(200)], y[r.permutation(250)], h)) <= 1e-14


def test_median_bandwidth_of_gaussian():
    # |X - X'| for X, X' ~ N(0, I_d) is sqrt(2) chi_d: median sqrt(2 * chi2_d median).
    x = rng(10).standard_normal((1000, 5))
    ref = math.sqrt(2 * scipy.stats.chi2.median(5))
    assert abs(median_bandwidth(x) - ref) <= 0.03 * ref


# --------------------------------------------------------------------------------- neural-net distance


def test_nn_distance_translation_and_lipschitz_bound():
    # For a translation by delta, sup over 1-Lipschitz D of E_P D - E_Q D = |delta| (a linear D is in
    # the class via a large bias), and the held-out gap can never exceed W1 of the held-out halves.
    r = rng(11)
    n, d = 1200, 5
    delta = np.full(d, 1 / math.sqrt(d))
    x = r.standard_normal((n, d)) + delta
    y = r.standard_normal((n, d))
    res = neural_net_distance(x, y, steps=300, batch_size=256, generator=torch.Generator().manual_seed(3))
    assert 0.85 <= res.value <= 1.1
    assert "1-Lipschitz" in res.critic_class and "mlp[5-64-64-1]" in res.critic_class
    # Re-draw the same split: the first draws of the generator are the two permutations.
    g = torch.Generator().manual_seed(3)
    px, py = torch.randperm(n, generator=g).numpy(), torch.randperm(n, generator=g).numpy()
    w1_test = wasserstein(x[px[n // 2:]], y[py[n // 2:]], 1)
    assert -1.0 <= res.value <= w1_test + 1e-9
    same = neural_net_distance(r.standard_normal((n, d)), y, steps=300, batch_size=256,
                               generator=torch.Generator().manual_seed(3))
    assert -0.1 <= same.value <= 0.15


# ---------------------------------------------------------------------------------------- birthday


def test_birthday_estimates_discrete_support_and_passes_truth():
    r = rng(12)
    truth = r.standard_normal((2000, 8))
    tau = collision_threshold(truth)
    assert abs(tau - float(np.min(scipy.spatial.distance.pdist(truth)))) <= 1e-12
    # a generator that only ever outputs 400 distinct points: support estimate within a factor 4
    atoms = r.standard_normal((400, 8))
    collapsed = atoms[r.integers(0, 400, size=2000)]
    out = birthday_support(collapsed, tau, max_batch=500, generator=rng(0))
    assert 100 <= out["support_size"] <= 1600
    # a fresh sample of the truth stays far from the 1/2 collision rate at s <= N/4
    fresh = birthday_support(r.standard_normal((2000, 8)), tau, max_batch=500, generator=rng(1))
    assert fresh["support_size"] is None and fresh["support_lower_bound"] == 500**2
    assert 0.0 <= fresh["support_collision_rate"] <= 0.45
    assert "no collision" in fresh["support_status"]
    # a true sample with an atom gives threshold 0: the test says it does not apply
    atom = birthday_support(collapsed, 0.0, max_batch=100, generator=rng(2))
    assert atom["support_size"] is None and "not applicable" in atom["support_status"]


def test_birthday_sets_true_atoms_aside():
    # A truth with an atom at 0 (10 % of its mass), like a ReLU pushforward: exact zeros repeat, yet
    # a fresh sample of the same distribution must not look like a small support.
    def sample(n: int, r: np.random.Generator) -> np.ndarray:
        x = r.standard_normal((n, 6))
        x[r.random(n) < 0.1] = 0.0
        return x

    truth = sample(2000, rng(13))
    atoms = true_atoms(truth)
    assert atoms.shape == (1, 6) and np.all(atoms == 0.0)
    tau = collision_threshold(truth)
    assert 0.0 < tau <= 1.0
    out = birthday_support(sample(2000, rng(14)), tau, max_batch=400, atoms=atoms, generator=rng(3))
    assert out["support_size"] is None and "no collision" in out["support_status"]
    assert 0.07 <= out["support_atom_fraction"] <= 0.13
    # without setting the atom aside, the zeros collide at once: the naive test would say ~256
    naive = birthday_support(sample(2000, rng(14)), tau, max_batch=400, generator=rng(3))
    assert naive["support_size"] is not None and naive["support_size"] <= 1024


# ---------------------------------------------------------------------------------------- null helpers


def test_sliced_against_a_fixed_reference_equals_sliced_exactly():
    r = rng(20)
    y = r.standard_normal((300, 7))
    dirs = random_directions(7, 70, rng(21))
    for p in (1, 2):
        to_y = sliced_wasserstein_to(y, dirs, p=p)
        for x in (r.standard_normal((300, 7)) + 0.2, r.standard_normal((250, 7))):
            assert to_y(x) == sliced_wasserstein(x, y, p=p, directions=dirs)  # bit for bit


def test_mmd_permutation_null_equals_values_and_brute_force_subsets():
    r = rng(22)
    x, x_alt, y = r.standard_normal((60, 3)) + 0.3, r.standard_normal((60, 3)), r.standard_normal((70, 3))
    h = median_bandwidth(y)
    subsets = np.zeros((5, 120), dtype=bool)
    for row in subsets:
        row[r.permutation(120)[:60]] = True
    val, alt, null = mmd2_permutation_null(x, x_alt, y, h, subsets)
    assert [val, alt] == mmd2_unbiased_many([x, x_alt], y, h)  # the existing values, bit for bit
    pool = np.concatenate([x, x_alt])
    for row, v in zip(subsets, null):
        assert abs(v - mmd2_unbiased(pool[row], y, bandwidth=h)) <= 1e-12
    with pytest.raises(ConfigError, match="selecting 60 rows"):
        mmd2_permutation_null(x, x_alt, y, h, subsets[:, :100])


def test_nn_distance_returns_the_held_out_critic_values():
    r = rng(23)
    x, y = r.standard_normal((200, 4)) + 0.5, r.standard_normal((200, 4))
    res = neural_net_distance(x, y, steps=30, generator=torch.Generator().manual_seed(0))
    assert res.scores_x.shape == (100,) and res.scores_y.shape == (100,)
    assert math.isclose(res.value, res.scores_x.mean() - res.scores_y.mean(), rel_tol=1e-12)


def test_kmeans_finds_separated_clusters_and_is_seeded():
    r = rng(24)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = np.concatenate([c + r.standard_normal((100, 2)) for c in centres])
    found = kmeans(x, 3, generator=rng(5))
    assert np.array_equal(found, kmeans(x, 3, generator=rng(5)))
    order = np.argsort(found[:, 0] * 100 + found[:, 1])
    assert np.abs(found[order] - centres[[0, 2, 1]]).max() < 0.5
    idx, d2 = nearest_rows(x[:5], found)
    assert np.all(idx == idx[0]) and np.all(d2 >= 0)
    with pytest.raises(ConfigError, match="1 <= k <= n"):
        kmeans(x[:2], 3, generator=rng(5))

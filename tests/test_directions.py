"""The whitened generalized eigen-solver against scipy, on well-posed and rank-deficient
problems."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from regfac_jax import directions

EPS64, EPS32 = np.finfo(np.float64).eps, np.finfo(np.float32).eps


def _backward_error(A, B, evals, V):
    """LAPACK's measure: max_i |A v_i - l_i B v_i| / ((|A| + |l_i| |B|) |v_i|) (2-norms)."""
    r = A @ V - (B @ V) * evals[None, :]
    scale = (np.linalg.norm(A, 2) + np.abs(evals) * np.linalg.norm(B, 2)) * np.linalg.norm(
        V, axis=0
    )
    return float(np.max(np.linalg.norm(r, axis=0) / scale))


# Bars derived from eps and size, as jax's linalg tests derive theirs (testEigh: 2 n eps for
# orthogonality, a multiple of eps * norm(a) for the residual). A backward-stable solve of A v = l B
# v is exact for A + E, B + F with |E| <= c n eps |A|, |F| <= c n eps |B| (2-norms; c = 2 as in
# testEigh), which bounds what the checks see.
def _eigenvalue_tol(A, B, evals, eps=EPS64):
    """Relative bound per eigenvalue: |dl_i| / l_i <= c n eps |B^-1| (|A| / l_i + |B|) for B-unit
    eigenvectors."""
    a, b, b_inv = (np.linalg.norm(m, 2) for m in (A, B, np.linalg.inv(B)))
    return 2 * A.shape[0] * eps * b_inv * (a / np.abs(evals) + b)


def _residual_tol(A, B, eps=EPS64):
    """Bound on max|A V - B V diag(l)| / max|A| for B-orthonormal V: c n eps (1 + cond(B))
    |B^-1|^(1/2).

    Each column's residual is <= c eps (|A| + |l| |B|) |v| with |l| <= |A| |B^-1| and |v| <=
    |B^-1|^(1/2), and max|A| >= |A| / n.
    """
    n = A.shape[0]
    return 2 * n * eps * (1 + np.linalg.cond(B)) * np.sqrt(np.linalg.norm(np.linalg.inv(B), 2))


def _spd_pair(seed, d=12, rank_b=None, dtype=np.float64):
    rng = np.random.default_rng(seed)
    ja = rng.normal(size=(3 * d, d))
    jb = rng.normal(size=(rank_b or 3 * d, d))
    return (ja.T @ ja).astype(dtype), (jb.T @ jb).astype(dtype)


def test_matches_scipy_float64(x64):
    A, B = _spd_pair(0)
    evals, dirs = directions.generalized_eigh(
        jnp.asarray(A), jnp.asarray(B), regularization="none", b_orthonormal=True
    )
    ref = scipy.linalg.eigh(A, B, eigvals_only=True)[::-1]
    evals, V = np.asarray(evals), np.asarray(dirs).T
    # Well-conditioned 12x12 problem in float64 (cond(B) ~ 6): both solvers are backward stable, so
    # each is within _eigenvalue_tol (4e-14 .. 3e-13 here; was a fixed 1e-10) of the exact
    # eigenvalues; measured 2e-15.
    assert np.all(np.abs(evals - ref) <= 2 * _eigenvalue_tol(A, B, ref) * np.abs(ref)), (
        evals / ref - 1
    )
    resid = np.abs(A @ V - B @ V @ np.diag(evals)).max() / np.abs(A).max()
    assert resid <= _residual_tol(A, B)  # 1.3e-14 here (was 1e-10); measured 1.7e-16
    # B-orthonormality: testEigh's 2 n eps, times cond(B) for the whitening (3.4e-14 here; was
    # 1e-10).
    np.testing.assert_allclose(
        V.T @ B @ V, np.eye(A.shape[0]), atol=2 * A.shape[0] * EPS64 * np.linalg.cond(B)
    )
    assert np.all(np.diff(evals) <= 0)  # descending


def test_unit_rows_and_rayleigh_quotients(x64):
    A, B = _spd_pair(1)
    evals, dirs = directions.generalized_eigh(A, B, regularization="none")
    n = A.shape[0]
    # testEigh's bar (was 1e-12)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0, atol=2 * n * EPS64)
    # The Rayleigh quotient of each unit direction is its eigenvalue (it is scale-free), to the
    # eigenvalue bound (6e-14 .. 4e-13 here; was a fixed 1e-10); measured 3e-15.
    tol = _eigenvalue_tol(A, B, np.asarray(evals))
    rq = np.asarray(directions.rayleigh_quotient(A, B, dirs))
    assert np.all(np.abs(rq - evals) <= tol * np.abs(evals)), rq / evals - 1
    # And the top direction maximises it: no random direction beats it.
    rng = np.random.default_rng(2)
    rand = rng.normal(size=(200, A.shape[0]))
    # 6e-14 (was 1e-12)
    assert np.max(directions.rayleigh_quotient(A, B, rand)) <= evals[0] * (1 + tol[0])


def test_rank_deficient_b_is_regularised_with_warning(x64):
    A, B = _spd_pair(3, d=12, rank_b=5)  # B has rank 5 of 12
    with pytest.warns(RuntimeWarning, match="singular"):
        evals, dirs = directions.generalized_eigh(A, B)
    assert np.all(np.isfinite(evals)) and np.all(np.isfinite(dirs))
    delta = float(directions.regularization_amount(jnp.asarray(B)))
    Breg = B + delta * np.eye(12)
    ref = scipy.linalg.eigh(A, Breg, eigvals_only=True)[::-1]
    # Same problem, solved by scipy after the same regularisation; the spread of eigenvalues is
    # ~1/delta, so agreement is relative to the largest one. Fixed bars on purpose: _eigenvalue_tol
    # with cond(B + delta I) ~ 4e8 would allow 2e-6 .. 1e-5 relative, looser than these (measured:
    # 2e-15 of the largest eigenvalue).
    np.testing.assert_allclose(evals, ref, rtol=1e-8, atol=1e-10 * ref[0])
    # With delta ~ 1.5e-8 * mean eigenvalue, cond(B + delta I) ~ 1e9, and any Cholesky-based solver
    # (scipy's sygvd included) has a backward error of order eps * cond there: compare ours with
    # scipy's on the same problem.
    w_ref, v_ref = scipy.linalg.eigh(A, Breg)
    ours = _backward_error(A, Breg, np.asarray(evals), np.asarray(dirs).T)
    # 10x scipy's own backward error (floor 1e-14 = 45 eps, should scipy's land near 0); measured
    # 0.4x.
    assert ours <= 10 * max(_backward_error(A, Breg, w_ref, v_ref), 1e-14)


def test_rank_deficient_b_with_paper_regularisation(x64):
    A, B = _spd_pair(3, d=12, rank_b=5)
    with pytest.warns(RuntimeWarning, match="singular"):
        evals, dirs = directions.generalized_eigh(A, B, regularization="paper")
    Breg = B + 1e-3 * np.trace(B) * np.eye(12)
    # cond(B + 1e-3 trace(B) I) ~ 450: the whitening's backward error is within c n eps cond
    # (2.4e-12 here; was a fixed 1e-10); measured 4e-14.
    assert _backward_error(
        A, Breg, np.asarray(evals), np.asarray(dirs).T
    ) <= 2 * 12 * EPS64 * np.linalg.cond(Breg)
    ref = scipy.linalg.eigh(A, Breg, eigvals_only=True)[::-1]
    # Both solves within _eigenvalue_tol (2e-12 .. 2e-11 here; was 1e-10) of the exact values;
    # measured 4e-13.
    assert np.all(
        np.abs(np.asarray(evals) - ref) <= 2 * _eigenvalue_tol(A, Breg, ref) * np.abs(ref)
    ), evals / ref - 1


def test_zero_b_gives_no_nans():
    A, _ = _spd_pair(4, dtype=np.float32)
    with pytest.warns(RuntimeWarning):
        evals, dirs = directions.generalized_eigh(A, np.zeros_like(A), regularization="auto")
    # trace(B) = 0 makes the scale-free delta 0 as well: the solver must not return NaN silently.
    assert np.all(np.isfinite(evals)) and np.all(np.isfinite(dirs))


def test_float32_residual():
    A, B = _spd_pair(5, dtype=np.float32)
    evals, dirs = directions.generalized_eigh(A, B, regularization="none", b_orthonormal=True)
    V = np.asarray(dirs, np.float64).T
    resid = np.abs(A @ V - B @ V @ np.diag(np.asarray(evals, np.float64))).max() / np.abs(A).max()
    # float32, cond(B) ~ 9: _residual_tol with float32 eps is 8.6e-6 here (was a fixed 1e-4);
    # measured 8.6e-8.
    assert resid <= _residual_tol(A.astype(np.float64), B.astype(np.float64), EPS32)


def test_jit_equals_eager_and_vmap_equals_loop():
    pairs = [_spd_pair(s, dtype=np.float32) for s in range(3)]
    As = jnp.stack([p[0] for p in pairs])
    Bs = jnp.stack([p[1] for p in pairs])
    eager = [directions.generalized_eigh(a, b) for a, b in zip(As, Bs, strict=True)]
    jitted = jax.jit(lambda a, b: directions.generalized_eigh(a, b))
    vmapped = jax.vmap(lambda a, b: directions.generalized_eigh(a, b))(As, Bs)
    batched = directions.generalized_eigh(As, Bs)
    for i, (ev, v) in enumerate(eager):
        jv, jd = jitted(As[i], Bs[i])
        # Same float32 program compiled in different contexts: identical up to a few ulps of
        # reassociation.
        np.testing.assert_allclose(jv, ev, rtol=1e-5)
        np.testing.assert_allclose(jd, v, atol=1e-5)
        np.testing.assert_allclose(vmapped[0][i], ev, rtol=1e-5)
        np.testing.assert_allclose(vmapped[1][i], v, atol=1e-5)
        np.testing.assert_allclose(batched[1][i], v, atol=1e-5)


def test_official_methods_solve_the_same_problems_as_ours(x64):
    # the official methods take float32
    A, B = (m.astype(np.float32).astype(np.float64) for m in _spd_pair(6))
    ev_f, d_f = directions.generalized_eigh(A, B, method="official_full_rank")
    ev_p, d_p = directions.generalized_eigh(A, B, regularization="paper")
    # the paper's float64 identity makes the regularised solve float64
    assert ev_f.dtype == np.float64
    # Same float64 problem up to the ridge's trace, taken in float32 as the paper does (relative
    # 6e-8): 1e-6.
    np.testing.assert_allclose(ev_f, ev_p, rtol=1e-6)
    assert abs(float(np.dot(d_f[0], d_p[0]))) > 1 - 1e-10
    ev_o, d_o = directions.generalized_eigh(A, B, method="official")
    ev_n, d_n = directions.generalized_eigh(A, B, regularization="none")
    assert ev_o.dtype == np.float32  # the paper's default run never leaves float32
    # float32 inv + eig on a problem with cond(B) ~ 10: a few hundred eps relative.
    np.testing.assert_allclose(ev_o, ev_n, rtol=1e-4)
    assert abs(float(np.dot(d_o[0], d_n[0]))) > 1 - 1e-5
    # The two official runs differ by the ridge: 1e-3 * trace(B) * I moves every eigenvalue by
    # percents here.
    assert np.max(np.abs(ev_f / ev_o - 1)) > 1e-2


def test_official_options_are_the_papers_only():
    A, B = _spd_pair(7, dtype=np.float32)
    for bad in ("auto", "paper", 0.1):
        with pytest.raises(ValueError, match="never regularises"):
            directions.generalized_eigh(A, B, method="official", regularization=bad)
    with pytest.raises(ValueError, match="official_full_rank"):
        directions.generalized_eigh(A, B, method="official", tau=1e-3)
    with pytest.raises(ValueError, match="adds tau"):
        directions.generalized_eigh(A, B, method="official_full_rank", regularization="auto")
    with pytest.raises(ValueError, match="b_orthonormal"):
        directions.generalized_eigh(A, B, method="official", b_orthonormal=True)
    with pytest.raises(ValueError, match="method must be"):
        directions.generalized_eigh(A, B, method="eig")
    # tau is the paper's --tao: a larger ridge pulls the problem towards eig(A), so the eigenvalues
    # drop.
    ev3 = directions.generalized_eigh(A, B, method="official_full_rank")[0]
    ev2 = directions.generalized_eigh(A, B, method="official_full_rank", tau=1e-2)[0]
    assert np.all(ev2 < ev3)


def test_official_default_fails_where_the_paper_fails():
    A, _ = _spd_pair(8, dtype=np.float32)
    B = np.zeros_like(A)  # no background change at all: the paper's inv(B) raises
    with pytest.raises(np.linalg.LinAlgError, match="official_full_rank"):
        directions.generalized_eigh(A, B, method="official")
    ev, dv = directions.generalized_eigh(
        A, B + np.eye(12, dtype=np.float32), method="official_full_rank"
    )
    assert np.all(np.isfinite(ev)) and np.all(np.isfinite(dv))


def test_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        directions.generalized_eigh(np.eye(3), np.eye(4))
    with pytest.raises(FloatingPointError, match="NaN"):
        directions.generalized_eigh(np.eye(3), np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="regularization"):
        directions.generalized_eigh(np.eye(3), np.eye(3), regularization="bogus")


# ---- the paper script's two runs, on the official float32 Jacobian of the StyleGAN2 fixture -------------------
# compute_direction.py (genforce/resefa), as documented in regfac_jax/directions.py, written here
# independently of it: scipy's linear solve instead of numpy's inv, scipy's eig. Boxes on the 256
# grid and at the fixture's 32 px.
PAPER_BOXES = {
    (120, 128, 32, 128): (slice(13, 17), slice(8, 24)),
    (184, 128, 32, 64): (slice(21, 25), slice(12, 20)),
}


def _paper_reference(jac, rows, cols, full_rank: bool, tau: float = 1e-3):
    """jac ``[C, H, W, d]`` float32 -> (real eigenvalues [d] descending, directions [d, d] as
    rows)."""
    d = jac.shape[-1]
    fg = np.zeros(jac.shape[1:3], bool)
    fg[rows, cols] = True
    jf, jb = jac[:, fg].reshape(-1, d), jac[:, ~fg].reshape(-1, d)
    A = (jf.T @ jf) * np.float32(1 / len(jf))  # float32 Grams normalised by their row counts
    B = (jb.T @ jb) * np.float32(1 / len(jb))
    if full_rank:
        B = B.astype(np.float64) + tau * float(np.trace(B)) * np.eye(d)
    w, V = scipy.linalg.eig(scipy.linalg.solve(B, A))
    # float32 LAPACK for the default run
    assert w.dtype == (np.complex128 if full_rank else np.complex64)
    order = np.argsort(-w.real, kind="stable")
    return w.real[order], V.real[:, order].T


def _abs_cos(a, b):
    return np.abs(np.sum(a * b, -1)) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def fixture_grams(fixtures_dir):
    """Our Grams of the fixture (our float32 Jacobian) and the official float32 Jacobian, at sample
    0's w."""
    import json

    import converters
    from regfac_jax import jacobian, regions

    folder = fixtures_dir / "stylegan2"
    with np.load(folder / "params.npz") as data:
        state = {k: data[k] for k in data.files}
    config = json.loads((folder / "config.json").read_text())["init_kwargs"]
    gen = converters.convert_state_dict("stylegan2", state, config)
    w = np.load(fixtures_dir / "stylegan2" / "io.npz")["ws"][0, 0]
    masks = np.stack([regions.box_mask(box, 32) for box in PAPER_BOXES])
    for mask, (rows, cols) in zip(masks, PAPER_BOXES.values(), strict=True):
        want = np.zeros((32, 32), np.float32)
        want[rows, cols] = 1
        np.testing.assert_array_equal(mask, want)  # our box convention is the paper's
    A, B = jacobian.region_grams(
        gen.latent_fn("w", noise_mode="const"), w, masks, jacobian.JacobianOptions(tangent_chunk=32)
    )
    official = np.load(fixtures_dir / "stylegan2" / "jacobian.npz")["jacobian_f32"]
    return np.asarray(A), np.asarray(B), official


@pytest.mark.parametrize("method", ["official", "official_full_rank"])
def test_official_methods_reproduce_the_paper_runs(fixture_grams, method):
    A, B, official = fixture_grams
    for r, (rows, cols) in enumerate(PAPER_BOXES.values()):
        ev, dv = directions.generalized_eigh(A[r], B[r], method=method, k=5)
        ref_ev, ref_dv = _paper_reference(
            official, rows, cols, full_rank=method == "official_full_rank"
        )
        other_ev, other_dv = _paper_reference(official, rows, cols, full_rank=method == "official")
        # The bar: top-5 |cos| >= 0.999 against the matching run (measured: 1 - 1e-7; our
        # Jacobian is ~1e-6 relative from the official float32 one and cond(B) ~ 57, so float32
        # solves agree to ~1e-5 anywhere).
        assert _abs_cos(dv, ref_dv[:5]).min() >= 0.999
        # Eigenvalues to 1e-3 relative: ~100x the measured 1e-5; the other run differs by 7-11 %.
        np.testing.assert_allclose(ev, ref_ev[:5], rtol=1e-3)
        # And the test can fail: the other run's ridge moves the directions below the bar (measured
        # 0.92-0.998).
        assert _abs_cos(dv, other_dv[:5]).min() < 0.999
        assert np.max(np.abs(ev / other_ev[:5] - 1)) > 0.05


# ---- the launcher's official switches and its per-sample layout ----------------------------------
def test_launcher_solver_settings():
    from experiments import pipeline
    from experiments.configs import base

    cfg = base.base_config()
    assert pipeline.solver_settings(cfg) == ("whiten", {"regularization": "auto", "tau": None})
    # the paper script's default run: no ridge, whatever solver.regularization says
    cfg.official = True
    assert pipeline.solver_settings(cfg) == ("official", {})
    cfg.official_full_rank = True
    assert pipeline.solver_settings(cfg) == ("official_full_rank", {})
    cfg.solver.tau = 1e-2  # the paper's --tao
    assert pipeline.solver_settings(cfg) == ("official_full_rank", {"tau": 1e-2})
    cfg.official = False
    with pytest.raises(ValueError, match="official True"):
        pipeline.solver_settings(cfg)
    cfg.official, cfg.official_full_rank = True, False
    with pytest.raises(ValueError, match="no ridge"):
        pipeline.solver_settings(cfg)


def test_official_launcher_writes_an_unambiguous_per_sample_layout(
    fixtures_dir, tmp_path, monkeypatch
):
    from experiments import pipeline
    from experiments.configs import ffhq_stylegan2

    monkeypatch.setenv(pipeline.FIXTURES_ENV, str(fixtures_dir))
    cfg = ffhq_stylegan2.get_config("tiny")  # 2 samples, regions eyes and mouth, k = 5
    cfg.official, cfg.regions, cfg.jacobian.tangent_chunk = True, "eyes", 32
    res = pipeline.find_directions(cfg, tmp_path, progress=False)
    out = tmp_path / "directions"
    assert not (out / "eyes.npy").exists() and not (tmp_path / "eigenvalues" / "eyes.npy").exists()
    stacked = np.load(out / "eyes_per_sample.npy")
    assert stacked.shape == (2, 5, 32) and np.load(
        tmp_path / "eigenvalues" / "eyes_per_sample.npy"
    ).shape == (2, 5)
    grams = np.load(tmp_path / "grams.npz")
    for j in range(2):
        np.testing.assert_array_equal(np.load(out / f"eyes_sample{j:03d}.npy"), stacked[j])
        # Each sample's file is the paper's default solve of that sample's own Grams, not sample
        # 0's.
        want = directions.generalized_eigh(
            grams["A"][j, 0], grams["B"][j, 0], method="official", k=5
        )[1]
        np.testing.assert_array_equal(stacked[j], want)
    # two samples really give two different answers
    assert _abs_cos(stacked[0], stacked[1]).min() < 0.999
    np.testing.assert_array_equal(res["eyes"]["directions"], stacked)
    import json

    report = json.loads((tmp_path / "official_comparison.json").read_text())
    assert report["method"] == "official" and report["ours"] == {"regularization": "none"}
    # Ours on the same unregularised problem (cond(B) ~ 60): the top directions agree to float32
    # round-off.
    assert min(report["cosine_top_direction_official_vs_ours"]["eyes"]) > 1 - 1e-4

"""Threads and SIMD dispatch (cecore/_threads.py, cecore/_config.py).

Results must be bitwise identical for any number of threads, and every SIMD
kernel variant the CPU supports must be accurate.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import _reference as ref
import numpy as np
import pytest
from _helpers import (
    assert_log_softmax_close,
    assert_logsumexp_close,
    assert_softmax_close,
)

import cecore
from cecore import _config

THREADS = [1, 2, 3, 4]


def _big_cases(rng):
    """(id, function of n_threads) for calls large enough to run in parallel (>= 2**15)."""
    cases = {}
    for k, n in [(1, 40_000), (10, 4_096), (33, 1_500), (1000, 64)]:
        for dt in (np.float32, np.float64):
            x = (rng.normal(size=(n, k)) * 3).astype(dt)
            y = rng.integers(0, k, size=n)
            y[::7] = -100
            soft = rng.dirichlet(np.ones(k), size=n).astype(dt)
            w = rng.uniform(0.5, 2.0, k)
            tag = f"K{k}-{np.dtype(dt).name}"
            for red in ("mean", "sum", "none"):
                cases[f"ce-index-{tag}-{red}"] = (
                    lambda nt, x=x, y=y, w=w, red=red: cecore.cross_entropy(
                        x, y, weight=w, label_smoothing=0.1, reduction=red, n_threads=nt))
                cases[f"ce-soft-{tag}-{red}"] = (
                    lambda nt, x=x, s=soft, red=red: cecore.cross_entropy(
                        x, s, reduction=red, n_threads=nt))
            for name, f in (("log_softmax", cecore.log_softmax), ("softmax", cecore.softmax),
                            ("logsumexp", cecore.logsumexp)):
                cases[f"{name}-{tag}"] = lambda nt, x=x, f=f: f(x, n_threads=nt)
            cases[f"entropy-{tag}"] = lambda nt, s=soft: cecore.entropy(s, n_threads=nt)
            cases[f"kl-{tag}"] = (
                lambda nt, s=soft: cecore.kl_divergence(s, s[::-1], n_threads=nt))
    # K-dim (N, C, H, W) with the class axis 1
    x = rng.normal(size=(4, 10, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, size=(4, 32, 32))
    cases["ce-kdim"] = lambda nt: cecore.cross_entropy(x, y, axis=1, n_threads=nt)
    # fused gradients
    xg = rng.normal(size=(8192, 10)).astype(np.float32)
    yg = rng.integers(0, 10, size=8192)
    cases["ce-grad"] = lambda nt: np.concatenate([np.ravel(v) for v in cecore.cross_entropy(
        xg, yg, label_smoothing=0.1, return_grad=True, n_threads=nt)])
    sg = rng.dirichlet(np.ones(10), size=8192).astype(np.float32)
    cases["ce-soft-grad"] = lambda nt: np.concatenate([np.ravel(v) for v in cecore.cross_entropy(
        xg, sg, reduction="sum", return_grad=True, n_threads=nt)])
    bg = (rng.random(xg.shape) < 0.5).astype(np.float32)
    cases["bce-logits-grad"] = lambda nt: np.concatenate([
        np.ravel(v) for v in cecore.binary_cross_entropy_with_logits(
            xg, bg, pos_weight=np.linspace(1, 2, 10), return_grad=True, n_threads=nt)])
    # nll_loss parallelises over rows
    lp = ref.log_softmax(rng.normal(size=(50_000, 3))).astype(np.float32)
    t = rng.integers(0, 3, size=50_000)
    cases["nll-50000x3"] = lambda nt: cecore.nll_loss(lp, t, weight=[1, 2, 3], n_threads=nt)
    cases["nll-50000x3-none"] = lambda nt: cecore.nll_loss(lp, t, reduction="none", n_threads=nt)
    for dt in (np.float32, np.float64):
        z = (rng.normal(size=(90_001,)) * 4).astype(dt)
        b = (rng.random(z.shape) < 0.5).astype(dt)
        pr = (1 / (1 + np.exp(-z.astype(np.float64)))).astype(dt)
        z2 = z[: 9000 * 9].reshape(9000, 9)
        b2 = b[: 9000 * 9].reshape(9000, 9)
        tag = np.dtype(dt).name
        cases[f"bce-logits-{tag}"] = lambda nt, z=z, b=b: cecore.binary_cross_entropy_with_logits(
            z, b, n_threads=nt)
        cases[f"bce-logits-weighted-{tag}"] = (
            lambda nt, z=z2, b=b2: cecore.binary_cross_entropy_with_logits(
                z, b, weight=np.arange(1.0, 10.0), pos_weight=np.linspace(0.5, 2, 9),
                n_threads=nt))
        cases[f"bce-logits-per-element-{tag}"] = (
            lambda nt, z=z2, b=b2: cecore.binary_cross_entropy_with_logits(
                z, b, weight=np.linspace(0.1, 1, 9000)[:, None], reduction="sum", n_threads=nt))
        cases[f"bce-{tag}"] = lambda nt, p=pr, b=b: cecore.binary_cross_entropy(
            p, b, n_threads=nt)
        cases[f"bce-none-{tag}"] = lambda nt, p=pr, b=b: cecore.binary_cross_entropy(
            p, b, reduction="none", n_threads=nt)
    return cases


_CASES = _big_cases(np.random.default_rng(20240611))


@pytest.mark.parametrize("case", list(_CASES))
def test_bitwise_identical_for_any_thread_count(case):
    fn = _CASES[case]
    first = fn(1)
    assert np.all(np.isfinite(first))
    for nt in THREADS[1:] + [None, 16]:
        got = fn(nt)
        assert type(got) is type(first)
        assert np.asarray(got).dtype == np.asarray(first).dtype
        # bitwise: compare the bytes, not the values
        assert np.asarray(got).tobytes() == np.asarray(first).tobytes(), f"n_threads={nt}"


# ---------------------------------------------------------------------------
# subprocesses: environment read at import


def _run(code, env_extra, cwd):
    """Run ``code`` in a fresh interpreter that imports the cecore under test."""
    env = dict(os.environ)
    env.pop("CECORE_SIMD", None)
    env.update(env_extra)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(cecore.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent] + (
        [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


_SIMD_SCRIPT = """
    import json, sys
    import numpy as np
    import cecore
    from cecore import _config

    rng = np.random.default_rng(7)
    out = {"config": {k: str(v) for k, v in _config.config().items()}}
    arrays = {}
    for dt in ("float32", "float64"):
        # enough rows per block for the 16-row (AVX-512) and packed block paths
        for k, n in ((5, 4096), (33, 2048), (1000, 64)):
            x = (rng.normal(size=(n, k)) * 4).astype(dt)
            y = rng.integers(0, k, size=n)
            arrays[f"x-{dt}-{k}"] = x
            arrays[f"y-{dt}-{k}"] = y
            arrays[f"lsm-{dt}-{k}"] = cecore.log_softmax(x)
            arrays[f"sm-{dt}-{k}"] = cecore.softmax(x)
            arrays[f"lse-{dt}-{k}"] = cecore.logsumexp(x)
            arrays[f"ce-{dt}-{k}"] = cecore.cross_entropy(x, y, reduction="none",
                                                          label_smoothing=0.1)
        z = (rng.normal(size=5000) * 6).astype(dt)
        t = rng.random(5000).astype(dt)
        arrays[f"z-{dt}"] = z
        arrays[f"t-{dt}"] = t
        arrays[f"bcel-{dt}"] = cecore.binary_cross_entropy_with_logits(
            z, t, pos_weight=2.0, reduction="none")
        p = (1 / (1 + np.exp(-z.astype(np.float64)))).astype(dt)
        arrays[f"p-{dt}"] = p
        arrays[f"bce-{dt}"] = cecore.binary_cross_entropy(p, t, reduction="none")
    np.savez(sys.argv[1] if len(sys.argv) > 1 else "simd.npz", **arrays)
    print(json.dumps(out))
"""


def _supported_levels():
    best = _config.config()["simd_supported"]
    return list(_config.SIMD_LEVELS[: _config.SIMD_LEVELS.index(best) + 1])


@pytest.mark.parametrize("level", list(_config.SIMD_LEVELS))
def test_each_simd_level_is_accurate(level, tmp_path):
    proc = _run(_SIMD_SCRIPT, {"CECORE_SIMD": level}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    supported = _supported_levels()
    # a level the CPU lacks falls back to the best supported one
    expected = level if level in supported else supported[-1]
    assert info["config"]["simd"] == expected
    with np.load(tmp_path / "simd.npz") as data:
        d = dict(data)
    for dt in ("float32", "float64"):
        for k in (5, 33, 1000):
            x, y = d[f"x-{dt}-{k}"], d[f"y-{dt}-{k}"]
            assert d[f"lsm-{dt}-{k}"].dtype == dt
            assert_log_softmax_close(d[f"lsm-{dt}-{k}"], x)
            assert_softmax_close(d[f"sm-{dt}-{k}"], x)
            assert_logsumexp_close(d[f"lse-{dt}-{k}"], x)
            tol = ({"rtol": 1e-12, "atol": 1e-14} if dt == "float64"
                   else {"rtol": 1e-6, "atol": 1e-6})
            np.testing.assert_allclose(
                d[f"ce-{dt}-{k}"],
                ref.cross_entropy(x, y, reduction="none", label_smoothing=0.1), **tol)
        tol = {"rtol": 1e-13, "atol": 0} if dt == "float64" else {"rtol": 2e-6, "atol": 0}
        np.testing.assert_allclose(
            d[f"bcel-{dt}"],
            ref.binary_cross_entropy_with_logits(d[f"z-{dt}"], d[f"t-{dt}"], pos_weight=2.0,
                                                 reduction="none"), **tol)
        np.testing.assert_allclose(
            d[f"bce-{dt}"], ref.binary_cross_entropy(d[f"p-{dt}"], d[f"t-{dt}"],
                                                     reduction="none"), **tol)


def test_default_simd_level_is_the_best_supported(tmp_path):
    proc = _run(_SIMD_SCRIPT, {"CECORE_SIMD": ""}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["config"]["simd"] == info["config"]["simd_supported"]
    assert info["config"]["simd_supported"] == _config.config()["simd_supported"]


@pytest.mark.parametrize("value", ["sse9", "avx-512", "neon", "1"])
def test_invalid_simd_level_raises_at_import(value, tmp_path):
    proc = _run("import cecore", {"CECORE_SIMD": value}, tmp_path)
    assert proc.returncode != 0
    assert "ValueError" in proc.stderr
    assert "CECORE_SIMD" in proc.stderr
    assert repr(value) in proc.stderr or value in proc.stderr


def test_omp_num_threads_sets_the_default(tmp_path):
    if _config.config()["openmp"] == "none (built without OpenMP)":
        pytest.skip("built without OpenMP")
    code = "from cecore import _config; print(_config.config()['default_n_threads'])"
    proc = _run(code, {"OMP_NUM_THREADS": "3"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "3"


# ---------------------------------------------------------------------------
# show_config and version


def test_show_config(capsys):
    cecore.show_config()
    out = capsys.readouterr().out
    fields = {
        m.group(1): m.group(2).strip()
        for m in re.finditer(r"^\s*(\w+): (.*)$", out, flags=re.MULTILINE)
    }
    for key in ("version", "compiler", "openmp", "simd", "default_n_threads"):
        assert key in fields, out
    assert fields["version"] == cecore.__version__
    assert fields["simd"] in _config.SIMD_LEVELS
    assert int(fields["default_n_threads"]) >= 1
    assert fields["compiler"]
    assert fields["openmp"].isdigit() or fields["openmp"].startswith("none")
    assert fields == {k: str(v) for k, v in _config.config().items()}


def test_command_line(tmp_path):
    proc = _run("import sys; from cecore.__main__ import main; sys.exit(main(['config']))", {},
                tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^\s*version: " + re.escape(cecore.__version__) + "$", proc.stdout,
                     flags=re.MULTILINE)
    assert re.search(r"^\s*simd: (baseline|avx2|avx512)$", proc.stdout, flags=re.MULTILINE)
    proc = _run("import runpy, sys; sys.argv = ['cecore', '--version']; "
                "runpy.run_module('cecore', run_name='__main__')", {}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"cecore {cecore.__version__}"
    proc = _run("import runpy, sys; sys.argv = ['cecore', 'bogus']; "
                "runpy.run_module('cecore', run_name='__main__')", {}, tmp_path)
    assert proc.returncode == 2  # argparse usage error


def test_version():
    assert isinstance(cecore.__version__, str)
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+.+)?",
                        cecore.__version__)


def test_public_api():
    expected = {"__version__", "Comparison", "Evaluator", "binary_cross_entropy",
                "binary_cross_entropy_with_logits", "cross_entropy", "cross_entropy_pq",
                "entropy", "kl_divergence", "linear_cross_entropy", "log_softmax", "logsumexp",
                "nll_loss", "show_config", "softmax", "TokenStats", "token_stats",
                "sequence_logprob", "logit_divergence"}
    assert set(cecore.__all__) == expected
    for name in expected:
        assert hasattr(cecore, name)

"""cecore.dask: cross_entropy and evaluate of Dask arrays chunked along rows."""

import os
import subprocess
import sys

import numpy as np
import pytest
from _helpers import assert_metrics_equal, evaluator_result

import cecore

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
cecore_dask = pytest.importorskip("cecore.dask")
from dask.delayed import Delayed  # noqa: E402


def make_data(rng, n=1000, k=40, dtype=np.float32):
    logits = (rng.standard_normal((n, k)) * 2).astype(dtype)
    target = rng.integers(0, k, n)
    logits[np.arange(n), target] += dtype(2)
    target[rng.random(n) < 0.1] = -100
    return logits, target


# Float32 rows of at most 32 classes: on AVX-512 the kernel computes a row's log-sum-exp
# in 16-row groups, in float32, or else in float64, so a row's loss depends (at float32
# rounding) on its place in the batch; see test_evaluator.py. Other inputs: float64 rounding.
SMALL_K_FLOAT32_RTOL = 1e-6


def test_import_cecore_does_not_import_dask(tmp_path):
    code = "import sys, cecore; sys.exit('dask' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cecore.__file__)))
    # from an empty directory: `python -c` puts the working directory first on sys.path
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, timeout=60)
    assert run.returncode == 0


@pytest.mark.parametrize("chunks", [1000, 300, (1, 998, 1), 7])  # 7: a 3-level merge tree
@pytest.mark.parametrize("k", [20, 40])
def test_evaluate_matches_evaluator_result(rng, chunks, k):
    logits, target = make_data(rng, k=k)
    lazy = cecore_dask.evaluate(da.from_array(logits, chunks=(chunks, k)), target,
                                topk=(1, 5))
    assert isinstance(lazy, Delayed)
    with dask.config.set(scheduler="threads"):
        assert_metrics_equal(lazy.compute(), evaluator_result(logits, target, topk=(1, 5)),
                            rtol=SMALL_K_FLOAT32_RTOL if k <= 32 else 1e-13)


def test_options_and_dask_targets(rng):
    logits, target = make_data(rng, dtype=np.float64)
    weight = rng.random(40) + 0.5
    options = {"weight": weight, "ignore_index": 3, "label_smoothing": 0.2, "topk": (1, 2)}
    target[target == -100] = 3
    dask_target = da.from_array(target, chunks=333)  # rechunked to the logits' rows
    got = cecore_dask.evaluate(da.from_array(logits, chunks=(250, 40)), dask_target,
                               split_every=2, n_threads=1, **options).compute()
    assert_metrics_equal(got, evaluator_result(logits, target, **options))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_cross_entropy_matches_evaluator_result(rng, reduction, dtype):
    logits, target = make_data(rng, dtype=dtype)
    target[target == -100] = 3  # ignored below
    options = {"weight": rng.random(40) + 0.5, "ignore_index": 3, "label_smoothing": 0.1}
    lazy = cecore_dask.cross_entropy(da.from_array(logits, chunks=(128, 40)), target,
                                     reduction=reduction, **options)
    assert isinstance(lazy, da.Array)
    want = cecore.cross_entropy(logits, target, reduction=reduction, **options)
    got = lazy.compute(scheduler="threads")
    assert got.dtype == want.dtype and np.shape(got) == np.shape(want)
    if reduction == "none":
        np.testing.assert_array_equal(got, want)  # per-row values do not depend on chunks
    else:
        rtol = 1e-13 if dtype == np.float64 else 1e-7  # float64 sums, rounded to float32
        np.testing.assert_allclose(got, want, rtol=rtol)


@pytest.mark.parametrize("reduction, expected", [("mean", np.float32(3e38)), ("sum", np.inf)])
def test_float32_result_overflows_to_inf_like_evaluator_result(reduction, expected):
    # float64 partial sums past float32's range: inf, not an overflow warning
    logits = np.zeros((4, 2), np.float32)
    logits[:, 1] = 3e38
    target = np.zeros(4, np.int64)
    want = cecore.cross_entropy(logits, target, reduction=reduction)
    got = cecore_dask.cross_entropy(da.from_array(logits, chunks=2), target,
                                    reduction=reduction).compute(scheduler="threads")
    assert got.dtype == want.dtype == np.float32 and got == want == expected


def test_class_axis_other_than_last(rng):
    logits, target = make_data(rng, n=600, k=12, dtype=np.float64)
    stored = logits.reshape(200, 3, 12).transpose(0, 2, 1)  # (N, K, d)
    arrays = da.from_array(stored, chunks=(64, 12, 3)), target.reshape(200, 3)
    assert_metrics_equal(cecore_dask.evaluate(*arrays, axis=1).compute(),
                        evaluator_result(logits, target))
    none = cecore_dask.cross_entropy(*arrays, axis=1, reduction="none").compute()
    np.testing.assert_array_equal(none, cecore.cross_entropy(stored, target.reshape(200, 3),
                                                             axis=1, reduction="none"))
    classes_first = da.from_array(np.ascontiguousarray(logits.T), chunks=(12, 100))
    assert_metrics_equal(cecore_dask.evaluate(classes_first, target, axis=0).compute(),
                        evaluator_result(logits, target))


def test_nothing_is_computed_until_compute(rng):
    logits, target = make_data(rng, n=100)
    calls = []

    def record(block):
        calls.append(block.shape)
        return block

    lazy_logits = da.from_array(logits, chunks=(10, 40)).map_blocks(
        record, meta=np.empty((0, 0), dtype=logits.dtype))  # meta: no call to infer it
    loss = cecore_dask.cross_entropy(lazy_logits, target)
    result = cecore_dask.evaluate(lazy_logits, target)
    assert calls == []
    assert loss.compute(scheduler="sync") == pytest.approx(cecore.cross_entropy(logits, target))
    assert result.compute(scheduler="sync")["count"] == np.sum(target != -100)


def test_bad_target_is_named_by_its_index_at_compute_time(rng):
    logits, target = make_data(rng)
    target[777] = 40
    lazy = cecore_dask.evaluate(da.from_array(logits, chunks=(100, 40)), target)
    with pytest.raises(ValueError, match=r"target\[777\] = 40 is out of range"):
        lazy.compute(scheduler="sync")
    stored = logits.reshape(100, 10, 40).transpose(0, 2, 1)
    target_2d = np.where(target < 0, 0, target).reshape(100, 10) % 40
    target_2d[54, 3] = -5
    lazy = cecore_dask.cross_entropy(da.from_array(stored, chunks=(7, 40, 10)), target_2d,
                                     axis=1)
    with pytest.raises(ValueError, match=r"target\[54, 3\] = -5 is out of range"):
        lazy.compute(scheduler="sync")


@pytest.mark.parametrize("axis", [1, 0])
def test_bad_target_in_per_row_losses_is_named_by_its_index_in_the_whole_array(rng, axis):
    # reduction="none" named it by its index in its chunk (target[5] for target[777])
    logits, target = make_data(rng)
    target[777] = 40
    stored = logits if axis == 1 else np.ascontiguousarray(logits.T)
    chunks = (100, 40) if axis == 1 else (40, 100)
    lazy = cecore_dask.cross_entropy(da.from_array(stored, chunks=chunks), target, axis=axis,
                                     reduction="none")
    with pytest.raises(ValueError, match=r"target\[777\] = 40 is out of range"):
        lazy.compute(scheduler="sync")
    target[777] = 3  # and with valid targets the blocks line up with their rows
    np.testing.assert_array_equal(
        cecore_dask.cross_entropy(da.from_array(stored, chunks=chunks), target, axis=axis,
                                  reduction="none").compute(scheduler="sync"),
        cecore.cross_entropy(stored, target, axis=axis, reduction="none"))


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda x, t: (x.compute(), t), TypeError, "logits must be a dask array"),
        (lambda x, t: (x.rechunk((100, 10)), t), ValueError,
         r"chunked along its rows \(axis 0\) only, but axis 1 has 4 chunks"),
        (lambda x, t: (x, t.astype(np.float32)), TypeError, "integer class indices"),
        (lambda x, t: (x, t[:-1]), ValueError, r"target has shape \(999,\)"),
        (lambda x, t: (x[0], t[0]), ValueError, "rows and classes"),
        (lambda x, t: (x.astype(complex), t), TypeError, "real float or integer"),
    ],
)
def test_bad_input_raises_at_once(rng, make, error, match):
    logits, target = make_data(rng)
    arrays = make(da.from_array(logits, chunks=(100, 40)), target)
    for function in (cecore_dask.evaluate, cecore_dask.cross_entropy):
        with pytest.raises(error, match=match):
            function(*arrays)


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"topk": 0}, ValueError, "topk values must be >= 1"),
        ({"weight": np.ones(3)}, ValueError, r"weight must have shape \(40,\)"),
        ({"axis": 2}, ValueError, "axis 2 is out of range"),
        ({"split_every": 1}, ValueError, "split_every must be >= 2"),
        ({"label_smoothing": -1}, ValueError, "label_smoothing must be in"),
    ],
)
def test_bad_options_raise_at_once(rng, options, error, match):
    logits, target = make_data(rng)
    with pytest.raises(error, match=match):
        cecore_dask.evaluate(da.from_array(logits, chunks=(100, 40)), target, **options)
    with pytest.raises(ValueError, match="reduction must be one of"):
        cecore_dask.cross_entropy(da.from_array(logits, chunks=(100, 40)), target,
                                  reduction="avg")


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def test_distributed_cluster_of_processes(rng, client):
    logits, target = make_data(rng, n=3000)
    arrays = da.from_array(logits, chunks=(256, 40)), da.from_array(target, chunks=256)
    result = client.compute(cecore_dask.evaluate(*arrays, topk=(1, 5), n_threads=1)).result()
    threaded = cecore_dask.evaluate(*arrays, topk=(1, 5)).compute(scheduler="threads")
    assert result == threaded  # the same tree of float64 sums on any scheduler
    assert_metrics_equal(result, evaluator_result(logits, target, topk=(1, 5)))
    loss = client.compute(cecore_dask.cross_entropy(*arrays, n_threads=1)).result()
    assert loss == pytest.approx(cecore.cross_entropy(logits, target), rel=1e-7)
    per_row = client.compute(cecore_dask.cross_entropy(*arrays, reduction="none")).result()
    np.testing.assert_array_equal(per_row, cecore.cross_entropy(logits, target,
                                                                reduction="none"))
    # the workers ran the chunks: each is a separate process
    pids = client.run(os.getpid)
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()

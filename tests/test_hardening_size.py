"""64-bit indexing: inputs of more than 2**31 elements, and rows more than
2**31 elements (8 GiB) apart, without copies.

* A stride-0 broadcast of one row to (2**21, 1100) float32 is 2.3e9 elements
  (9.2 GB if materialised). The Python layer passes the row stride 0 through
  (as_rows only copies rows that are not contiguous or not aligned), so the
  kernels walk all 2**21 rows of one 4.4 KB row: results must equal the
  single row's, and the process must not grow by gigabytes.
* A sparse memory-mapped file of 18 GB (a few KB on disk) viewed every 2**20
  rows: 4 rows whose element offsets reach 3.5e9 (byte offsets 13.8e9), which
  overflows any 32-bit offset arithmetic in the kernels.

log_softmax, softmax and gradients of the broadcast input would have to write
9.2 GB and BCE flattens (copies) its input, so those run on the memory-mapped
rows only. The divergence kernels use a scalar libm log per element: over
2.3e9 elements they take ~10-20 s on two cores and are marked slow (CI runs
them: pytest runs every marker unless told otherwise).
"""

import os
import resource
import sys

import numpy as np
import pytest

import cecore
from cecore._validation import as_rows

pytestmark = pytest.mark.skipif(sys.maxsize <= 2**32, reason="needs a 64-bit platform")

ROWS, K = 2**21, 1100
TARGET = 7


@pytest.fixture(scope="module")
def row():
    return np.random.default_rng(0).standard_normal(K).astype(np.float32)


@pytest.fixture(scope="module")
def huge(row):
    x = np.broadcast_to(row, (ROWS, K))
    assert x.size > 2**31 and x.strides == (0, 4)
    return x


def _maxrss_mb():
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _lse(v):
    v = np.asarray(v, np.float64)
    m = v.max()
    return m + np.log(np.sum(np.exp(v - m)))


def test_stride_zero_rows_are_passed_through_without_a_copy(huge):
    rows = as_rows(huge, 1)
    assert rows.strides == (0, 4) and np.shares_memory(rows, huge)


def _check_no_copy(before_mb):
    grown = _maxrss_mb() - before_mb
    assert grown < 1024, f"peak memory grew by {grown:.0f} MB: the input was copied"


@pytest.mark.parametrize("name", ["logsumexp", "cross_entropy", "cross_entropy probabilities",
                                  "nll_loss"])
def test_more_than_2_31_elements(huge, row, name):
    before = _maxrss_mb()
    lse = _lse(row)
    if name == "logsumexp":
        per_row = cecore.logsumexp(huge)
        got, want = per_row[-1], lse
    elif name == "cross_entropy":
        y = np.full(ROWS, TARGET)
        per_row = cecore.cross_entropy(huge, y, reduction="none")
        got = cecore.cross_entropy(huge, y)
        want = lse - row[TARGET]
    elif name == "cross_entropy probabilities":
        t_row = np.random.default_rng(1).dirichlet(np.ones(K)).astype(np.float32)
        t = np.broadcast_to(t_row, huge.shape)
        per_row = cecore.cross_entropy(huge, t, reduction="none")
        got = cecore.cross_entropy(huge, t)
        want = np.sum(t_row.astype(np.float64) * (lse - row))
    else:
        y = np.full(ROWS, TARGET)
        per_row = cecore.nll_loss(huge, y, reduction="none")
        got = cecore.nll_loss(huge, y, reduction="sum") / ROWS
        want = -float(row[TARGET])
    _check_no_copy(before)
    assert per_row.shape == (ROWS,)
    assert (per_row == per_row[0]).all()  # every row is the same row
    assert per_row[0] == pytest.approx(want, rel=2e-6)
    assert float(got) == pytest.approx(want, rel=2e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["entropy", "kl_divergence"])
def test_more_than_2_31_elements_divergences(row, name):
    p_row = np.abs(row) / np.abs(row).sum(dtype=np.float64)
    p = np.broadcast_to(p_row.astype(np.float32), (ROWS, K))
    q = np.broadcast_to(np.full(K, 1 / K, np.float32), (ROWS, K))
    before = _maxrss_mb()
    got = cecore.entropy(p) if name == "entropy" else cecore.kl_divergence(p, q)
    _check_no_copy(before)
    p64 = p_row.astype(np.float32).astype(np.float64)
    want = -np.sum(p64 * np.log(p64)) if name == "entropy" else np.sum(
        p64 * np.log(p64 / np.float64(np.float32(1 / K))))
    assert got.shape == (ROWS,) and (got == got[0]).all()
    assert got[0] == pytest.approx(want, rel=2e-6)


@pytest.fixture(scope="module")
def far_rows(tmp_path_factory):
    """(x, p): 4 rows each of logits and probabilities, 2**20 rows (4.6 GB) apart in a
    sparse 18 GB memory map; element offsets up to 3.5e9."""
    if not sys.platform.startswith("linux"):
        pytest.skip("relies on sparse files (Linux file systems and tmpfs)")
    path = tmp_path_factory.mktemp("sparse") / "rows.f32"
    n = 2**22
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=(n, K))
    if os.stat(path).st_blocks * 512 > 2**30:
        pytest.skip("the file system does not keep the memory map sparse")
    rng = np.random.default_rng(2)
    step = 2**20
    values = (rng.standard_normal((4, K)) * 3).astype(np.float32)
    mm[::step] = values
    mm[1::step] = np.abs(values) / np.abs(values).sum(axis=1, keepdims=True)
    mm.flush()
    del mm
    ro = np.memmap(path, dtype=np.float32, mode="r", shape=(n, K))
    x, p = ro[::step], ro[1::step]
    assert x.shape == (4, K) and x.strides[0] == step * K * 4 > 2**32
    assert 3 * step * K > 2**31  # the last row's element offset
    return x, p


def test_rows_beyond_2_31_elements_apart(far_rows):
    x, p = far_rows
    xc, pc = np.array(x), np.array(p)  # the same values, contiguous and small
    assert not np.shares_memory(as_rows(x, 1), xc) and np.shares_memory(as_rows(x, 1), x)
    y = np.array([0, 5, K - 1, 3])
    t = np.ascontiguousarray(pc[::-1])
    pairs = [
        (lambda a: cecore.logsumexp(a), "logsumexp"),
        (lambda a: cecore.log_softmax(a), "log_softmax"),
        (lambda a: cecore.softmax(a), "softmax"),
        (lambda a: cecore.cross_entropy(a, y, reduction="none"), "cross_entropy"),
        (lambda a: cecore.cross_entropy(a, y, return_grad=True)[1], "cross_entropy grad"),
        (lambda a: cecore.cross_entropy(a, t, label_smoothing=0.1, reduction="sum"),
         "cross_entropy probabilities"),
        (lambda a: cecore.nll_loss(a, y, reduction="none"), "nll_loss"),
        (lambda a: cecore.binary_cross_entropy_with_logits(a, np.abs(np.tanh(xc))),
         "bce_with_logits"),
    ]
    for fn, name in pairs:
        np.testing.assert_array_equal(fn(x), fn(xc), err_msg=name)
    for fn in (cecore.entropy, lambda a: cecore.kl_divergence(a, t),
               lambda a: cecore.cross_entropy_pq(t, a)):
        np.testing.assert_array_equal(fn(p), fn(pc))

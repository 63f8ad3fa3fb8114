"""``C += A @ B`` through the BLAS that NumPy itself calls, when it can be found.

NumPy's matmul cannot add a product to an existing array (BLAS's ``beta = 1``);
linear_cross_entropy's weight gradient needs exactly that once per chunk. The
NumPy wheels on PyPI bundle OpenBLAS (``scipy-openblas``: ``numpy.libs/`` on
Linux and Windows, ``numpy/.dylibs/`` on macOS) with prefixed CBLAS symbols
(``scipy_cblas_sgemm64_``); loading that file again with ctypes returns the
library already loaded, so the products run on the same threads (and under the
same threadpoolctl limits) as NumPy's own. Anything else (a NumPy built against
MKL, Accelerate or a system BLAS) leaves :func:`gemm_add` None and the caller
adds the product through a buffer instead.

The integer arguments are passed as 64-bit; an LP64 library would read their
low halves (x86-64 and arm64 calling conventions pass them in 64-bit registers
or stack slots), which hold the same values below 2**31. A small product is
checked against ``np.matmul`` before the function is trusted.
"""

import ctypes
import functools
import os

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_NAMES = {np.dtype(np.float32): "sgemm", np.dtype(np.float64): "dgemm"}


def _candidates():
    # os.path, not pathlib: pathlib imports ipaddress and urllib, which `import cecore`
    # does not otherwise need
    root = os.path.dirname(np.__file__)
    for folder in (os.path.join(os.path.dirname(root), "numpy.libs"),
                   os.path.join(root, ".dylibs")):
        if os.path.isdir(folder):
            yield from sorted(os.path.join(folder, name) for name in os.listdir(folder)
                              if "openblas" in name.lower())


def _load():
    """{dtype: ctypes function} of NumPy's bundled CBLAS gemm, or None."""
    if os.environ.get("CECORE_NO_BLAS_ACCUMULATE"):
        return None
    for path in _candidates():
        try:
            library = ctypes.CDLL(str(path))
        except OSError:
            continue
        functions = {}
        for dtype, name in _NAMES.items():
            for symbol in (f"scipy_cblas_{name}64_", f"scipy_cblas_{name}"):
                function = getattr(library, symbol, None)
                if function is not None:
                    scalar = ctypes.c_float if dtype == np.float32 else ctypes.c_double
                    i, p = ctypes.c_int64, ctypes.c_void_p
                    function.argtypes = [i, i, i, i, i, i, scalar, p, i, p, i, scalar, p, i]
                    function.restype = None
                    functions[dtype] = function
                    break
        if len(functions) == len(_NAMES):
            return functions
    return None


def _operand(x):
    """(CBLAS transpose flag, leading dimension) of a 2-D array whose rows or columns
    have unit stride, or None."""
    rows, cols = x.shape
    s0, s1 = (stride // x.itemsize for stride in x.strides)
    if x.strides[0] % x.itemsize or x.strides[1] % x.itemsize:
        return None
    if (s1 == 1 or cols == 1) and s0 >= max(cols, 1):
        return _NO_TRANS, max(s0, 1)
    if (s0 == 1 or rows == 1) and s1 >= max(rows, 1):
        return _TRANS, max(s1, 1)
    return None


def _add_product(function, out, a, b):
    """out += a @ b (layouts checked by the caller)."""
    (m, k), n = a.shape, b.shape[1]
    trans_a, lda = _operand(a)
    trans_b, ldb = _operand(b)
    ldc = max(out.strides[0] // out.itemsize, n, 1)
    function(_ROW_MAJOR, trans_a, trans_b, m, n, k, 1.0, a.ctypes.data, lda,
             b.ctypes.data, ldb, 1.0, out.ctypes.data, ldc)


@functools.cache
def _functions():
    functions = _load()
    if functions is None:
        return None
    rng = np.random.default_rng(0)
    for dtype, function in functions.items():
        a = rng.standard_normal((5, 3)).astype(dtype)
        b = rng.standard_normal((5, 4)).astype(dtype)
        out = np.ones((3, 4), dtype)
        _add_product(function, out, a.T, b)
        if not np.allclose(out, 1 + a.T @ b, rtol=1e-5, atol=1e-5):
            return None
    return functions


def gemm_add(out, a, b):
    """``out += a @ b`` in place with BLAS ``beta = 1``; False (nothing done) when
    NumPy's BLAS was not found or the layouts do not suit it (the caller then
    adds the product through a buffer)."""
    functions = _functions()
    if functions is None or out.dtype not in functions or a.dtype != out.dtype \
            or b.dtype != out.dtype or 0 in a.shape or 0 in b.shape \
            or not (a.flags.aligned and b.flags.aligned and out.flags.aligned) \
            or _operand(a) is None or _operand(b) is None or out.strides[1] != out.itemsize \
            or out.strides[0] < out.shape[1] * out.itemsize:
        return False
    _add_product(functions[out.dtype], out, a, b)
    return True

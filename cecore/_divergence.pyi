# Types of the public functions in _divergence.py. The result is a NumPy scalar
# for 1-D input and an array of the other axes' shape otherwise.
from typing import Any, SupportsIndex, TypeAlias

import numpy as np
import numpy.typing as npt

_Result: TypeAlias = np.floating[Any] | npt.NDArray[np.floating[Any]]

def entropy(
    p: npt.ArrayLike, *, axis: SupportsIndex = -1, base: float | None = None,
    measure: npt.ArrayLike | None = None, n_threads: SupportsIndex | None = None,
) -> _Result: ...
def cross_entropy_pq(
    p: npt.ArrayLike, q: npt.ArrayLike, *, axis: SupportsIndex = -1, base: float | None = None,
    measure: npt.ArrayLike | None = None, n_threads: SupportsIndex | None = None,
) -> _Result: ...
def kl_divergence(
    p: npt.ArrayLike, q: npt.ArrayLike, *, axis: SupportsIndex = -1, base: float | None = None,
    measure: npt.ArrayLike | None = None, n_threads: SupportsIndex | None = None,
) -> _Result: ...

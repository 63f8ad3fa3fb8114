# Types of the public functions in _softmax.py.
from typing import Any, SupportsIndex

import numpy as np
import numpy.typing as npt

def logsumexp(
    x: npt.ArrayLike, axis: SupportsIndex = -1, *, n_threads: SupportsIndex | None = None
) -> npt.NDArray[np.floating[Any]]: ...
def log_softmax(
    x: npt.ArrayLike, axis: SupportsIndex = -1, *, dtype: npt.DTypeLike | None = None,
    n_threads: SupportsIndex | None = None,
) -> npt.NDArray[Any]: ...
def softmax(
    x: npt.ArrayLike, axis: SupportsIndex = -1, *, dtype: npt.DTypeLike | None = None,
    n_threads: SupportsIndex | None = None,
) -> npt.NDArray[Any]: ...

# Types of the public functions in _linear.py.
from typing import Any, Literal, SupportsFloat, SupportsIndex, overload

import numpy.typing as npt

CHUNK_BYTES: int
MEMORY_FRACTION: int
SMALL_LOGITS: int
SMALL_CHANGE: int

def memory_budget(n: int, n_classes: int, itemsize: int) -> int: ...
def default_chunk_rows(n: int, n_classes: int, itemsize: int, row_extra: int = 0) -> int: ...
def class_chunk_width(n: int, n_classes: int, itemsize: int) -> int: ...
@overload
def linear_cross_entropy(
    hidden: npt.ArrayLike, weight: npt.ArrayLike, target: npt.ArrayLike, *,
    bias: npt.ArrayLike | None = None, ignore_index: SupportsIndex = -100,
    label_smoothing: SupportsFloat = 0.0, class_weight: npt.ArrayLike | None = None,
    z_loss: SupportsFloat = 0.0, softcap: SupportsFloat | None = None, shift: bool = False,
    reduction: Literal["mean", "sum", "none"] = "mean", return_grad: Literal[False] = False,
    chunk_size: SupportsIndex | None = None, n_threads: SupportsIndex | None = None,
) -> Any: ...
@overload
def linear_cross_entropy(
    hidden: npt.ArrayLike, weight: npt.ArrayLike, target: npt.ArrayLike, *,
    bias: npt.ArrayLike | None = None, ignore_index: SupportsIndex = -100,
    label_smoothing: SupportsFloat = 0.0, class_weight: npt.ArrayLike | None = None,
    z_loss: SupportsFloat = 0.0, softcap: SupportsFloat | None = None, shift: bool = False,
    reduction: Literal["mean", "sum", "none"] = "mean", return_grad: Literal[True],
    chunk_size: SupportsIndex | None = None, n_threads: SupportsIndex | None = None,
) -> tuple[Any, npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any] | None]: ...

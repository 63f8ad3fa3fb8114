# Types of the public loss functions in _losses.py (kept here, not inline, so
# that the overloads do not clutter the implementation). mypy.stubtest checks
# them against the runtime signatures (tests/test_packaging.py).
from typing import Any, Literal, SupportsIndex, TypeAlias, overload

import numpy as np
import numpy.typing as npt

_Scalar: TypeAlias = np.floating[Any]  # numpy.float64 for float64 input, else numpy.float32
_Array: TypeAlias = npt.NDArray[np.floating[Any]]
_Reduction: TypeAlias = Literal["mean", "sum", "none"]

@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, axis: SupportsIndex = -1,
    weight: npt.ArrayLike | None = None, ignore_index: SupportsIndex = -100,
    label_smoothing: float = 0.0, reduction: Literal["mean", "sum"] = "mean",
    n_threads: SupportsIndex | None = None, return_grad: Literal[False] = False,
    out: None = None, shift: bool = False, z_loss: float = 0.0,
    softcap: float | None = None, sample_weight: npt.ArrayLike | None = None,
    return_lse: Literal[False] = False,
) -> _Scalar: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, axis: SupportsIndex = -1,
    weight: npt.ArrayLike | None = None, ignore_index: SupportsIndex = -100,
    label_smoothing: float = 0.0, reduction: Literal["none"],
    n_threads: SupportsIndex | None = None, return_grad: Literal[False] = False,
    out: None = None, shift: bool = False, z_loss: float = 0.0,
    softcap: float | None = None, sample_weight: npt.ArrayLike | None = None,
    return_lse: Literal[False] = False,
) -> _Array: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, axis: SupportsIndex = -1,
    weight: npt.ArrayLike | None = None, ignore_index: SupportsIndex = -100,
    label_smoothing: float = 0.0, reduction: Literal["mean", "sum"] = "mean",
    n_threads: SupportsIndex | None = None, return_grad: Literal[True],
    out: _Array | None = None, shift: bool = False, z_loss: float = 0.0,
    softcap: float | None = None, sample_weight: npt.ArrayLike | None = None,
    return_lse: Literal[False] = False,
) -> tuple[_Scalar, _Array]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, axis: SupportsIndex = -1,
    weight: npt.ArrayLike | None = None, ignore_index: SupportsIndex = -100,
    label_smoothing: float = 0.0, reduction: Literal["none"],
    n_threads: SupportsIndex | None = None, return_grad: Literal[True],
    out: _Array | None = None, shift: bool = False, z_loss: float = 0.0,
    softcap: float | None = None, sample_weight: npt.ArrayLike | None = None,
    return_lse: Literal[False] = False,
) -> tuple[_Array, _Array]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, axis: SupportsIndex = -1,
    weight: npt.ArrayLike | None = None, ignore_index: SupportsIndex = -100,
    label_smoothing: float = 0.0, reduction: Literal["mean", "sum"] = "mean",
    n_threads: SupportsIndex | None = None, return_grad: Literal[False] = False,
    out: None = None, shift: bool = False, z_loss: float = 0.0,
    softcap: float | None = None, sample_weight: npt.ArrayLike | None = None,
    return_lse: Literal[True],
) -> tuple[_Scalar, _Array]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, axis: SupportsIndex = -1,
    weight: npt.ArrayLike | None = None, ignore_index: SupportsIndex = -100,
    label_smoothing: float = 0.0, reduction: Literal["none"],
    n_threads: SupportsIndex | None = None, return_grad: Literal[False] = False,
    out: None = None, shift: bool = False, z_loss: float = 0.0,
    softcap: float | None = None, sample_weight: npt.ArrayLike | None = None,
    return_lse: Literal[True],
) -> tuple[_Array, _Array]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, axis: SupportsIndex = -1,
    weight: npt.ArrayLike | None = None, ignore_index: SupportsIndex = -100,
    label_smoothing: float = 0.0, reduction: Literal["mean", "sum"] = "mean",
    n_threads: SupportsIndex | None = None, return_grad: Literal[True],
    out: _Array | None = None, shift: bool = False, z_loss: float = 0.0,
    softcap: float | None = None, sample_weight: npt.ArrayLike | None = None,
    return_lse: Literal[True],
) -> tuple[_Scalar, _Array, _Array]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, axis: SupportsIndex = -1,
    weight: npt.ArrayLike | None = None, ignore_index: SupportsIndex = -100,
    label_smoothing: float = 0.0, reduction: Literal["none"],
    n_threads: SupportsIndex | None = None, return_grad: Literal[True],
    out: _Array | None = None, shift: bool = False, z_loss: float = 0.0,
    softcap: float | None = None, sample_weight: npt.ArrayLike | None = None,
    return_lse: Literal[True],
) -> tuple[_Array, _Array, _Array]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, axis: SupportsIndex = -1,
    weight: npt.ArrayLike | None = None, ignore_index: SupportsIndex = -100,
    label_smoothing: float = 0.0, reduction: _Reduction = "mean",
    n_threads: SupportsIndex | None = None, return_grad: bool = False,
    out: _Array | None = None, shift: bool = False, z_loss: float = 0.0,
    softcap: float | None = None, sample_weight: npt.ArrayLike | None = None,
    return_lse: bool = False,
) -> (_Scalar | _Array | tuple[_Scalar | _Array, _Array]
      | tuple[_Scalar | _Array, _Array, _Array]): ...
@overload
def nll_loss(
    log_probs: npt.ArrayLike, target: npt.ArrayLike, *, axis: SupportsIndex = -1,
    weight: npt.ArrayLike | None = None, ignore_index: SupportsIndex = -100,
    reduction: Literal["mean", "sum"] = "mean", n_threads: SupportsIndex | None = None,
    shift: bool = False, sample_weight: npt.ArrayLike | None = None,
) -> _Scalar: ...
@overload
def nll_loss(
    log_probs: npt.ArrayLike, target: npt.ArrayLike, *, axis: SupportsIndex = -1,
    weight: npt.ArrayLike | None = None, ignore_index: SupportsIndex = -100,
    reduction: Literal["none"], n_threads: SupportsIndex | None = None, shift: bool = False,
    sample_weight: npt.ArrayLike | None = None,
) -> _Array: ...
@overload
def nll_loss(
    log_probs: npt.ArrayLike, target: npt.ArrayLike, *, axis: SupportsIndex = -1,
    weight: npt.ArrayLike | None = None, ignore_index: SupportsIndex = -100,
    reduction: _Reduction = "mean", n_threads: SupportsIndex | None = None, shift: bool = False,
    sample_weight: npt.ArrayLike | None = None,
) -> _Scalar | _Array: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: npt.ArrayLike | None = None,
    pos_weight: npt.ArrayLike | None = None, reduction: Literal["mean", "sum"] = "mean",
    n_threads: SupportsIndex | None = None, return_grad: Literal[False] = False,
    out: None = None,
) -> _Scalar: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: npt.ArrayLike | None = None,
    pos_weight: npt.ArrayLike | None = None, reduction: Literal["none"],
    n_threads: SupportsIndex | None = None, return_grad: Literal[False] = False,
    out: None = None,
) -> _Array: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: npt.ArrayLike | None = None,
    pos_weight: npt.ArrayLike | None = None, reduction: Literal["mean", "sum"] = "mean",
    n_threads: SupportsIndex | None = None, return_grad: Literal[True],
    out: _Array | None = None,
) -> tuple[_Scalar, _Array]: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: npt.ArrayLike | None = None,
    pos_weight: npt.ArrayLike | None = None, reduction: Literal["none"],
    n_threads: SupportsIndex | None = None, return_grad: Literal[True],
    out: _Array | None = None,
) -> tuple[_Array, _Array]: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: npt.ArrayLike | None = None,
    pos_weight: npt.ArrayLike | None = None, reduction: _Reduction = "mean",
    n_threads: SupportsIndex | None = None, return_grad: bool = False,
    out: _Array | None = None,
) -> _Scalar | _Array | tuple[_Scalar | _Array, _Array]: ...
@overload
def binary_cross_entropy(
    probs: npt.ArrayLike, target: npt.ArrayLike, *, weight: npt.ArrayLike | None = None,
    reduction: Literal["mean", "sum"] = "mean", n_threads: SupportsIndex | None = None,
) -> _Scalar: ...
@overload
def binary_cross_entropy(
    probs: npt.ArrayLike, target: npt.ArrayLike, *, weight: npt.ArrayLike | None = None,
    reduction: Literal["none"], n_threads: SupportsIndex | None = None,
) -> _Array: ...
@overload
def binary_cross_entropy(
    probs: npt.ArrayLike, target: npt.ArrayLike, *, weight: npt.ArrayLike | None = None,
    reduction: _Reduction = "mean", n_threads: SupportsIndex | None = None,
) -> _Scalar | _Array: ...

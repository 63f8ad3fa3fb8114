# Types of the functions in _logit_divergence.py. The loss is a NumPy scalar for
# "mean"/"sum" and an array of the positions' shape for "none"; with return_grad=True
# a (loss, gradient) pair.
from typing import Any, Literal, SupportsIndex, TypeAlias, overload

import numpy as np
import numpy.typing as npt

_Loss: TypeAlias = np.floating[Any] | npt.NDArray[np.floating[Any]]
_Kind: TypeAlias = Literal["kl", "reverse_kl", "jsd"]
_Reduction: TypeAlias = Literal["none", "mean", "sum"]

KINDS: tuple[str, ...]

@overload
def logit_divergence(
    logits: npt.ArrayLike, ref_logits: npt.ArrayLike, *, kind: _Kind = "kl",
    axis: SupportsIndex = -1, temperature: float = 1.0, beta: float = 0.5,
    target: npt.ArrayLike | None = None, ignore_index: SupportsIndex = -100,
    shift: bool = False, reduction: _Reduction = "mean", return_grad: Literal[False] = False,
    out: None = None, n_threads: SupportsIndex | None = None,
) -> _Loss: ...
@overload
def logit_divergence(
    logits: npt.ArrayLike, ref_logits: npt.ArrayLike, *, kind: _Kind = "kl",
    axis: SupportsIndex = -1, temperature: float = 1.0, beta: float = 0.5,
    target: npt.ArrayLike | None = None, ignore_index: SupportsIndex = -100,
    shift: bool = False, reduction: _Reduction = "mean", return_grad: Literal[True],
    out: npt.NDArray[Any] | None = None, n_threads: SupportsIndex | None = None,
) -> tuple[_Loss, npt.NDArray[Any]]: ...
def _comparison_rows(
    logits: npt.ArrayLike, ref_logits: npt.ArrayLike, target: npt.ArrayLike, *,
    axis: SupportsIndex = -1, ignore_index: SupportsIndex = -100, shift: bool = False,
    n_threads: SupportsIndex | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64],
           npt.NDArray[np.bool_]]: ...

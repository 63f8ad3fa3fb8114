# Stub for the compiled module cecore/_softmax_kernels.pyx (private; validated input only).
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

_Floats: TypeAlias = npt.NDArray[np.floating[Any]]  # float32 or float64, rows contiguous
_Targets: TypeAlias = npt.NDArray[np.int32] | npt.NDArray[np.int64]
# float32, float64, or 16-bit as a uint16 view (with a HALF_* code)
_Logits: TypeAlias = _Floats | npt.NDArray[np.uint16]

def dispatch_init(requested: int) -> int: ...
def simd_level() -> int: ...
def block_rows(n_rows: int, k: int) -> int: ...
def ce_index_loss(
    logits: _Logits, half: int, target: _Targets, weight: npt.NDArray[np.float64],
    ignore_index: int, label_smoothing: float, scale: float, grad: _Logits, loss_out: _Floats,
    n_threads: int,
) -> tuple[float, float, int]: ...
def ce_index_loss_opts(
    logits: _Logits, half: int, target: _Targets, weight: npt.NDArray[np.float64],
    ignore_index: int, label_smoothing: float, scale: float, grad: _Logits, loss_out: _Floats,
    z_loss: float, softcap: float, sample_weight: npt.NDArray[np.float64], lse_out: _Floats,
    n_threads: int,
) -> tuple[float, float, int]: ...
def ce_prob_loss(
    logits: _Logits, half: int, target: _Floats, weight: npt.NDArray[np.float64],
    label_smoothing: float, scale: float, grad: _Logits, loss_out: _Floats, n_threads: int,
) -> float: ...
def ce_prob_loss_opts(
    logits: _Logits, half: int, target: _Floats, weight: npt.NDArray[np.float64],
    label_smoothing: float, scale: float, grad: _Logits, loss_out: _Floats, z_loss: float,
    softcap: float, sample_weight: npt.NDArray[np.float64], lse_out: _Floats, n_threads: int,
) -> float: ...
def nll_loss(
    log_probs: _Logits, half: int, target: _Targets, weight: npt.NDArray[np.float64],
    ignore_index: int, loss_out: _Floats, sample_weight: npt.NDArray[np.float64],
    n_threads: int,
) -> tuple[float, float, int]: ...
def softmax_rows(x: _Logits, half: int, out: Any, mode: int, n_threads: int) -> None: ...
def ce_index_cols(
    logits: _Logits, half: int, target: _Targets, weight: npt.NDArray[np.float64],
    ignore_index: int, label_smoothing: float, scale: float, grad: _Logits, loss_out: _Floats,
    z_loss: float, sample_weight: npt.NDArray[np.float64], lse_out: _Floats, n_threads: int,
) -> tuple[float, float, int]: ...
def softmax_cols(
    x: _Logits, half: int, out: _Logits, lse: _Floats, mode: int, n_threads: int,
) -> None: ...
def ce_index_fast(
    logits: object, target: object, as_array: bool = False,
) -> np.floating[Any] | _Floats | None: ...
def ce_index_grad_fast(
    logits: object, target: object, as_array: bool = False,
) -> tuple[np.floating[Any] | _Floats, _Floats] | None: ...
def softmax_fast(x: object, mode: int) -> _Floats | None: ...

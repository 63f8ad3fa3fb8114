# Stub for the compiled module cecore/_binary_kernels.pyx (private; validated input only).
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

_Floats: TypeAlias = npt.NDArray[np.floating[Any]]  # 1-D, contiguous, float32 or float64
# float32, float64, or 16-bit as a uint16 view (with a HALF_* code)
_Logits: TypeAlias = npt.NDArray[np.floating[Any]] | npt.NDArray[np.uint16]

BLOCK: int

def dispatch_init(requested: int) -> int: ...
def bce_logits_loss(
    logits: _Logits, half: int, target: _Floats, pos_weight: _Floats, weight: _Floats, block: int,
    per_element: bool, loss_out: _Floats, scale: float, grad: _Logits, n_threads: int,
) -> float: ...
def bce_probs_loss(
    probs: _Logits, half: int, target: _Floats, weight: _Floats, block: int, per_element: bool,
    loss_out: _Floats, n_threads: int,
) -> tuple[float, int]: ...

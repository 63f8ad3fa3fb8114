# Stub for the compiled module cecore/_eval_kernels.pyx (private; validated input only).
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

_Floats: TypeAlias = npt.NDArray[np.floating[Any]]  # float32 or float64, rows contiguous
_Targets: TypeAlias = npt.NDArray[np.int32] | npt.NDArray[np.int64]
# float32, float64, or 16-bit as a uint16 view (with a HALF_* code)
_Logits: TypeAlias = _Floats | npt.NDArray[np.uint16]

def dispatch_init(requested: int) -> int: ...
def eval_index(
    logits: _Logits, half: int, target: _Targets, weight: npt.NDArray[np.float64], ignore_index: int,
    label_smoothing: float, topk: npt.NDArray[np.int64], block_rows: int, n_threads: int,
) -> tuple[float, float, int, tuple[int, ...], int]: ...

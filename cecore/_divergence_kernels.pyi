# Stub for the compiled module cecore/_divergence_kernels.pyx (private; validated input only).
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

_Floats: TypeAlias = npt.NDArray[np.floating[Any]]
# float32, float64, or 16-bit as a uint16 view (with a HALF_* code)
_Inputs: TypeAlias = npt.NDArray[np.floating[Any]] | npt.NDArray[np.uint16]

def divergence_rows(
    p: _Inputs, q: _Inputs, half: int, measure: npt.NDArray[np.float64], kind: int,
    out: _Floats,
    n_threads: int,
) -> int: ...

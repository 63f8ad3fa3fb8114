# Stub for the compiled module cecore/_divergence_kernels.pyx (private; validated input only).
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

_Floats: TypeAlias = npt.NDArray[np.floating[Any]]

def divergence_rows(
    p: _Floats, q: _Floats, measure: npt.NDArray[np.float64], kind: int, out: _Floats,
    n_threads: int,
) -> int: ...

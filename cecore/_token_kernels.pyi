# Stub for the compiled module cecore/_token_kernels.pyx (private; validated input only).
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

# (S, L, V) float32/float64 with contiguous rows, or 16-bit as a uint16 view (HALF_* code)
_Logits: TypeAlias = npt.NDArray[np.floating[Any]] | npt.NDArray[np.uint16]
_Targets: TypeAlias = npt.NDArray[np.int32] | npt.NDArray[np.int64]
_F64: TypeAlias = npt.NDArray[np.float64]
_I64: TypeAlias = npt.NDArray[np.int64]
_U8: TypeAlias = npt.NDArray[np.uint8]

N_CALIBRATION_BINS: int

def dispatch_init(requested: int) -> int: ...
def token_stats(
    logits: _Logits, half: int, target: _Targets, ignore_index: int, temperature: float,
    topk: int,
    logprob: _F64, lse: _F64, entropy: _F64, argmax: _I64, rank: _I64, greedy: _U8,
    mask: _U8, topk_idx: _I64, topk_lp: _F64, block_rows: int, n_threads: int,
) -> int: ...
def eval_stats(
    logits: _Logits, half: int, target: _Targets, weight: _F64, ignore_index: int,
    label_smoothing: float, temperature: float, topk: _I64, block_rows: int, n_threads: int,
) -> tuple[_F64, _I64, int]: ...

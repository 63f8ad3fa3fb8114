# Stub for the compiled module cecore/_logit_divergence_kernels.pyx (private; validated input only).
import numpy as np
import numpy.typing as npt

KL: int
REVERSE_KL: int
JSD: int

def dispatch_init(requested: int) -> int: ...
def divergence(
    x: npt.NDArray[np.uint8], x_code: int, y: npt.NDArray[np.uint8], y_code: int,
    target: npt.NDArray[np.int64], mode: int, temperature: float, beta: float,
    want_grad: bool, scale: float, grad: npt.NDArray[np.uint8],
    loss: npt.NDArray[np.float64], compare: bool, logp: npt.NDArray[np.float64],
    logr: npt.NDArray[np.float64], same_top: npt.NDArray[np.uint8], n_threads: int,
) -> None: ...

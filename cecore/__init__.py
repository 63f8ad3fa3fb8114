"""cecore: fast, exact cross-entropy and its relatives on the CPU.

Fused, numerically stable kernels (Cython + OpenMP, SIMD chosen at run time)
behind a small NumPy API with PyTorch's and SciPy's semantics. See README.md.
"""

from cecore._comparison import Comparison
from cecore._config import init_dispatch as _init_dispatch
from cecore._config import show_config
from cecore._divergence import cross_entropy_pq, entropy, kl_divergence
from cecore._evaluate import Evaluator
from cecore._linear import linear_cross_entropy
from cecore._logit_divergence import logit_divergence
from cecore._losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    nll_loss,
)
from cecore._softmax import log_softmax, logsumexp, softmax
from cecore._tokens import TokenStats, sequence_logprob, token_stats
from cecore._version import __version__

_init_dispatch()

__all__ = [
    "Comparison",
    "Evaluator",
    "TokenStats",
    "__version__",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "cross_entropy_pq",
    "entropy",
    "kl_divergence",
    "linear_cross_entropy",
    "log_softmax",
    "logit_divergence",
    "logsumexp",
    "nll_loss",
    "sequence_logprob",
    "show_config",
    "softmax",
    "token_stats",
]

"""The workloads run.py times, and the targets cecore is held to on each.

A workload is one declarative entry: a name (for ``--only``), the logits'
shape and dtype, how the inputs are made, the cecore implementation, its
peers, and its targets. Adding a workload, or a peer to one, is a few lines
here; the implementations live in peers.py.

Targets: ``speedups`` maps a peer's label to the minimum time(peer) /
time(cecore) (below 1: the fraction of the peer's throughput cecore must
reach); ``floor_max`` is the maximum time(cecore) / time(read floor);
``memory_max`` maps a peer's label to the maximum peak memory(cecore) /
peak memory(peer), measured when ``peak_memory`` is set; with
``memory_beyond_outputs`` the ratio is of the peaks minus the bytes of the arrays
each call returns (outputs every implementation must allocate, such as
gradients), and the raw ratio is reported next to it.

For example, the loss-and-gradient workload "cls-grad" below is an ``Impl``
per library in peers.py (``CECORE_CE_GRAD`` and ``CE_GRAD_PEERS``, whose
callables return ``(loss, grad)`` of the mean loss; PyTorch's is forward +
backward) and one entry in ``WORKLOADS``.
"""

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import peers


def class_index_inputs(shape, dtype, rng):
    """Logits 2 * N(0, 1) and uniform int64 class indices over the last axis."""
    logits = rng.standard_normal(shape, dtype=dtype)
    logits *= 2
    target = rng.integers(0, shape[-1], size=shape[:-1], dtype=np.int64)
    return logits, target


def class_axis_inputs(shape, dtype, rng):
    """PyTorch's (N, C, d1) layout: logits 2 * N(0, 1) of ``shape`` and uniform int64 class
    indices over axis 1, of shape (N, d1)."""
    logits = rng.standard_normal(shape, dtype=dtype)
    logits *= 2
    target = rng.integers(0, shape[1], size=(shape[0], *shape[2:]), dtype=np.int64)
    return logits, target


def half_inputs(shape, dtype, rng):
    """As class_index_inputs in float32, the logits then rounded to ``dtype``
    ("bfloat16" is ml_dtypes.bfloat16, the NumPy dtype of JAX and of cecore)."""
    import ml_dtypes

    logits, target = class_index_inputs(shape, np.float32, rng)
    wanted = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    return logits.astype(wanted), target


def model_pair_inputs(shape, dtype, rng):
    """A model's logits 2 * N(0, 1) and a reference's: the same plus 0.3 * N(0, 1) (a
    quantised or fine-tuned model's distance). No targets: the read floor is both inputs."""
    logits = rng.standard_normal(shape, dtype=dtype)
    logits *= 2
    ref = rng.standard_normal(shape, dtype=dtype)
    ref *= 0.3
    ref += logits
    return logits, ref


def binary_inputs(shape, dtype, rng):
    """Logits 2 * N(0, 1) and uniform {0, 1} targets of the logits' dtype."""
    logits = rng.standard_normal(shape, dtype=dtype)
    logits *= 2
    target = rng.integers(0, 2, size=shape).astype(dtype)
    return logits, target


def linear_model_inputs(shape, dtype, rng, hidden=1_024):
    """For a training step with logits of ``shape`` (N, K): features (N, hidden)
    N(0, 1), uniform int64 targets, and a linear layer's weight (K, hidden) and
    bias (K,) drawn as torch.nn.Linear initialises them, U(+-1/sqrt(hidden))."""
    n, k = shape
    features = rng.standard_normal((n, hidden), dtype=dtype)
    target = rng.integers(0, k, size=n, dtype=np.int64)
    bound = 1 / np.sqrt(hidden)
    weight = rng.uniform(-bound, bound, (k, hidden)).astype(dtype)
    bias = rng.uniform(-bound, bound, k).astype(dtype)
    return features, target, weight, bias


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    shape: tuple  # of the logits
    dtype: str
    make_inputs: Callable  # make_inputs(shape, dtype, rng) -> tuple of arrays (for prepare)
    cecore: peers.Impl
    peers: tuple
    speedups: dict = field(default_factory=dict)
    floor_max: float = None
    read_floor: bool = True  # time the read floor for this workload
    calls: int = 1  # calls per timed sample (> 1 for per-call overhead)
    min_threads: int = 1  # skipped when --threads is lower
    peak_memory: bool = False  # also measure each implementation's peak memory
    memory_max: dict = field(default_factory=dict)
    # memory targets on the peak extra memory beyond the returned arrays (see above)
    memory_beyond_outputs: bool = False
    # relative difference allowed between a peer's result and cecore's: 16-bit peers
    # (PyTorch, JAX) round their loss and gradient to 16 bits
    tolerance: float = 1e-4

    def quick(self, shrink=16):
        """This workload with fewer rows and calls, for --quick (an (N, C, d1) shape:
        fewer positions d1, N being a small batch)."""
        shape = self.shape
        if self.calls == 1 and len(shape) > 2:
            shape = (*shape[:-1], max(shape[-1] // shrink, 1))
        elif self.calls == 1:
            shape = (max(shape[0] // shrink, 64), *shape[1:])
        return dataclasses.replace(self, shape=shape, calls=max(self.calls // 10, 1))


BIG_K_TARGETS = dict(speedups={"torch": 10, "jax": 2}, floor_max=2.0)
# class axis not last (issue 16): axis=1 on (N, C, d1) in <= 1.5x the time of the same
# call on the same data classes last (a contiguous (N d1, C) copy made untimed)
AXIS1_TARGETS = dict(speedups={"cecore, classes last": 1 / 1.5}, read_floor=False)
# few classes (issue 16): <= 2.5x the read floor, PyTorch side by side
FEW_K_TARGETS = dict(floor_max=2.5)
# 16-bit logits: <= 0.6x cecore's own float32 time, >= 15x PyTorch on the same tensor
HALF_TARGETS = dict(speedups={"cecore, float32": 1 / 0.6, "torch": 15}, floor_max=2.0,
                    tolerance=1e-2)

WORKLOADS = (
    Workload("cls-f32", "classification, K = 1,000", (65_536, 1_000), "float32",
             class_index_inputs, peers.CECORE_CE, peers.CE_PEERS, **BIG_K_TARGETS),
    Workload("cls-f64", "classification, K = 1,000, float64", (65_536, 1_000), "float64",
             class_index_inputs, peers.CECORE_CE, peers.CE_PEERS,
             speedups={"torch": 5, "jax": 2}, floor_max=2.0),
    Workload("lm-32k", "language model, 32k vocabulary", (4_096, 32_000), "float32",
             class_index_inputs, peers.CECORE_CE, peers.CE_PEERS, **BIG_K_TARGETS),
    Workload("lm-128k", "language model, 128k vocabulary", (1_024, 128_256), "float32",
             class_index_inputs, peers.CECORE_CE, peers.CE_PEERS, **BIG_K_TARGETS),
    Workload("lm-32k-bf16", "language model, 32k vocabulary, bfloat16", (4_096, 32_000),
             "bfloat16", half_inputs, peers.CECORE_CE, peers.HALF_CE_PEERS, **HALF_TARGETS),
    Workload("lm-32k-f16", "language model, 32k vocabulary, float16", (4_096, 32_000),
             "float16", half_inputs, peers.CECORE_CE, peers.HALF_CE_PEERS, **HALF_TARGETS),
    Workload("cls-bf16", "classification, K = 1,000, bfloat16", (65_536, 1_000), "bfloat16",
             half_inputs, peers.CECORE_CE, peers.HALF_CE_PEERS, **HALF_TARGETS),
    Workload("cls-f16", "classification, K = 1,000, float16", (65_536, 1_000), "float16",
             half_inputs, peers.CECORE_CE, peers.HALF_CE_PEERS, **HALF_TARGETS),
    Workload("logsm-bf16", "log_softmax, bfloat16 -> bfloat16, 32k vocabulary",
             (4_096, 32_000), "bfloat16", half_inputs, peers.CECORE_LOG_SOFTMAX,
             peers.LOG_SOFTMAX_PEERS, speedups={"cecore, float32": 1 / 0.6}, read_floor=False,
             tolerance=1e-2),
    Workload("grad-bf16", "loss and gradient (mean), K = 1,000, bfloat16", (65_536, 1_000),
             "bfloat16", half_inputs, peers.CECORE_CE_GRAD, peers.HALF_CE_GRAD_PEERS,
             speedups={"torch": 10}, tolerance=1e-2),
    Workload("k10", "small class count, K = 10", (1_048_576, 10), "float32",
             class_index_inputs, peers.CECORE_CE, peers.CE_PEERS,
             speedups={"torch": 10, "jax": 2}),
    # issue 16, few classes: forward and loss + gradient (mean) at K = 2, 10 and 32
    Workload("few-2", "few classes, K = 2", (1_048_576, 2), "float32", class_index_inputs,
             peers.CECORE_CE, (peers.TORCH_CE,), **FEW_K_TARGETS),
    Workload("few-32", "few classes, K = 32", (1_048_576, 32), "float32", class_index_inputs,
             peers.CECORE_CE, (peers.TORCH_CE,), **FEW_K_TARGETS),
    Workload("few-2-grad", "few classes, loss and gradient (mean), K = 2", (1_048_576, 2),
             "float32", class_index_inputs, peers.CECORE_CE_GRAD, (peers.CE_GRAD_PEERS[0],),
             **FEW_K_TARGETS),
    Workload("few-10-grad", "few classes, loss and gradient (mean), K = 10", (1_048_576, 10),
             "float32", class_index_inputs, peers.CECORE_CE_GRAD, (peers.CE_GRAD_PEERS[0],),
             **FEW_K_TARGETS),
    Workload("few-32-grad", "few classes, loss and gradient (mean), K = 32", (1_048_576, 32),
             "float32", class_index_inputs, peers.CECORE_CE_GRAD, (peers.CE_GRAD_PEERS[0],),
             **FEW_K_TARGETS),
    # issue 16, class axis not last: PyTorch's (N, C, d1) layout, classes at axis 1
    Workload("axis1", "class axis 1 of (N, C, d1) vs classes last and F.cross_entropy",
             (64, 1_000, 1_024), "float32", class_axis_inputs, peers.CECORE_CE_AXIS1,
             peers.CE_AXIS1_PEERS, **AXIS1_TARGETS),
    Workload("axis1-grad", "class axis 1, loss and gradient (mean) vs classes last and torch",
             (64, 1_000, 1_024), "float32", class_axis_inputs, peers.CECORE_CE_GRAD_AXIS1,
             peers.CE_GRAD_AXIS1_PEERS, **AXIS1_TARGETS),
    Workload("axis1-logsm", "log_softmax, class axis 1 vs classes last and F.log_softmax",
             (64, 1_000, 1_024), "float32", class_axis_inputs, peers.CECORE_LOG_SOFTMAX_AXIS1,
             peers.LOG_SOFTMAX_AXIS1_PEERS, **AXIS1_TARGETS),
    Workload("binary", "binary cross-entropy with logits", (16_777_216,), "float32",
             binary_inputs, peers.CECORE_BCE, peers.BCE_PEERS, speedups={"torch": 5}),
    Workload("tiny", "per-call overhead (time per call)", (64, 100), "float32",
             class_index_inputs, peers.CECORE_CE_DEFAULT, peers.CE_PEERS,
             speedups={"torch": 1}, read_floor=False, calls=2_000),
    # 16 Python threads at once, 50 calls each on 1/16 of the rows: a server's load
    Workload("concurrent", "16 Python threads x 50 calls on 64-row batches (time: all calls)",
             (1_024, 100), "float32", class_index_inputs, peers.CECORE_CE_CONCURRENT,
             peers.CE_CONCURRENT_PEERS, speedups={"torch": 1}, read_floor=False),
    # drop-ins: the same call as SciPy's and scikit-learn's, side by side
    Workload("scipy-lse-tiny", "cecore.scipy.logsumexp vs scipy.special (time per call)",
             (64, 100), "float32", class_index_inputs, peers.CECORE_SCIPY_LSE,
             peers.SCIPY_LSE_PEERS, speedups={"scipy": 1}, read_floor=False, calls=2_000),
    Workload("scipy-lse", "cecore.scipy.logsumexp vs scipy.special.logsumexp", (65_536, 1_000),
             "float32", class_index_inputs, peers.CECORE_SCIPY_LSE, peers.SCIPY_LSE_PEERS,
             speedups={"scipy": 5}),
    Workload("log-loss-tiny", "cecore.sklearn.log_loss vs sklearn.metrics (time per call)",
             (64, 100), "float32", class_index_inputs, peers.CECORE_LOG_LOSS,
             peers.LOG_LOSS_PEERS, speedups={"sklearn": 1}, read_floor=False, calls=200),
    Workload("log-loss", "cecore.sklearn.log_loss vs sklearn.metrics.log_loss", (65_536, 1_000),
             "float32", class_index_inputs, peers.CECORE_LOG_LOSS, peers.LOG_LOSS_PEERS,
             speedups={"sklearn": 2}),
    Workload("tiny-lse", "per-call overhead, logsumexp (time per call)", (64, 100), "float32",
             class_index_inputs, peers.CECORE_LSE, peers.LSE_PEERS, read_floor=False,
             calls=2_000),
    Workload("tiny-logsm", "per-call overhead, log_softmax (time per call)", (64, 100),
             "float32", class_index_inputs, peers.CECORE_LOG_SOFTMAX_DEFAULT,
             (peers.LOG_SOFTMAX_PEERS[1],), read_floor=False, calls=2_000),
    Workload("tiny-1x10", "per-call overhead, 1 x 10 (time per call)", (1, 10), "float32",
             class_index_inputs, peers.CECORE_CE_DEFAULT, (peers.TORCH_CE,),
             read_floor=False, calls=2_000),
    # the same call on torch tensors through cecore.torch: no gradient, and the training
    # call (a leaf that requires grad, forward + backward) against PyTorch's
    Workload("tiny-torch", "per-call overhead, cecore.torch (time per call)", (64, 100),
             "float32", class_index_inputs, peers.CECORE_TORCH_CE, (peers.TORCH_CE,),
             speedups={"torch": 1}, read_floor=False, calls=2_000),
    Workload("tiny-torch-grad", "per-call overhead, forward + backward (time per call)",
             (64, 100), "float32", class_index_inputs, peers.CECORE_TORCH_CE_GRAD,
             (peers.CE_GRAD_PEERS[0],), speedups={"torch": 1}, read_floor=False, calls=500),
    # token_stats (per-token log-prob, lse, entropy, argmax, rank): one read of the logits
    Workload("tokens", "token_stats, topk=0, vs cross_entropy(reduction='none')",
             (4_096, 32_000), "float32", class_index_inputs, peers.CECORE_TOKENS,
             peers.TOKENS_PEERS, speedups={peers.CE_NONE.label: 1 / 1.3, "torch recipe": 10},
             peak_memory=True, memory_max={"torch recipe": 1 / 50}),
    Workload("tokens-bf16", "token_stats, topk=0, bfloat16", (4_096, 32_000), "bfloat16",
             half_inputs, peers.CECORE_TOKENS, peers.TOKENS_PEERS,
             speedups={peers.CE_NONE.label: 1 / 1.3, "torch recipe": 10}, tolerance=1e-2),
    Workload("tokens-top20", "token_stats, topk=20, vs cross_entropy(reduction='none')",
             (4_096, 32_000), "float32", class_index_inputs, peers.CECORE_TOKENS_TOPK,
             peers.TOKENS_TOPK_PEERS, speedups={peers.CE_NONE.label: 1 / 1.6,
                                                 "torch recipe": 10}),
    # model against model (issue 14): forward <= 2.2x the read floor of both inputs,
    # >= 10x PyTorch's log_softmax + kl_div, peak extra memory <= 1/50 of PyTorch's;
    # forward + gradient >= 8x PyTorch's forward + backward
    Workload("kl-fwd", "logit_divergence (KL(r || p), batchmean) vs F.kl_div of log_softmaxes",
             (4_096, 32_000), "float32", model_pair_inputs, peers.CECORE_KL, peers.KL_PEERS,
             speedups={"torch": 10}, floor_max=2.2, peak_memory=True,
             memory_max={"torch": 1 / 50}),
    Workload("kl-grad", "logit_divergence with its gradient vs torch forward + backward",
             (4_096, 32_000), "float32", model_pair_inputs, peers.CECORE_KL_GRAD,
             peers.KL_GRAD_PEERS, speedups={"torch": 8}, read_floor=False),
    Workload("threads", "thread scaling: --threads N vs 1 thread", (65_536, 1_000), "float32",
             class_index_inputs, peers.CECORE_CE, (peers.CECORE_CE_1_THREAD,),
             speedups={peers.CECORE_CE_1_THREAD.label: 1.8}, read_floor=False, min_threads=2),
    Workload("cls-grad", "loss and gradient (mean), K = 1,000", (65_536, 1_000), "float32",
             class_index_inputs, peers.CECORE_CE_GRAD, peers.CE_GRAD_PEERS,
             speedups={"torch": 8, "sklearn": 3}),
    # z-loss and Gemma 2 soft-capping (c = 30), fused: <= 1.15x the same call without them.
    # The results differ (other options), hence the loose tolerance of the check.
    Workload("ce-zloss-softcap", "cross_entropy with z_loss and softcap vs without",
             (4_096, 32_000), "float32", class_index_inputs, peers.CECORE_CE_ZLOSS_SOFTCAP,
             (peers.CECORE_CE_PLAIN,), speedups={peers.CECORE_CE_PLAIN.label: 1 / 1.15},
             read_floor=False, tolerance=1.0),
    Workload("ce-zloss-softcap-grad", "loss and gradient with z_loss and softcap vs without",
             (4_096, 32_000), "float32", class_index_inputs,
             peers.CECORE_CE_GRAD_ZLOSS_SOFTCAP, (peers.CECORE_CE_GRAD_PLAIN,),
             speedups={peers.CECORE_CE_GRAD_PLAIN.label: 1 / 1.15}, read_floor=False,
             tolerance=1.0),
    Workload("train-step", "SGD step, linear 1,024 -> 1,000, F.cross_entropy vs cecore.torch",
             (8_192, 1_000), "float32", linear_model_inputs, peers.CECORE_TORCH_STEP,
             (peers.TORCH_STEP,), speedups={"torch": 1}, read_floor=False),
    # Evaluation at scale: the Evaluator and the CLI against the bare kernel's throughput
    Workload("eval", "Evaluator.update over batches vs the bare kernel", (65_536, 1_000),
             "float32", class_index_inputs, peers.CECORE_EVALUATOR, (peers.CECORE_BARE,),
             speedups={peers.CECORE_BARE.label: 0.8}),
    # The command's fixed cost per run (argument parsing, mapping and unmapping two files:
    # ~2 ms) is amortised over a 1 GB file; on the 262 MB of "eval" it is 15-25% of the time.
    Workload("eval-cli", "cecore eval on a .npy file vs the bare kernel", (262_144, 1_000),
             "float32", class_index_inputs, peers.CECORE_EVAL_CLI, (peers.CECORE_BARE,),
             speedups={peers.CECORE_BARE.label: 0.8}),
    # Model against model (issue 14): llama.cpp's --kl-divergence statistics of two sets of
    # logits vs the fused forward KL alone (n/a until cecore.logit_divergence is built)
    Workload("compare", "Comparison.update + result vs the forward logit_divergence",
             (4_096, 32_000), "float32", peers.model_pair_inputs, peers.CECORE_COMPARISON,
             peers.COMPARISON_PEERS, speedups={peers.LOGIT_DIVERGENCE.label: 1 / 1.3}),
    # The issue asks for a time and peak-memory comparison: time is reported, memory is a
    # target. With --quick (256 rows) one default chunk (64 MB of logits) holds every row, so the
    # memory targets only mean something at full size (measured: 67 MB vs 524 MB
    # materialised and 1,048 MB for torch's reference path).
    Workload("linear", "linear layer + cross-entropy, D = 1,024 (shape: the logits')",
             (4_096, 32_000), "float32", functools.partial(peers.linear_inputs, d=1_024),
             peers.CECORE_LINEAR, peers.LINEAR_PEERS, read_floor=False, peak_memory=True,
             speedups={peers.LINEAR_PEERS[0].label: 1, peers.LINEAR_PEERS[1].label: 1 / 0.8},
             memory_max={peers.LINEAR_PEERS[0].label: 0.25, peers.LINEAR_PEERS[1].label: 0.25}),
    # issue 15: forward + backward (loss, grad of hidden and weight) in the chunk loop, against
    # PyTorch's forward + backward and the three products alone (the BLAS floor). Both sides
    # return the gradients (N D + V D floats: 147 MB, more than 1/8 of PyTorch's whole peak),
    # so the memory target is on the peak beyond them (memory_beyond_outputs).
    Workload("linear-grad", "linear layer + cross-entropy, forward + backward, D = 1,024",
             (4_096, 32_000), "float32", functools.partial(peers.linear_inputs, d=1_024),
             peers.CECORE_LINEAR_GRAD, peers.LINEAR_GRAD_PEERS, read_floor=False,
             peak_memory=True,
             speedups={peers.LINEAR_GRAD_PEERS[0].label: 1 / 1.15,
                       peers.LINEAR_GRAD_PEERS[2].label: 1 / 0.8},
             memory_max={peers.LINEAR_GRAD_PEERS[2].label: 1 / 8},
             memory_beyond_outputs=True),
)

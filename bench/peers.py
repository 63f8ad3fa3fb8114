"""What run.py times: cecore, its peers and the memory-read floor.

A *backend* is one library: which modules to import (and report versions of),
how its thread count is set, and optional set-up and clean-up hooks. An
*implementation* (``Impl``) computes one workload with one backend:
``prepare(inputs, n_threads)`` does the untimed work (tensor views, device
placement, target conversion) and returns a zero-argument callable, the thing
that is timed, which returns the result (a scalar for a mean loss) that is
checked against cecore's.

Libraries are imported lazily, inside ``prepare`` and the hooks, so a library
that is not installed only makes its implementations "n/a". A result may be
a scalar, an array or a tuple of them (e.g. loss and gradient); NumPy, torch
and JAX values are all accepted by the check.
"""

import functools
import importlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Backend:
    name: str
    modules: tuple  # imported on load; their versions are reported
    threads: str  # how the thread count is set, for the report; "{n}" is the count
    setup: Callable = None  # setup(n_threads) once after import; may return a better `threads`
    cleanup: Callable = None  # cleanup() after each implementation has run


@dataclass(frozen=True)
class Impl:
    label: str
    backend: str
    prepare: Callable  # prepare(inputs, n_threads) -> zero-argument callable
    checked: bool = True  # False: a floor computing other values (not compared with cecore)


def load_backend(backend, n_threads):
    """Import ``backend``'s modules and run its set-up.

    Returns ({module: version}, how the thread count is set). Raises ImportError
    when one of the modules is not installed.
    """
    versions = {}
    for name in backend.modules:
        module = importlib.import_module(name)
        versions[name] = getattr(module, "__version__", "?")
    note = backend.setup(n_threads) if backend.setup is not None else None
    return versions, note or backend.threads.format(n=n_threads)


def as_tensor(array):
    """A zero-copy torch view of a NumPy array (``ml_dtypes.bfloat16`` as torch.bfloat16)."""
    import torch

    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def as_float32(inputs):
    """The inputs with 16-bit logits upcast to float32 (exactly: same values)."""
    logits, *rest = inputs
    return (logits.astype(np.float32), *rest)


# ---------------------------------------------------------------- backends


def _setup_torch(n_threads):
    import torch

    torch.set_num_threads(n_threads)


def _setup_jax(n_threads):
    """Enable float64 and create the CPU client with an n_threads-core pool.

    XLA's CPU client sizes its intra-op thread pool from the CPU affinity mask
    when it is created; XLA_FLAGS such as ``--xla_cpu_multi_thread_eigen`` or
    ``intra_op_parallelism_threads`` do not change it (measured: same CPU use).
    So the calling thread is pinned to the first ``n_threads`` usable CPUs
    while the client (and its pool threads, which inherit the mask) is
    created, then unpinned. Nothing is done when all usable CPUs are wanted.
    """
    import jax

    # Without x64, JAX silently computes float64 inputs in float32.
    jax.config.update("jax_enable_x64", True)
    usable = sorted(os.sched_getaffinity(0))
    if n_threads >= len(usable):
        jax.devices()
        return (f"all {len(usable)} usable CPUs (XLA's own choice of how to split an op); "
                "jax_enable_x64 on")
    os.sched_setaffinity(0, usable[:n_threads])  # this thread only
    try:
        jax.devices()
    finally:
        os.sched_setaffinity(0, usable)
    return (f"XLA CPU client's threads pinned to CPUs {usable[:n_threads]} at creation "
            "(XLA_FLAGS do not set its thread count); jax_enable_x64 on")


def _cleanup_jax():
    import jax

    for array in jax.live_arrays():
        array.delete()


BACKENDS = {
    b.name: b
    for b in (
        Backend("cecore", ("cecore",), "n_threads={n} argument"),
        Backend("torch", ("torch",), "torch.set_num_threads({n})", setup=_setup_torch),
        Backend("jax", ("jax", "jaxlib", "optax"), "", setup=_setup_jax, cleanup=_cleanup_jax),
        Backend("sklearn", ("sklearn",), "n_threads={n} argument"),
        Backend("scipy", ("scipy",), "single-threaded (NumPy ufuncs)"),
        Backend(
            "numpy",
            ("numpy",),
            "single-threaded formula; read floor: pool of {n} Python threads "
            "(np.sum releases the GIL)",
        ),
    )
}


# ---------------------------------------------------------- cross-entropy


def _cecore_cross_entropy(inputs, n_threads):
    import cecore

    logits, target = inputs
    return lambda: cecore.cross_entropy(logits, target, n_threads=n_threads)


def _cecore_binary_cross_entropy(inputs, n_threads):
    import cecore

    logits, target = inputs
    return lambda: cecore.binary_cross_entropy_with_logits(logits, target, n_threads=n_threads)


def _torch_functional_of(module, inputs):
    """``<module>.cross_entropy`` on zero-copy torch.from_numpy views of the inputs."""
    cross_entropy = importlib.import_module(module).cross_entropy
    tensors = [as_tensor(a) for a in inputs]
    return lambda: cross_entropy(*tensors)


def _torch_functional(name):
    """torch.nn.functional.<name> on zero-copy torch.from_numpy views."""

    def prepare(inputs, n_threads):
        import torch

        function = getattr(torch.nn.functional, name)
        tensors = [as_tensor(a) for a in inputs]
        return lambda: function(*tensors)

    return prepare


@functools.cache
def _jax_mean_loss_jit(name):
    import jax
    import optax

    loss = getattr(optax, name)
    return jax.jit(lambda x, y: loss(x, y).mean())


def _jax_mean_loss(name):
    """jax.jit(optax.<name>(x, y).mean()) on arrays placed with device_put."""

    def prepare(inputs, n_threads):
        import jax

        function = _jax_mean_loss_jit(name)
        arrays = [jax.device_put(a) for a in inputs]
        return lambda: function(*arrays).block_until_ready()

    return prepare


def _sklearn_mean_loss(class_name):
    """sklearn._loss.loss.<class_name>.loss(...).mean().

    Its Cython loss wants C-contiguous arrays and float targets of the logits'
    dtype; the conversion is done once, untimed.
    """

    def prepare(inputs, n_threads):
        from sklearn._loss import loss as sklearn_loss

        logits, target = inputs
        cls = getattr(sklearn_loss, class_name)
        loss = cls(n_classes=logits.shape[-1]) if logits.ndim == 2 else cls()
        raw = np.ascontiguousarray(logits)
        y_true = np.ascontiguousarray(target, dtype=logits.dtype)
        return lambda: loss.loss(y_true=y_true, raw_prediction=raw, n_threads=n_threads).mean()

    return prepare


def _scipy_cross_entropy(inputs, n_threads):
    from scipy.special import log_softmax

    logits, target = inputs
    index = target[..., None]
    return lambda: -np.take_along_axis(log_softmax(logits, axis=-1), index, axis=-1).mean()


def _numpy_binary_cross_entropy(inputs, n_threads):
    x, t = inputs
    return lambda: np.mean(np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x))))


# ------------------------------------------- loss and gradient, training step


def _cecore_cross_entropy_grad(inputs, n_threads):
    import cecore

    logits, target = inputs
    return lambda: cecore.cross_entropy(logits, target, n_threads=n_threads, return_grad=True)


def _cross_entropy_backward(module):
    """``<module>.cross_entropy(x, t).backward()`` with x a fresh leaf (zero-copy view) per
    call (module: torch.nn.functional or cecore.torch)."""

    def prepare(inputs, n_threads):
        cross_entropy = importlib.import_module(module).cross_entropy
        logits, target = (as_tensor(a) for a in inputs)

        def loss_and_grad():
            x = logits.detach().requires_grad_()
            loss = cross_entropy(x, target)
            loss.backward()
            return loss, x.grad

        return loss_and_grad

    return prepare


_torch_cross_entropy_grad = _cross_entropy_backward("torch.nn.functional")


@functools.cache
def _jax_mean_loss_and_grad_jit(name):
    import jax
    import optax

    loss = getattr(optax, name)
    return jax.jit(jax.value_and_grad(lambda x, y: loss(x, y).mean()))


def _jax_cross_entropy_grad(inputs, n_threads):
    """jax.jit(jax.value_and_grad(mean optax loss)) on arrays placed with device_put."""
    import jax

    function = _jax_mean_loss_and_grad_jit("softmax_cross_entropy_with_integer_labels")
    arrays = [jax.device_put(a) for a in inputs]
    return lambda: jax.block_until_ready(function(*arrays))


def _sklearn_loss_gradient(inputs, n_threads):
    """HalfMultinomialLoss(n_classes=K).loss_gradient(...): per-sample losses and gradients.

    With ``sample_weight`` 1/N, as scikit-learn's own estimators normalise it,
    its kernel scales each sample's loss and gradient, so ``loss.sum()`` and the
    gradient are those of the mean loss (what the other peers return) without
    an extra pass. Float targets of the logits' dtype are made once, untimed.
    """
    from sklearn._loss.loss import HalfMultinomialLoss

    logits, target = inputs
    n, k = logits.shape
    loss = HalfMultinomialLoss(n_classes=k)
    raw = np.ascontiguousarray(logits)
    y_true = np.ascontiguousarray(target, dtype=logits.dtype)
    sample_weight = np.full(n, 1 / n, dtype=logits.dtype)

    def loss_and_grad():
        losses, grad = loss.loss_gradient(y_true=y_true, raw_prediction=raw,
                                          sample_weight=sample_weight, n_threads=n_threads)
        return losses.sum(), grad

    return loss_and_grad


def _training_step(module):
    """One SGD step of a torch.nn.Linear classifier with ``<module>.cross_entropy``.

    The inputs are (features, class targets, weight, bias); each implementation
    starts from its own copy of the same weight and bias, so the first step's
    result (loss and the weight's gradient) is comparable; the gradient, not the
    updated weight, which its starting value dominates (a gradient 1% off would
    change the weight by ~7e-5, inside the check's tolerance). Every call is one step:
    zero_grad, forward, loss, backward, update.
    """

    def prepare(inputs, n_threads):
        import torch

        cross_entropy = importlib.import_module(module).cross_entropy
        features, target, weight, bias = (torch.from_numpy(a) for a in inputs)
        model = torch.nn.Linear(weight.shape[1], weight.shape[0], dtype=weight.dtype)
        with torch.no_grad():
            model.weight.copy_(weight)
            model.bias.copy_(bias)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

        def step():
            optimizer.zero_grad()
            loss = cross_entropy(model(features), target)
            loss.backward()
            optimizer.step()
            return loss, model.weight.grad

        return step

    return prepare


def _on_float32(prepare):
    """``prepare`` on the inputs with 16-bit logits upcast to float32 (untimed)."""
    return lambda inputs, n_threads: prepare(as_float32(inputs), n_threads)


def _cecore_log_softmax(inputs, n_threads):
    import cecore

    logits, _ = inputs
    return lambda: cecore.log_softmax(logits, n_threads=n_threads)


def _torch_log_softmax(inputs, n_threads):
    import torch

    logits = as_tensor(inputs[0])
    return lambda: torch.log_softmax(logits, dim=-1)


def _concurrent(prepare, callers=16, calls_each=50):
    """``prepare``'s callable called by ``callers`` Python threads at once (a server
    under load), ``calls_each`` times each on its share of the rows; returns the
    sum of the results (timed: all the calls)."""

    def prepare_pool(inputs, n_threads):
        logits, target = inputs
        parts = [prepare((logits[i::callers], target[i::callers]), n_threads)
                 for i in range(callers)]
        pool = ThreadPoolExecutor(callers)

        def run():
            futures = [pool.submit(lambda f=f: [f() for _ in range(calls_each)][-1])
                       for f in parts]
            return sum(float(f.result()) for f in futures)

        return run

    return prepare_pool


def _cecore_cross_entropy_default_threads(inputs, n_threads):
    """cecore.cross_entropy with n_threads=None: the callers share OpenMP's default."""
    import cecore

    logits, target = inputs
    return lambda: cecore.cross_entropy(logits, target)


def _scipy_logsumexp(module):
    """``module.logsumexp(logits, axis=-1)`` (module: scipy.special or cecore.scipy)."""

    def prepare(inputs, n_threads):
        function = importlib.import_module(module).logsumexp
        logits = inputs[0]
        return lambda: function(logits, axis=-1)

    return prepare


def _log_loss(module):
    """``module.log_loss(y, p)`` on softmax probabilities (made once, untimed), with the
    class labels given (sklearn.metrics or cecore.sklearn)."""

    def prepare(inputs, n_threads):
        function = importlib.import_module(module).log_loss
        logits, target = inputs
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = z / z.sum(axis=1, keepdims=True)
        labels = np.arange(logits.shape[1])
        return lambda: function(target, probs, labels=labels)

    return prepare


def _cecore_token_stats(topk):
    def prepare(inputs, n_threads):
        import cecore

        logits, target = inputs
        return lambda: cecore.token_stats(logits, target, topk=topk,
                                          n_threads=n_threads).logprob
    return prepare


def _cecore_cross_entropy_none(inputs, n_threads):
    import cecore

    logits, target = inputs
    return lambda: -cecore.cross_entropy(logits, target, reduction="none", n_threads=n_threads)


def _torch_token_recipe(topk):
    """The usual recipe: log_softmax of the whole tensor, gather, entropy, topk."""

    def prepare(inputs, n_threads):
        import torch

        logits, target = (as_tensor(a) for a in inputs)

        def run():
            logp = torch.log_softmax(logits, dim=-1)
            chosen = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            entropy = -(logp.exp() * logp).sum(-1)
            if topk:
                logp.topk(topk, dim=-1)
            del entropy
            return chosen

        return run

    return prepare


def _cecore_cross_entropy_options(return_grad, **options):
    """cecore.cross_entropy (mean) with training options, e.g. z_loss and softcap."""

    def prepare(inputs, n_threads):
        import cecore

        logits, target = inputs
        return lambda: cecore.cross_entropy(logits, target, n_threads=n_threads,
                                            return_grad=return_grad, **options)

    return prepare


CECORE_CE = Impl("cecore", "cecore", _cecore_cross_entropy)
# the same values as float32 logits: what a 16-bit input saves
CECORE_CE_FLOAT32 = Impl("cecore, float32", "cecore", _on_float32(_cecore_cross_entropy))
CECORE_CE_1_THREAD = Impl(
    "cecore, 1 thread", "cecore", lambda inputs, n_threads: _cecore_cross_entropy(inputs, 1)
)
TORCH_CE = Impl("torch", "torch", _torch_functional("cross_entropy"))
JAX_CE = Impl("jax", "jax", _jax_mean_loss("softmax_cross_entropy_with_integer_labels"))
SKLEARN_CE = Impl("sklearn", "sklearn", _sklearn_mean_loss("HalfMultinomialLoss"))
SCIPY_CE = Impl("scipy", "scipy", _scipy_cross_entropy)
CE_PEERS = (TORCH_CE, JAX_CE, SKLEARN_CE, SCIPY_CE)

CECORE_BCE = Impl("cecore", "cecore", _cecore_binary_cross_entropy)
BCE_PEERS = (
    Impl("torch", "torch", _torch_functional("binary_cross_entropy_with_logits")),
    Impl("jax", "jax", _jax_mean_loss("sigmoid_binary_cross_entropy")),
    Impl("sklearn", "sklearn", _sklearn_mean_loss("HalfBinomialLoss")),
    Impl("numpy", "numpy", _numpy_binary_cross_entropy),
)

CECORE_LOG_SOFTMAX = Impl("cecore", "cecore", _cecore_log_softmax)
LOG_SOFTMAX_PEERS = (
    Impl("cecore, float32", "cecore", _on_float32(_cecore_log_softmax)),
    Impl("torch", "torch", _torch_log_softmax),
)

CECORE_CE_GRAD = Impl("cecore", "cecore", _cecore_cross_entropy_grad)
CE_GRAD_PEERS = (
    Impl("torch", "torch", _torch_cross_entropy_grad),
    Impl("jax", "jax", _jax_cross_entropy_grad),
    Impl("sklearn", "sklearn", _sklearn_loss_gradient),
)
HALF_CE_PEERS = (CECORE_CE_FLOAT32, TORCH_CE, JAX_CE)
CECORE_CE_CONCURRENT = Impl("cecore", "cecore", _concurrent(_cecore_cross_entropy_default_threads))
def _cecore_logsumexp(inputs, n_threads):
    import cecore

    logits = inputs[0]
    return lambda: cecore.logsumexp(logits)


def _torch_logsumexp(inputs, n_threads):
    import torch

    logits = as_tensor(inputs[0])
    return lambda: torch.logsumexp(logits, dim=-1)


CECORE_LSE = Impl("cecore", "cecore", _cecore_logsumexp)
LSE_PEERS = (Impl("torch", "torch", _torch_logsumexp),)


def _cecore_log_softmax_default_threads(inputs, n_threads):
    """cecore.log_softmax as a library calls it in a loop: default options (small
    inputs run on one thread whatever n_threads says)."""
    import cecore

    logits = inputs[0]
    return lambda: cecore.log_softmax(logits)


CECORE_LOG_SOFTMAX_DEFAULT = Impl("cecore", "cecore", _cecore_log_softmax_default_threads)
# cross_entropy as a library calls it in a loop: default options, n_threads=None
CECORE_CE_DEFAULT = Impl("cecore", "cecore",
                         lambda inputs, n_threads: _cecore_cross_entropy_default_threads(
                             inputs, None))
# cecore.torch.cross_entropy on tensors, as a training loop calls it: without a gradient,
# and forward + backward on a fresh leaf (beside PyTorch's TORCH_CE and CE_GRAD_PEERS[0])
CECORE_TORCH_CE = Impl("cecore.torch", "cecore",
                       lambda inputs, n_threads: _torch_functional_of("cecore.torch",
                                                                      inputs))
CECORE_TORCH_CE_GRAD = Impl("cecore.torch", "cecore", _cross_entropy_backward("cecore.torch"))
CECORE_SCIPY_LSE = Impl("cecore.scipy", "cecore", _scipy_logsumexp("cecore.scipy"))
SCIPY_LSE_PEERS = (Impl("scipy", "scipy", _scipy_logsumexp("scipy.special")),)
CECORE_LOG_LOSS = Impl("cecore.sklearn", "cecore", _log_loss("cecore.sklearn"))
LOG_LOSS_PEERS = (Impl("sklearn", "sklearn", _log_loss("sklearn.metrics")),)
CE_NONE = Impl("cecore cross_entropy none", "cecore", _cecore_cross_entropy_none)
TOKENS_PEERS = (CE_NONE, Impl("torch recipe", "torch", _torch_token_recipe(0)))
TOKENS_TOPK_PEERS = (CE_NONE, Impl("torch recipe", "torch", _torch_token_recipe(20)))
CECORE_TOKENS = Impl("cecore", "cecore", _cecore_token_stats(0))
CECORE_TOKENS_TOPK = Impl("cecore", "cecore", _cecore_token_stats(20))
CE_CONCURRENT_PEERS = (Impl("torch", "torch", _concurrent(_torch_functional("cross_entropy"))),)
HALF_CE_GRAD_PEERS = (
    Impl("cecore, float32", "cecore", _on_float32(_cecore_cross_entropy_grad)),
    Impl("torch", "torch", _torch_cross_entropy_grad),
)

# z-loss and soft-capping against the same call without them (cecore is the peer)
CECORE_CE_ZLOSS_SOFTCAP = Impl("cecore, z_loss + softcap", "cecore",
                               _cecore_cross_entropy_options(False, z_loss=1e-4, softcap=30.0))
CECORE_CE_PLAIN = Impl("cecore, no options", "cecore", _cecore_cross_entropy_options(False))
CECORE_CE_GRAD_ZLOSS_SOFTCAP = Impl(
    "cecore, z_loss + softcap", "cecore",
    _cecore_cross_entropy_options(True, z_loss=1e-4, softcap=30.0))
CECORE_CE_GRAD_PLAIN = Impl("cecore, no options", "cecore", _cecore_cross_entropy_options(True))

CECORE_TORCH_STEP = Impl("cecore.torch", "torch", _training_step("cecore.torch"))
TORCH_STEP = Impl("torch", "torch", _training_step("torch.nn.functional"))


# ------------------------------------- class axis not last: PyTorch's (N, C, d1)


def _classes_last(inputs):
    """(N, C, d1, ...) logits and (N, d1, ...) targets as a C-contiguous (N d1..., C)
    array (the axis moved and copied) and flat targets: the same data, classes last."""
    logits, target = inputs
    k = logits.shape[1]
    return np.ascontiguousarray(np.moveaxis(logits, 1, -1)).reshape(-1, k), target.reshape(-1)


def _class_axis_view(rows, shape):
    """(N d1..., C) rows as an (N, C, d1, ...) view (no copy), to check against axis=1."""
    n, k, *rest = shape
    return np.moveaxis(rows.reshape(n, *rest, k), -1, 1)


def _cecore_cross_entropy_axis1(return_grad):
    def prepare(inputs, n_threads):
        import cecore

        logits, target = inputs
        return lambda: cecore.cross_entropy(logits, target, axis=1, n_threads=n_threads,
                                            return_grad=return_grad)

    return prepare


def _cecore_cross_entropy_classes_last(return_grad):
    """cecore.cross_entropy on the classes-last copy, made once in prepare (untimed). The
    gradient is returned as an (N, C, d1) view of the (N d1, C) one (a few µs, no copy)."""

    def prepare(inputs, n_threads):
        import cecore

        shape = inputs[0].shape
        logits, target = _classes_last(inputs)
        if not return_grad:
            return lambda: cecore.cross_entropy(logits, target, n_threads=n_threads)

        def loss_and_grad():
            loss, grad = cecore.cross_entropy(logits, target, n_threads=n_threads,
                                              return_grad=True)
            return loss, _class_axis_view(grad, shape)

        return loss_and_grad

    return prepare


def _cecore_log_softmax_axis1(inputs, n_threads):
    import cecore

    logits = inputs[0]
    return lambda: cecore.log_softmax(logits, axis=1, n_threads=n_threads)


def _cecore_log_softmax_classes_last(inputs, n_threads):
    """cecore.log_softmax on the classes-last copy (made untimed), returned as an
    (N, C, d1) view."""
    import cecore

    shape = inputs[0].shape
    logits, _ = _classes_last(inputs)
    return lambda: _class_axis_view(cecore.log_softmax(logits, n_threads=n_threads), shape)


def _torch_log_softmax_dim1(inputs, n_threads):
    import torch

    logits = as_tensor(inputs[0])
    return lambda: torch.nn.functional.log_softmax(logits, dim=1)


# cecore with axis=1 against itself on the same data classes last, and PyTorch on the
# (N, C, d1) tensor (F.cross_entropy takes the class axis at 1; forward + backward for
# the gradient)
CECORE_CE_AXIS1 = Impl("cecore, axis=1", "cecore", _cecore_cross_entropy_axis1(False))
CE_CLASSES_LAST = Impl("cecore, classes last", "cecore",
                       _cecore_cross_entropy_classes_last(False))
CE_AXIS1_PEERS = (CE_CLASSES_LAST, TORCH_CE)
CECORE_CE_GRAD_AXIS1 = Impl("cecore, axis=1", "cecore", _cecore_cross_entropy_axis1(True))
CE_GRAD_CLASSES_LAST = Impl("cecore, classes last", "cecore",
                            _cecore_cross_entropy_classes_last(True))
CE_GRAD_AXIS1_PEERS = (CE_GRAD_CLASSES_LAST, CE_GRAD_PEERS[0])
CECORE_LOG_SOFTMAX_AXIS1 = Impl("cecore, axis=1", "cecore", _cecore_log_softmax_axis1)
LOG_SOFTMAX_CLASSES_LAST = Impl("cecore, classes last", "cecore",
                                _cecore_log_softmax_classes_last)
LOG_SOFTMAX_AXIS1_PEERS = (LOG_SOFTMAX_CLASSES_LAST,
                           Impl("torch", "torch", _torch_log_softmax_dim1))


# -------------------------------------------------- evaluation at scale


def _cecore_evaluator(inputs, n_threads, n_batches=8):
    """cecore.Evaluator.update over n_batches in-memory batches of rows, then result()."""
    import cecore

    logits, target = inputs
    bounds = np.linspace(0, len(logits), n_batches + 1).astype(int)

    def run():
        evaluator = cecore.Evaluator(n_threads=n_threads)
        for first, last in zip(bounds[:-1], bounds[1:], strict=True):
            evaluator.update(logits[first:last], target[first:last])
        return evaluator.result()["loss"]

    return run


def _cecore_eval_cli(inputs, n_threads):
    """``cecore eval LOGITS.npy TARGETS.npy --json`` in-process, on page-cached files.

    Untimed set-up: the arrays are saved to a temporary directory, flushed and
    dropped from the page cache, so that the warm-up call reads them from disk
    through the command's own mapping (as a file that was not just written:
    see the README on huge pages); the timed calls find them cached. Includes
    argument parsing, opening and mapping the files, the batches, the JSON.
    """
    import contextlib
    import io
    import json
    import tempfile

    from cecore.__main__ import main

    directory = tempfile.TemporaryDirectory(prefix="cecore-bench-")
    paths = [os.path.join(directory.name, name) for name in ("logits.npy", "targets.npy")]
    for path, array in zip(paths, inputs, strict=True):
        np.save(path, array)
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)

    def run(directory=directory):  # keeps the directory alive as long as the callable
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = main(["eval", *paths, "--json", "--threads", str(n_threads)])
        if status:
            raise RuntimeError(f"cecore eval exited with status {status}")
        return json.loads(out.getvalue())["loss"]

    return run


def linear_inputs(shape, dtype, rng, d=1024):
    """hidden (N, d) N(0, 1), weight (V, d) N(0, 1/d), int64 targets, for logits (N, V)."""
    n, v = shape
    hidden = rng.standard_normal((n, d), dtype=dtype)
    weight = rng.standard_normal((v, d), dtype=dtype)
    weight /= np.sqrt(d)
    return hidden, weight, rng.integers(0, v, size=n, dtype=np.int64)


def _numpy_blas_threads(function, n_threads):
    """``function`` run with NumPy's BLAS limited to n_threads (threadpoolctl), as
    torch.set_num_threads limits PyTorch's; unlimited if threadpoolctl is missing."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return function
    controller = ThreadpoolController()

    def limited():
        with controller.limit(limits=n_threads, user_api="blas"):
            return function()

    return limited


def _cecore_linear(inputs, n_threads):
    import cecore

    hidden, weight, target = inputs
    # n_threads bounds the BLAS; the kernel keeps its default (one thread: the BLAS's
    # threads still spin on the other cores between products, see its docstring)
    return _numpy_blas_threads(
        lambda: cecore.linear_cross_entropy(hidden, weight, target), n_threads)


def _cecore_materialised_linear(inputs, n_threads):
    import cecore

    hidden, weight, target = inputs
    return _numpy_blas_threads(
        lambda: cecore.cross_entropy(hidden @ weight.T, target, n_threads=n_threads), n_threads)


def _torch_linear(chunked):
    """torch.nn.functional.linear_cross_entropy: reference path (options=None) or chunked."""

    def prepare(inputs, n_threads):
        import torch

        hidden, weight, target = (torch.from_numpy(a) for a in inputs)
        options = torch.nn.LinearCrossEntropyOptions() if chunked else None
        function = torch.nn.functional.linear_cross_entropy
        return lambda: function(hidden, weight, target, options=options)

    return prepare


def _cecore_linear_grad(inputs, n_threads):
    import cecore

    hidden, weight, target = inputs
    return _numpy_blas_threads(
        lambda: cecore.linear_cross_entropy(hidden, weight, target, return_grad=True)[:3],
        n_threads)


def _cecore_torch_linear_grad(inputs, n_threads):
    import torch

    from cecore.torch import linear_cross_entropy

    hidden, weight, target = (torch.from_numpy(a) for a in inputs)

    def run():
        h, w = hidden.requires_grad_(), weight.requires_grad_()
        h.grad = w.grad = None
        loss = linear_cross_entropy(h, w, target)
        loss.backward()
        grads = h.grad, w.grad
        h.grad = w.grad = None  # held by the result only, as cecore's (see peak_memory)
        return loss.detach(), *grads

    return run


def _materialised_linear_grad(inputs, n_threads):
    """Logits by NumPy's matmul, loss and logit gradient by cecore, then dH and dW."""
    import cecore

    hidden, weight, target = inputs

    def run():
        loss, dz = cecore.cross_entropy(hidden @ weight.T, target, return_grad=True,
                                        n_threads=n_threads)
        return loss, dz @ weight, dz.T @ hidden

    return _numpy_blas_threads(run, n_threads)


def _three_matmuls(inputs, n_threads):
    """The BLAS floor of forward + backward: logits, dH = Z W and dW = Z^T H (NumPy)."""
    hidden, weight, target = inputs

    def run():
        z = hidden @ weight.T
        return None, z @ weight, z.T @ hidden

    return _numpy_blas_threads(run, n_threads)


def _torch_linear_grad(inputs, n_threads):
    import torch

    hidden, weight, target = (torch.from_numpy(a) for a in inputs)

    def run():
        h, w = hidden.requires_grad_(), weight.requires_grad_()
        h.grad = w.grad = None
        loss = torch.nn.functional.linear_cross_entropy(h, w, target)
        loss.backward()
        grads = h.grad, w.grad
        h.grad = w.grad = None  # held by the result only, as cecore's (see peak_memory)
        return loss.detach(), *grads

    return run


CECORE_LINEAR_GRAD = Impl("cecore.linear_cross_entropy, return_grad", "cecore",
                          _cecore_linear_grad)
LINEAR_GRAD_PEERS = (
    Impl("three matmuls (BLAS floor)", "cecore", _three_matmuls, checked=False),
    Impl("materialise + cecore.cross_entropy grad", "cecore", _materialised_linear_grad),
    Impl("torch linear_cross_entropy fwd+bwd", "torch", _torch_linear_grad),
    Impl("cecore.torch.linear_cross_entropy fwd+bwd", "torch", _cecore_torch_linear_grad),
)

CECORE_BARE = Impl("cecore.cross_entropy (bare kernel)", "cecore", _cecore_cross_entropy)
CECORE_EVALUATOR = Impl("cecore.Evaluator, 8 batches", "cecore", _cecore_evaluator)
CECORE_EVAL_CLI = Impl("cecore eval (.npy, page-cached)", "cecore", _cecore_eval_cli)
CECORE_LINEAR = Impl("cecore.linear_cross_entropy", "cecore", _cecore_linear)
LINEAR_PEERS = (
    Impl("materialise + cecore.cross_entropy", "cecore", _cecore_materialised_linear),
    Impl("torch linear_cross_entropy", "torch", _torch_linear(chunked=False)),
    Impl("torch linear_cross_entropy, chunked", "torch", _torch_linear(chunked=True)),
)


# -------------------------------------------------- model against model


def model_pair_inputs(shape, dtype, rng):
    """A reference's logits 2 N(0, 1), a model's = the reference + 0.1 N(0, 1) (a
    'quantised' copy), and uniform int64 targets: (model, ref, target)."""
    ref = rng.standard_normal(shape, dtype=dtype)
    ref *= 2
    model = rng.standard_normal(shape, dtype=dtype)
    model *= 0.1
    model += ref
    return model, ref, rng.integers(0, shape[-1], size=shape[:-1], dtype=np.int64)


def _cecore_comparison(inputs, n_threads, n_batches=8):
    """cecore.Comparison.update over n_batches in-memory batches of rows, then result()."""
    import cecore

    model, ref, target = inputs
    bounds = np.linspace(0, len(model), n_batches + 1).astype(int)

    def run():
        comparison = cecore.Comparison(n_threads=n_threads)
        for first, last in zip(bounds[:-1], bounds[1:], strict=True):
            comparison.update(model[first:last], ref[first:last], target[first:last])
        return comparison.result()["kl_mean"]

    return run


def _cecore_logit_divergence(inputs, n_threads):
    """The forward fused KL(ref || model), mean over positions (issue 14 item 1)."""
    import cecore

    if not hasattr(cecore, "logit_divergence"):
        raise NotImplementedError("cecore.logit_divergence is not in this build")
    model, ref, target = inputs
    return lambda: cecore.logit_divergence(model, ref, target=target, n_threads=n_threads)


def _torch_kl_div(inputs, n_threads):
    """F.kl_div(log_softmax(z), log_softmax(ref), log_target=True, reduction="batchmean")."""
    import torch
    import torch.nn.functional as F

    model, ref, _ = (as_tensor(a) for a in inputs)
    return lambda: F.kl_div(torch.log_softmax(model, -1), torch.log_softmax(ref, -1),
                            log_target=True, reduction="batchmean")


CECORE_COMPARISON = Impl("cecore.Comparison, 8 batches", "cecore", _cecore_comparison)
LOGIT_DIVERGENCE = Impl("cecore.logit_divergence (forward)", "cecore", _cecore_logit_divergence)
COMPARISON_PEERS = (LOGIT_DIVERGENCE, Impl("torch kl_div", "torch", _torch_kl_div))


# ---------------------------------------------- model against model (KL divergence)


def _cecore_kl(with_grad):
    def prepare(inputs, n_threads):
        import cecore

        logits, ref = inputs
        return lambda: cecore.logit_divergence(logits, ref, return_grad=with_grad,
                                               n_threads=n_threads)

    return prepare


def _torch_kl(with_grad):
    """F.kl_div(F.log_softmax(z), F.log_softmax(ref), log_target=True,
    reduction="batchmean"), and its backward with z a fresh leaf per call."""

    def prepare(inputs, n_threads):
        import torch

        F = torch.nn.functional
        logits, ref = (as_tensor(a) for a in inputs)

        def loss(z):
            return F.kl_div(F.log_softmax(z, -1), F.log_softmax(ref, -1), log_target=True,
                            reduction="batchmean")

        if not with_grad:
            return lambda: loss(logits)

        def loss_and_grad():
            z = logits.detach().requires_grad_()
            value = loss(z)
            value.backward()
            return value, z.grad

        return loss_and_grad

    return prepare


CECORE_KL = Impl("cecore", "cecore", _cecore_kl(False))
KL_PEERS = (Impl("torch", "torch", _torch_kl(False)),)
CECORE_KL_GRAD = Impl("cecore", "cecore", _cecore_kl(True))
KL_GRAD_PEERS = (Impl("torch", "torch", _torch_kl(True)),)


# ---------------------------------------------------------- read floor


def _torch_sum(inputs, n_threads):

    tensors = [as_tensor(a.reshape(-1)) for a in inputs]
    return lambda: [t.sum() for t in tensors]


@functools.cache
def _thread_pool(n_threads):
    return ThreadPoolExecutor(n_threads)


def _numpy_threaded_sum(inputs, n_threads):
    chunks = [c for a in inputs for c in np.array_split(a.reshape(-1), n_threads)]
    pool = _thread_pool(n_threads)
    return lambda: list(pool.map(np.sum, chunks))


# Each sums every input array (logits and targets) in one multi-threaded pass;
# the fastest of them is a workload's read floor.
READ_FLOORS = (
    Impl("torch.sum", "torch", _torch_sum),
    Impl("numpy.sum, thread pool", "numpy", _numpy_threaded_sum),
)

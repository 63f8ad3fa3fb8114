"""Typed use of cecore's public API: type-checked with ``mypy --strict`` against
the installed package, and run, by tests/test_packaging.py. Not a test module
(pytest does not collect it)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

import cecore


def perplexity(logits: npt.NDArray[np.float32], target: npt.NDArray[np.int64]) -> float:
    loss: np.floating[Any] = cecore.cross_entropy(logits, target, label_smoothing=0.1)
    return float(np.exp(loss))


def main() -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((64, 10), dtype=np.float32)
    target = rng.integers(0, 10, 64)

    per_token: npt.NDArray[np.floating[Any]] = cecore.cross_entropy(
        logits, target, reduction="none", n_threads=1
    )
    loss, grad = cecore.cross_entropy(logits, target, return_grad=True, out=np.empty_like(logits))
    nll: np.floating[Any] = cecore.nll_loss(cecore.log_softmax(logits), target, reduction="sum")
    probs: npt.NDArray[np.floating[Any]] = cecore.softmax(logits, axis=1)
    lse = cecore.logsumexp(logits.tolist())
    bce, bce_grad = cecore.binary_cross_entropy_with_logits(
        logits, probs, pos_weight=np.full(10, 2.0), return_grad=True
    )
    bce_p: np.floating[Any] = cecore.binary_cross_entropy(probs, probs)
    bits = cecore.entropy(probs, base=2)
    kl = cecore.kl_divergence(probs, cecore.softmax(logits[::-1]), measure=0.5)
    h = cecore.cross_entropy_pq(probs[0], probs[1])
    version: str = cecore.__version__
    comparison = cecore.Comparison(ignore_index=-100)
    comparison.update(logits, logits[::-1], target)
    report: dict[str, float] = comparison.merge(cecore.Comparison()).result()

    assert per_token.shape == (64,) and grad.shape == logits.shape == bce_grad.shape
    assert abs(float(loss) - float(per_token.mean())) < 1e-5
    assert lse.shape == (64,) and bits.shape == kl.shape == (64,) and float(h) > 0
    assert float(nll) > 0 and float(bce) > 0 and float(bce_p) > 0 and version
    assert report["count"] == 64 and report["kl_mean"] > 0
    print(f"perplexity {perplexity(logits, target):.3f}")
    cecore.show_config()


if __name__ == "__main__":
    main()

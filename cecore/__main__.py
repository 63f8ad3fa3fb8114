"""The ``cecore`` command (also ``python -m cecore``)."""

import argparse
import sys
import time

import numpy as np

import cecore


def demo(n_rows=65536, n_classes=1000, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n_rows, n_classes), dtype=np.float32) * 2
    target = rng.integers(0, n_classes, n_rows)
    cecore.cross_entropy(logits, target)  # warm-up
    start = time.perf_counter()
    loss = cecore.cross_entropy(logits, target)
    elapsed = time.perf_counter() - start
    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(x - m).sum(axis=1)) + m[:, 0]
    reference = np.mean(lse - x[np.arange(n_rows), target])
    print(f"cecore {cecore.__version__}: cross-entropy of "
          f"{n_rows:,} x {n_classes:,} float32 logits")
    print(f"  loss       {loss:.7f} nats (float64 NumPy reference {reference:.7f})")
    print(f"  perplexity {np.exp(loss):.3f}")
    print(f"  time       {elapsed * 1e3:.2f} ms ({logits.nbytes / elapsed / 1e9:.1f} GB/s)")
    cecore.show_config()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="cecore", description=cecore.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cecore {cecore.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="time the fused cross-entropy on synthetic data")
    commands.add_parser("config", help="show version, compiler, OpenMP, SIMD level, threads")
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo()
    else:
        cecore.show_config()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``cecore`` command (also ``python -m cecore``).

``cecore eval LOGITS TARGETS`` evaluates .npy files that may be larger than
memory: both are memory-mapped and fed to an :class:`cecore.Evaluator` in
batches of rows. ``cecore demo`` times the fused cross-entropy on synthetic
data; ``cecore config`` prints the build and run-time configuration.
"""

import argparse
import json
import math
import mmap
import os
import sys
import tempfile
import time

import numpy as np

import cecore
from cecore._validation import check_axis, raise_bad_target

# Logits per batch when --batch-rows is not given.
BATCH_BYTES = 64 << 20
NPY_MAGIC = b"\x93NUMPY"


class CommandError(Exception):
    """A problem with the command's input, reported as one line on stderr."""


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


# ------------------------------------------------------------------ eval


def open_npy(path, what):
    """``path`` memory-mapped read-only; CommandError if it is not a readable .npy file."""
    try:
        with open(path, "rb") as f:
            magic = f.read(len(NPY_MAGIC))
        if magic != NPY_MAGIC:
            kind = "a .npz archive" if magic.startswith(b"PK") else "not a .npy file"
            raise CommandError(f"{what} {path} is {kind} (expected one array saved by numpy.save)")
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise CommandError(f"cannot read {what} {path}: {reason}") from None
    # Transparent huge pages where the kernel allows them for files (np.memmap keeps its
    # mmap in _mmap): a file read through such a mapping is cached in 2 MB pages, which
    # later runs map with one page-table entry each instead of 512 (measured: mapping a
    # cached 262 MB file cost 10 ms of CPU per run with 4 kB entries, ~1 ms with 2 MB).
    if getattr(array, "_mmap", None) is not None and hasattr(mmap, "MADV_HUGEPAGE"):
        array._mmap.madvise(mmap.MADV_HUGEPAGE)
    return array


def check_files(logits, targets, axis, names):
    """Validate dtypes and shapes up front; returns the normalised class axis."""
    if logits.dtype.kind != "f" or logits.dtype.itemsize > 8:
        raise CommandError(f"LOGITS {names[0]} has dtype {logits.dtype}; "
                           "expected float16, float32 or float64")
    if targets.dtype.kind not in "iu":
        raise CommandError(f"TARGETS {names[1]} has dtype {targets.dtype}; "
                           "expected integers (class indices)")
    try:
        axis = check_axis(axis, logits.ndim, f"LOGITS {names[0]}")
    except (TypeError, ValueError) as error:
        raise CommandError(str(error)) from None
    if logits.shape[axis] == 0:
        raise CommandError(f"LOGITS {names[0]} has zero classes along axis {axis}")
    expected = logits.shape[:axis] + logits.shape[axis + 1:]
    if targets.shape != expected:
        raise CommandError(
            f"TARGETS {names[1]} has shape {targets.shape}, expected {expected} "
            f"(LOGITS' shape {logits.shape} without the class axis {axis})"
        )
    return axis


class Progress:
    """A one-line progress bar on ``stream`` (rows, GB/s, ETA), drawn only on a terminal."""

    def __init__(self, total_rows, bytes_per_row, stream, interval=0.2):
        self.total, self.bytes_per_row, self.stream = total_rows, bytes_per_row, stream
        self.enabled = stream is not None and stream.isatty()
        self.interval = interval
        self.start = self.last = time.perf_counter()

    def update(self, rows):
        now = time.perf_counter()
        if not self.enabled or (now - self.last < self.interval and rows < self.total):
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = rows / elapsed
        eta = (self.total - rows) / rate if rate > 0 else math.inf
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?"
        percent = 100.0 * rows / self.total if self.total else 100.0
        self.stream.write(
            f"\r{rows:,}/{self.total:,} rows {percent:5.1f}%  "
            f"{rows * self.bytes_per_row / elapsed / 1e9:6.2f} GB/s  ETA {eta_text} "
        )
        self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


def evaluate_files(logits_path, targets_path, *, axis=-1, ignore_index=-100,
                   label_smoothing=0.0, topk=(1,), batch_rows=None, n_threads=None,
                   progress=True):
    """Evaluate LOGITS against TARGETS (.npy files), memory-mapped, batch by batch.

    Batches are slices along the first axis other than the class axis (rows,
    for 2-D logits). ``progress``: True for a bar on sys.stderr, False for
    none, or a stream (a bar is only drawn on a terminal). Returns ``(metrics,
    info)``: the Evaluator's result and a dict with the files' shapes and
    dtypes, ``positions``, ``seconds`` and ``gb_per_s`` (logits bytes read per
    second). Raises CommandError for
    unreadable files, wrong dtypes or mismatched shapes, and ValueError for a
    target out of range (named by its index in TARGETS).
    """
    evaluator = cecore.Evaluator(axis=axis, ignore_index=ignore_index,
                                 label_smoothing=label_smoothing, topk=topk,
                                 n_threads=n_threads)
    logits = open_npy(logits_path, "LOGITS")
    targets = open_npy(targets_path, "TARGETS")
    axis = check_files(logits, targets, axis, (logits_path, targets_path))
    batch_axis = 0 if axis != 0 else 1  # of the logits; the targets' is 0
    n_batch = targets.shape[0] if targets.ndim else 1
    row_bytes = logits.nbytes // n_batch if n_batch else 0
    if batch_rows is None:
        batch_rows = max(1, BATCH_BYTES // max(row_bytes, 1))
    stream = sys.stderr if progress is True else progress or None
    bar = Progress(n_batch, row_bytes, stream)
    start = time.perf_counter()
    try:
        for first in range(0, n_batch, batch_rows):
            last = min(n_batch, first + batch_rows)
            if logits.ndim == 1:
                batch = (logits, targets)
            else:
                index = (slice(None),) * batch_axis + (slice(first, last),)
                batch = (logits[index], targets[first:last])
            bad, n_classes = evaluator._update(*batch)
            if bad >= 0:
                raise_bad_target(batch[1], bad, n_classes, ignore_index, first)
            bar.update(last)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    info = {
        "logits": os.fspath(logits_path), "logits_shape": list(logits.shape),
        "logits_dtype": str(logits.dtype), "targets": os.fspath(targets_path),
        "targets_dtype": str(targets.dtype), "positions": int(targets.size),
        "seconds": seconds, "gb_per_s": logits.nbytes / seconds / 1e9 if seconds else math.inf,
    }
    return evaluator.result(), info


def demo_files(directory, n_rows=8192, n_classes=1000, seed=0):
    """Write a synthetic evaluation set to ``directory``; returns the two paths.

    Logits 2 N(0, 1) with the target's logit raised by 8 in 70% of the rows
    (a classifier that is often right), int64 targets, 1% of them ignored (-100).
    """
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n_rows, n_classes), dtype=np.float32) * 2
    targets = rng.integers(0, n_classes, n_rows)
    logits[np.arange(n_rows), targets] += 8 * (rng.random(n_rows) < 0.7)
    targets[rng.random(n_rows) < 0.01] = -100
    paths = (os.path.join(directory, "logits.npy"), os.path.join(directory, "targets.npy"))
    np.save(paths[0], logits)
    np.save(paths[1], targets)
    return paths


def _number(value):
    """JSON has no NaN or infinity: such values become null."""
    return value if not isinstance(value, float) or math.isfinite(value) else None


def format_table(metrics, info):
    shape = " × ".join(f"{d:,}" for d in info["logits_shape"])
    rows = [
        ("logits", f"{info['logits']} ({shape} {info['logits_dtype']})"),
        ("targets", f"{info['targets']} ({info['targets_dtype']})"),
        ("loss", f"{metrics['loss']:.6f} nats"),
        ("bits", f"{metrics['bits']:.6f}"),
        ("perplexity", f"{metrics['perplexity']:.4f}"),
    ]
    rows += [(key, f"{value:.4%}") for key, value in metrics.items() if key.startswith("acc")]
    ignored = info["positions"] - metrics["count"]
    rows += [
        ("count", f"{metrics['count']:,} of {info['positions']:,} positions ({ignored:,} ignored)"),
        ("throughput", f"{info['gb_per_s']:.2f} GB/s ({info['seconds']:.3f} s)"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def run_eval(args):
    options = {"axis": args.axis, "ignore_index": args.ignore_index,
               "label_smoothing": args.label_smoothing, "topk": args.topk,
               "batch_rows": args.batch_rows, "n_threads": args.threads}
    if args.demo:
        with tempfile.TemporaryDirectory(prefix="cecore-demo-") as directory:
            paths = demo_files(directory)
            if not args.json:
                print(f"demo: synthetic logits and targets written to {directory} "
                      "(removed afterwards)")
            metrics, info = evaluate_files(*paths, **options)
    else:
        metrics, info = evaluate_files(args.logits, args.targets, **options)
    if args.json:
        print(json.dumps({**info, **{k: _number(v) for k, v in metrics.items()}},
                         allow_nan=False))
    else:
        print(format_table(metrics, info))


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _topk_list(text):
    try:
        return tuple(_positive_int(part) for part in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas (e.g. 1,5), got {text!r}"
        ) from None


def build_parser():
    parser = argparse.ArgumentParser(prog="cecore", description=cecore.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cecore {cecore.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="time the fused cross-entropy on synthetic data")
    commands.add_parser("config", help="show version, compiler, OpenMP, SIMD level, threads")
    ev = commands.add_parser(
        "eval", help="loss, bits, perplexity and top-k accuracy of .npy files",
        description="Evaluate LOGITS (float16/32/64 .npy) against TARGETS (integer class "
                    "indices, .npy): mean cross-entropy in nats, bits, perplexity, top-k "
                    "accuracy. The files are memory-mapped and read in batches of rows, so "
                    "they may be larger than memory.",
    )
    ev.add_argument("logits", nargs="?", metavar="LOGITS", help="logits, .npy")
    ev.add_argument("targets", nargs="?", metavar="TARGETS",
                    help="class indices, .npy, LOGITS' shape without the class axis")
    ev.add_argument("--axis", type=int, default=-1, help="class axis of LOGITS (default -1)")
    ev.add_argument("--ignore-index", type=int, default=-100,
                    help="target value to skip (default -100)")
    ev.add_argument("--label-smoothing", type=float, default=0.0,
                    help="label smoothing in [0, 1] (default 0)")
    ev.add_argument("--topk", type=_topk_list, default=(1,), metavar="K[,K...]",
                    help="accuracies to report, e.g. 1,5 (default 1)")
    ev.add_argument("--batch-rows", type=_positive_int, metavar="N",
                    help=f"rows per batch (default: about {BATCH_BYTES >> 20} MB of logits)")
    ev.add_argument("--threads", type=_positive_int, metavar="N",
                    help="threads (default: OMP_NUM_THREADS or all cores)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--demo", action="store_true",
                    help="evaluate a small synthetic set written to a temporary directory")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo()
    elif args.command == "config":
        cecore.show_config()
    else:
        if args.demo == (args.logits is not None):
            parser.error("eval needs LOGITS and TARGETS, or --demo")
        if args.logits is not None and args.targets is None:
            parser.error("eval needs TARGETS after LOGITS")
        try:
            run_eval(args)
        except (CommandError, ValueError, TypeError) as error:
            print(f"cecore eval: error: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("cecore eval: interrupted", file=sys.stderr)
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

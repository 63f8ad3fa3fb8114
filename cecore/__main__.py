"""The ``cecore`` command (also ``python -m cecore``).

``cecore eval LOGITS TARGETS`` evaluates .npy or .safetensors files (or
shards of them, ``--logits GLOB --targets GLOB``) that may be larger than
memory: they are memory-mapped (cecore._files) and fed to one
:class:`cecore.Evaluator` in batches of rows. ``cecore compare MODEL REF
TARGETS`` feeds two models' logits the same way to one
:class:`cecore.Comparison` (llama.cpp's ``--kl-divergence`` report). ``cecore demo`` times the fused
cross-entropy on synthetic data; ``cecore config`` prints the build and
run-time configuration.
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time

import numpy as np
from ml_dtypes import bfloat16

import cecore
from cecore import _comparison
from cecore._files import CommandError, describe, expand, is_safetensors_name
from cecore._validation import check_axis, raise_bad_target

# Logits per batch when --batch-rows is not given.
BATCH_BYTES = 64 << 20
# Least time between two redraws of the progress bar.
PROGRESS_SECONDS = 0.2


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

LOGITS_DTYPES = tuple(np.dtype(t) for t in ("float16", "float32", "float64", bfloat16))


def check_logits_dtype(logits, what="LOGITS"):
    if logits.dtype.newbyteorder("=") not in LOGITS_DTYPES:
        raise CommandError(f"{what} {logits.name} has dtype {logits.dtype}; "
                           "expected float16, bfloat16, float32 or float64")


def check_files(logits, targets, axis, what="LOGITS"):
    """Validate dtypes and shapes of a pair of Tensors; returns the normalised class axis.

    ``what`` names the logits in messages (LOGITS; MODEL for ``cecore compare``).
    """
    check_logits_dtype(logits, what)
    if targets.dtype.kind not in "iu":
        raise CommandError(f"TARGETS {targets.name} has dtype {targets.dtype}; "
                           "expected integers (class indices)")
    try:
        axis = check_axis(axis, len(logits.shape), f"{what} {logits.name}")
    except (TypeError, ValueError) as error:
        raise CommandError(str(error)) from None
    if logits.shape[axis] == 0:
        raise CommandError(f"{what} {logits.name} has zero classes along axis {axis}")
    expected = logits.shape[:axis] + logits.shape[axis + 1:]
    if targets.shape != expected:
        raise CommandError(
            f"TARGETS {targets.name} has shape {targets.shape}, expected {expected} "
            f"(the shape {logits.shape} of {what} {logits.name} without the class axis {axis})"
        )
    return axis


class Progress:
    """A one-line progress bar on ``stream`` (rows, GB/s, ETA), drawn only on a terminal."""

    def __init__(self, total_rows, total_bytes, stream, interval=0.2):
        self.total, self.total_bytes, self.stream = total_rows, total_bytes, stream
        self.enabled = stream is not None and stream.isatty()
        self.interval = interval
        self.start = self.last = time.perf_counter()

    def update(self, rows, done_bytes):
        now = time.perf_counter()
        if not self.enabled or (now - self.last < self.interval and rows < self.total):
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done_bytes / elapsed
        eta = (self.total_bytes - done_bytes) / rate if rate > 0 else math.inf
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?"
        percent = 100.0 * rows / self.total if self.total else 100.0
        self.stream.write(
            f"\r{rows:,}/{self.total:,} rows {percent:5.1f}%  "
            f"{rate / 1e9:6.2f} GB/s  ETA {eta_text} "
        )
        self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _as_list(paths):
    return [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)


def open_shards(logits, targets=None, *, logits_key=None, targets_key=None, axis=-1,
                what="LOGITS"):
    """Describe and check every pair of files; returns ``(pairs, axis)``.

    ``logits``, ``targets``: a path or a list of paths (shards, paired in
    order); ``targets`` None: each logits file holds the targets too (a
    .safetensors file; choose the tensors with the keys). Nothing is mapped.
    ``what`` names the logits in messages.
    """
    logits = _as_list(logits)
    targets = logits if targets is None else _as_list(targets)
    if len(logits) != len(targets):
        raise CommandError(f"{len(logits)} {what} files but {len(targets)} TARGETS files: "
                           "shards pair up in sorted order, so the counts must match")
    if not logits:
        raise CommandError(f"no {what} files")
    same_files = targets is logits
    pairs, classes = [], None
    for logits_path, targets_path in zip(logits, targets, strict=True):
        lt = describe(logits_path, what, logits_key, "--logits-key")
        if same_files and lt.key is None:
            raise CommandError(f"no TARGETS for {what} {lt.path}: a .npy file holds one array "
                               "(only a .safetensors file can hold both)")
        tt = describe(targets_path, "TARGETS", targets_key, "--targets-key")
        if tt.path == lt.path and tt.key == lt.key:
            hint = "" if lt.key is None else " (choose the targets with --targets-key)"
            raise CommandError(f"{what} and TARGETS are the same tensor {lt.name}{hint}")
        shard_axis = check_files(lt, tt, axis, what)
        if classes is not None and lt.shape[shard_axis] != classes[0]:
            raise CommandError(f"{what} {lt.name} has {lt.shape[shard_axis]:,} classes but "
                               f"{classes[1]} has {classes[0]:,}: shards need the same classes")
        classes = (lt.shape[shard_axis], lt.name)
        pairs.append((lt, tt, shard_axis))
    return pairs, pairs[0][2]


def evaluate_files(logits, targets=None, *, logits_key=None, targets_key=None, axis=-1,
                   ignore_index=-100, label_smoothing=0.0, topk=(1,), batch_rows=None,
                   n_threads=None, progress=True, names=None, shift=False, temperature=1.0,
                   n_bytes=None, n_words=None, per_token=None, loss_histogram=False):
    """Evaluate LOGITS against TARGETS (.npy or .safetensors), memory-mapped, batch by batch.

    ``logits``, ``targets``: a path or a list of paths (shards, paired in
    order, all fed to one Evaluator); ``targets`` None when the .safetensors
    logits files hold the targets too. ``logits_key``, ``targets_key``: the
    tensors' names in .safetensors files (optional when a file holds one).
    Batches are slices along the first axis other than the class axis (rows,
    for 2-D logits). ``progress``: True for a bar on sys.stderr, False for
    none, or a stream (a bar is only drawn on a terminal); it covers all
    shards. ``names``: the (logits, targets) labels of the result (default:
    the paths, for one pair). ``shift``, ``temperature``: as the Evaluator's
    (with ``shift``, 2-D logits (T, V) are one sequence: its batches overlap
    by one row, so no pair of positions is lost at a batch boundary).
    ``n_bytes``, ``n_words``: the totals of the evaluated text, for
    bits_per_byte, byte_perplexity and word_perplexity. ``per_token``: a path
    to write :func:`cecore.token_stats` of every position to, as a .npz file
    (see :class:`TokenWriter`); ``loss_histogram``: also count the per-token
    losses in ``info["loss_histogram"]`` and put the Evaluator's
    ``calibration()`` in ``info["calibration"]`` (for ``--plot``). Returns
    ``(metrics, info)``: the Evaluator's result and a dict with the files'
    shapes and dtypes, ``shards`` (one dict per pair), ``positions``,
    ``seconds`` and ``gb_per_s`` (logits bytes read per second). Raises
    CommandError for unreadable or corrupt files, missing
    keys, wrong dtypes, mismatched shapes and targets out of range (named by
    their file and index in it).
    """
    try:
        evaluator = cecore.Evaluator(axis=axis, ignore_index=ignore_index,
                                     label_smoothing=label_smoothing, topk=topk,
                                     n_threads=n_threads, temperature=temperature, shift=shift)
        sizes = {"n_bytes": n_bytes, "n_words": n_words}
        evaluator._check_sizes(n_bytes, n_words)
    except (TypeError, ValueError) as error:
        raise CommandError(str(error)) from None
    pairs, class_axis = open_shards(logits, targets, logits_key=logits_key,
                                    targets_key=targets_key, axis=axis)
    if shift:
        for lt, _, shard_axis in pairs:
            if len(lt.shape) < 2 or shard_axis != len(lt.shape) - 1:
                raise CommandError(f"--shift needs LOGITS of shape (..., T, V) with the class "
                                   f"axis last; {lt.name} has shape {lt.shape} and class axis "
                                   f"{shard_axis}")
    rows_of = [tt.shape[0] if tt.shape else 1 for _, tt, _ in pairs]
    positions_of = [_positions(tt.shape, shift) for _, tt, _ in pairs]
    total_bytes = sum(lt.nbytes for lt, _, _ in pairs)
    stream = sys.stderr if progress is True else progress or None
    tokens = TokenConsumer(per_token, loss_histogram, pairs, positions_of, axis=axis,
                           ignore_index=ignore_index, shift=shift, temperature=temperature,
                           n_threads=n_threads)
    bar = Progress(sum(rows_of), total_bytes, stream, PROGRESS_SECONDS)
    done_rows = done_bytes = 0
    start = time.perf_counter()
    try:
        for (lt, tt, shard_axis), n_batch in zip(pairs, rows_of, strict=True):
            logits_array, targets_array = lt.map(), tt.map()
            batch_axis = 0 if shard_axis != 0 else 1  # of the logits; the targets' is 0
            row_bytes = lt.nbytes // n_batch if n_batch else 0
            step = batch_rows or max(1, BATCH_BYTES // max(row_bytes, 1))
            # A shifted single sequence (T, V): each batch also takes the next batch's first
            # row, whose target the batch's last logits predict.
            overlap = 1 if shift and logits_array.ndim == 2 else 0
            for first in range(0, max(n_batch - overlap, 1), step):
                last = min(n_batch, first + step + overlap)
                if logits_array.ndim == 1:
                    batch = (logits_array, targets_array)
                else:
                    index = (slice(None),) * batch_axis + (slice(first, last),)
                    batch = (logits_array[index], targets_array[first:last])
                try:
                    bad, n_classes = evaluator._update(
                        *batch, **{k: v for k, v in sizes.items() if v is not None})
                except (TypeError, ValueError) as error:
                    raise CommandError(f"LOGITS {lt.name}: {error}") from None
                sizes = {key: value and 0 for key, value in sizes.items()}  # totals: once
                if bad >= 0:
                    try:
                        raise_bad_target(batch[1], bad, n_classes, ignore_index, first)
                    except ValueError as error:
                        raise CommandError(f"TARGETS {tt.name}: {error}") from None
                tokens.add(*batch)
                bar.update(done_rows + last, done_bytes + last * row_bytes)
            done_rows += n_batch
            done_bytes += lt.nbytes
            logits_array = targets_array = batch = None  # unmapped before the next shard
        tokens.close()
    finally:
        tokens.discard()
        bar.close()
    seconds = time.perf_counter() - start

    def common(values):
        return values[0] if all(v == values[0] for v in values) else None

    shards = [{"logits": lt.path, "logits_key": lt.key, "logits_shape": list(lt.shape),
               "logits_dtype": str(lt.dtype), "targets": tt.path, "targets_key": tt.key,
               "targets_dtype": str(tt.dtype), "positions": positions}
              for (lt, tt, _), positions in zip(pairs, positions_of, strict=True)]
    if names is None:
        names = (pairs[0][0].name, pairs[0][1].name) if len(pairs) == 1 else \
                (f"{pairs[0][0].path} ... ({len(pairs)} shards)",
                 f"{pairs[0][1].path} ... ({len(pairs)} shards)")
    info = {
        "logits": os.fspath(names[0]), "axis": class_axis,
        "logits_shape": common([s["logits_shape"] for s in shards]),
        "logits_dtype": common([s["logits_dtype"] for s in shards]),
        "targets": os.fspath(names[1]),
        "targets_dtype": common([s["targets_dtype"] for s in shards]),
        "shards": shards, "positions": sum(s["positions"] for s in shards),
        "seconds": seconds, "gb_per_s": total_bytes / seconds / 1e9 if seconds else math.inf,
    }
    if per_token is not None:
        info["per_token"] = os.fspath(per_token)
    if loss_histogram:
        info["loss_histogram"] = tokens.histogram()
        info["calibration"] = evaluator.calibration()
    return evaluator.result(), info


def _positions(target_shape, shift):
    """The number of scored positions of targets of ``target_shape``."""
    if shift:
        return math.prod(target_shape[:-1]) * max(target_shape[-1] - 1, 0)
    return math.prod(target_shape)


# Per-token loss histogram: bins of LOSS_BIN nats from 0, the last also holding larger losses.
LOSS_BIN, LOSS_BINS = 0.1, 300
PER_TOKEN_FIELDS = ("logprob", "lse", "entropy", "argmax", "rank", "is_greedy", "mask")


class TokenConsumer:
    """Per-token statistics of every batch, for ``--per-token`` and ``--plot``.

    ``per_token``: a path; the .npz written there holds one 1-D array per
    field of :class:`cecore.TokenStats` (without top-k) over all positions in
    order (each shard's positions in C order, shards one after another), and
    ``shard_positions``. The arrays are streamed to memory-mapped temporary
    .npy files beside it and stored (uncompressed) into the .npz at the end,
    so memory stays bounded; the .npz appears only when evaluation succeeds.
    """

    def __init__(self, per_token, loss_histogram, pairs, positions_of, **options):
        self.options = options
        self.enabled = per_token is not None or loss_histogram
        self.counts = np.zeros(LOSS_BINS, np.int64) if loss_histogram else None
        self.path, self.directory, self.arrays, self.done = None, None, {}, 0
        if per_token is None:
            return
        self.path = os.fspath(per_token)
        float_dtype = (np.float64 if any(lt.dtype == np.float64 for lt, _, _ in pairs)
                       else np.float32)
        total = sum(positions_of)
        self.positions_of = positions_of
        try:
            self.directory = tempfile.mkdtemp(prefix=".cecore-per-token-",
                                              dir=os.path.dirname(os.path.abspath(self.path)))
        except OSError as error:
            raise CommandError(f"--per-token {self.path}: {error.strerror}") from None
        for name in PER_TOKEN_FIELDS:
            dtype = (float_dtype if name in ("logprob", "lse", "entropy")
                     else bool if name in ("is_greedy", "mask") else np.int64)
            self.arrays[name] = np.lib.format.open_memmap(
                os.path.join(self.directory, name + ".npy"), mode="w+", dtype=dtype,
                shape=(total,))

    def add(self, logits, target):
        if not self.enabled:
            return
        stats = cecore.token_stats(logits, target, **self.options)
        if self.counts is not None:
            losses = -stats.logprob[stats.mask]
            losses = losses[~np.isnan(losses)]
            bins = np.minimum(losses // LOSS_BIN, LOSS_BINS - 1).astype(np.int64)
            self.counts += np.bincount(bins, minlength=LOSS_BINS)
        if self.arrays:
            n = stats.mask.size
            for name, array in self.arrays.items():
                array[self.done:self.done + n] = getattr(stats, name).reshape(-1)
            self.done += n

    def histogram(self):
        return {"bin_width": LOSS_BIN, "count": self.counts.tolist()}

    def close(self):
        """Write the .npz (when asked for) from the temporary files."""
        if not self.arrays:
            return
        import zipfile

        partial = os.path.join(self.directory, "per_token.npz")
        try:
            with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for name, array in self.arrays.items():
                    array.flush()
                    archive.write(array.filename, name + ".npy")
                with archive.open("shard_positions.npy", "w") as member:
                    np.lib.format.write_array(member, np.array(self.positions_of, np.int64))
            self.arrays = {}
            os.replace(partial, self.path)
        except OSError as error:
            raise CommandError(f"--per-token {self.path}: {error.strerror or error}") from None

    def discard(self):
        """Remove the temporary files (after close() or an error)."""
        self.arrays = {}
        if self.directory is not None:
            import shutil

            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def plot_report(path, info):
    """Save a reliability diagram and a per-token loss histogram to ``path`` (PNG)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise CommandError("--plot needs matplotlib: pip install 'cecore[plot]' "
                           "(or pip install matplotlib)") from None
    calibration, histogram = info["calibration"], info["loss_histogram"]
    figure = Figure(figsize=(10, 4), layout="constrained")
    reliability, losses = figure.subplots(1, 2)
    width = calibration["edges"][0]
    centres = [edge - width / 2 for edge in calibration["edges"]]
    accuracy = [0.0 if math.isnan(a) else a for a in calibration["accuracy"]]
    reliability.bar(centres, accuracy, width=width, edgecolor="black", label="accuracy")
    reliability.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    reliability.set(xlim=(0, 1), ylim=(0, 1), xlabel="top-1 confidence",
                    ylabel="accuracy", title="Reliability diagram")
    reliability.legend(loc="upper left")
    counts = np.array(histogram["count"])
    used = max(int(np.flatnonzero(counts).max()) + 1 if counts.any() else 1, 10)
    edges = np.arange(used + 1) * histogram["bin_width"]
    losses.stairs(counts[:used], edges, fill=True)
    losses.set(xlabel="per-token loss (nats)", ylabel="positions",
               title="Per-token loss")
    try:
        figure.savefig(path, format="png", dpi=100)
    except OSError as error:
        raise CommandError(f"--plot {path}: {error.strerror or error}") from None


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
    shards = info["shards"]
    logits_dtype = info["logits_dtype"] or "mixed dtypes"
    targets_dtype = info["targets_dtype"] or "mixed dtypes"
    if len(shards) == 1:
        shape = " × ".join(f"{d:,}" for d in info["logits_shape"])
        logits_text = f"{shape} {logits_dtype}"
    else:
        classes = shards[0]["logits_shape"][info["axis"]]
        logits_text = f"{len(shards)} shards, {classes:,} classes, {logits_dtype}"
    rows = [
        ("logits", f"{info['logits']} ({logits_text})"),
        ("targets", f"{info['targets']} ({targets_dtype})"),
        ("loss", f"{metrics['loss']:.6f} nats"),
        ("bits", f"{metrics['bits']:.6f}"),
        ("perplexity", f"{metrics['perplexity']:.4f}"),
    ]
    rows += [(key, f"{value:.4%}") for key, value in metrics.items() if key.startswith("acc")]
    rows += [("entropy", f"{metrics['entropy']:.6f} nats"), ("brier", f"{metrics['brier']:.6f}"),
             ("ece", f"{metrics['ece']:.6f} (15 bins)")]
    rows += [(key, f"{metrics[key]:.6f}") for key in
             ("bits_per_byte", "byte_perplexity", "word_perplexity") if key in metrics]
    ignored = info["positions"] - metrics["count"]
    rows += [
        ("count", f"{metrics['count']:,} of {info['positions']:,} positions ({ignored:,} ignored)"),
        ("throughput", f"{info['gb_per_s']:.2f} GB/s ({info['seconds']:.3f} s)"),
    ]
    if "per_token" in info:
        rows.append(("per-token", info["per_token"]))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def run_eval(args):
    options = {"axis": args.axis, "ignore_index": args.ignore_index,
               "label_smoothing": args.label_smoothing, "topk": args.topk,
               "batch_rows": args.batch_rows, "n_threads": args.threads,
               "shift": args.shift, "temperature": args.temperature, "n_bytes": args.bytes,
               "n_words": args.words, "per_token": args.per_token,
               "loss_histogram": args.plot is not None}
    if args.plot is not None:
        plot_report_check()
    if args.demo:
        with tempfile.TemporaryDirectory(prefix="cecore-demo-") as directory:
            paths = demo_files(directory)
            if not args.json:
                print(f"demo: synthetic logits and targets written to {directory} "
                      "(removed afterwards)")
            metrics, info = evaluate_files(*paths, **options)
    else:
        options.update(logits_key=args.logits_key, targets_key=args.targets_key)
        if args.logits_shards is not None:
            logits = expand(args.logits_shards, "--logits")
            targets = (None if args.targets_shards is None
                       else expand(args.targets_shards, "--targets"))
            if targets is not None and len(targets) != len(logits):
                raise CommandError(
                    f"--logits {args.logits_shards} names {len(logits)} files but --targets "
                    f"{args.targets_shards} names {len(targets)}: shards pair up in sorted "
                    "order, so the counts must match")
            names = (args.logits_shards, args.targets_shards or args.logits_shards)
            metrics, info = evaluate_files(logits, targets, names=names, **options)
        else:
            metrics, info = evaluate_files(args.logits, args.targets, **options)
    if args.plot is not None:
        plot_report(args.plot, info)
    if args.json:
        print(json.dumps(_json_ready({**info, **metrics}), allow_nan=False))
    else:
        print(format_table(metrics, info))


def plot_report_check():
    """Fail before evaluating, not after, when matplotlib is missing."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise CommandError("--plot needs matplotlib: pip install 'cecore[plot]' "
                           "(or pip install matplotlib)")


def _json_ready(value):
    """Non-finite floats, also inside lists and dicts, become null."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return _number(value)


# ------------------------------------------------------------------ compare


def _open_comparison(model, ref, targets, *, logits_key, ref_key, targets_key, axis, shift):
    """Describe and check every (MODEL, REF, TARGETS) triple; returns ``(triples, axis)``."""
    model, ref = _as_list(model), _as_list(ref)
    if len(model) != len(ref):
        raise CommandError(f"{len(model)} MODEL files but {len(ref)} REF files: "
                           "shards pair up in sorted order, so the counts must match")
    pairs, class_axis = open_shards(model, targets, logits_key=logits_key,
                                    targets_key=targets_key, axis=axis, what="MODEL")
    triples = []
    for (lt, tt, shard_axis), ref_path in zip(pairs, ref, strict=True):
        # REF's tensor: --ref-key, else --logits-key in a .safetensors file
        key = ref_key if ref_key is not None or not is_safetensors_name(ref_path) \
            else logits_key
        rt = describe(ref_path, "REF", key, "--ref-key")
        if rt.path == tt.path and rt.key == tt.key:
            raise CommandError(f"REF and TARGETS are the same tensor {rt.name}")
        if rt.path == lt.path and rt.key == lt.key:
            hint = "" if rt.key is None else " (choose REF's tensor with --ref-key)"
            raise CommandError(f"MODEL and REF are the same tensor {rt.name}{hint}")
        check_logits_dtype(rt, "REF")
        if rt.shape != lt.shape:
            raise CommandError(f"MODEL {lt.name} has shape {lt.shape} but REF {rt.name} has "
                               f"shape {rt.shape}: the two models' logits must have the same "
                               "shape")
        if shift and (shard_axis != len(lt.shape) - 1 or len(lt.shape) < 2):
            raise CommandError(f"--shift needs MODEL of shape (..., T, V) with the class axis "
                               f"last; {lt.name} has shape {lt.shape} and class axis "
                               f"{shard_axis}")
        triples.append((lt, rt, tt, shard_axis))
    return triples, class_axis


def _comparison_batches(model, ref, targets, shard_axis, shift, step):
    """``(first, last, model, ref, targets, file_index)`` per batch of a shard (views).

    Batches are slices along the first axis other than the class axis. With
    ``shift`` (class axis last) position t scores target t + 1: for (T, V) the
    batch is rows [first, last) of T - 1 and targets [first + 1, last + 1); for
    (S, ..., T, V) it is [first, last) of S with the logits' T - 1 first steps
    and the targets' T - 1 last ones. ``file_index(i)`` maps a flat index in the
    batch's targets to the flat index in the file's.
    """
    if model.ndim == 1:
        yield 0, 1, model, ref, targets, lambda i: i
        return
    n = _batch_rows(model.shape, shard_axis, shift)
    batch_axis = 0 if shard_axis != 0 else 1
    for first in range(0, n, step):
        last = min(n, first + step)
        if shift and model.ndim == 2:
            z, r = model[first:last], ref[first:last]
            t = targets[first + 1:last + 1]
            offsets = (first + 1, 0)
        elif shift:
            z, r = model[first:last, ..., :-1, :], ref[first:last, ..., :-1, :]
            t = targets[first:last, ..., 1:]
            offsets = (first, 1)
        else:
            index = (slice(None),) * batch_axis + (slice(first, last),)
            z, r, t = model[index], ref[index], targets[first:last]
            offsets = (first, 0)

        def file_index(i, t=t, offsets=offsets):
            where = list(np.unravel_index(i, t.shape))
            where[0] += offsets[0]
            where[-1] += offsets[1]
            return int(np.ravel_multi_index(where, targets.shape))

        yield first, last, z, r, t, file_index


def _batch_rows(shape, shard_axis, shift):
    """The number of batch steps (rows, sequences) of a shard."""
    if len(shape) == 1:
        return 1
    if shift:
        return shape[0] - 1 if len(shape) == 2 else shape[0]
    return shape[0 if shard_axis != 0 else 1]


def compare_files(model, ref, targets=None, *, logits_key=None, ref_key=None, targets_key=None,
                  axis=-1, ignore_index=-100, shift=False, batch_rows=None, n_threads=None,
                  progress=True, names=None):
    """Compare MODEL's logits with REF's on TARGETS (.npy or .safetensors), batch by batch.

    As :func:`evaluate_files`, with one :class:`cecore.Comparison` fed the
    memory-mapped files in batches of rows (or sequences, with ``shift``).
    ``model``, ``ref``, ``targets``: a path or a list of paths (shards, paired
    in order); ``targets`` None when the .safetensors MODEL files hold them.
    ``logits_key``: the logits' tensor in MODEL's (and, without ``ref_key``,
    REF's) .safetensors files. ``shift``: next-token prediction, logits
    (..., T, V) at position t against target t + 1 (class axis last).
    Returns ``(statistics, info)``: Comparison.result() and a dict with the
    files, ``positions`` (scored, including ignored ones), ``seconds`` and
    ``gb_per_s`` (bytes of both logits read per second). Raises CommandError
    for unreadable files, wrong dtypes, MODEL and REF of different shapes and
    targets out of range (named by their file and index in it).
    """
    comparison = cecore.Comparison(axis=axis, ignore_index=ignore_index, n_threads=n_threads)
    triples, class_axis = _open_comparison(model, ref, targets, logits_key=logits_key,
                                           ref_key=ref_key, targets_key=targets_key,
                                           axis=axis, shift=shift)
    rows_of = [_batch_rows(lt.shape, shard_axis, shift) for lt, _, _, shard_axis in triples]
    total_bytes = sum(lt.nbytes + rt.nbytes for lt, rt, _, _ in triples)
    stream = sys.stderr if progress is True else progress or None
    bar = Progress(sum(rows_of), total_bytes, stream, PROGRESS_SECONDS)
    done_rows = done_bytes = 0
    positions = 0
    start = time.perf_counter()
    try:
        for (lt, rt, tt, shard_axis), n_batch in zip(triples, rows_of, strict=True):
            z_all, r_all, t_all = lt.map(), rt.map(), tt.map()
            n_classes = lt.shape[shard_axis]
            row_bytes = (lt.nbytes + rt.nbytes) // max(n_batch, 1)
            step = batch_rows or max(1, BATCH_BYTES // max(row_bytes, 1))
            for _first, last, z, r, t, file_index in _comparison_batches(
                    z_all, r_all, t_all, shard_axis, shift, step):
                bad = (t != ignore_index) & ((t < 0) | (t >= n_classes))
                if bad.any():
                    flat = file_index(int(np.argmax(bad.reshape(-1)))) if t.ndim else 0
                    try:
                        raise_bad_target(t_all, flat, n_classes, ignore_index)
                    except ValueError as error:
                        raise CommandError(f"TARGETS {tt.name}: {error}") from None
                comparison.update(z, r, t)
                positions += t.size
                bar.update(done_rows + last, done_bytes + last * row_bytes)
            done_rows += n_batch
            done_bytes += lt.nbytes + rt.nbytes
            z_all = r_all = t_all = z = r = t = None  # unmapped before the next shard
    finally:
        bar.close()
    seconds = time.perf_counter() - start

    def common(values):
        return values[0] if all(v == values[0] for v in values) else None

    shards = [{"model": lt.path, "model_key": lt.key, "model_dtype": str(lt.dtype),
               "ref": rt.path, "ref_key": rt.key, "ref_dtype": str(rt.dtype),
               "logits_shape": list(lt.shape), "targets": tt.path, "targets_key": tt.key,
               "targets_dtype": str(tt.dtype)}
              for lt, rt, tt, _ in triples]
    if names is None:
        first = triples[0]
        names = tuple(t.name for t in first[:3]) if len(triples) == 1 else \
            tuple(f"{t.path} ... ({len(triples)} shards)" for t in first[:3])
    info = {
        "model": os.fspath(names[0]), "ref": os.fspath(names[1]),
        "targets": os.fspath(names[2]), "axis": class_axis, "shift": shift,
        "logits_shape": common([s["logits_shape"] for s in shards]),
        "model_dtype": common([s["model_dtype"] for s in shards]),
        "ref_dtype": common([s["ref_dtype"] for s in shards]),
        "targets_dtype": common([s["targets_dtype"] for s in shards]),
        "shards": shards, "positions": positions,
        "seconds": seconds, "gb_per_s": total_bytes / seconds / 1e9 if seconds else math.inf,
    }
    return comparison.result(), info


def _pm(value, error, digits, scale=1.0, suffix=""):
    return f"{scale * value:{digits}} ± {scale * error:{digits}}{suffix}"


def format_comparison(stats, info):
    """The statistics laid out like the final report of llama.cpp's
    ``llama-perplexity --kl-divergence`` (Q: MODEL, base: REF)."""
    shards = info["shards"]
    if len(shards) == 1:
        shape = " × ".join(f"{d:,}" for d in info["logits_shape"])
    else:
        shape = f"{len(shards)} shards"
    ignored = info["positions"] - stats["count"]
    head = [
        ("model", f"{info['model']} ({shape} {info['model_dtype'] or 'mixed dtypes'})"),
        ("reference", f"{info['ref']} ({info['ref_dtype'] or 'mixed dtypes'})"),
        ("targets", f"{info['targets']} ({info['targets_dtype'] or 'mixed dtypes'})"
                    + (", shifted (position t scores target t + 1)" if info["shift"] else "")),
        ("count", f"{stats['count']:,} of {info['positions']:,} positions "
                  f"({ignored:,} ignored)"),
        ("throughput", f"{info['gb_per_s']:.2f} GB/s ({info['seconds']:.3f} s)"),
    ]
    width = max(len(name) for name, _ in head)
    lines = [f"{name:<{width}}  {value}" for name, value in head]
    s = stats
    lines += [
        "",
        "====== Perplexity statistics ======",
        f"Mean PPL(Q)                   : {_pm(s['ppl'], s['ppl_stderr'], '10.6f')}",
        f"Mean PPL(base)                : {_pm(s['ref_ppl'], s['ref_ppl_stderr'], '10.6f')}",
        f"Cor(ln(PPL(Q)), ln(PPL(base))): {100 * s['logprob_corr']:6.2f}%",
        f"Mean ln(PPL(Q)/PPL(base))     : "
        f"{_pm(s['ln_ppl_ratio'], s['ln_ppl_ratio_stderr'], '10.6f')}",
        f"Mean PPL(Q)/PPL(base)         : "
        f"{_pm(s['ppl_ratio'], s['ppl_ratio_stderr'], '10.6f')}",
        f"Mean PPL(Q)-PPL(base)         : {_pm(s['ppl_diff'], s['ppl_diff_stderr'], '10.6f')}",
        "",
        "====== KL divergence statistics ======",
        f"Mean    KLD: {_pm(s['kl_mean'], s['kl_mean_stderr'], '10.6f')}",
    ]
    labels = {"max": "Maximum", "median": "Median ", "min": "Minimum"}

    def label(name):
        if name in labels:
            return labels[name]
        return f"{name[1:] if '.' in name else name[1:] + '.0'}%".rjust(5) + "  "

    for name, _ in _comparison._KL_PERCENTILES:
        lines.append(f"{label(name)} KLD: {s['kl_' + name]:10.6f}")
    lines += [
        "",
        "====== Token probability statistics ======",
        f"Mean    Δp: {_pm(s['dp_mean'], s['dp_mean_stderr'], '6.3f', 100, ' %')}",
    ]
    for name, _ in _comparison._DP_PERCENTILES:
        lines.append(f"{label(name)} Δp: {100 * s['dp_' + name]:6.3f}%")
    lines += [
        f"RMS Δp    : {_pm(s['dp_rms'], s['dp_rms_stderr'], '6.3f', 100, ' %')}",
        f"Same top p: {_pm(s['same_top'], s['same_top_stderr'], '6.3f', 100, ' %')}",
    ]
    return "\n".join(lines)


def run_compare(args):
    options = {"logits_key": args.logits_key, "ref_key": args.ref_key,
               "targets_key": args.targets_key, "axis": args.axis,
               "ignore_index": args.ignore_index, "shift": args.shift,
               "batch_rows": args.batch_rows, "n_threads": args.threads}
    if args.model_shards is not None:
        model = expand(args.model_shards, "--model")
        ref = expand(args.ref_shards, "--ref")
        targets = None if args.targets_shards is None else expand(args.targets_shards,
                                                                  "--targets")
        for option, spec, files in (("--ref", args.ref_shards, ref),
                                    ("--targets", args.targets_shards, targets)):
            if files is not None and len(files) != len(model):
                raise CommandError(
                    f"--model {args.model_shards} names {len(model)} files but {option} "
                    f"{spec} names {len(files)}: shards pair up in sorted order, so the "
                    "counts must match")
        names = (args.model_shards, args.ref_shards, args.targets_shards or args.model_shards)
        stats, info = compare_files(model, ref, targets, names=names, **options)
    else:
        stats, info = compare_files(args.model, args.ref, args.targets, **options)
    if args.json:
        print(json.dumps({**info, **{k: _number(v) for k, v in stats.items()}},
                         allow_nan=False))
    else:
        print(format_comparison(stats, info))


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
        "eval", help="loss, bits, perplexity and top-k accuracy of .npy/.safetensors files",
        description="Evaluate LOGITS (float16, bfloat16, float32 or float64) against TARGETS "
                    "(integer class indices), .npy or .safetensors files: mean cross-entropy "
                    "in nats, bits, perplexity, top-k accuracy. The files are memory-mapped "
                    "and read in batches of rows, so they may be larger than memory. Exit "
                    "status: 0 done, 2 bad usage or input (one line on stderr), 130 "
                    "interrupted.",
    )
    ev.add_argument("logits", nargs="?", metavar="LOGITS", help="logits, .npy or .safetensors")
    ev.add_argument("targets", nargs="?", metavar="TARGETS",
                    help="class indices, .npy or .safetensors, LOGITS' shape without the "
                         "class axis (omit it when the .safetensors LOGITS file holds them)")
    ev.add_argument("--logits", dest="logits_shards", metavar="GLOB|DIR",
                    help="logits shards instead of LOGITS: a glob pattern or a directory "
                         "(its .npy and .safetensors files), sorted by name")
    ev.add_argument("--targets", dest="targets_shards", metavar="GLOB|DIR",
                    help="the targets shards, paired with --logits in sorted order "
                         "(omit them when the .safetensors logits shards hold them)")
    ev.add_argument("--logits-key", metavar="NAME",
                    help="the logits' tensor in .safetensors files (needed when a file "
                         "holds several)")
    ev.add_argument("--targets-key", metavar="NAME",
                    help="the targets' tensor in .safetensors files")
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
    ev.add_argument("--shift", action="store_true",
                    help="next-token prediction: LOGITS (..., T, V) at position t are scored "
                         "against TARGETS (..., T) at t + 1")
    ev.add_argument("--temperature", type=float, default=1.0,
                    help="divide the logits by this before the softmax (default 1)")
    ev.add_argument("--bytes", type=int, metavar="N",
                    help="UTF-8 bytes of the evaluated text: adds bits_per_byte and "
                         "byte_perplexity")
    ev.add_argument("--words", type=int, metavar="N",
                    help="words of the evaluated text: adds word_perplexity")
    ev.add_argument("--per-token", metavar="FILE.npz",
                    help="write every position's token_stats (logprob, lse, entropy, argmax, "
                         "rank, is_greedy, mask) to FILE.npz, streamed")
    ev.add_argument("--plot", metavar="FILE.png",
                    help="save a reliability diagram and a per-token loss histogram "
                         "(needs matplotlib: pip install 'cecore[plot]')")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--demo", action="store_true",
                    help="evaluate a small synthetic set written to a temporary directory")
    cmp = commands.add_parser(
        "compare", help="KL divergence, Δp, top-token agreement and perplexity ratio of "
                        "two models' logits (llama.cpp's --kl-divergence report)",
        description="Compare MODEL's logits (e.g. a quantised model's) with REF's (e.g. the "
                    "original's) on the same TARGETS: the statistics of llama.cpp's "
                    "perplexity --kl-divergence (mean KL divergence KL(REF || MODEL) and "
                    "its percentiles, Δp = p(target) - p_ref(target), how often the top "
                    "tokens agree, the perplexities and their ratio, with standard "
                    "errors). MODEL and REF must have the same shape; the files "
                    "(.npy or .safetensors, float16, bfloat16, float32 or float64) are "
                    "memory-mapped and read in batches, so they may be larger than "
                    "memory. Exit status: 0 done, 2 bad usage or input (one line on "
                    "stderr), 130 interrupted.",
    )
    cmp.add_argument("model", nargs="?", metavar="MODEL",
                     help="the model's logits, .npy or .safetensors")
    cmp.add_argument("ref", nargs="?", metavar="REF",
                     help="the reference's logits, MODEL's shape")
    cmp.add_argument("targets", nargs="?", metavar="TARGETS",
                     help="class indices, MODEL's shape without the class axis (omit it "
                          "when the .safetensors MODEL file holds them)")
    cmp.add_argument("--model", dest="model_shards", metavar="GLOB|DIR",
                     help="MODEL shards instead of MODEL REF TARGETS: a glob pattern or a "
                          "directory, sorted by name")
    cmp.add_argument("--ref", dest="ref_shards", metavar="GLOB|DIR",
                     help="the REF shards, paired with --model in sorted order")
    cmp.add_argument("--targets", dest="targets_shards", metavar="GLOB|DIR",
                     help="the targets shards (omit them when the .safetensors model "
                          "shards hold them)")
    cmp.add_argument("--logits-key", metavar="NAME",
                     help="the logits' tensor in MODEL's .safetensors files (and REF's, "
                          "without --ref-key)")
    cmp.add_argument("--ref-key", metavar="NAME",
                     help="the logits' tensor in REF's .safetensors files")
    cmp.add_argument("--targets-key", metavar="NAME",
                     help="the targets' tensor in .safetensors files")
    cmp.add_argument("--axis", type=int, default=-1, help="class axis (default -1)")
    cmp.add_argument("--ignore-index", type=int, default=-100,
                     help="target value to skip (default -100)")
    cmp.add_argument("--shift", action="store_true",
                     help="next-token prediction: logits (..., T, V) at position t are "
                          "scored against target t + 1")
    cmp.add_argument("--batch-rows", type=_positive_int, metavar="N",
                     help=f"rows (sequences, with --shift and 3-D logits) per batch "
                          f"(default: about {BATCH_BYTES >> 20} MB of the two logits)")
    cmp.add_argument("--threads", type=_positive_int, metavar="N",
                     help="threads (default: OMP_NUM_THREADS or all cores)")
    cmp.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _check_compare_usage(parser, args):
    positional = args.model is not None
    shards = args.model_shards is not None
    if positional and (shards or args.ref_shards is not None
                       or args.targets_shards is not None):
        parser.error("compare takes MODEL REF [TARGETS] or --model/--ref/--targets, not both")
    if (args.ref_shards is not None or args.targets_shards is not None) and not shards:
        parser.error("compare needs --model with --ref and --targets")
    if shards and args.ref_shards is None:
        parser.error("compare needs --ref with --model")
    if not positional and not shards:
        parser.error("compare needs MODEL REF TARGETS (or --model and --ref)")
    if positional and args.ref is None:
        parser.error("compare needs REF after MODEL")
    if positional and args.targets is None and not is_safetensors_name(args.model):
        parser.error("compare needs TARGETS after REF (it may be omitted only when MODEL "
                     "is a .safetensors file holding the targets too)")


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo()
    elif args.command == "config":
        cecore.show_config()
    elif args.command == "compare":
        _check_compare_usage(parser, args)
        try:
            run_compare(args)
        except (CommandError, ValueError, TypeError) as error:
            print(f"cecore compare: error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("cecore compare: interrupted", file=sys.stderr)
            return 130
    else:
        positional = args.logits is not None
        if positional and args.logits_shards is not None:
            parser.error("eval takes LOGITS [TARGETS] or --logits/--targets, not both")
        if args.targets_shards is not None and args.logits_shards is None:
            parser.error("eval needs --logits with --targets")
        if args.demo == (positional or args.logits_shards is not None):
            parser.error("eval needs LOGITS and TARGETS, --logits, or --demo")
        if positional and args.targets is None and not is_safetensors_name(args.logits):
            parser.error("eval needs TARGETS after LOGITS (it may be omitted only when "
                         "LOGITS is a .safetensors file holding both)")
        try:
            run_eval(args)
        except (CommandError, ValueError, TypeError) as error:
            print(f"cecore eval: error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("cecore eval: interrupted", file=sys.stderr)
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark cecore against PyTorch, JAX, scikit-learn, SciPy and a memory-read floor.

Usage (from the repository root)::

    PYTHONPATH=. python bench/run.py [--threads N] [--quick] [--only NAME[,NAME]]
                                     [--no-write] [--output PATH]

It prints a table and writes bench/RESULTS.md (not with --quick or --no-write,
unless --output is given). The workloads and their targets are in
workloads.py, the implementations in peers.py, the report in report.py.

Methodology
-----------
- Everything runs in one process, with the same inputs and thread count N
  (``--threads``, default: the number of usable CPUs). Inputs are made once per
  workload from the same seed: logits 2 * N(0, 1), uniform integer targets
  (0/1 floats for binary). They are freed after the workload.
- Thread control: cecore and scikit-learn get ``n_threads=N``; PyTorch
  ``torch.set_num_threads(N)``; NumPy's BLAS (linear workload)
  threadpoolctl's limit of N, when threadpoolctl is installed. JAX: XLA_FLAGS such as
  ``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=N`` were
  measured to have no effect on the XLA CPU client's thread count (jaxlib
  0.10; it sizes its pool from the CPU affinity mask), so none are set; when N
  is below the usable CPUs, the client is created while the main thread is
  pinned to N CPUs, and its pool threads inherit that affinity. SciPy and the
  NumPy formula are single-threaded. The "cores" column (process CPU time /
  wall time while sampling) shows what each used.
- Untimed preparation: ``torch.from_numpy`` views, ``jax.device_put`` and jit,
  scikit-learn's float copy of the targets. JAX calls end with
  ``block_until_ready()``.
- Loss and gradient ("cls-grad"): every implementation returns the mean loss
  and its gradient, and both are checked. PyTorch runs ``F.cross_entropy``
  forward + ``backward()`` on a fresh leaf view of the logits per call (its
  gradient is allocated per call, like cecore's and scikit-learn's);
  scikit-learn's ``loss_gradient`` gets ``sample_weight`` 1/N, so its kernel
  scales the per-sample losses and gradients to the mean's (summing the N
  losses is part of its timed call). The training step ("train-step") is one SGD step of a
  ``torch.nn.Linear`` model with ``F.cross_entropy`` or
  ``cecore.torch.cross_entropy``; its result is the first step's loss and
  updated weight.
- Class axis not last ("axis1", "axis1-grad", "axis1-logsm"): (N, C, d1)
  logits with targets (N, d1), cecore called with ``axis=1`` and PyTorch on the
  same tensor (``F.cross_entropy``, ``F.log_softmax(dim=1)``). The "cecore,
  classes last" peer runs the same call on the same data as a C-contiguous
  (N d1, C) array, made once in its set-up (moveaxis and copy, untimed); its
  gradient and log_softmax are returned as (N, C, d1) views (no copy) for the
  check. With ``--quick`` these shrink d1, not N.
- Implementations run one after another, each on its own: an idle pause of
  0.1 s (so the previous library's OpenMP threads stop spin-waiting and do not
  compete for cores), set-up, one warm-up call (excluded; it also compiles
  JAX), then its samples back to back, then its buffers are freed. The
  warm-up's result is checked against cecore's: a relative difference above
  1e-4 is flagged MISMATCH in the table, on stderr and in the targets
  (a floor computing other values, linear-grad's three matmuls, is not checked).
- A sample is one call, or ``calls`` calls for per-call-overhead workloads.
  Reported time is the median sample per call: of 15 samples, or 7 when the
  first sample takes over 0.1 s (3 with --quick). The garbage collector is off
  while sampling.
- Read floor: the fastest of one multi-threaded pass summing every input array
  (logits and targets) with ``torch.sum`` under ``torch.set_num_threads(N)``,
  or with ``numpy.sum`` over N chunks in a thread pool of N threads (NumPy
  releases the GIL); the table names the winner. It is what merely reading
  the inputs costs, so time(cecore) / time(floor) shows how close cecore
  is to memory-bound. GB/s counts the logits' bytes only.
- Ratios are of median times: "/ cecore" is time(impl) / time(cecore), so 12x
  means cecore is 12 times faster; "/ floor" is time(impl) / time(read floor).
- Peak memory (workloads that ask for it, e.g. linear): after the samples, one
  more call with the process's peak resident set size reset through
  /proc/self/clear_refs (Linux); reported is the peak during the call minus
  the resident size before it, so every library's allocations count (NumPy,
  BLAS, PyTorch), not only Python's. Free heap memory is first returned to
  the system (glibc malloc_trim), so that reused memory shows too. A
  library's own cache (PyTorch's allocator keeps none on the CPU) would
  not; "n/a" where /proc is missing. The result of the call is dropped
  after it, and implementations do not keep earlier results alive (PyTorch's
  peers take the gradients off their leaf tensors before returning them), so
  every call allocates its outputs afresh. Workloads whose implementations all
  must return large outputs (linear-grad: the gradients of hidden and weight)
  set ``memory_beyond_outputs``: their memory targets compare the peak extra
  memory beyond the returned arrays, peak minus the bytes of the arrays the
  call returns, on both sides; the table reports both figures.
- ``--quick`` divides the number of rows by 16, the per-call repeats by 10 and
  takes 3 samples: for checking that the harness works, not for numbers.
"""

import argparse
import ctypes
import functools
import gc
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import peers
import report
from workloads import WORKLOADS

TOLERANCE = 1e-4  # relative difference allowed between a peer's result and cecore's
SEED = 0
SETTLE_SECONDS = 0.1  # idle time before each implementation (see Methodology)
DEFAULT_OUTPUT = Path(__file__).with_name("RESULTS.md")


@dataclass(frozen=True)
class Repeats:
    fast: int = 15
    slow: int = 7
    slow_seconds: float = 0.1  # a sample slower than this is "slow"

    def count(self, sample_seconds):
        """How many samples to take when one takes ``sample_seconds``."""
        return self.slow if sample_seconds > self.slow_seconds else self.fast


QUICK_REPEATS = Repeats(fast=3, slow=3)


@dataclass
class Measurement:
    label: str
    status: str = "ok"  # or "n/a: ...", "error: ..."
    seconds: float = None  # median time per call
    cores: float = None  # process CPU time / wall time while sampling
    rel_error: float = None  # against cecore's result; None for cecore and floors
    peak_bytes: int = None  # peak resident memory added by one call, if measured
    output_bytes: int = None  # bytes of the arrays one call returns (with peak_bytes)
    tolerance: float = TOLERANCE  # the workload's (see Workload.tolerance)

    @property
    def ok(self):
        return self.seconds is not None

    @property
    def mismatch(self):
        return self.rel_error is not None and not self.rel_error <= self.tolerance


@dataclass
class WorkloadResult:
    workload: object
    measurements: list = field(default_factory=list)  # cecore first, then its peers
    floor: Measurement = None  # the fastest read-floor candidate
    skipped: str = None

    def get(self, label):
        return next((m for m in self.measurements if m.label == label), None)

    @property
    def cecore(self):
        return self.measurements[0] if self.measurements else None


# ------------------------------------------------------------------ timing


def time_sample(function, calls):
    """(wall seconds, process CPU seconds) of ``calls`` calls."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        function()
    return time.perf_counter() - wall, time.process_time() - cpu


def _resident_and_peak_kb():
    """(VmRSS, VmHWM) of this process in kB, from /proc/self/status."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def _release_free_heap():
    """Return free malloc memory to the system (glibc's malloc_trim), if available.

    Otherwise memory that earlier calls freed stays resident and is reused
    without raising the peak: an allocation would not show.
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def result_bytes(value):
    """Bytes of the NumPy arrays and tensors in a call's result (tuples too)."""
    if isinstance(value, (tuple, list)):
        return sum(result_bytes(v) for v in value)
    if hasattr(value, "element_size") and hasattr(value, "numel"):  # torch.Tensor
        return value.element_size() * value.numel()
    return getattr(value, "nbytes", 0)


def peak_memory(function):
    """Bytes by which one call of ``function`` raises the resident set at its peak, or None."""
    _release_free_heap()
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets VmHWM to the current VmRSS (Linux >= 4.0)
        before, _ = _resident_and_peak_kb()
        function()
        _, peak = _resident_and_peak_kb()
    except OSError:
        return None
    return max(peak - before, 0) * 1024


def measure(function, calls, repeats):
    """(median seconds per call, cores used) over repeated samples of ``calls`` calls.

    The first sample decides how many are taken. Cores = total CPU time / total
    wall time (the kernel updates other threads' CPU time at scheduler ticks,
    so it is coarse for samples of a few milliseconds).
    """
    gc.disable()
    try:
        samples = [time_sample(function, calls)]
        while len(samples) < repeats.count(samples[0][0]):
            samples.append(time_sample(function, calls))
    finally:
        gc.enable()
    walls, cpus = zip(*samples)
    return statistics.median(walls) / calls, sum(cpus) / sum(walls)


# ------------------------------------------------------------ correctness


def to_host(value):
    """A result as float64 NumPy array(s), independent of the library's buffers."""
    if isinstance(value, (tuple, list)):
        return tuple(to_host(v) for v in value)
    if hasattr(value, "detach"):  # torch.Tensor (bfloat16: numpy() refuses it)
        value = value.detach().float().numpy() if value.dtype.is_floating_point and \
            value.element_size() == 2 else value.detach().numpy()
    return np.array(value, dtype=np.float64)


def relative_error(value, reference):
    """max |value - reference| / max |reference| of host results (tuples too)."""
    if isinstance(reference, tuple):
        return max(relative_error(v, r) for v, r in zip(value, reference, strict=True))
    if value.shape != reference.shape:
        return float("inf")
    scale = max(float(np.max(np.abs(reference), initial=0.0)), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(value - reference), initial=0.0)) / scale


# ------------------------------------------------------------- workloads


def _log(text):
    print(text, file=sys.stderr, flush=True)


def measure_impl(impl, label, inputs, n_threads, calls, repeats, available, peak=False):
    """(Measurement, warm-up result or None) of one implementation on ``inputs``."""
    if impl.backend not in available:
        return Measurement(label, status=f"n/a: {impl.backend} not installed"), None
    time.sleep(SETTLE_SECONDS)
    try:
        function = impl.prepare(inputs, n_threads)
        result = function()  # the warm-up call, excluded from timing
        output_bytes = result_bytes(result)
        value = to_host(result)
        result = None
        seconds, cores = measure(function, calls, repeats)
        gc.collect()
        peak_bytes = peak_memory(function) if peak else None
    except Exception as error:  # noqa: BLE001 -- a peer's failure must not end the run
        message = f"{type(error).__name__}: {error}".splitlines()[0][:120]
        return Measurement(label, status=f"error: {message}"), None
    finally:
        function = None  # frees JAX device copies and the like before clean-up
        _release_memory(impl.backend)
    return Measurement(label, seconds=seconds, cores=cores, peak_bytes=peak_bytes,
                       output_bytes=output_bytes if peak else None), value


def _release_memory(backend):
    gc.collect()
    cleanup = peers.BACKENDS[backend].cleanup
    if cleanup is not None:
        cleanup()


def run_workload(workload, n_threads, repeats, available):
    result = WorkloadResult(workload)
    if n_threads < workload.min_threads:
        result.skipped = f"needs --threads >= {workload.min_threads}"
        return result
    if workload.cecore.backend not in available:
        result.skipped = f"{workload.cecore.backend} not installed"
        return result
    _log(f"[{workload.name}] {report.shape_text(workload)}: {workload.title}")
    inputs = workload.make_inputs(workload.shape, workload.dtype, np.random.default_rng(SEED))
    measure_on_inputs = functools.partial(measure_impl, inputs=inputs, n_threads=n_threads,
                                          calls=workload.calls, repeats=repeats,
                                          available=available, peak=workload.peak_memory)

    cecore, reference = measure_on_inputs(workload.cecore, workload.cecore.label)
    if reference is None:
        raise SystemExit(f"cecore failed on {workload.name}: {cecore.status}")
    result.measurements.append(cecore)
    _log_measurement(cecore, workload)
    for impl in workload.peers:
        peer, value = measure_on_inputs(impl, impl.label)
        peer.tolerance = workload.tolerance
        if value is not None and impl.checked:
            peer.rel_error = relative_error(value, reference)
        result.measurements.append(peer)
        _log_measurement(peer, workload)

    if workload.read_floor:
        floors = [measure_on_inputs(impl, f"read floor: {impl.label}")[0]
                  for impl in peers.READ_FLOORS]
        for floor in floors:
            _log_measurement(floor)
        result.floor = min((f for f in floors if f.ok), key=lambda f: f.seconds, default=None)
    return result


def _log_measurement(m, workload=None):
    memory = f"  peak +{report.megabytes_text(m.peak_bytes)}" if m.peak_bytes is not None else ""
    if memory and workload is not None and workload.memory_beyond_outputs:
        memory += f" ({report.megabytes_text(report.beyond_outputs(m))} beyond its outputs)"
    _log(f"  {m.label:<36} {report.time_text(m.seconds) if m.ok else m.status}{memory}")
    if m.mismatch:
        _log(f"  !!! MISMATCH: {m.label} disagrees with cecore on {workload.name}: "
             f"relative difference {m.rel_error:.2e} > {m.tolerance:g}")


# ------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="threads for every implementation (default: usable CPUs)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and repeats; implies --no-write unless --output")
    parser.add_argument("--only", metavar="NAME[,NAME]",
                        help="workloads to run: " + ", ".join(w.name for w in WORKLOADS))
    parser.add_argument("--no-write", action="store_true", help="do not write a results file")
    parser.add_argument("--output", type=Path, help="results file (default: bench/RESULTS.md)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    known = {w.name for w in WORKLOADS}
    args.only = args.only.split(",") if args.only else sorted(known)
    if unknown := set(args.only) - known:
        parser.error(f"unknown workload(s) {', '.join(sorted(unknown))}; "
                     f"choose from {', '.join(w.name for w in WORKLOADS)}")
    if args.output is None and not (args.quick or args.no_write):
        args.output = DEFAULT_OUTPUT
    if args.no_write:
        args.output = None
    return args


def load_backends(workloads, n_threads):
    """({backend: ({module: version}, thread control)} of the importable ones,
    {backend: why not})."""
    names = {"cecore", *(p.backend for p in peers.READ_FLOORS)}
    names |= {impl.backend for w in workloads for impl in (w.cecore, *w.peers)}
    available, missing = {}, {}
    for name in sorted(names, key=list(peers.BACKENDS).index):
        try:
            available[name] = peers.load_backend(peers.BACKENDS[name], n_threads)
        except ImportError as error:
            missing[name] = f"not installed ({error})"
        except Exception as error:  # noqa: BLE001 -- a broken install: report it, run the others
            missing[name] = f"failed to load ({type(error).__name__}: {error})"
    if "cecore" in missing:
        raise SystemExit(f"cannot import cecore: {missing['cecore']}; run with PYTHONPATH=.")
    return available, missing


HEAVY_MODULES = ("torch", "dask", "matplotlib", "scipy", "sklearn", "jax")


def measure_import(runs=5):
    """``python -X importtime -c "import cecore"`` in ``runs`` fresh processes.

    Returns the best cumulative microseconds of cecore and of numpy, and which
    of HEAVY_MODULES the import pulled in (none should be).
    """
    import subprocess

    best, best_numpy, heavy = None, None, set()
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import cecore"],
                              capture_output=True, text=True, check=True)
        cumulative = {}
        for line in done.stderr.splitlines():
            if not line.startswith("import time:") or "|" not in line:
                continue
            parts = [p.strip() for p in line[len("import time:"):].split("|")]
            if parts[1].isdigit():
                cumulative[parts[2]] = int(parts[1])
        heavy |= {m for m in HEAVY_MODULES if m in cumulative}
        if best is None or cumulative["cecore"] < best:
            best, best_numpy = cumulative["cecore"], cumulative.get("numpy", 0)
    return {"cecore_us": best, "numpy_us": best_numpy, "runs": runs,
            "heavy": sorted(heavy), "checked": HEAVY_MODULES}


def main(argv=None):
    args = parse_args(argv)
    workloads = [w for w in WORKLOADS if w.name in args.only]
    if args.quick:
        workloads = [w.quick() for w in workloads]
    repeats = QUICK_REPEATS if args.quick else Repeats()
    started, load_before = datetime.now(timezone.utc), os.getloadavg()
    available, missing = load_backends(workloads, args.threads)

    results = [run_workload(w, args.threads, repeats, available) for w in workloads]

    context = report.Context(
        command=report.command_line(),
        started=started,
        finished=datetime.now(timezone.utc),
        load_average=(load_before, os.getloadavg()),
        threads=args.threads,
        quick=args.quick,
        available=available,
        missing=missing,
        methodology=__doc__.split("Methodology\n-----------\n")[1],
        import_time=measure_import(),
    )
    print(report.render_console(results, context))
    if args.output is not None:
        args.output.write_text(report.render_markdown(results, context))
        _log(f"wrote {args.output}")


if __name__ == "__main__":
    main()

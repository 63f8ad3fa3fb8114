"""Formatting of run.py's results: the console table and bench/RESULTS.md.

RESULTS.md has a header (date, command, machine, versions and thread control
of each library, cecore's show_config), the results table, the targets
evaluated from the measured numbers (PASS/MISS), and the methodology.
"""

import contextlib
import io
import math
import os
import platform
import re
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import peers

ENV_VARS = ("PYTHONPATH", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
            "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CECORE_SIMD", "XLA_FLAGS")


@dataclass
class Context:
    command: str
    started: datetime
    finished: datetime
    load_average: tuple  # os.getloadavg() before and after
    threads: int
    quick: bool
    available: dict  # {backend: ({module: version}, thread control)}
    missing: dict  # {backend: reason}
    methodology: str
    import_time: dict = None  # run.measure_import(); None when not measured


# ----------------------------------------------------------- formatting


def shape_text(workload):
    return " × ".join(f"{d:,}" for d in workload.shape) + f" {workload.dtype}"


def time_text(seconds):
    if seconds is None:
        return "n/a"
    return f"{seconds * 1e3:.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} µs"


def megabytes_text(nbytes):
    return "n/a" if nbytes is None else f"{nbytes / 1e6:,.1f} MB"


def ratio_text(ratio):
    return "n/a" if ratio is None else f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x"


def markdown_table(headers, rows):
    """A markdown table padded to aligned columns, so it reads in a terminal too."""
    cells = [list(map(str, headers))] + [list(map(str, row)) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def command_line():
    """The command as typed: cwd, relevant environment variables, interpreter, argv."""
    env = [f"{k}={shlex.quote(os.environ[k])}" for k in ENV_VARS if k in os.environ]
    argv = shlex.join([sys.executable, *sys.argv])
    return f"cd {shlex.quote(os.getcwd())} && " + " ".join([*env, argv])


# --------------------------------------------------------------- tables


def _ratio(measurement, reference):
    if measurement is None or reference is None or not (measurement.ok and reference.ok):
        return None
    return measurement.seconds / reference.seconds


def _check_text(measurement, is_reference):
    if not measurement.ok:
        return measurement.status
    if is_reference:
        return "reference"
    if measurement.rel_error is None:
        return ""
    if measurement.mismatch:
        return f"**MISMATCH** {measurement.rel_error:.1e}"
    return f"ok ({measurement.rel_error:.0e})"


def _gigabytes_per_second(workload, measurement):
    if not measurement.ok:
        return "n/a"
    nbytes = math.prod(workload.shape) * np.dtype(workload.dtype).itemsize
    return f"{nbytes / measurement.seconds / 1e9:.2f}"


def results_table(results):
    headers = ("workload", "shape", "implementation", "time", "GB/s", "/ cecore", "/ floor",
               "cores", "check")
    rows = []
    for result in results:
        workload = result.workload
        if result.skipped:
            rows.append((workload.name, shape_text(workload), f"skipped: {result.skipped}",
                         *[""] * 6))
            continue
        shown = result.measurements + ([result.floor] if result.floor else [])
        for m in shown:
            first = m is shown[0]
            name, shape = (workload.name, shape_text(workload)) if first else ("", "")
            check = "" if m is result.floor else _check_text(m, m is result.cecore)
            if not m.ok:
                rows.append((name, shape, m.label, "n/a", "", "", "", "", check))
                continue
            rows.append((
                name, shape, m.label, time_text(m.seconds), _gigabytes_per_second(workload, m),
                ratio_text(_ratio(m, result.cecore)), ratio_text(_ratio(m, result.floor)),
                f"{m.cores:.2f}", check,
            ))
    return markdown_table(headers, rows)


def evaluate_targets(results):
    """(workload, target, measured, PASS/MISS/n/a) for each target of each result."""
    rows = []
    for result in results:
        workload = result.workload
        for label, minimum in workload.speedups.items():
            target = (f"per-call time below {label}'s" if minimum == 1
                      else f"≥ {minimum:.0%} of {label}'s throughput" if minimum < 1
                      else f"≥ {minimum:g}x faster than {label}")
            rows.append(_judge(result, target, result.get(label), result.cecore,
                               lambda ratio, minimum=minimum: ratio >= minimum))
        for label, maximum in workload.memory_max.items():
            what = ("peak memory beyond the outputs" if workload.memory_beyond_outputs
                    else "peak memory")
            rows.append(_judge_memory(result, f"{what} ≤ {maximum:g}x {label}'s",
                                      result.get(label), maximum))
        if workload.floor_max is not None:
            rows.append(_judge(result, f"≤ {workload.floor_max:g}x the read floor",
                               result.cecore, result.floor,
                               lambda ratio, most=workload.floor_max: ratio <= most))
    return rows


def _judge(result, target, numerator, denominator, passes):
    """A targets row judging time(numerator) / time(denominator) with ``passes``."""
    ratio = _ratio(numerator, denominator)
    if result.skipped:
        measured, status = "", f"n/a ({result.skipped})"
    elif ratio is None:
        measured, status = "", "n/a"
    else:
        measured = (f"{ratio_text(ratio)} ({time_text(numerator.seconds)} / "
                    f"{time_text(denominator.seconds)})")
        status = "PASS" if passes(ratio) else "MISS"
    if any(m is not None and m.mismatch for m in (numerator, denominator)):
        status += " (**results disagree**)"
    return result.workload.name, target, measured, status


def beyond_outputs(m):
    """Peak memory of a measurement minus the bytes of the arrays it returned, or None."""
    if not m.peak_bytes or m.output_bytes is None:
        return None
    return max(m.peak_bytes - m.output_bytes, 0)


def _judge_memory(result, target, peer, maximum):
    """A targets row judging peak memory(cecore) / peak memory(peer) <= maximum (beyond
    the returned arrays with the workload's memory_beyond_outputs, the raw ratio next
    to it)."""
    cecore = result.cecore
    if result.skipped:
        return result.workload.name, target, "", f"n/a ({result.skipped})"
    if cecore is None or peer is None or not cecore.peak_bytes or not peer.peak_bytes:
        return result.workload.name, target, "", "n/a"
    raw = cecore.peak_bytes / peer.peak_bytes
    raw_text = (f"{raw:.3f}x ({megabytes_text(cecore.peak_bytes)} / "
                f"{megabytes_text(peer.peak_bytes)})")
    if not result.workload.memory_beyond_outputs:
        return result.workload.name, target, raw_text, "PASS" if raw <= maximum else "MISS"
    mine, theirs = beyond_outputs(cecore), beyond_outputs(peer)
    if mine is None or not theirs:
        return result.workload.name, target, f"raw {raw_text}", "n/a"
    ratio = mine / theirs
    measured = (f"{ratio:.3f}x ({megabytes_text(mine)} / {megabytes_text(theirs)}); "
                f"raw {raw_text}")
    return result.workload.name, target, measured, "PASS" if ratio <= maximum else "MISS"


def memory_table(results):
    """Peak memory of the workloads that measured it, or "" if none did; a column of
    the peak beyond the returned arrays when a workload's targets use it."""
    measured = [r for r in results if r.workload.peak_memory and not r.skipped]
    beyond = any(r.workload.memory_beyond_outputs for r in measured)
    rows = []
    for r in measured:
        for m in r.measurements:
            row = [r.workload.name if m is r.measurements[0] else "", m.label,
                   megabytes_text(m.peak_bytes) if m.ok else m.status,
                   ratio_text(m.peak_bytes / r.cecore.peak_bytes)
                   if m.peak_bytes and r.cecore.peak_bytes else "n/a"]
            if beyond:
                extra = beyond_outputs(m) if r.workload.memory_beyond_outputs else None
                row.append(megabytes_text(extra) if extra is not None else "")
            rows.append(tuple(row))
    if not rows:
        return ""
    headers = ["workload", "implementation", "peak memory added by a call", "/ cecore"]
    if beyond:
        headers.append("beyond the returned arrays")
    return markdown_table(tuple(headers), rows)


def mismatch_warning(results):
    """A loud line naming every peer whose result disagrees with cecore's, or ""."""
    bad = [f"{r.workload.name}/{m.label} ({m.rel_error:.1e})"
           for r in results for m in r.measurements if m.mismatch]
    return f"**WARNING: results disagree with cecore's: {', '.join(bad)}**" if bad else ""


def targets_table(results):
    return markdown_table(("workload", "target", "measured (time ratio)", "result"),
                          evaluate_targets(results))


# ---------------------------------------------------------------- header


def _read(path):
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine_info():
    cpuinfo = _read("/proc/cpuinfo")
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    cores = set(re.findall(r"^physical id\s*:\s*(\d+)$.*?^core id\s*:\s*(\d+)$",
                           cpuinfo, re.M | re.S))
    flags = set(re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.M).group(1).split()) \
        if "flags" in cpuinfo else set()
    memory = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo"), re.M)
    return {
        "CPU": model.group(1) if model else platform.processor() or "unknown",
        "Cores": f"{len(cores) or '?'} physical, {os.cpu_count()} logical, "
                 f"{len(os.sched_getaffinity(0))} usable by this process",
        "SIMD (CPU flags)": ", ".join(f for f in ("avx512f", "avx2", "fma") if f in flags)
                            or "none of avx512f/avx2/fma",
        "Memory": f"{int(memory.group(1)) / 2**20:.1f} GiB" if memory else "unknown",
        "OS": platform.platform(),
        "Python": sys.version.split()[0],
    }


def _cecore_config():
    import cecore

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        cecore.show_config()
    return buffer.getvalue().rstrip()


def versions_table(context):
    rows = []
    for name in peers.BACKENDS:
        if name in context.available:
            versions, threads = context.available[name]
            rows.append((name, ", ".join(f"{m} {v}" for m, v in versions.items()), threads))
        elif name in context.missing:
            rows.append((name, f"n/a: {context.missing[name]}", ""))
    return markdown_table(("library", "versions", "thread control"), rows)


def _quick_warning(context):
    return ("**QUICK RUN: reduced sizes and repeats; these numbers are not "
            "representative.**\n\n" if context.quick else "")


def import_text(context):
    """One line: what ``import cecore`` costs in a fresh process and what it pulls in."""
    t = context.import_time
    if not t:
        return ""
    absent = ", ".join(f"{name} {'imported' if name in t['heavy'] else 'not imported'}"
                       for name in t["checked"])
    return (f"`python -X importtime -c \"import cecore\"`: cecore {t['cecore_us'] / 1e3:.1f} ms "
            f"cumulative (NumPy {t['numpy_us'] / 1e3:.1f} ms of it), best of {t['runs']} fresh "
            f"processes; {absent}.")


def render_console(results, context):
    header = f"threads: {context.threads}"
    if context.quick:
        header += "  (QUICK RUN: not representative)"
    parts = [header, results_table(results), memory_table(results), targets_table(results),
             import_text(context), mismatch_warning(results)]
    return "\n\n".join(filter(None, parts))


def memory_section(results):
    table = memory_table(results)
    if not table:
        return ""
    return ("## Peak memory\n\nResident memory added at the peak of one call (see "
            f"Methodology).\n\n{table}\n\n")


def render_markdown(results, context):
    machine = "\n".join(f"- {k}: {v}" for k, v in machine_info().items())
    load_before, load_after = (", ".join(f"{x:.2f}" for x in la) for la in context.load_average)
    warning = mismatch_warning(results) + "\n\n" if mismatch_warning(results) else ""
    return f"""# cecore benchmark results

{_quick_warning(context)}- Date: {context.started.isoformat(timespec="seconds")} to \
{context.finished.isoformat(timespec="seconds")}
- Command: `{context.command}`
- Threads: {context.threads}
- Load average (1, 5, 15 min) before: {load_before}; after: {load_after}

## Machine

{machine}

## Libraries

{versions_table(context)}

## cecore configuration

```
{_cecore_config()}
```

## Results

Times are medians per call. "/ cecore" is time / cecore's time (above 1:
cecore is faster); "/ floor" is time / the read floor's time; GB/s counts the
logits' bytes; "cores" is process CPU time / wall time while timing; "check" is
the relative difference of the result from cecore's (tolerance 1e-4; 1e-2 for 16-bit
workloads, whose peers round their results to 16 bits).

{results_table(results)}

{memory_section(results)}{warning}## Import time

{import_text(context) or "not measured"}

## Targets

{targets_table(results)}

## Methodology

{context.methodology.strip()}
"""

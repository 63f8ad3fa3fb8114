"""cecore plays well with other threaded libraries: threadpoolctl sees the OpenMP
runtime its extensions link, and its limits (and OMP_NUM_THREADS) cap cecore's
default thread count without changing any result."""

import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cecore
from cecore import _openmp, _threads

threadpoolctl = pytest.importorskip("threadpoolctl")

pytestmark = pytest.mark.skipif(_openmp.openmp_version() == 0, reason="built without OpenMP")

PACKAGE = Path(cecore.__file__).resolve().parent
RUNTIME_PREFIXES = ("libgomp", "libomp", "libiomp", "vcomp")


def _extension_modules():
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    found = sorted(p for p in PACKAGE.iterdir() if p.name.endswith(suffixes))
    assert found, f"no compiled modules in {PACKAGE}"
    return found


def _linked_openmp_runtimes():
    """Paths (Linux, from ldd) or file names (macOS, otool -L) of the OpenMP
    runtimes the compiled modules link; None where neither tool is available."""
    if sys.platform.startswith("linux") and shutil.which("ldd"):
        command, skip, pick = ["ldd"], 0, lambda line: line.split("=>")[1].split("(")[0].strip()
    elif sys.platform == "darwin" and shutil.which("otool"):
        command, skip, pick = ["otool", "-L"], 1, lambda line: Path(line.split()[0]).name
    else:
        return None
    runtimes = set()
    for ext in _extension_modules():
        listing = subprocess.run(command + [str(ext)], capture_output=True, text=True,
                                 check=True).stdout.splitlines()[skip:]
        linked = {pick(line) for line in listing
                  if Path(line.split()[0]).name.startswith(RUNTIME_PREFIXES)}
        assert linked, f"{ext.name} does not link an OpenMP runtime:\n" + "\n".join(listing)
        runtimes |= linked
    return runtimes


def _run_a_threaded_kernel():
    x = np.random.default_rng(0).standard_normal((256, 512), dtype=np.float32)
    return cecore.cross_entropy(x, np.arange(256) % 512, n_threads=2)


def _cecore_runtime():
    """threadpoolctl's entry for the OpenMP runtime cecore's modules link."""
    _run_a_threaded_kernel()
    openmp = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "openmp"]
    assert openmp, f"threadpoolctl lists no OpenMP runtime: {threadpoolctl.threadpool_info()}"
    linked = _linked_openmp_runtimes()
    if linked is None:  # Windows: vcomp140.dll, from the wheel or the system
        return openmp[0]
    assert len(linked) == 1, f"the compiled modules link different OpenMP runtimes: {linked}"
    (runtime,) = linked
    if sys.platform == "darwin":
        matches = [i for i in openmp if Path(i["filepath"]).name == runtime]
    else:
        matches = [i for i in openmp
                   if os.path.realpath(i["filepath"]) == os.path.realpath(runtime)]
    assert len(matches) == 1, f"{runtime} is not (or more than once) in {openmp}"
    return matches[0]


def test_threadpoolctl_lists_the_openmp_runtime_cecore_links():
    info = _cecore_runtime()
    assert info["internal_api"] == "openmp" and info["prefix"] in RUNTIME_PREFIXES
    assert info["num_threads"] == _threads.default_n_threads()
    # A wheel repaired by auditwheel (delocate) ships its runtime in cecore.libs
    # (cecore/.dylibs): that copy is the one loaded and the one threadpoolctl sees.
    for bundled in (PACKAGE.parent / "cecore.libs", PACKAGE / ".dylibs"):
        if bundled.is_dir() and any(p.name.startswith(RUNTIME_PREFIXES) for p in bundled.iterdir()):
            assert Path(info["filepath"]).resolve().parent == bundled.resolve()


@pytest.mark.parametrize("select", ["all", "openmp", "cecore's runtime only"])
def test_threadpool_limits_cap_default_threads_results_unchanged(select):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((512, 300), dtype=np.float32)
    target = rng.integers(0, 300, 512)
    p = cecore.softmax(rng.standard_normal((512, 300)))
    calls = [
        lambda: cecore.cross_entropy(logits, target, label_smoothing=0.1),
        lambda: cecore.cross_entropy(logits, target, return_grad=True)[1],
        lambda: cecore.log_softmax(logits),
        lambda: cecore.binary_cross_entropy_with_logits(logits, (logits > 0).astype(np.float32)),
        lambda: cecore.entropy(p),
    ]
    before = _threads.default_n_threads()
    expected = [f() for f in calls]
    if select == "all":
        limiter = threadpoolctl.threadpool_limits(1)
    elif select == "openmp":
        limiter = threadpoolctl.threadpool_limits(limits=1, user_api="openmp")
    else:
        filepath = _cecore_runtime()["filepath"]
        limiter = threadpoolctl.ThreadpoolController().select(filepath=filepath).limit(limits=1)
    with limiter:
        assert _threads.default_n_threads() == 1
        assert _threads.resolve_n_threads(None, 10**9) == 1
        for f, want in zip(calls, expected):
            np.testing.assert_array_equal(f(), want, strict=True)  # bitwise: any thread count
    assert _threads.default_n_threads() == before

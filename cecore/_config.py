"""Build and run-time configuration: SIMD selection and show_config()."""

import os
import sys

from cecore import (
    _binary_kernels,
    _logit_divergence_kernels,
    _openmp,
    _softmax_kernels,
    _token_kernels,
)
from cecore._threads import default_n_threads
from cecore._version import __version__

SIMD_LEVELS = ("baseline", "avx2", "avx512")


def _requested_simd_level():
    """The level named by CECORE_SIMD, or -1 (best the CPU supports)."""
    name = os.environ.get("CECORE_SIMD", "").strip().lower()
    if not name:
        return -1
    if name not in SIMD_LEVELS:
        raise ValueError(f"CECORE_SIMD must be one of {SIMD_LEVELS} or unset, got {name!r}")
    return SIMD_LEVELS.index(name)


def init_dispatch():
    """Select the SIMD kernels in every kernel module; returns the level's name."""
    requested = _requested_simd_level()
    level = _softmax_kernels.dispatch_init(requested)
    _binary_kernels.dispatch_init(requested)
    _token_kernels.dispatch_init(requested)
    _logit_divergence_kernels.dispatch_init(requested)
    return SIMD_LEVELS[level]


def simd_level():
    """Name of the SIMD kernels in use: "avx512", "avx2" or "baseline"."""
    return SIMD_LEVELS[_softmax_kernels.simd_level()]


def config():
    """The facts show_config() prints, as a dict."""
    return {
        "version": __version__,
        "python": sys.version.split()[0],
        "compiler": _openmp.compiler(),
        "openmp": _openmp.openmp_version() or "none (built without OpenMP)",
        "simd": simd_level(),
        "simd_supported": SIMD_LEVELS[_openmp.simd_supported()],
        "default_n_threads": default_n_threads(),
    }


def show_config():
    """Print version, compiler, OpenMP, SIMD level in use and default thread count.

    The SIMD level can be lowered with the environment variable CECORE_SIMD
    (``baseline``, ``avx2``, ``avx512``), read at import.

    Examples
    --------
    >>> import cecore
    >>> cecore.show_config()  # doctest: +ELLIPSIS
               version: ...
    ...
                  simd: ...
    ...
    """
    for key, value in config().items():
        print(f"{key:>18}: {value}")

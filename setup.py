"""Build the compiled kernels of cecore. All metadata lives in pyproject.toml.

Environment toggles (for developers; wheels use the defaults):
  CECORE_OPENMP=0        build without OpenMP (single-threaded kernels)
  CECORE_SANITIZE=LIST   compile with -fsanitize=LIST (e.g. address,undefined)
  CECORE_DEBUG=1         -O0 -g instead of -O3

No -march=native: a distributed build must run on any x86-64 CPU; speed comes
from the per-ISA kernels of cecore/_rowmath*.h chosen at run time.
"""

import glob
import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = ["_softmax_kernels", "_binary_kernels", "_divergence_kernels", "_token_kernels",
           "_logit_divergence_kernels", "_openmp"]


def _flag(name, default="1"):
    return os.environ.get(name, default) not in ("0", "", "false", "no")


class BuildExt(build_ext):
    """Adds compiler-specific optimisation and OpenMP flags."""

    def build_extensions(self):
        msvc = self.compiler.compiler_type == "msvc"
        openmp = _flag("CECORE_OPENMP")
        sanitize = os.environ.get("CECORE_SANITIZE", "")
        debug = _flag("CECORE_DEBUG", "0")
        if msvc:
            # /openmp (vcomp140.dll, shipped in the wheel by delvewheel), not /openmp:llvm,
            # whose runtime is not redistributable on every Visual Studio version
            compile_args = ["/O2", "/fp:precise"] + (["/openmp"] if openmp else [])
            link_args = []
        else:
            compile_args = ["-O0", "-g"] if debug else ["-O3"]
            # errno is never read, and without it GCC can inline rint & co.
            compile_args += ["-fno-math-errno", "-fno-trapping-math"]
            link_args = []
            if openmp:
                if sys.platform == "darwin":
                    compile_args += ["-Xpreprocessor", "-fopenmp"]
                    link_args += ["-lomp"]
                else:
                    compile_args += ["-fopenmp"]
                    link_args += ["-fopenmp"]
            else:
                compile_args += ["-fopenmp-simd"]
            if sanitize:
                compile_args += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g"]
                link_args += [f"-fsanitize={sanitize}"]
        for ext in self.extensions:
            ext.extra_compile_args = compile_args
            ext.extra_link_args = link_args
        if not self.parallel:  # pip passes no -j: compile the extensions side by side anyway
            self.parallel = _usable_cpus()
        super().build_extensions()


def _usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


extensions = [
    Extension(
        f"cecore.{name}",
        [f"cecore/{name}.pyx"],
        include_dirs=[np.get_include(), "cecore"],
        depends=glob.glob("cecore/_rowmath*.h") + ["cecore/_colmath_impl.h", "cecore/_rowmath.pxd",
                                                   "cecore/_rows.pxd",
                                                   "cecore/_tokenmath.h",
                                                   "cecore/_logitdivmath.h"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name in KERNELS
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "embedsignature": True,
            # kernels hold no Python state of their own; safe without the GIL
            "freethreading_compatible": True,
        },
        compile_time_env={"CECORE_OPENMP": _flag("CECORE_OPENMP")},
        nthreads=_usable_cpus() if sys.platform == "linux" else 0,  # spawn elsewhere: keep serial
    ),
    cmdclass={"build_ext": BuildExt},
)

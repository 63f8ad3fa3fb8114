# cython: language_level=3
"""What the OpenMP runtime says, with stubs when built without OpenMP."""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define CEC_OPENMP_VERSION _OPENMP
    #else
    #define CEC_OPENMP_VERSION 0
    static int omp_get_max_threads(void) { return 1; }
    #endif
    """
    int omp_get_max_threads() nogil
    int CEC_OPENMP_VERSION


def max_threads():
    """omp_get_max_threads(): OMP_NUM_THREADS, or the number of usable cores."""
    return omp_get_max_threads()


def openmp_version():
    """The _OPENMP date the kernels were compiled with, 0 without OpenMP."""
    return CEC_OPENMP_VERSION


cdef extern from *:
    """
    #if defined(__clang__)
    #define CEC_COMPILER "clang " __clang_version__
    #elif defined(__GNUC__)
    #define CEC_COMPILER "gcc " __VERSION__
    #elif defined(_MSC_VER)
    #define CEC_STR2(x) #x
    #define CEC_STR(x) CEC_STR2(x)
    #define CEC_COMPILER "msvc " CEC_STR(_MSC_FULL_VER)
    #else
    #define CEC_COMPILER "unknown"
    #endif
    """
    const char *CEC_COMPILER


cdef extern from "_rowmath.h":
    int cec_simd_supported()


def compiler():
    """The C compiler that built the kernels."""
    return CEC_COMPILER.decode()


def simd_supported():
    """Best SIMD level this CPU supports (0 baseline, 1 AVX2, 2 AVX-512)."""
    return cec_simd_supported()

#!/usr/bin/env bash
# Build cecore's extensions with AddressSanitizer + UndefinedBehaviorSanitizer
# (CECORE_SANITIZE, see setup.py) in a scratch copy of the repository, run the
# test suite against that build and fail on any sanitizer report.
#
#   .ci/sanitize.sh                 # the suite except slow and packaging tests
#   .ci/sanitize.sh tests/test_x.py -k foo    # any pytest arguments instead
#
# Environment: PYTHON (default python3; needs numpy, cython, setuptools and the
# test extras), CC (default cc; GCC or Clang: the libasan the interpreter
# preloads must be the one the extensions were built against), CECORE_DEBUG=1
# to build at -O0 instead of the release -O3 (slower; clearer stacks).
#
# CPython itself is not instrumented, so libasan is LD_PRELOADed, leak
# detection is off (the interpreter does not free everything at exit) and
# PYTHONMALLOC=malloc routes Python objects through ASan's allocator too.
# Sanitizer reports go to log files (ASan's log_path also carries UBSan's
# reports when both are linked), which are checked after the run: pytest
# captures stderr, and a report in a subprocess or a forked child must fail
# the run too. UBSan halts at its first report. A canary program checks first
# that a deliberate heap overflow does produce such a log.
#
# What this cannot see: the hand-written AVX-512 intrinsics (GCC does not
# instrument intrinsic loads/stores), and UB that CPython's own -fwrapv (part
# of every extension build) defines, e.g. the negative left shifts of the exp
# bit tricks.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
cc=${CC:-cc}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$SECONDS

echo "== scratch copy of $repo in $work"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard \
    | xargs -0 cp --parents -t "$work")

sanitize=address,undefined,float-cast-overflow
echo "== build with -fsanitize=$sanitize"
cd "$work"
CC=$cc CECORE_SANITIZE=$sanitize "$python" setup.py -q build_ext --inplace \
    > build.log 2>&1 || { tail -50 build.log; exit 1; }
for so in cecore/*.so; do
    symbols=$(nm -D "$so")  # (not piped into grep -q: pipefail + SIGPIPE)
    grep -q __asan_init <<< "$symbols" || { echo "$so is not instrumented"; exit 1; }
done
libasan=$("$cc" -print-file-name=libasan.so)
[ -e "$libasan" ] || { echo "libasan not found via $cc -print-file-name"; exit 1; }
# libstdc++ too: a C++ extension (PyTorch) that throws needs ASan's __cxa_throw
# interceptor, which only finds the real one if libstdc++ is loaded at start
preload=$libasan
libstdcxx=$(readlink -f "$("$cc" -print-file-name=libstdc++.so)")
[ -e "$libstdcxx" ] && preload="$preload $libstdcxx"
echo "   built in $((SECONDS - start)) s; preloading $preload"

logs="$work/sanitizer-logs"
mkdir -p "$logs"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1:log_path=$logs/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

echo "== canary: a heap overflow must be reported"
mkdir -p "$work/canary"
printf '#include <stdlib.h>\nint main(void){volatile char *p = malloc(8); p[8] = 1; return 0;}\n' \
    > "$work/canary/c.c"
"$cc" -fsanitize=address -g "$work/canary/c.c" -o "$work/canary/c"
ASAN_OPTIONS="${ASAN_OPTIONS//abort_on_error=1/abort_on_error=0}:log_path=$work/canary/log" \
    "$work/canary/c" && { echo "canary: no error exit"; exit 1; }
grep -q heap-buffer-overflow "$work"/canary/log.* || { echo "canary: no report logged"; exit 1; }

export PYTHONMALLOC=malloc
export PYTHONFAULTHANDLER=1

if [ $# -eq 0 ]; then
    # test_packaging checks an installed distribution; the scratch build is in place
    set -- tests -m "not slow" --ignore=tests/test_packaging.py
fi
echo "== pytest $* (under ASan + UBSan)"
status=0
LD_PRELOAD="$preload" "$python" -m pytest -q -p no:cacheprovider --durations=15 "$@" \
    || status=$?

reports=$(find "$logs" -type f -size +0 | sort)
if [ -n "$reports" ]; then
    echo "== sanitizer reports"
    for f in $reports; do echo "--- $f"; head -60 "$f"; done
    status=1
fi
echo "== sanitize.sh: $((SECONDS - start)) s in all, exit status $status"
exit "$status"

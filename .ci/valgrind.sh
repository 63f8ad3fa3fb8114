#!/usr/bin/env bash
# Valgrind memcheck over a few calls of every public function
# (.ci/valgrind_calls.py), on a release build of cecore made in a scratch copy
# of the repository, once per SIMD level valgrind can run (baseline, AVX2:
# valgrind 3.19-3.22 has no AVX-512, and its virtual CPU does not report it).
#
#   .ci/valgrind.sh            # PYTHON (default python3) needs numpy, cython, setuptools
#   CECORE_VALGRIND_INSTALLED=1 .ci/valgrind.sh   # the cecore installed for PYTHON instead
#
# CPython noise: PYTHONMALLOC=malloc makes memcheck see every Python object
# allocation; what the interpreter, NumPy and the extension modules' import do
# anyway is recorded first (--gen-suppressions over `import numpy, cecore`) and
# suppressed, so only errors that the calls add fail the run. Leaks: only
# "definitely lost" blocks count (the interpreter leaves reachable memory at
# exit by design).
set -euo pipefail

command -v valgrind > /dev/null || { echo "valgrind.sh: valgrind is not installed"; exit 1; }
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$SECONDS

if [[ ${CECORE_VALGRIND_INSTALLED:-0} == 1 ]]; then
    # the cecore installed in $python's environment (as .ci/run's README install built it)
    cp "$repo/.ci/valgrind_calls.py" "$work"
    calls=$work/valgrind_calls.py
    cd "$work"
    echo "== cecore under test: $("$python" -c 'import cecore; print(cecore.__file__)')"
else
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
        | xargs -0 cp --parents -t "$work")
    cd "$work"
    "$python" setup.py -q build_ext --inplace > build.log 2>&1 || { tail -50 build.log; exit 1; }
    echo "== built in $((SECONDS - start)) s"
    export PYTHONPATH="$work"  # the scratch build, not an installed cecore
    calls=$work/.ci/valgrind_calls.py
fi

export PYTHONMALLOC=malloc
vg=(valgrind --tool=memcheck --error-exitcode=1 --track-origins=yes --num-callers=30
    --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite)

echo "== suppressions for the interpreter, NumPy, ml_dtypes (bfloat16) and module import"
"${vg[@]}" --gen-suppressions=all --log-file="$work/baseline.log" \
    "$python" -c "import numpy, ml_dtypes, cecore, cecore._blas; cecore._blas._functions()" \
    || true  # _functions: ctypes' dlopen of NumPy's OpenBLAS (glibc's dlopen noise)
# keep only the suppression blocks ({ ... }) of that log
awk '/^\{/{keep=1} keep{print} /^\}/{keep=0}' "$work/baseline.log" > "$work/python.supp"
echo "   $(grep -c '^{' "$work/python.supp" || true) suppression(s) generated"

status=0
for simd in baseline avx2; do
    echo "== memcheck, CECORE_SIMD=$simd"
    if CECORE_SIMD=$simd "${vg[@]}" --suppressions="$work/python.supp" \
        --log-file="$work/memcheck-$simd.log" "$python" "$calls"; then
        grep -E "ERROR SUMMARY|definitely lost" "$work/memcheck-$simd.log" | sed 's/^==[0-9]*== /   /'
    else
        status=1
        echo "   memcheck found errors:"
        sed 's/^==[0-9]*== /   /' "$work/memcheck-$simd.log" | tail -80
    fi
done
echo "== valgrind.sh: $((SECONDS - start)) s in all, exit status $status"
exit "$status"

#!/usr/bin/env bash
# Offline checks of the GitHub workflows and of [tool.cibuildwheel] in
# pyproject.toml. PY selects the interpreter whose environment gets the tools.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-python}
# Keep in step with the pypa/cibuildwheel action pinned in wheels.yml.
CIBW_VERSION=3.3.0
workflows=(.github/workflows/ci.yml .github/workflows/wheels.yml)

"$PY" -m pip install --quiet --disable-pip-version-check \
    check-jsonschema zizmor "cibuildwheel==$CIBW_VERSION"
bin=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')

echo "== check-jsonschema"
"$bin/check-jsonschema" --builtin-schema vendor.github-workflows "${workflows[@]}"

echo "== zizmor"
# medium, not high: a checkout without persist-credentials: false (artipacked)
# is only a medium finding.
"$bin/zizmor" --offline --no-progress --min-severity medium .github/workflows

echo "== cibuildwheel $CIBW_VERSION identifiers"
ids=$(for platform in linux macos windows; do
    "$bin/cibuildwheel" --print-build-identifiers --platform "$platform"
done)
fail=0
for want in cp310-manylinux_x86_64 cp313-manylinux_aarch64 cp313t-manylinux_x86_64 \
    cp310-macosx_x86_64 cp312-macosx_arm64 cp311-win_amd64 cp313-win_amd64; do
    grep -qx "$want" <<<"$ids" || { echo "missing: $want"; fail=1; }
done
if unwanted=$(grep -Ev '^cp31[0-3]t?-(manylinux_(x86_64|aarch64)|macosx_(x86_64|arm64)|win_amd64)$' <<<"$ids"); then
    echo "unexpected: $(paste -sd" " <<<"$unwanted")"
    fail=1
fi
((fail == 0)) || exit 1
echo "ok -- $(wc -l <<<"$ids") identifiers: $(paste -sd" " <<<"$ids")"

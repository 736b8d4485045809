#!/usr/bin/env bash
# Install sarreg as a user would (a wheel, not an editable install) into a fresh virtual
# environment and use it from a folder outside the repository: `sarreg --help`, the demo
# registration on the bundled pair, the packaged presets, and a short training run whose
# checkpoint must land under the working folder. Run by `make test`.
#
#   .ci/check_install.sh            # PYTHON (default python3) makes the venv; BUILD_PYTHON
#                                   # (default .venv/bin/python) builds the wheel
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
BUILD_PYTHON="${BUILD_PYTHON:-$REPO/.venv/bin/python}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
unset PYTHONPATH
step() { echo "check_install: $*"; }

step "building the wheel (from a copy of the sources: no build/ left in the checkout)"
mkdir "$WORK/src"
tar -C "$REPO" --exclude=./.venv --exclude=./runs --exclude=./out --exclude=./build \
    --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -C "$WORK/src" -xf -
"$BUILD_PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src"
WHEEL="$(ls "$WORK"/dist/sarreg-*.whl)"
"$BUILD_PYTHON" - "$WHEEL" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
for need in ("sarreg/configs/smoke.yaml", "sarreg/configs/fast_r2d2_sar.yaml",
             "sarreg/weights/fast_r2d2_sar.pt"):
    assert need in names, f"{need} missing from the wheel"
PY

step "installing it into a fresh venv (torch==2.13.0 first, then the wheel)"
"$PYTHON" -m venv "$WORK/venv"
BIN="$WORK/venv/bin"
"$BIN/pip" install -q torch==2.13.0
"$BIN/pip" install -q "$WHEEL"

mkdir "$WORK/user" && cd "$WORK/user"
"$BIN/python" -c "import sarreg, sys; p = sarreg.__file__; \
assert p.startswith('$WORK/venv/'), p; print('check_install: imported', p)"

step "sarreg --help"
"$BIN/sarreg" --help > help.txt
grep -q "register" help.txt

step "demo registration on the bundled pair"
"$BIN/sarreg" register "$REPO/data/demo/reference.tif" "$REPO/data/demo/moving.tif" \
    -o aligned.tif --no-progress
test -s aligned.tif && test -s aligned.json
"$BIN/python" "$REPO/scripts/check_demo.py" aligned.json "$REPO/data/demo/truth.json"

step "packaged presets"
"$BIN/sarreg" train --list-configs | grep -q "^smoke "
set +e
"$BIN/sarreg" train --config smoke --steps 2 --no-progress 2> missing.txt
code=$?
set -e
test "$code" -eq 12 && grep -q -- "--data" missing.txt || {
    echo "check_install: a preset without its data should ask for --data (exit 12), got $code:"
    cat missing.txt; exit 1; }

step "sarreg train --config smoke --data <bundled sample> --steps 2"
"$BIN/sarreg" train --config smoke --data "$REPO/data/umbra_mount_yasur.tif" --steps 2 \
    --no-progress
test -s runs/smoke/last.pt && test -s runs/smoke/config.yaml || {
    echo "check_install: no checkpoint under $WORK/user/runs/smoke"; exit 1; }
step "ok"

#!/usr/bin/env bash
# The CUDA check of the conformance suite, as one prepared run on a lent GPU machine (issue 8).
#
# It runs `make test-cuda`'s pytest command with that machine's own Python (PY=python3: torch 2.11 + triton, pytest,
# pytest-xdist, hypothesis; no venv is installed) in two stages, then packs what a reviewer needs:
#   1. `make snapshot-update-cuda`: every CUDA cell with its semantic checks (numerics, op counts, case checks,
#      invariants, documented errors); the goldens of passing cells are written to golden/cuda/.
#   2. `make test-cuda`: the same cells again against those goldens (they must be stable from run to run).
# Under $OUT (default runs/gpu-check): env.txt (versions, GPU), update.log/update.xml, test.log/junit.xml,
# golden-cuda.tar.gz (golden/cuda as written by stage 1), summary.txt (exit codes, timings).  7 files, flat.
#
# That machine lacks syrupy: the pure-Python wheel travels in .whl/ (gitignored).  Fetch it once here:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl syrupy==7.0.2  (SYRUPY_WHEEL)
# (its only requirement, pytest>=8, is there).  Then, with the device tool:
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=600)
# and afterwards, here, at the repository root: `tar -xzf <files_at>/golden-cuda.tar.gz`, review the new goldens
# (git diff / git status golden/cuda) and commit them.
#
# `bash scripts/gpu_check.sh --dry-run` (make gpu-check-dry-run, run by make check on CPU) checks that this script
# cannot rot: its syntax, the syrupy wheel it carries still resolves for the GPU machine's Python 3.12, and the
# CUDA selection collects (pytest --device cuda --collect-only) with no collection error.
#
# Time: the stages share TOTAL_S (default 500 s) so the run ends well inside the tool's 10-minute limit; stage 2
# gets what stage 1 left (at least 60 s).  CUDA_WORKERS (default 4 here: one H200 and 16 cores; the tensors are tiny,
# so workers share the GPU) overrides test-cuda's one-worker-per-GPU default.  Extra pytest arguments: ARGS="...".
set -uo pipefail
cd "$(dirname "$0")/.."
SYRUPY_WHEEL=syrupy==7.0.2
if [ "${1:-}" = "--dry-run" ]; then
  PY=${PY:-.venv/bin/python}
  bash -n "$0" || { echo "dry run: $0 has a syntax error"; exit 1; }
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d "$tmp" "$SYRUPY_WHEEL" \
    || { echo "dry run: $SYRUPY_WHEEL does not resolve as a py3.12 wheel"; exit 1; }
  out=$("$PY" -m pytest suites --device cuda -m "not slow" --collect-only -q 2>&1)
  rc=$?
  n=$(grep -c "::" <<<"$out")
  if [ $rc -ne 0 ] || [ "$n" -lt 100 ]; then
    echo "dry run: collecting the CUDA selection failed (exit $rc, $n items):"; tail -n 30 <<<"$out"; exit 1
  fi
  echo "dry run ok: script syntax, $(ls "$tmp") resolves, $n CUDA-selection items collect"
  exit 0
fi
OUT=${OUT:-$PWD/runs/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
TOTAL_S=${TOTAL_S:-500}
export CUDA_WORKERS=${CUDA_WORKERS:-4}
PYTEST_ARGS="-p no:logging ${ARGS:-}"  # captured DEBUG logs of torch would bloat the logs of failing cells
start=$SECONDS

if ! python3 -c "import syrupy" 2>/dev/null; then
  ls .whl/*.whl >/dev/null 2>&1 || { echo "no wheels in .whl/: see the header of $0" | tee "$OUT/summary.txt"; exit 3; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing .whl/*.whl failed" | tee "$OUT/summary.txt"; exit 3; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

{
  nvidia-smi -L
  python3 - <<'EOF'
import sys, torch
print("python", sys.version.split()[0])
print("torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version())
try:
    print("device", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability(),
          "count", torch.cuda.device_count())
except Exception as e:  # noqa: BLE001 - reported, the stages below say the rest
    print("device: none usable:", e)
for name in ("triton", "pytest", "xdist", "hypothesis", "syrupy"):
    try:
        mod = __import__(name)
        print(name, getattr(mod, "__version__", "?"))
    except ImportError as e:
        print(name, "MISSING", e)
EOF
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# The command of a make target (make's own when make is there; else the same pytest command, kept in step with the
# Makefile's CUDA_PYTEST).  Sets CMD.
cuda_command() {  # cuda_command <test-cuda|snapshot-update-cuda> <junit path>
  local args="$PYTEST_ARGS --junitxml=$2"
  if command -v make >/dev/null; then
    CMD=(make --no-print-directory "$1" PY=python3 INSTALL= "ARGS=$args")
    return
  fi
  CMD=(python3 -m pytest suites --device cuda -m "not slow")
  [ "$CUDA_WORKERS" -gt 1 ] && CMD+=(-n "$CUDA_WORKERS" --dist loadgroup)
  [ "$1" = snapshot-update-cuda ] && CMD+=(--snapshot-update)
  read -r -a extra <<<"$args"
  CMD+=("${extra[@]}")
}

run_stage() {  # run_stage <target> <limit s> <log> <junit>
  cuda_command "$1" "$4"
  echo "== $1 (limit $2 s): ${CMD[*]}"
  timeout -k 15 "$2" "${CMD[@]}" >"$3" 2>&1
  local rc=$?
  tail -n 25 "$3"
  return $rc
}

run_stage snapshot-update-cuda $(( TOTAL_S * 3 / 5 )) "$OUT/update.log" "$OUT/update.xml"
rc1=$?
t1=$(( SECONDS - start ))
left=$(( TOTAL_S - t1 ))
run_stage test-cuda $(( left > 60 ? left : 60 )) "$OUT/test.log" "$OUT/junit.xml"
rc2=$?
t2=$(( SECONDS - start - t1 ))

tar -czf "$OUT/golden-cuda.tar.gz" golden/cuda 2>/dev/null || echo "no golden/cuda was written"
{
  echo "stage 1 snapshot-update-cuda: exit $rc1 in ${t1}s (124/137: timed out)"
  echo "stage 2 test-cuda:            exit $rc2 in ${t2}s (124/137: timed out)"
  echo "CUDA_WORKERS=$CUDA_WORKERS; goldens: $(find golden/cuda -name '*.txt' 2>/dev/null | wc -l) files"
} | tee "$OUT/summary.txt"
[ "$rc1" -eq 0 ] && [ "$rc2" -eq 0 ]

#!/usr/bin/env bash
# Sanitizer run: build cconv with CCONV_SANITIZE=1 (gcc -fsanitize=address,undefined) into a scratch
# venv, then run the full test suite and the differential fuzz (tools/fuzz.py) with the ASan runtime
# preloaded into Python, then a second fuzz stream on tiny caches (CCONV_CACHE_BYTES, so that the
# planner's cache blocking splits even small GEMMs into many kc/mc/nc blocks and every multi-block
# loop runs). Fails on any AddressSanitizer/UBSan report, test failure or fuzz mismatch; prints the
# figures (tests, calls fuzzed, reports found).
#
#   bash tools/sanitizer.sh                        # full test suite + 10,000 + 10,000 fuzzed calls
#   bash tools/sanitizer.sh --calls 1000000 --seed 7  # bigger: ~3 s per 10,000 calls under ASan
#   bash tools/sanitizer.sh --no-tests --calls 100000  # fuzz only
#   PYTHON=python3.12 CC=gcc-13 bash tools/sanitizer.sh
#
# Linux + gcc only. CPython itself is not instrumented and leaks by design, so leak detection is
# off (ASAN_OPTIONS=detect_leaks=0); everything else halts on the first report.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
CC="${CC:-gcc}"
CALLS=10000
SEED=0
RUN_TESTS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --calls) CALLS="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --no-tests) RUN_TESTS=0; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "sanitizer.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

ASAN_RUNTIME="$("$CC" -print-file-name=libasan.so)"
if [ ! -e "$ASAN_RUNTIME" ]; then
  echo "sanitizer.sh: $CC has no ASan runtime ($CC -print-file-name=libasan.so gave '$ASAN_RUNTIME')" >&2
  exit 2
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
LOG="$WORK/sanitized.log"  # everything the sanitized processes print; reports are counted here
mkdir -p "$WORK/src"

echo "sanitizer: building with CCONV_SANITIZE=1 into a scratch venv ($CC, runtime $ASAN_RUNTIME)"
# A pristine copy of the sources, so no object compiled with other flags can be reused.
(cd "$ROOT" && tar --exclude=./.git --exclude=./build --exclude=./dist --exclude='*.egg-info' \
    --exclude='*.so' --exclude='./src/*.c' --exclude=__pycache__ -cf - .) | tar -xf - -C "$WORK/src"
"$PYTHON" -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
CC="$CC" CCONV_SANITIZE=1 "$PY" -m pip install -q "$WORK/src[test]"

# The extension must really be instrumented, or a clean run would prove nothing.
PACKAGE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')/cconv"
shopt -s nullglob
extensions=("$PACKAGE"/_*.so)
if [ ${#extensions[@]} = 0 ]; then
  echo "sanitizer: the build installed no extension module in $PACKAGE" >&2
  exit 1
fi
for so in "${extensions[@]}"; do
  # Through a variable: under pipefail, `ldd | grep -q` fails whenever grep's early exit gives
  # ldd a SIGPIPE, which made this check fail at random on a correctly sanitized build.
  libraries="$(ldd "$so")"
  if ! grep -q libasan <<<"$libraries"; then
    echo "sanitizer: $so is not linked against libasan: not a sanitizer build" >&2
    exit 1
  fi
done

export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export CCONV_REQUIRE_COMPILED=1
# Reports go to stderr (UBSan ignores log_path when it shares a process with ASan): keep a copy.
sanitized() { LD_PRELOAD="$ASAN_RUNTIME" "$@" 2>&1 | tee -a "$LOG"; }

# And the runtimes must really be in the processes that run the tests (from $WORK, where no
# source tree can shadow the installed package).
cd "$WORK"
sanitized "$PY" -c '
import cconv
maps = open("/proc/self/maps").read()
missing = [lib for lib in ("libasan", "libubsan") if lib not in maps]
assert cconv.backend_info()["compiled"] and not missing, f"not loaded: {missing}"
print("sanitizer: the compiled backend runs with the ASan and UBSan runtimes loaded")'

status=0
if [ "$RUN_TESTS" = 1 ]; then
  echo "sanitizer: test suite"
  # From outside the source copy, so the installed (sanitized) build is what gets imported.
  cp -r "$WORK/src/tests" "$WORK/src/tools" "$WORK/"
  (cd "$WORK/tests" && sanitized "$PY" -m pytest -q -p no:cacheprovider) || status=1
fi
echo "sanitizer: fuzz, $CALLS calls, seed $SEED"
sanitized "$PY" "$WORK/src/tools/fuzz.py" --calls "$CALLS" --seed "$SEED" || status=1
# Tiny caches: 1 KiB L1d, 8 KiB L2, 64 KiB L3 give kc 8-16, mc 48, nc 96 (tests/test_blocking.py).
# A fifth of the calls, but at least 10,000: fewer leave Winograd and the masked dot unreached.
TINY_CALLS=$(( CALLS / 5 > 10000 ? CALLS / 5 : 10000 ))
echo "sanitizer: fuzz on tiny caches, $TINY_CALLS calls, seed $((SEED + 1))"
CCONV_CACHE_BYTES=1024,8192,65536 sanitized "$PY" "$WORK/src/tools/fuzz.py" \
    --calls "$TINY_CALLS" --seed "$((SEED + 1))" || status=1
fuzzed=$(( $(sed -n 's/^fuzz: \([0-9]*\) calls.*/\1/p' "$LOG" | paste -sd+ -) ))
# every convolution algorithm must have run under the sanitizers, in each stream (fuzz.py fails
# otherwise)
per_algorithm=$(grep "^calls per algorithm:" "$LOG" || echo "calls per algorithm: (missing)")

reports=$(grep -cE "ERROR: AddressSanitizer|runtime error:" "$LOG" || true)
[ "$reports" = 0 ] || status=1
echo "sanitizer: calls fuzzed: ${fuzzed:-0} (seeds $SEED, $((SEED + 1)) on tiny caches); sanitizer reports found: $reports"
sed 's/^/sanitizer: /' <<<"$per_algorithm"
exit "$status"

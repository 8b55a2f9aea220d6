#!/usr/bin/env bash
# Run the book's benchmarks and notebooks on the lent GPU machine (the `run` tool), and pack what
# they produce into $OUT for the trip back.
#
#   bash tools/device/gpu_run.sh STEP [ARGS...] [+ STEP [ARGS...]]...
#
# Steps (several, separated by a lone '+', run in order; a failed step does not stop the next):
#   check                 package versions, GPU, offline ImageNet weights, a scratch papermill run
#   bench [NAME...]       benchmarks/bench_*.py (all, or the named ones: bench_x, x or a path), each
#                         with `--device cuda` when its source mentions --device; $BENCH_ARGS appended
#   notebooks [NN...]     chapters (all in order, or the named ones: 01, 01_data_synthesis or a path):
#                         jupytext .py -> .ipynb (--update keeps outputs), then papermill in place
#                         with default parameters under DFATTN_PROFILE (default gpu); $PAPERMILL_ARGS
#   py SCRIPT [ARGS...]   any Python script
#   sh 'COMMAND'          any shell command
#
# Every step logs to runs/device_logs/<step>.log. At the end the files that changed during the run
# (notebooks/*.ipynb, figures/, runs/ without files over $RESULTS_MAX_FILE_MB, the logs) are packed
# into $OUT/results.tar.gz (split into results.tar.gz.part-aa, -ab... when over 15 MiB) with
# $OUT/summary.txt beside it. Unpack here with: tar xzf <files_at>/results.tar.gz -C /work/main
#
# The wheels in .whl/ (name ".whl" in the run call's carry) are installed into $GPU_RUN_SITE
# (/tmp/site) once per machine; .whl/override/*.whl only where the machine's own copy is older.
#
# Environment: GPU_RUN_BUDGET (seconds from start until the packing must begin; default 560, for a
# run call with timeout_s=600), DFATTN_PROFILE, BENCH_ARGS, PAPERMILL_ARGS, RESULTS_MAX_FILE_MB (8),
# GPU_RUN_PYTHON (python3), GPU_RUN_SKIP_INSTALL=1 (use the interpreter's own packages; local tests).
set -euo pipefail

START=$(date +%s)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PY=${GPU_RUN_PYTHON:-python3}
SITE=${GPU_RUN_SITE:-/tmp/site}
BUDGET=${GPU_RUN_BUDGET:-560}
OUT=${OUT:-$ROOT/runs/device_out}
LOGS=runs/device_logs
MAX_FILE_MB=${RESULTS_MAX_FILE_MB:-8}
mkdir -p "$OUT" "$LOGS"
STAMP=$(mktemp /tmp/gpu_run_stamp.XXXXXX)  # files newer than this are results
touch -d "@$((START - 1))" "$STAMP"

declare -a SUMMARY=()
FAILED=0
note() { printf '%s\n' "$*"; SUMMARY+=("$*"); }
die() { echo "gpu_run: $*" >&2; exit 2; }
left() { echo $((BUDGET - ($(date +%s) - START))); }
why() { case $1 in 124|137) echo "timed out: GPU_RUN_BUDGET=${BUDGET}s" ;; *) echo "exit $1" ;; esac; }

# Run "$@" with what is left of the budget, output to log file $1 (shift). Returns the status.
timed() {
  local log=$1; shift
  local secs; secs=$(left)
  if ((secs < 10)); then echo "out of time budget (GPU_RUN_BUDGET=$BUDGET s)" >"$log"; return 124; fi
  timeout -k 10 "$secs" "$@" >"$log" 2>&1
}

# ---------------------------------------------------------------------------------------------
# Environment: wheels, PYTHONPATH, kernel
# ---------------------------------------------------------------------------------------------
export PYTHONUNBUFFERED=1 PYTHONHASHSEED=0 MPLBACKEND=Agg HF_HUB_OFFLINE=1 \
  PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 JUPYTER_PLATFORM_DIRS=1 NO_ALBUMENTATIONS_UPDATE=1 DFATTN_ROOT="$ROOT"
export DFATTN_PROFILE=${DFATTN_PROFILE:-gpu}

if [[ ${GPU_RUN_SKIP_INSTALL:-0} != 1 ]]; then
  compgen -G ".whl/*.whl" >/dev/null || die "no wheels in $ROOT/.whl: name \".whl\" in the run call's carry"
  want=$(cd .whl && { ls -1 -- *.whl override/*.whl 2>/dev/null || true; } | sort | md5sum | cut -c1-32)
  if [[ "$(cat "$SITE/.gpu_run_stamp" 2>/dev/null)" != "$want" ]]; then
    rm -rf "$SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl \
      || die "pip could not install .whl/*.whl into $SITE"
    # override wheels: only where this machine's copy is missing or older (e.g. typing_extensions)
    mapfile -t newer < <("$PY" - <<'EOF'
import importlib.metadata as md, pathlib
from packaging.version import Version
for w in sorted(pathlib.Path(".whl/override").glob("*.whl")):
    name, version = w.name.split("-")[:2]
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = None
    if have is None or Version(have) < Version(version):
        print(w)
EOF
)
    if ((${#newer[@]})); then
      echo "override wheels (machine's copy older): ${newer[*]##*/}"
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${newer[@]}" \
        || die "pip could not install ${newer[*]}"
    fi
    echo "$want" >"$SITE/.gpu_run_stamp"
    echo "installed $(ls .whl/*.whl | wc -l) wheels into $SITE in $(($(date +%s) - START)) s"
  else
    echo "wheels already installed in $SITE"
  fi
  export PYTHONPATH="$SITE:$ROOT/lib${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="$SITE/bin:$PATH"
else
  export PYTHONPATH="$ROOT/lib${PYTHONPATH:+:$PYTHONPATH}"
fi

# A kernel named python3 for this interpreter that sees the same PYTHONPATH.
"$PY" -m ipykernel install --user --name python3 --display-name "Python 3 (dfattn)" \
  --env PYTHONPATH "$PYTHONPATH" --env DFATTN_ROOT "$ROOT" >/dev/null \
  || die "ipykernel install failed (is ipykernel among the wheels?)"

echo "== machine"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
else
  echo "no nvidia-smi"
fi
"$PY" -c 'import sys, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, cuda available: {torch.cuda.is_available()}")'
echo "profile: DFATTN_PROFILE=$DFATTN_PROFILE; budget ${BUDGET}s, $(left)s left"

# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------
step_check() {
  local log=$LOGS/check.log
  local status=0; timed "$log" "$PY" tools/device/env_check.py || status=$?
  if ((status == 0)); then note "check: OK"; else note "check: FAILED ($(why $status))"; FAILED=1; fi
  cat "$log"
}

resolve_one() {  # resolve_one DIR PREFIX NAME -> the one DIR/PREFIX*NAME*.py, or an error
  local dir=$1 prefix=$2 name=$3 matches
  [[ -f $name ]] && { echo "$name"; return; }
  name=${name##*/}; name=${name%.py}; name=${name%.ipynb}; name=${name#"$prefix"}
  if [[ -f $dir/$prefix$name.py ]]; then echo "$dir/$prefix$name.py"; return; fi
  mapfile -t matches < <(compgen -G "$dir/$prefix$name*.py" || true)
  if ((${#matches[@]} == 1)); then echo "${matches[0]}"; return; fi
  echo "gpu_run: '$3' matches ${#matches[@]} files in $dir/ (${matches[*]:-none})" >&2
  return 1
}

step_bench() {
  local files=() b name log status args
  if (($#)); then
    for name in "$@"; do
      if b=$(resolve_one benchmarks bench_ "$name"); then files+=("$b"); else note "bench $name: NOT FOUND"; FAILED=1; fi
    done
  else
    mapfile -t files < <(compgen -G "benchmarks/bench_*.py" | sort || true)
    ((${#files[@]})) || { note "bench: no benchmarks/bench_*.py"; return; }
  fi
  for b in "${files[@]}"; do
    name=$(basename "$b" .py); log=$LOGS/$name.log; args=()
    if grep -q -- '--device' "$b"; then args=(--device cuda); fi
    echo "== $b ${args[*]} ${BENCH_ARGS:-}"
    status=0
    # shellcheck disable=SC2086
    timed "$log" "$PY" "$b" "${args[@]}" ${BENCH_ARGS:-} || status=$?
    cat "$log"
    if ((status == 0)); then note "$name: OK"; else note "$name: FAILED ($(why $status), log $log)"; FAILED=1; fi
  done
}

step_notebooks() {
  local files=() nb name ipynb log status t0
  if (($#)); then
    for name in "$@"; do
      if nb=$(resolve_one notebooks "" "$name"); then files+=("$nb"); else note "notebook $name: NOT FOUND"; FAILED=1; fi
    done
  else
    mapfile -t files < <(compgen -G "notebooks/[0-9][0-9]*.py" | sort || true)
    ((${#files[@]})) || { note "notebooks: no notebooks/NN_*.py"; return; }
  fi
  for nb in "${files[@]}"; do
    name=$(basename "$nb" .py); ipynb=notebooks/$name.ipynb; log=$LOGS/nb_$name.log; t0=$(date +%s)
    echo "== $nb (DFATTN_PROFILE=$DFATTN_PROFILE, $(left)s left)"
    status=0
    { "$PY" -m jupytext --to ipynb --update "$nb" || "$PY" -m jupytext --to ipynb "$nb"; } >"$log.jupytext" 2>&1 || status=$?
    if ((status == 0)); then
      # shellcheck disable=SC2086
      timed "$log" "$PY" -m papermill "$ipynb" "$ipynb" --cwd notebooks --kernel python3 --log-output \
        ${PAPERMILL_ARGS:-} || status=$?
    else
      cp "$log.jupytext" "$log"
    fi
    if ((status == 0)); then
      note "$name: OK ($(($(date +%s) - t0)) s)"
    else
      note "$name: FAILED ($(why $status) after $(($(date +%s) - t0)) s, log $log)"; FAILED=1
      { grep -A 25 -m 1 'PapermillExecutionError' "$log" || tail -n 25 "$log"; } | cut -c1-300
    fi
  done
}

step_py() {
  (($#)) || die "py needs a script"
  local log; log=$LOGS/py_$(basename "$1" .py).log
  echo "== python $*"
  local status=0; timed "$log" "$PY" "$@" || status=$?
  cat "$log"
  if ((status == 0)); then note "py $1: OK"; else note "py $1: FAILED ($(why $status))"; FAILED=1; fi
}

step_sh() {
  (($#)) || die "sh needs a command"
  local log=$LOGS/sh.log
  echo "== sh: $*"
  local status=0; timed "$log" bash -c "$*" || status=$?
  cat "$log"
  if ((status == 0)); then note "sh: OK"; else note "sh: FAILED ($(why $status))"; FAILED=1; fi
}

run_step() {
  local step=$1; shift
  case $step in
    check) step_check ;;
    bench) step_bench "$@" ;;
    notebooks) step_notebooks "$@" ;;
    py) step_py "$@" ;;
    sh) step_sh "$@" ;;
    *) note "unknown step '$step' (check | bench | notebooks | py | sh)"; FAILED=1 ;;
  esac
}

(($#)) || set -- check
args=()
for a in "$@" +; do
  if [[ $a == + ]]; then
    if ((${#args[@]})); then run_step "${args[@]}"; fi
    args=()
  else
    args+=("$a")
  fi
done

# ---------------------------------------------------------------------------------------------
# Pack the results
# ---------------------------------------------------------------------------------------------
list=$(mktemp /tmp/gpu_run_files.XXXXXX)
skipped=()
while IFS= read -r -d '' f; do
  if (($(stat -c %s "$f") > MAX_FILE_MB * 1048576)); then skipped+=("$f"); else printf '%s\n' "${f#./}" >>"$list"; fi
done < <(find notebooks figures runs -type f -newer "$STAMP" ! -path 'runs/device_out/*' \
           ! -path '*/.ipynb_checkpoints/*' ! -name '*.jupytext' -print0 2>/dev/null || true)
rm -f "$OUT"/results.tar.gz*
tar -czf "$OUT/results.tar.gz" -C "$ROOT" -T "$list" || { note "tar: FAILED"; FAILED=1; touch "$OUT/results.tar.gz"; }
size=$(stat -c %s "$OUT/results.tar.gz")
if ((size > 15 * 1048576)); then
  split -b 15M -a 2 "$OUT/results.tar.gz" "$OUT/results.tar.gz.part-"
  rm "$OUT/results.tar.gz"
  note "results: $(wc -l <"$list") files, $((size / 1048576)) MiB, split: cat results.tar.gz.part-* | tar xz"
  if (($(ls "$OUT"/results.tar.gz.part-* | wc -l) > 7)); then note "WARNING: over 7 parts; only 8 files come back from \$OUT"; fi
else
  note "results: $(wc -l <"$list") files in results.tar.gz ($((size / 1024)) KiB)"
fi
if ((${#skipped[@]})); then note "left out (over ${MAX_FILE_MB} MiB): ${skipped[*]}"; fi
{
  echo "gpu_run $(date -u +%FT%TZ), $(($(date +%s) - START)) s, DFATTN_PROFILE=$DFATTN_PROFILE, args: $*"
  printf '%s\n' "${SUMMARY[@]}"
  echo "-- files"
  cat "$list"
} >"$OUT/summary.txt"
rm -f "$list" "$STAMP"
echo "== summary"
printf '%s\n' "${SUMMARY[@]}"
exit $FAILED

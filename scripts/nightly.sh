#!/usr/bin/env bash
# The nightly GPU run, the same steps as .github/workflows/nightly.yml, on any GPU box:
#
#   scripts/nightly.sh [all]          install? no - sweep, report, check (exit 1 on a regression)
#   scripts/nightly.sh install        pip install -e ".[all,test,scale]"
#   scripts/nightly.sh sweep [overrides...]   the nightly experiment into the store (resumes: re-run to continue)
#   scripts/nightly.sh report         leaderboards (md, csv, html), grids, plots into $NIGHTLY_OUT/reports
#   scripts/nightly.sh check          regression check against the previous night ($NIGHTLY_BASELINE)
#   scripts/nightly.sh promote        tonight's store becomes the baseline of the next night
#
# Settings (environment):
#   NIGHTLY_OUT          run folder: store, sweep outputs, reports, summary (default outputs/nightly-run)
#   HARNESS_STORE        the store (default $NIGHTLY_OUT/results.sqlite; a postgresql:// URL works too)
#   HARNESS_CACHE        synthetic checkpoints and BF16 references (default .cache/harness)
#   PYTHON               the interpreter (default python3)
#   NIGHTLY_BASELINE     the previous night's store (default ${NIGHTLY_HOME:-$HOME/.cache/harness-nightly}/baseline.sqlite)
#   NIGHTLY_EXPERIMENT   the experiment to run (default nightly)
#   NIGHTLY_LAUNCHER     a Hydra launcher preset, e.g. joblib-gpus for one GPU per cell (default: one GPU, in turn)
#   NIGHTLY_DEADLINE_S   stop the sweep after this many seconds (it resumes on the next call); default none
#   GITHUB_STEP_SUMMARY  when set (GitHub Actions), the leaderboard and the check are appended to it
set -euo pipefail
cd "$(dirname "$0")/.."

NIGHTLY_OUT=${NIGHTLY_OUT:-outputs/nightly-run}
NIGHTLY_HOME=${NIGHTLY_HOME:-$HOME/.cache/harness-nightly}
NIGHTLY_BASELINE=${NIGHTLY_BASELINE:-$NIGHTLY_HOME/baseline.sqlite}
NIGHTLY_EXPERIMENT=${NIGHTLY_EXPERIMENT:-nightly}
export HARNESS_STORE=${HARNESS_STORE:-$NIGHTLY_OUT/results.sqlite}
export HARNESS_CACHE=${HARNESS_CACHE:-.cache/harness}
export PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
mkdir -p "$NIGHTLY_OUT"

step_install() {
    "$PYTHON" -m pip install -q -e ".[all,test,scale]"
}

step_provenance() {
    { date -u +"%Y-%m-%dT%H:%M:%SZ"; git rev-parse HEAD 2>/dev/null || true
      nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
      "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    } > "$NIGHTLY_OUT/machine.txt"
    cat "$NIGHTLY_OUT/machine.txt"
}

step_sweep() {
    step_provenance
    local args=(-m "+experiment=$NIGHTLY_EXPERIMENT" "hydra.sweep.dir=$NIGHTLY_OUT/sweep/\${now:%Y-%m-%d_%H-%M-%S}")
    [[ -n "${NIGHTLY_LAUNCHER:-}" ]] && args+=("hydra/launcher=$NIGHTLY_LAUNCHER")
    local started=$SECONDS
    if [[ -n "${NIGHTLY_DEADLINE_S:-}" ]]; then
        # Its own session (sid = its pid), so that at the deadline the cells - each in its own process
        # group - stop with the sweep. Not a process-group leader here, so setsid execs in place.
        setsid "$PYTHON" -m harness "${args[@]}" "$@" >> "$NIGHTLY_OUT/sweep.log" 2>&1 &
        local sid=$!
        tail -n 0 -f --pid="$sid" "$NIGHTLY_OUT/sweep.log" &
        while kill -0 "$sid" 2>/dev/null; do
            if (( SECONDS - started >= NIGHTLY_DEADLINE_S )); then
                echo "nightly: deadline of ${NIGHTLY_DEADLINE_S}s reached; stopping the sweep (re-run to resume)" >&2
                pkill -TERM -s "$sid" 2>/dev/null || true
                sleep 10
                pkill -KILL -s "$sid" 2>/dev/null || true
                wait "$sid" 2>/dev/null || true
                return 124
            fi
            sleep 2
        done
        wait "$sid"
    else
        "$PYTHON" -m harness "${args[@]}" "$@" 2>&1 | tee -a "$NIGHTLY_OUT/sweep.log"
    fi
    echo "nightly: sweep finished in $((SECONDS - started)) s"
}

step_report() {
    "$PYTHON" -m reports all --store "$HARNESS_STORE" --out "$NIGHTLY_OUT/reports" \
        --title "Nightly leaderboard $(date -u +%Y-%m-%d)"
    cp "$NIGHTLY_OUT/machine.txt" "$NIGHTLY_OUT/reports/" 2>/dev/null || true
    if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then
        { echo "# Nightly leaderboard"; echo; echo '```'; cat "$NIGHTLY_OUT/machine.txt" 2>/dev/null || echo "machine: not recorded"; echo '```'
          sed 's/^# Leaderboard$//' "$NIGHTLY_OUT/reports/leaderboard.md"; } >> "$GITHUB_STEP_SUMMARY"
    fi
}

step_check() {
    local summary=("--summary" "$NIGHTLY_OUT/regression.md")
    rm -f "$NIGHTLY_OUT/regression.md"
    local rc=0
    "$PYTHON" -m reports regression --store "$HARNESS_STORE" --baseline "$NIGHTLY_BASELINE" "${summary[@]}" \
        ${NIGHTLY_REGRESSION_ARGS:-} || rc=$?
    [[ -n "${GITHUB_STEP_SUMMARY:-}" && -f "$NIGHTLY_OUT/regression.md" ]] && cat "$NIGHTLY_OUT/regression.md" >> "$GITHUB_STEP_SUMMARY"
    return $rc
}

step_promote() {
    mkdir -p "$(dirname "$NIGHTLY_BASELINE")"
    if [[ "$HARNESS_STORE" == postgres* ]]; then
        echo "nightly: a PostgreSQL store is not copied; point NIGHTLY_BASELINE at last night's database" >&2
        return 0
    fi
    "$PYTHON" - "$HARNESS_STORE" "$NIGHTLY_BASELINE.tmp" <<'EOF'
import sqlite3, sys
src, dst = sys.argv[1:]
with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
    a.backup(b)  # a consistent copy even with the WAL journal
EOF
    mv "$NIGHTLY_BASELINE.tmp" "$NIGHTLY_BASELINE"
    echo "nightly: $HARNESS_STORE is the new baseline ($NIGHTLY_BASELINE)"
}

command=${1:-all}
[[ $# -gt 0 ]] && shift
case "$command" in
    install) step_install ;;
    sweep) step_sweep "$@" ;;
    report) step_report ;;
    check) step_check ;;
    promote) step_promote ;;
    all) step_sweep "$@"; step_report; step_check ;;
    *) echo "usage: $0 [all|install|sweep|report|check|promote] [hydra overrides...]" >&2; exit 2 ;;
esac

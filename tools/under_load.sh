#!/usr/bin/env bash
# Run the integration and end-to-end tests beside CPU burners (issue 8).
#
#   bash tools/under_load.sh [extra pytest args...]
#
# Starts UNDER_LOAD_BURNERS (default 2) busy-looping Python processes at normal
# priority, so they really compete with the tests for the CPU, then runs
#   python -m pytest tests/integration tests/e2e -q -p no:cacheprovider "$@"
# from the repository root (whatever the caller's cwd). The burners and the
# load sampler are killed on any exit. Prints the wall time and the load
# average seen (mean and peak of the 1-minute value, sampled every 5 s, and the
# last reading), and exits with pytest's status.
#
# A test that fails here but passes on an idle machine has a deadline that is
# a speed assertion, or a sleep standing in for a condition: deadlines in the
# tests only stop hung tests.
set -u

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
PYTHON=${PYTHON:-python}
BURNERS=${UNDER_LOAD_BURNERS:-2}

pids=()
samples=$(mktemp "${TMPDIR:-/tmp}/under_load.XXXXXX") || exit 2

cleanup() {
    local pid
    for pid in ${pids[@]+"${pids[@]}"}; do
        kill "$pid" 2>/dev/null
    done
    for pid in ${pids[@]+"${pids[@]}"}; do
        wait "$pid" 2>/dev/null
    done
    pids=()
    rm -f "$samples"
}
trap cleanup EXIT
# Ctrl-C reaches pytest too: let it print its summary, then report and exit with its status.
trap ':' INT
trap 'exit 143' TERM

# Each burner also dies with this script if it is SIGKILLed (PR_SET_PDEATHSIG = 1).
burn='import ctypes, signal
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
while True:
    pass'
for ((i = 0; i < BURNERS; i++)); do
    "$PYTHON" -c "$burn" &
    pids+=("$!")
done

# The load sampler: one /proc/loadavg line every 5 s while this script ($$) lives;
# it kills its own sleep on TERM.
(
    nap=
    trap 'kill $nap 2>/dev/null; exit 0' TERM
    while kill -0 $$ 2>/dev/null; do
        cat /proc/loadavg >>"$samples"
        sleep 5 &
        nap=$!
        wait "$nap"
    done
) &
pids+=("$!")

echo "under_load: $BURNERS CPU burner(s) beside pytest on $(nproc) CPU(s); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s.%N)
"$PYTHON" -m pytest tests/integration tests/e2e -q -p no:cacheprovider "$@"
status=$?
end=$(date +%s.%N)

cat /proc/loadavg >>"$samples"
seen=$(awk 'NR == 1 || $1 > max { max = $1 } { sum += $1 } END { printf "mean %.2f, peak %.2f", sum / NR, max }' "$samples")
wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
echo "under_load: wall ${wall} s; 1-min load average ${seen} (every 5 s), last $(cut -d' ' -f1-3 /proc/loadavg); pytest exit ${status}"
exit "$status"

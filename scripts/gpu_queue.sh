#!/usr/bin/env bash
# A queue of device jobs that outlives the 10-minute limit of one device command: `start` runs every line of
# a queue file in order, in the background (setsid nohup), each with its log and exit status under $Q; `wait`
# waits up to N seconds for the queue to finish, then packs $Q into $OUT/queue.tgz (PNGs left out) and prints
# where each job stands. Call `wait` again, back to back, until it prints "queue finished".
#   source scripts/device_env.sh SHA
#   bash scripts/gpu_queue.sh start QUEUE_FILE        # one shell command per line; '#' lines are skipped
#   bash scripts/gpu_queue.sh wait 560                # in this command and the next ones
# A job's command sees $Q/NN (its own results folder, where it should write) and the environment
# device_env.sh set. A failing job does not stop the queue.
set -uo pipefail
export Q=${Q:-/tmp/queue}
case ${1:-} in
  start)
    mkdir -p "$Q"
    grep -v -e '^\s*#' -e '^\s*$' "$2" > "$Q/jobs"
    setsid nohup bash -c '
      n=0
      while IFS= read -r job; do
        n=$((n + 1)); d=$(printf "%s/%02d" "$Q" "$n"); mkdir -p "$d"
        echo "$job" > "$d/command"; date +%s > "$d/started"
        ( export OUT="$d"; eval "$job" ) > "$d/log.txt" 2>&1
        echo $? > "$d/rc"; date +%s > "$d/finished"
      done < "$Q/jobs"
      touch "$Q/finished"' > "$Q/queue.log" 2>&1 < /dev/null &
    echo "queue started: $(wc -l < "$Q/jobs") jobs"
    ;;
  wait)
    # A machine that is not the one the queue started on (released and started afresh) has no queue.
    if [[ ! -f $Q/jobs ]]; then echo "no queue on this machine ($Q/jobs missing): it was started afresh" >&2; exit 3; fi
    end=$(( $(date +%s) + ${2:-560} ))
    while [[ ! -f $Q/finished && $(date +%s) -lt $end ]]; do sleep 5; done
    for d in "$Q"/[0-9]*; do
      [[ -d $d ]] || continue
      state=queued
      [[ -f $d/started ]] && state="running for $(( $(date +%s) - $(cat "$d/started") )) s"
      [[ -f $d/rc ]] && state="rc=$(cat "$d/rc") in $(( $(cat "$d/finished") - $(cat "$d/started") )) s"
      echo "$(basename "$d") $state: $(cut -c1-150 "$d/command")"
    done
    [[ -f $Q/finished ]] && echo "queue finished"
    # One archive: a device command returns only a limited number of files.
    if [[ -n ${OUT:-} ]]; then tar czf "$OUT/queue.tgz" -C "$Q" --exclude='*.png' --exclude='*.claims' .; fi
    ;;
  *) echo "usage: gpu_queue.sh start QUEUE_FILE | wait SECONDS" >&2; exit 2 ;;
esac

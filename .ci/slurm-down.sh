#!/usr/bin/env bash
# Stop the test Slurm cluster started by .ci/slurm-up.sh: cancel its jobs, then stop the
# daemons by the PIDs recorded under $MF_SLURM_DIR (default /tmp/microforge-slurm).
# Safe to run when nothing is up.
set -uo pipefail

DIR=${MF_SLURM_DIR:-/tmp/microforge-slurm}
log() { echo "slurm-down: $*" >&2; }

[[ -d $DIR ]] || { log "nothing to stop ($DIR does not exist)"; exit 0; }
export SLURM_CONF=$DIR/slurm.conf

pid_of() { [[ -f $DIR/$1.pid ]] && cat "$DIR/$1.pid"; }
alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

# Jobs first, so their batch scripts run their teardown while slurmd is still there.
ctld=$(pid_of slurmctld || true)
if alive "$ctld" && [[ -n $(squeue -h -o %i 2>/dev/null) ]]; then
    log "cancelling jobs: $(squeue -h -o %i | tr '\n' ' ')"
    scancel --full $(squeue -h -o %i) 2>/dev/null || true
    deadline=$((SECONDS + 60))
    while [[ -n $(squeue -h -o %i 2>/dev/null) ]] && ((SECONDS < deadline)); do sleep 1; done
fi

stop() {  # stop <name>: SIGTERM, wait up to 10 s, then SIGKILL
    local pid
    pid=$(pid_of "$1" || true)
    alive "$pid" || { rm -f "$DIR/$1.pid"; return 0; }
    kill -TERM "$pid"
    for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then log "$1 ($pid) ignored SIGTERM; killing"; kill -KILL "$pid"; fi
    rm -f "$DIR/$1.pid"
    log "stopped $1 ($pid)"
}

stop slurmd-node1
stop slurmd-node2
stop slurmctld
stop munged
exit 0

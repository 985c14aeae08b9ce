#!/bin/bash
# Runs one job step (srun ... temper train ...) so that Slurm's warning before the time
# limit, or a preemption, ends in a checkpoint and a requeue instead of lost work:
#  - SIGUSR1 (sbatch --signal=B:USR1@120 signals this batch shell) or SIGTERM reaching
#    this script goes on to the step as SIGUSR1; srun forwards it to every task, each rank
#    finishes its step, `temper train` saves a checkpoint and exits 0;
#  - if a signal came and the step ended well, the job requeues itself (scontrol
#    requeue); started again from the top, `temper train` resumes from
#    OUT_DIR/checkpoints/latest by itself.
# usage (inside a batch script): requeue-on-signal.sh srun ... temper train CONFIG [k=v ...]
set -uo pipefail
pid="" signalled=0
trap 'signalled=1; [ -n "$pid" ] && kill -USR1 "$pid" 2>/dev/null' USR1 TERM
"$@" &
pid=$!
while true; do
  wait "$pid" && rc=0 || rc=$?
  kill -0 "$pid" 2>/dev/null || break  # still running: wait was cut short by the trap
done
if (( signalled && rc == 0 )); then
  job=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID:-}}
  job=${job:-${SLURM_JOB_ID:-}}
  if [ -n "$job" ]; then
    echo "requeue-on-signal: stopped by a signal after a checkpoint; requeueing job $job"
    scontrol requeue "$job"
  fi
fi
exit "$rc"

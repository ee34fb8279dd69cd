# Sourced by train.sbatch, sweep.sbatch and mpirun.sh: environment, launcher, signal forwarding, requeue.
# `hpcfed train --resume auto` exits 0 when finished, 75 after checkpointing on USR1/TERM, else on failure.

export HF_HUB_OFFLINE=1                        # compute nodes: a missing weight fails at once, not after ~47 s
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # one thread per rank; ranks share the cores
export PYTHONUNBUFFERED=1                      # progress lines reach the log as they happen
HPCFED_VENV=${HPCFED_VENV:-.venv}
HPCFED_MAX_RESTARTS=${HPCFED_MAX_RESTARTS:-10}

# The venv's copy of a command (its mpiexec matches its mpi4py), else the one on PATH.
venv_or_path() {
    if [ -x "$HPCFED_VENV/bin/$1" ]; then echo "$HPCFED_VENV/bin/$1"
    else command -v "$1" || { echo "hpcfed: no $1 in $HPCFED_VENV/bin nor on PATH (set HPCFED_VENV)" >&2; return 2; }
    fi
}

# Run "$@" in the background and wait for it, passing USR1/TERM on as USR1: the ranks then checkpoint at the
# next round boundary (TERM as well would make srun/hydra kill the step). Background + wait because bash runs
# a trap only between commands; wait also returns when a trap ran, so wait again until the step is gone.
# Sets step_rc, and step_signalled=1 if a signal came.
run_step() {
    "$@" &
    step_pid=$! step_signalled=0
    trap 'step_signalled=1; echo "hpcfed: signal at $(date +%T): checkpointing at the next round boundary"
          kill -USR1 "$step_pid" 2>/dev/null || true' USR1 TERM
    # a background job of a script ignores Ctrl-C; pass it on so mpirun.sh stops like a plain mpiexec
    trap 'kill -INT "$step_pid" 2>/dev/null || true' INT
    while :; do
        step_rc=0; wait "$step_pid" || step_rc=$?
        kill -0 "$step_pid" 2>/dev/null || break
    done
    trap - USR1 TERM INT
}

# CONFIG [hpcfed train args...] as one SLURM job step over all tasks; exit 0, requeue on 75, else fail.
train_and_requeue() {
    local hpcfed launcher
    hpcfed=$(venv_or_path hpcfed) || exit 2
    case ${HPCFED_LAUNCHER:=srun} in
        # pmi2 for the PyPI MPICH (--mpi=none silently gives N singletons; pmix fails), pmix for an Open MPI
        # build. No --kill-on-bad-exit: a rank exiting 75 first must not kill rank 0 while it writes the checkpoint.
        srun) launcher=(srun --mpi="${HPCFED_SRUN_MPI:-pmi2}") ;;
        # hydra finds the allocation by itself; its unique KVS names cannot meet a stale /dev/shm segment of
        # the job's previous run, which srun's "<jobid>.<stepid>" can without the cluster's Epilog (slurm.md)
        mpiexec) launcher=("$(venv_or_path mpiexec)" -n "$SLURM_NTASKS") || exit 2 ;;
        *) echo "hpcfed: HPCFED_LAUNCHER must be srun or mpiexec, got '$HPCFED_LAUNCHER'" >&2; exit 2 ;;
    esac
    echo "hpcfed: job $SLURM_JOB_ID${SLURM_ARRAY_TASK_ID:+ (array ${SLURM_ARRAY_JOB_ID}_$SLURM_ARRAY_TASK_ID)}," \
         "world size $SLURM_NTASKS on $SLURM_JOB_NODELIST, restart ${SLURM_RESTART_COUNT:-0} of at most" \
         "$HPCFED_MAX_RESTARTS, launcher $HPCFED_LAUNCHER, $(date '+%F %T')"
    echo "+ ${launcher[*]} $hpcfed train $* --resume auto"
    run_step "${launcher[@]}" "$hpcfed" train "$@" --resume auto
    case $step_rc in
        0) echo "hpcfed: finished"; exit 0 ;;
        75) requeue ;;
        *) echo "hpcfed: failed with exit code $step_rc (not requeued)" >&2; exit "$step_rc" ;;
    esac
}

requeue() {
    local state
    state=$(scontrol show job -o "$SLURM_JOB_ID" | grep -o 'JobState=[A-Z_]*' || true)
    # After scancel (or the time limit) the job is already ending, and requeueing it would undo the cancel
    # (tried: scontrol requeue accepts a COMPLETING job). The checkpoint stays for a resubmission.
    if [ "$state" != JobState=RUNNING ]; then
        echo "hpcfed: checkpointed while the job is ending ($state): not requeued; resubmit to continue" >&2; exit 75
    fi
    # A run that is interrupted again on every start would otherwise requeue for ever (slurm.md saw it).
    if [ "${SLURM_RESTART_COUNT:-0}" -ge "$HPCFED_MAX_RESTARTS" ]; then
        echo "hpcfed: checkpointed after $SLURM_RESTART_COUNT restarts (HPCFED_MAX_RESTARTS): not requeued" >&2; exit 75
    fi
    echo "hpcfed: checkpointed; requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID" || { echo "hpcfed: requeue refused; resubmit to continue" >&2; exit 75; }
    sleep 600   # the requeue kills this shell (slurm.md): never carry on
    exit 75
}

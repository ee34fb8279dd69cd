#!/usr/bin/env bash
# `hpcfed train` on a machine without SLURM:  jobs/mpirun.sh [--loop] CONFIG [NP=4] [hpcfed train args...]
# Always --resume auto. With --loop, a run that checkpointed and exited 75 because its ranks were signalled
# is started again; a USR1/TERM sent to this script stops it after the checkpoint instead.
set -euo pipefail
loop=0; if [ "${1:-}" = --loop ]; then loop=1; shift; fi
[ $# -ge 1 ] || { echo "usage: $0 [--loop] CONFIG [NP] [hpcfed train args...]" >&2; exit 2; }
config=$1; shift
np=4; if [[ ${1:-} =~ ^[0-9]+$ ]]; then np=$1; shift; fi
HPCFED_VENV=${HPCFED_VENV:-$(dirname "$0")/../.venv}
source "$(dirname "$0")/common.sh"
# Open MPI refuses root and more ranks than cores without these; MPICH ignores them
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 \
       PRTE_MCA_rmaps_default_mapping_policy=:oversubscribe
mpiexec=$(venv_or_path mpiexec); hpcfed=$(venv_or_path hpcfed)
while :; do
    run_step "$mpiexec" -n "$np" "$hpcfed" train "$config" "$@" --resume auto
    [ "$step_rc" -eq 75 ] && [ "$loop" = 1 ] && [ "$step_signalled" = 0 ] || exit "$step_rc"
    echo "mpirun.sh: checkpointed (exit 75); resuming"
done

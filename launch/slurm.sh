#!/usr/bin/env bash
# Starts rstar-jax on several GPU hosts under SLURM: srun runs launch/gpu.sh once per node, and
# jax.distributed.initialize() finds the coordinator, process count and process id in SLURM's
# environment. Run it inside an allocation (salloc) or as the body of an sbatch script.
set -euo pipefail
LAUNCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=launch/lib.sh
source "${LAUNCH_DIR}/lib.sh"

usage() {
  cat <<'USAGE'
Usage: launch/slurm.sh --nodes N --gin_file FILE --workdir DIR [options] [-- RSTAR_JAX_ARGS...]

Runs `srun --nodes=N --ntasks-per-node=1 --gpus-per-node=G launch/gpu.sh ...`: one process per
node, each driving that node's GPUs. --workdir must be on a file system every node sees.

Options:
  --nodes N            number of nodes (required)
  --gin_file FILE      gin file, repeatable (required)
  --workdir DIR        shared output folder (required)
  --gpus_per_node G    GPUs per node (default: 8)
  --cmd COMMAND        rstar-jax command (default: evolve)
  --partition P        SLURM partition
  --account A          SLURM account
  --time LIMIT         SLURM time limit, e.g. 3-00:00:00
  --venv DIR           virtualenv folder on every node (default: $HOME/rstar-jax-venv)
  --dry-run            print the exact command instead of running it
  -h, --help           show this help

Example (inside `salloc --nodes=2 --gpus-per-node=8`, or as an sbatch script body):
  launch/slurm.sh --nodes 2 --gin_file experiments/paper/qwen7b_8xh100.gin --workdir /nfs/rstar-7b
USAGE
}

GIN_FILES=()
NODES="" GPUS_PER_NODE=8 WORKDIR="" CMD=evolve PARTITION="" ACCOUNT="" TIME_LIMIT=""
VENV="${HOME}/rstar-jax-venv" DRY_RUN=0
while (($#)); do
  case "$1" in
    --nodes) need_value "$1" $# "${2:-}"; NODES="$2"; shift 2 ;;
    --gin_file) need_value "$1" $# "${2:-}"; GIN_FILES+=("$2"); shift 2 ;;
    --workdir) need_value "$1" $# "${2:-}"; WORKDIR="$2"; shift 2 ;;
    --gpus_per_node) need_value "$1" $# "${2:-}"; GPUS_PER_NODE="$2"; shift 2 ;;
    --cmd) need_value "$1" $# "${2:-}"; CMD="$2"; shift 2 ;;
    --partition) need_value "$1" $# "${2:-}"; PARTITION="$2"; shift 2 ;;
    --account) need_value "$1" $# "${2:-}"; ACCOUNT="$2"; shift 2 ;;
    --time) need_value "$1" $# "${2:-}"; TIME_LIMIT="$2"; shift 2 ;;
    --venv) need_value "$1" $# "${2:-}"; VENV="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
export DRY_RUN
require --nodes "${NODES}"
((${#GIN_FILES[@]})) || die "missing required option --gin_file (see --help)"
require --workdir "${WORKDIR}"
[[ "${NODES}" =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer, got '${NODES}'"
[[ "${GPUS_PER_NODE}" =~ ^[1-9][0-9]*$ ]] ||
  die "--gpus_per_node must be a positive integer, got '${GPUS_PER_NODE}'"

SRUN=(srun "--nodes=${NODES}" --ntasks-per-node=1 "--gpus-per-node=${GPUS_PER_NODE}")
[[ -z "${PARTITION}" ]] || SRUN+=("--partition=${PARTITION}")
[[ -z "${ACCOUNT}" ]] || SRUN+=("--account=${ACCOUNT}")
[[ -z "${TIME_LIMIT}" ]] || SRUN+=("--time=${TIME_LIMIT}")
GPU_ARGS=(--cmd "${CMD}" --workdir "${WORKDIR}" --venv "${VENV}")
for f in "${GIN_FILES[@]}"; do GPU_ARGS+=(--gin_file "${f}"); done
run "${SRUN[@]}" "${LAUNCH_DIR}/gpu.sh" "${GPU_ARGS[@]}" -- "$@"

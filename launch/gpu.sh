#!/usr/bin/env bash
# Runs rstar-jax on this host's GPUs: one process drives all of them (JAX sees every local GPU).
# For several hosts, run it once per host with --coordinator/--num_processes/--process_id, or let
# launch/slurm.sh start it under SLURM, where JAX reads the same facts from SLURM's variables.
set -euo pipefail
LAUNCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=launch/lib.sh
source "${LAUNCH_DIR}/lib.sh"

usage() {
  cat <<'USAGE'
Usage: launch/gpu.sh --gin_file FILE --workdir DIR [options] [-- RSTAR_JAX_ARGS...]

Installs this checkout with jax[cuda12] into a venv on first use (launch/worker.sh) and runs
`rstar-jax CMD --gin_file FILE --workdir DIR [RSTAR_JAX_ARGS...]` on this host's GPUs.
Rerunning with the same --workdir resumes from what it already holds.

Options:
  --gin_file FILE            gin file, repeatable (required)
  --workdir DIR              output folder; shared (NFS, gs://) when several hosts run (required)
  --cmd COMMAND              rstar-jax command (default: evolve)
  --gpus N|LIST              use the first N GPUs, or the listed ones (e.g. 0,1,2,3); default: all
  --mem_fraction F           share of each GPU's memory JAX takes up front (default: 0.92; JAX's
                             own default, 0.75, leaves too little for the paper configs)
  --venv DIR                 virtualenv folder (default: $HOME/rstar-jax-venv)
  --python PYTHON            interpreter for a new venv, Python >= 3.11 (default: python3)
Several hosts without SLURM (run the same command on every host, changing --process_id):
  --coordinator HOST:PORT    address of process 0, reachable from every host
  --num_processes N          number of hosts (one process per host)
  --process_id I             this host's index, 0 .. N-1
Other:
  --dry-run                  print the exact commands instead of running them
  -h, --help                 show this help

Example (two hosts with 8 GPUs each):
  host0$ launch/gpu.sh --gin_file experiments/paper/qwen7b_8xh100.gin --workdir /nfs/rstar-7b \
           --coordinator host0:8476 --num_processes 2 --process_id 0
  host1$ launch/gpu.sh ... --process_id 1
USAGE
}

GIN_FILES=()
WORKDIR="" CMD=evolve GPUS="" MEM_FRACTION=0.92 VENV="${HOME}/rstar-jax-venv" PYTHON=python3
COORDINATOR="" NUM_PROCESSES="" PROCESS_ID="" DRY_RUN=0
while (($#)); do
  case "$1" in
    --gin_file) need_value "$1" $# "${2:-}"; GIN_FILES+=("$2"); shift 2 ;;
    --workdir) need_value "$1" $# "${2:-}"; WORKDIR="$2"; shift 2 ;;
    --cmd) need_value "$1" $# "${2:-}"; CMD="$2"; shift 2 ;;
    --gpus) need_value "$1" $# "${2:-}"; GPUS="$2"; shift 2 ;;
    --mem_fraction) need_value "$1" $# "${2:-}"; MEM_FRACTION="$2"; shift 2 ;;
    --venv) need_value "$1" $# "${2:-}"; VENV="$2"; shift 2 ;;
    --python) need_value "$1" $# "${2:-}"; PYTHON="$2"; shift 2 ;;
    --coordinator) need_value "$1" $# "${2:-}"; COORDINATOR="$2"; shift 2 ;;
    --num_processes) need_value "$1" $# "${2:-}"; NUM_PROCESSES="$2"; shift 2 ;;
    --process_id) need_value "$1" $# "${2:-}"; PROCESS_ID="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
export DRY_RUN
((${#GIN_FILES[@]})) || die "missing required option --gin_file (see --help)"
require --workdir "${WORKDIR}"

if [[ -n "${GPUS}" ]]; then
  if [[ "${GPUS}" =~ ^[0-9]+$ ]]; then
    ((GPUS > 0)) || die "--gpus must be at least 1, got ${GPUS}"
    export_var CUDA_VISIBLE_DEVICES "$(seq -s, 0 $((GPUS - 1)))"
  elif [[ "${GPUS}" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
    export_var CUDA_VISIBLE_DEVICES "${GPUS}"
  else
    die "--gpus must be a count (8) or a list of GPU ids (0,1,2,3), got '${GPUS}'"
  fi
fi
[[ "${MEM_FRACTION}" =~ ^0?\.[0-9]+$ ]] || die "--mem_fraction must be between 0 and 1, got '${MEM_FRACTION}'"
export_var XLA_PYTHON_CLIENT_MEM_FRACTION "${MEM_FRACTION}"
# jax.distributed.initialize() reads these when rstar-jax starts on several hosts.
if [[ -n "${COORDINATOR}${NUM_PROCESSES}${PROCESS_ID}" ]]; then
  require --coordinator "${COORDINATOR}"
  require --num_processes "${NUM_PROCESSES}"
  require --process_id "${PROCESS_ID}"
  if ! [[ "${NUM_PROCESSES}" =~ ^[0-9]+$ && "${PROCESS_ID}" =~ ^[0-9]+$ ]] ||
    ((PROCESS_ID >= NUM_PROCESSES)); then
    die "--process_id must be in 0 .. --num_processes - 1, got ${PROCESS_ID} of ${NUM_PROCESSES}"
  fi
  export_var JAX_COORDINATOR_ADDRESS "${COORDINATOR}"
  export_var JAX_NUM_PROCESSES "${NUM_PROCESSES}"
  export_var JAX_PROCESS_ID "${PROCESS_ID}"
fi

RSTAR_ARGS=(rstar-jax "${CMD}" --workdir "${WORKDIR}")
for f in "${GIN_FILES[@]}"; do RSTAR_ARGS+=(--gin_file "${f}"); done
run "${LAUNCH_DIR}/worker.sh" --extra cuda --venv "${VENV}" --python "${PYTHON}" -- \
  "${RSTAR_ARGS[@]}" "$@"

#!/usr/bin/env bash
# Creates a Cloud TPU VM (or queued resource), runs rstar-jax on all of its workers, follows the log
# and deletes it. Every worker runs the same command; rerunning `run` with the same --workdir
# resumes from what the workdir already holds (after a spot preemption, recreate and rerun).
set -euo pipefail
LAUNCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=launch/lib.sh
source "${LAUNCH_DIR}/lib.sh"

usage() {
  cat <<'USAGE'
Usage: launch/tpu.sh COMMAND --name NAME --zone ZONE [options] [-- RSTAR_JAX_ARGS...]

Commands:
  create   create the TPU VM (or, with --queued, a queued resource that becomes it)
  run      copy this checkout to every worker, install it there on first use (a venv), and start
           `rstar-jax CMD --gin_file ... --workdir ...` on all workers in the background
           (log: ~/rstar-jax.log on each worker); arguments after -- go to rstar-jax
  logs     follow the log of one worker (--worker, default 0)
  stop     stop the run on all workers
  delete   delete the TPU VM (or the queued resource)

Options:
  --name NAME          TPU VM name (required)
  --zone ZONE          zone, e.g. us-east5-a for v5p (required)
  --project PROJECT    gcloud project (default: gcloud's configured project)
  --type TYPE          accelerator type, e.g. v5p-64, v4-8, v6e-16 (required by create)
  --runtime VERSION    TPU software version (default from --type: v6e v2-alpha-tpuv6e,
                       v5p v2-alpha-tpuv5, v5e/v5litepod v2-alpha-tpuv5-lite, v4 tpu-ubuntu2204-base)
  --spot               spot capacity (cheaper; may be preempted, then recreate and rerun)
  --queued             create/delete through a queued resource (waits for capacity)
  --cmd COMMAND        rstar-jax command for run (default: evolve)
  --gin_file FILE      gin file inside this checkout, repeatable (required by run)
  --workdir gs://BUCKET/DIR   output folder every worker shares (required by run); each worker
                       mounts the bucket with Cloud Storage FUSE at /tmp/gcs/BUCKET
  --worker N           worker whose log `logs` follows (default: 0; "all" for every worker)
  --dry-run            print the exact commands instead of running them
  -h, --help           show this help

Example:
  launch/tpu.sh create --name rstar --zone us-east5-a --type v5p-64 --spot --queued
  launch/tpu.sh run --name rstar --zone us-east5-a \
      --gin_file experiments/paper/qwen7b_v5p64.gin --workdir gs://my-bucket/rstar-7b
  launch/tpu.sh logs --name rstar --zone us-east5-a
  launch/tpu.sh delete --name rstar --zone us-east5-a --queued
USAGE
}

default_runtime() {
  case "$1" in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5e-* | v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    v4-* | v3-* | v2-*) echo tpu-ubuntu2204-base ;;
    *) die "no default --runtime for --type $1; pass --runtime" ;;
  esac
}

# Checks that a gin file lives in this checkout (the workers only get the checkout).
check_gin_file() {
  local f="$1"
  [[ "${f}" != /* ]] || die "--gin_file ${f}: give a path inside this checkout, relative to its root"
  [[ -f "${REPO}/${f}" || -f "${REPO}/experiments/${f}" || -f "${REPO}/experiments/${f}.gin" ]] ||
    die "--gin_file ${f}: not found in ${REPO} or ${REPO}/experiments"
}

(($#)) || { usage; exit 2; }
case "$1" in
  -h | --help) usage; exit 0 ;;
  create | run | logs | stop | delete) ACTION="$1"; shift ;;
  *) die "unknown command '$1'; expected create, run, logs, stop or delete (see --help)" ;;
esac

NAME="" ZONE="" PROJECT="" TYPE="" RUNTIME="" SPOT=0 QUEUED=0 CMD=evolve WORKDIR="" WORKER=0
DRY_RUN=0
GIN_FILES=()
while (($#)); do
  case "$1" in
    --name) need_value "$1" $# "${2:-}"; NAME="$2"; shift 2 ;;
    --zone) need_value "$1" $# "${2:-}"; ZONE="$2"; shift 2 ;;
    --project) need_value "$1" $# "${2:-}"; PROJECT="$2"; shift 2 ;;
    --type) need_value "$1" $# "${2:-}"; TYPE="$2"; shift 2 ;;
    --runtime) need_value "$1" $# "${2:-}"; RUNTIME="$2"; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --queued) QUEUED=1; shift ;;
    --cmd) need_value "$1" $# "${2:-}"; CMD="$2"; shift 2 ;;
    --gin_file) need_value "$1" $# "${2:-}"; GIN_FILES+=("$2"); shift 2 ;;
    --workdir) need_value "$1" $# "${2:-}"; WORKDIR="$2"; shift 2 ;;
    --worker) need_value "$1" $# "${2:-}"; WORKER="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
export DRY_RUN
require --name "${NAME}"
require --zone "${ZONE}"
REPO="$(cd "${LAUNCH_DIR}/.." && pwd)"
GCLOUD_FLAGS=("--zone=${ZONE}")
[[ -z "${PROJECT}" ]] || GCLOUD_FLAGS+=("--project=${PROJECT}")
TPU_VM=(gcloud compute tpus tpu-vm)
QUEUED_RESOURCES=(gcloud compute tpus queued-resources)

case "${ACTION}" in
  create)
    require --type "${TYPE}"
    [[ -n "${RUNTIME}" ]] || RUNTIME="$(default_runtime "${TYPE}")"
    EXTRA_FLAGS=()
    ((SPOT)) && EXTRA_FLAGS+=(--spot)
    if ((QUEUED)); then
      run "${QUEUED_RESOURCES[@]}" create "${NAME}" --node-id="${NAME}" "${GCLOUD_FLAGS[@]}" \
        --accelerator-type="${TYPE}" --runtime-version="${RUNTIME}" "${EXTRA_FLAGS[@]}"
      echo "# queued; \`${QUEUED_RESOURCES[*]} describe ${NAME} --zone=${ZONE}\` shows when it is ACTIVE"
    else
      run "${TPU_VM[@]}" create "${NAME}" "${GCLOUD_FLAGS[@]}" \
        --accelerator-type="${TYPE}" --version="${RUNTIME}" "${EXTRA_FLAGS[@]}"
    fi
    ;;
  run)
    ((${#GIN_FILES[@]})) || die "missing required option --gin_file (see --help)"
    require --workdir "${WORKDIR}"
    [[ "${WORKDIR}" == gs://* ]] ||
      die "--workdir must be a gs:// bucket path that every worker can reach, got '${WORKDIR}'"
    for f in "${GIN_FILES[@]}"; do check_gin_file "${f}"; done
    BUCKET="${WORKDIR#gs://}"
    BUCKET="${BUCKET%%/*}"
    [[ "${BUCKET}" =~ ^[a-z0-9][a-z0-9._-]*$ ]] || die "--workdir ${WORKDIR}: no valid bucket name"
    MOUNTED="/tmp/gcs/${WORKDIR#gs://}"
    # A TPU VM sets no variable that tells JAX it is one of several hosts; this one does.
    RSTAR_ARGS=(env RSTAR_JAX_DISTRIBUTED=1 rstar-jax "${CMD}" --workdir "${MOUNTED%/}")
    for f in "${GIN_FILES[@]}"; do RSTAR_ARGS+=(--gin_file "${f}"); done
    RSTAR_ARGS+=("$@")
    TARBALL="${TMPDIR:-/tmp}/rstar-jax-${NAME}.tar.gz"
    run tar -czf "${TARBALL}" -C "${REPO}" --exclude=__pycache__ --exclude='*.pyc' \
      setup.py rstar_jax launch experiments
    run "${TPU_VM[@]}" scp "${TARBALL}" "${NAME}:rstar-jax.tar.gz" --worker=all "${GCLOUD_FLAGS[@]}"
    # On each worker: refuse to start twice, unpack a fresh tree (the venv lives outside it), start
    # worker.sh detached in its own process group (so `stop` can end it) and record its id.
    # shellcheck disable=SC2016  # $(...) and $! expand on the worker
    REMOTE='if [ -f ~/rstar-jax.pid ] && kill -0 "$(cat ~/rstar-jax.pid)" 2>/dev/null; then'
    REMOTE+=' echo "rstar-jax is already running here; launch/tpu.sh stop first" >&2; exit 1; fi'
    REMOTE+=' && rm -rf ~/rstar-jax && mkdir -p ~/rstar-jax'
    REMOTE+=' && tar -xzf ~/rstar-jax.tar.gz -C ~/rstar-jax && cd ~/rstar-jax'
    REMOTE+=" && { setsid nohup bash launch/worker.sh --extra tpu --python python3.11 --install_python"
    REMOTE+=" --gcs_bucket ${BUCKET} --gcs_dir /tmp/gcs/${BUCKET}"
    REMOTE+=" -- $(quote_all "${RSTAR_ARGS[@]}") >>~/rstar-jax.log 2>&1 </dev/null &"
    REMOTE+=' echo $! >~/rstar-jax.pid; }'
    run "${TPU_VM[@]}" ssh "${NAME}" --worker=all "${GCLOUD_FLAGS[@]}" --command="${REMOTE}"
    echo "# ${WORKDIR} is /tmp/gcs/${BUCKET}/... on every worker (gcsfuse)"
    echo "# started; follow it with: launch/tpu.sh logs --name ${NAME} --zone ${ZONE}"
    ;;
  logs)
    run "${TPU_VM[@]}" ssh "${NAME}" --worker="${WORKER}" "${GCLOUD_FLAGS[@]}" \
      --command="tail -n 200 -F ~/rstar-jax.log"
    ;;
  stop)
    # shellcheck disable=SC2016  # $(...) expands on the worker
    run "${TPU_VM[@]}" ssh "${NAME}" --worker=all "${GCLOUD_FLAGS[@]}" \
      --command='if [ -f ~/rstar-jax.pid ]; then kill -TERM -- "-$(cat ~/rstar-jax.pid)" 2>/dev/null; rm -f ~/rstar-jax.pid; fi; true'
    ;;
  delete)
    if ((QUEUED)); then
      run "${QUEUED_RESOURCES[@]}" delete "${NAME}" "${GCLOUD_FLAGS[@]}" --force --quiet
    else
      run "${TPU_VM[@]}" delete "${NAME}" "${GCLOUD_FLAGS[@]}" --quiet
    fi
    ;;
esac

#!/usr/bin/env bash
# Runs a command inside this checkout's virtualenv on the machine that owns the accelerators (a TPU
# VM worker or a GPU host). Creates the venv on first use and reinstalls only when setup.py or the
# extra changed, so running it again (or on every worker at once) is cheap and idempotent.
set -euo pipefail
LAUNCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=launch/lib.sh
source "${LAUNCH_DIR}/lib.sh"

usage() {
  cat <<'USAGE'
Usage: launch/worker.sh [options] -- COMMAND [ARGS...]

Runs COMMAND (e.g. `rstar-jax evolve --gin_file ...`) with this checkout installed in a venv.
The venv is created on first use; `pip install -e .[EXTRA]` reruns only when setup.py or EXTRA
changed since the last install (stamp file inside the venv).

Options:
  --venv DIR          virtualenv folder (default: $HOME/rstar-jax-venv)
  --python PYTHON     interpreter for a new venv, Python >= 3.11 (default: python3)
  --install_python    apt-get install PYTHON (and PYTHON-venv) when it is missing (TPU VM images)
  --extra EXTRA       setup.py extra: tpu, cuda or none (default: none, CPU jax)
  --gcs_bucket NAME   mount this Cloud Storage bucket with gcsfuse first (installed on first use),
                      so a gs:// workdir is a plain folder every host shares
  --gcs_dir DIR       where to mount it (default: /tmp/gcs/NAME)
  --dry-run           print the commands instead of running them
  -h, --help          show this help
USAGE
}

VENV="${HOME}/rstar-jax-venv"
PYTHON=python3
INSTALL_PYTHON=0
EXTRA=none
GCS_BUCKET=""
GCS_DIR=""
DRY_RUN=0
while (($#)); do
  case "$1" in
    --venv) need_value "$1" $# "${2:-}"; VENV="$2"; shift 2 ;;
    --python) need_value "$1" $# "${2:-}"; PYTHON="$2"; shift 2 ;;
    --install_python) INSTALL_PYTHON=1; shift ;;
    --extra) need_value "$1" $# "${2:-}"; EXTRA="$2"; shift 2 ;;
    --gcs_bucket) need_value "$1" $# "${2:-}"; GCS_BUCKET="$2"; shift 2 ;;
    --gcs_dir) need_value "$1" $# "${2:-}"; GCS_DIR="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
(($#)) || die "missing COMMAND after -- (see --help)"
case "${EXTRA}" in
  tpu | cuda) SPEC=".[${EXTRA}]" ;;
  none) SPEC="." ;;
  *) die "--extra must be tpu, cuda or none, got '${EXTRA}'" ;;
esac
export DRY_RUN
cd "${LAUNCH_DIR}/.."

if [[ -n "${GCS_BUCKET}" ]]; then
  GCS_DIR="${GCS_DIR:-/tmp/gcs/${GCS_BUCKET}}"
  if ! mountpoint -q "${GCS_DIR}"; then
    if ! command -v gcsfuse >/dev/null; then  # Cloud Storage FUSE, from Google's apt repository
      KEYRING=/usr/share/keyrings/cloud.google.asc
      REPO="deb [signed-by=${KEYRING}] https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -cs) main"
      run sudo curl -fsSL -o "${KEYRING}" https://packages.cloud.google.com/apt/doc/apt-key.gpg
      run sudo sh -c "echo '${REPO}' >/etc/apt/sources.list.d/gcsfuse.list"
      run sudo apt-get update -q
      run sudo apt-get install -y -q gcsfuse
    fi
    run mkdir -p "${GCS_DIR}"
    # The stages publish directories by renaming them (atomic writes, orbax's temporary
    # checkpoint folders, search passes); gcsfuse refuses a directory rename unless the directory
    # has fewer descendants than --rename-dir-limit (default 0). On a flat bucket the rename is a
    # copy and delete per object, so not atomic; a bucket with hierarchical namespace renames
    # folders atomically and ignores the limit. 200000 is gcsfuse's own checkpointing profile value.
    run gcsfuse --implicit-dirs --rename-dir-limit=200000 "${GCS_BUCKET}" "${GCS_DIR}"
  fi
fi

# Hosts that share $HOME (NFS under SLURM) take turns installing into the same venv.
if [[ "${DRY_RUN}" != 1 ]]; then
  mkdir -p "$(dirname "${VENV}")"
  exec 9>"${VENV}.lock"
  flock 9
fi
STAMP="${VENV}/.rstar-jax-install"
WANT="$(sha256sum setup.py | cut -d' ' -f1) ${SPEC}"
if [[ ! -x "${VENV}/bin/python" ]]; then
  if ! command -v "${PYTHON}" >/dev/null; then
    ((INSTALL_PYTHON)) || die "${PYTHON} not found; install it or pass --python / --install_python"
    run sudo apt-get update -q
    run sudo apt-get install -y -q "${PYTHON}" "${PYTHON}-venv"
  fi
  if [[ "${DRY_RUN}" != 1 ]] && ! "${PYTHON}" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    die "${PYTHON} is older than Python 3.11; pass --python python3.11 (with --install_python on Ubuntu)"
  fi
  run "${PYTHON}" -m venv "${VENV}"
fi
if [[ "$(cat "${STAMP}" 2>/dev/null)" != "${WANT}" ]]; then
  run "${VENV}/bin/pip" install -q --upgrade pip
  run "${VENV}/bin/pip" install -q -e "${SPEC}"
  [[ "${DRY_RUN}" == 1 ]] || echo "${WANT}" >"${STAMP}"
fi
[[ "${DRY_RUN}" == 1 ]] || exec 9>&-
export PATH="${VENV}/bin:${PATH}" VIRTUAL_ENV="${VENV}"
run "$@"

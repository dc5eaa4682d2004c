"""launch/*.sh against fake `gcloud` / `srun` / `python` on PATH that record their arguments."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[2] / "launch"
SCRIPTS = sorted(p.name for p in LAUNCH.glob("*.sh") if p.name != "lib.sh")

# Records `name arg...` as one JSON list per call; the fake python also builds a fake venv.
RECORDER = """#!/usr/bin/env bash
python3 - "$(basename "$0")" "$@" <<'PY' >>"$FAKE_LOG"
import json, sys; print(json.dumps(sys.argv[1:]))
PY
"""
FAKE_PYTHON = RECORDER + """
if [[ "$1" == -m && "$2" == venv ]]; then
  mkdir -p "$3/bin"
  cp "$0" "$3/bin/python"
  cp "$(dirname "$0")/gcloud" "$3/bin/pip"
fi
"""


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    """A minimal checkout: the launch scripts plus what they copy and install."""
    root = tmp_path / "repo"
    shutil.copytree(LAUNCH, root / "launch")
    (root / "rstar_jax").mkdir()
    (root / "rstar_jax" / "__init__.py").write_text("")
    (root / "experiments").mkdir()
    (root / "experiments" / "paper.gin").write_text("# config\n")
    (root / "setup.py").write_text("# setup\n")
    return root


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    """PATH with fake gcloud, srun, sudo, gcsfuse and fakepython first; FAKE_LOG collects their calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in [("gcloud", RECORDER), ("srun", RECORDER), ("sudo", RECORDER), ("gcsfuse", RECORDER),
                       ("fakepython", FAKE_PYTHON)]:
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", HOME=str(tmp_path / "home"),
                FAKE_LOG=str(tmp_path / "calls.jsonl"), TMPDIR=str(tmp_path))


def launch(root: Path, env: dict[str, str], script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(root / "launch" / script), *args], env=env,
                          capture_output=True, text=True)


def calls(env: dict[str, str]) -> list[list[str]]:
    log = Path(env["FAKE_LOG"])
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def printed(stdout: str) -> list[list[str]]:
    """The `+ cmd` lines of a dry run, split the way a shell would."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def test_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (pip install -e \".[test]\" brings it)")
    scripts = [str(p) for p in sorted(LAUNCH.glob("*.sh"))]
    result = subprocess.run(["shellcheck", "-x", *scripts], cwd=LAUNCH.parent,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(repo, env, script):
    result = launch(repo, env, script, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: launch/" + script)
    assert "--dry-run" in result.stdout


@pytest.mark.parametrize("script,args,message", [
    ("tpu.sh", ["create", "--zone", "z", "--type", "v5p-64"], "missing required option --name"),
    ("tpu.sh", ["create", "--name", "n", "--zone", "z"], "missing required option --type"),
    ("tpu.sh", ["run", "--name", "n", "--zone"], "option --zone needs a value"),
    ("tpu.sh", ["run", "--name", "n", "--zone", "z", "--workdir", "gs://b"],
     "missing required option --gin_file"),
    ("tpu.sh", ["run", "--name", "n", "--zone", "z", "--gin_file", "paper", "--workdir", "/tmp/w"],
     "--workdir must be a gs:// bucket path"),
    ("tpu.sh", ["run", "--name", "n", "--zone", "z", "--gin_file", "nope.gin", "--workdir", "gs://b"],
     "--gin_file nope.gin: not found"),
    ("tpu.sh", ["run", "--name", "n", "--zone", "z", "--gin_file", "paper", "--workdir", "gs://B@d/x"],
     "no valid bucket name"),
    ("tpu.sh", ["resize", "--name", "n"], "unknown command 'resize'"),
    ("tpu.sh", ["create", "--name", "n", "--zone", "z", "--type", "tpu9-8"], "no default --runtime"),
    ("gpu.sh", ["--gin_file", "a.gin"], "missing required option --workdir"),
    ("gpu.sh", ["--gin_file", "a.gin", "--workdir", "w", "--gpus", "two"], "--gpus must be a count"),
    ("gpu.sh", ["--gin_file", "a.gin", "--workdir", "w", "--mem_fraction", "95"], "--mem_fraction must be"),
    ("gpu.sh", ["--gin_file", "a.gin", "--workdir", "w", "--process_id", "0"],
     "missing required option --coordinator"),
    ("slurm.sh", ["--gin_file", "a.gin", "--workdir", "w"], "missing required option --nodes"),
    ("worker.sh", ["--extra", "rocm", "--", "true"], "--extra must be tpu, cuda or none"),
    ("worker.sh", ["--dry-run"], "missing COMMAND after --"),
])
def test_missing_or_bad_argument_fails_early(repo, env, script, args, message):
    result = launch(repo, env, script, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert calls(env) == []


@pytest.mark.parametrize("queued", [False, True])
def test_tpu_create_and_delete(repo, env, queued):
    flags = ["--name", "rstar", "--zone", "us-east5-a", "--project", "p"]
    flags += ["--queued"] if queued else []
    assert launch(repo, env, "tpu.sh", "create", *flags, "--type", "v5p-64", "--spot").returncode == 0
    assert launch(repo, env, "tpu.sh", "delete", *flags).returncode == 0
    where = ["--zone=us-east5-a", "--project=p"]
    if queued:
        assert calls(env) == [
            ["gcloud", "compute", "tpus", "queued-resources", "create", "rstar", "--node-id=rstar",
             *where, "--accelerator-type=v5p-64", "--runtime-version=v2-alpha-tpuv5", "--spot"],
            ["gcloud", "compute", "tpus", "queued-resources", "delete", "rstar", *where,
             "--force", "--quiet"]]
    else:
        assert calls(env) == [
            ["gcloud", "compute", "tpus", "tpu-vm", "create", "rstar", *where,
             "--accelerator-type=v5p-64", "--version=v2-alpha-tpuv5", "--spot"],
            ["gcloud", "compute", "tpus", "tpu-vm", "delete", "rstar", *where, "--quiet"]]


def test_tpu_run_copies_code_and_starts_all_workers(repo, env, tmp_path):
    result = launch(repo, env, "tpu.sh", "run", "--name", "rstar", "--zone", "z",
                    "--gin_file", "experiments/paper.gin", "--workdir", "gs://bucket/run",
                    "--", "--gin_bindings", "RoundConfig.rollouts = 16")
    assert result.returncode == 0, result.stderr
    scp, ssh = calls(env)
    tarball = tmp_path / "rstar-jax-rstar.tar.gz"
    assert scp == ["gcloud", "compute", "tpus", "tpu-vm", "scp", str(tarball),
                   "rstar:rstar-jax.tar.gz", "--worker=all", "--zone=z"]
    with tarfile.open(tarball) as tar:
        assert {"setup.py", "rstar_jax/__init__.py", "launch/worker.sh",
                "experiments/paper.gin"} <= set(tar.getnames())
    assert ssh[:7] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "rstar", "--worker=all"]
    remote = ssh[-1].removeprefix("--command=")
    # The part that runs on each worker: worker.sh (venv on first use) wrapping rstar-jax.
    # The bucket is mounted on every worker, so rstar-jax sees the gs:// workdir as a folder.
    words = shlex.split(remote[remote.index("setsid"):remote.index(">>")])
    assert words == ["setsid", "nohup", "bash", "launch/worker.sh", "--extra", "tpu", "--python",
                     "python3.11", "--install_python", "--gcs_bucket", "bucket", "--gcs_dir",
                     "/tmp/gcs/bucket", "--", "env", "RSTAR_JAX_DISTRIBUTED=1", "rstar-jax", "evolve",
                     "--workdir", "/tmp/gcs/bucket/run",
                     "--gin_file", "experiments/paper.gin", "--gin_bindings", "RoundConfig.rollouts = 16"]
    assert "already running" in remote and "~/rstar-jax.pid" in remote


def test_tpu_dry_run_prints_exact_commands_and_runs_nothing(repo, env):
    args = ["run", "--name", "rstar", "--zone", "z", "--gin_file", "paper", "--workdir", "gs://b/r"]
    dry = launch(repo, env, "tpu.sh", *args, "--dry-run")
    assert dry.returncode == 0 and calls(env) == []
    assert launch(repo, env, "tpu.sh", *args).returncode == 0
    assert printed(dry.stdout)[1:] == calls(env)  # [0] is the local tar


def test_tpu_logs_and_stop(repo, env):
    assert launch(repo, env, "tpu.sh", "logs", "--name", "n", "--zone", "z", "--worker", "3").returncode == 0
    assert launch(repo, env, "tpu.sh", "stop", "--name", "n", "--zone", "z").returncode == 0
    logs, stop = calls(env)
    assert logs[5:] == ["n", "--worker=3", "--zone=z", "--command=tail -n 200 -F ~/rstar-jax.log"]
    assert stop[5:8] == ["n", "--worker=all", "--zone=z"] and "kill -TERM" in stop[8]


def test_gpu_multihost_dry_run(repo, env):
    result = launch(repo, env, "gpu.sh", "--gin_file", "paper", "--workdir", "/nfs/w", "--gpus", "4",
                    "--coordinator", "host0:8476", "--num_processes", "2", "--process_id", "1",
                    "--dry-run", "--", "--gin_bindings", "x = 1")
    assert result.returncode == 0, result.stderr
    assert printed(result.stdout) == [
        ["export", "CUDA_VISIBLE_DEVICES=0,1,2,3"],
        ["export", "XLA_PYTHON_CLIENT_MEM_FRACTION=0.92"],
        ["export", "JAX_COORDINATOR_ADDRESS=host0:8476"],
        ["export", "JAX_NUM_PROCESSES=2"],
        ["export", "JAX_PROCESS_ID=1"],
        [str(repo / "launch" / "worker.sh"), "--extra", "cuda", "--venv", env["HOME"] + "/rstar-jax-venv",
         "--python", "python3", "--", "rstar-jax", "evolve", "--workdir", "/nfs/w", "--gin_file",
         "paper", "--gin_bindings", "x = 1"]]
    assert calls(env) == []


def test_slurm_srun(repo, env):
    result = launch(repo, env, "slurm.sh", "--nodes", "2", "--gin_file", "paper", "--workdir", "/nfs/w",
                    "--partition", "gpu", "--time", "3-00:00:00", "--", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert calls(env) == [[
        "srun", "--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=8", "--partition=gpu",
        "--time=3-00:00:00", str(repo / "launch" / "gpu.sh"), "--cmd", "evolve", "--workdir",
        "/nfs/w", "--venv", env["HOME"] + "/rstar-jax-venv", "--gin_file", "paper", "--", "--seed", "1"]]


def test_worker_installs_once_then_reuses_the_venv(repo, env, tmp_path):
    venv = tmp_path / "venv"
    args = ["--venv", str(venv), "--python", "fakepython", "--extra", "tpu", "--", "env"]
    first = launch(repo, env, "worker.sh", *args)
    assert first.returncode == 0, first.stderr
    assert [c for c in calls(env) if c[0] != "fakepython" or c[1] == "-m"] == [
        ["fakepython", "-m", "venv", str(venv)],
        ["pip", "install", "-q", "--upgrade", "pip"],
        ["pip", "install", "-q", "-e", ".[tpu]"]]
    assert f"VIRTUAL_ENV={venv}" in first.stdout and f"PATH={venv}/bin:" in first.stdout
    stamp = (venv / ".rstar-jax-install").read_text().split()
    assert stamp == [hashlib.sha256(b"# setup\n").hexdigest(), ".[tpu]"]
    Path(env["FAKE_LOG"]).unlink()
    second = launch(repo, env, "worker.sh", *args)
    assert second.returncode == 0 and calls(env) == []  # nothing reinstalled
    (repo / "setup.py").write_text("# setup, new dependency\n")
    assert launch(repo, env, "worker.sh", *args).returncode == 0
    assert [c[1:] for c in calls(env)] == [["install", "-q", "--upgrade", "pip"],
                                           ["install", "-q", "-e", ".[tpu]"]]


def test_worker_can_install_its_python(repo, env, tmp_path):
    result = launch(repo, env, "worker.sh", "--venv", str(tmp_path / "v"), "--python", "python3.99",
                    "--install_python", "--dry-run", "--", "true")
    assert result.returncode == 0, result.stderr
    assert printed(result.stdout)[:3] == [
        ["sudo", "apt-get", "update", "-q"],
        ["sudo", "apt-get", "install", "-y", "-q", "python3.99", "python3.99-venv"],
        ["python3.99", "-m", "venv", str(tmp_path / "v")]]
    missing = launch(repo, env, "worker.sh", "--python", "python3.99", "--", "true")
    assert missing.returncode == 2 and "python3.99 not found" in missing.stderr


def test_worker_mounts_the_bucket_installing_gcsfuse_if_missing(repo, env, tmp_path):
    mount = tmp_path / "gcs" / "bkt"
    venv = tmp_path / "venv"
    args = ["--venv", str(venv), "--python", "fakepython", "--gcs_bucket", "bkt", "--gcs_dir", str(mount)]
    assert launch(repo, env, "worker.sh", *args, "--", "true").returncode == 0
    # Directory renames (atomic writes, orbax's temporary dirs, search passes) need the rename limit.
    assert ["gcsfuse", "--implicit-dirs", "--rename-dir-limit=200000", "bkt", str(mount)] in calls(env)
    assert mount.is_dir()
    Path(env["FAKE_LOG"]).unlink()
    (tmp_path / "bin" / "gcsfuse").unlink()  # not installed yet: worker.sh installs it first
    if shutil.which("gcsfuse", path=env["PATH"]):
        pytest.skip("gcsfuse is installed on this machine, so the install step cannot be seen")
    dry = launch(repo, env, "worker.sh", *args, "--dry-run", "--", "true")
    assert dry.returncode == 0, dry.stderr
    lines = printed(dry.stdout)
    assert lines[0][:3] == ["sudo", "curl", "-fsSL"]
    assert ["sudo", "apt-get", "install", "-y", "-q", "gcsfuse"] in lines
    assert lines[lines.index(["sudo", "apt-get", "install", "-y", "-q", "gcsfuse"]) + 2] == [
        "gcsfuse", "--implicit-dirs", "--rename-dir-limit=200000", "bkt", str(mount)]

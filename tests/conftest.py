"""Session-wide setup: one persistent XLA compilation cache for the whole run; shared fixtures.

The CLI keeps compiled programs in its workdir unless a cache is already configured; without this,
the first in-process CLI test would claim the cache for every later test. Identical programs that
different tests compile (the same tiny models) load from it."""

import os
import pathlib
import subprocess
import sys
import tempfile

import jax
import pytest

jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="rstar_jax_xla_"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

REPO = pathlib.Path(__file__).parents[1]


@pytest.fixture
def run_inspect_notebook(tmp_path, monkeypatch):
    """Runs experiments/notebooks/inspect_tree.ipynb on a search directory; returns its HTML output
    after checking that no cell failed."""
    import nbformat
    from nbclient import NotebookClient

    def run(search_dir: str) -> str:
        monkeypatch.setenv("RSTAR_SEARCH_DIR", search_dir)
        # the kernel imports rstar_jax from this checkout
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        nb = nbformat.read(REPO / "experiments" / "notebooks" / "inspect_tree.ipynb", as_version=4)
        NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
        outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
        assert not [o for o in outputs if o.output_type == "error"]
        return "".join(o.get("data", {}).get("text/html", "") for o in outputs)

    return run


@pytest.fixture
def on_eight_devices(request):
    """Runs a Python script in a fresh process with 8 fake CPU devices (XLA_FLAGS must be set before
    JAX starts, so not in this one), this checkout and the test's folder importable; returns it."""
    here = os.path.dirname(str(request.path))

    def run(script: str, *args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), here, env.get("PYTHONPATH")]))
        return subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True)

    return run

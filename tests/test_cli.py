"""The CLI: gin files, bindings and flags reach a library function; bad input gives one clear line."""

import dataclasses
import os
import subprocess
import sys
import types

import pytest

from rstar_jax import cli
from rstar_jax.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    rate: float = 1.0
    steps: int = 2


def demo(workdir: str, config: DemoConfig = DemoConfig(), name: str = "a", count: int = 1):
    demo.calls.append((workdir, config, name, count))


@pytest.fixture
def demo_command(monkeypatch):
    module = types.ModuleType("rstar_cli_demo")
    module.DemoConfig, module.demo = DemoConfig, demo
    monkeypatch.setattr(DemoConfig, "__module__", module.__name__)  # as if defined there
    demo.calls = []
    monkeypatch.setitem(sys.modules, "rstar_cli_demo", module)
    monkeypatch.setitem(cli.COMMANDS, "demo", "rstar_cli_demo:demo")
    yield demo.calls
    cli.gin.clear_config()


def test_gin_file_bindings_and_flags_reach_the_function(demo_command, tmp_path):
    gin_file = tmp_path / "demo.gin"
    gin_file.write_text(
        "from __gin__ import dynamic_registration\n"
        "import rstar_cli_demo\n"
        "rstar_cli_demo.demo.config = @rstar_cli_demo.DemoConfig()\n"
        "rstar_cli_demo.DemoConfig.rate = 0.5\n")
    workdir = tmp_path / "run"
    rc = cli.main(["demo", "--workdir", str(workdir), "--gin_file", str(gin_file),
                   "--gin_bindings", "rstar_cli_demo.DemoConfig.steps = 7",
                   "--name", "hello world", "--count=3"])
    assert rc == 0
    assert demo_command == [(str(workdir), DemoConfig(rate=0.5, steps=7), "hello world", 3)]
    written = (workdir / "config.gin").read_text()
    assert "rstar_cli_demo.DemoConfig.steps = 7" in written
    assert "rstar_cli_demo.demo.count = 3" in written


def test_no_arguments_runs_the_function_with_its_defaults(demo_command, tmp_path):
    assert cli.main(["demo", "--workdir", str(tmp_path)]) == 0
    assert demo_command == [(str(tmp_path), DemoConfig(), "a", 1)]


@pytest.mark.parametrize("argv, message", [
    (["--bogus", "1"], "doesn't have a parameter named 'bogus'"),
    (["--gin_bindings", "rstar_cli_demo.DemoConfig.nope = 2"], "named 'nope'"),
    (["--gin_file", "no_such_experiment"], "gin file not found: no_such_experiment"),
    (["--count"], "flag --count has no value"),
])
def test_bad_config_is_one_clear_line(demo_command, tmp_path, capsys, argv, message):
    rc = cli.main(["demo", "--workdir", str(tmp_path)] + argv)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3
    assert demo_command == []


def test_unknown_command_lists_known_ones(capsys):
    assert cli.main(["no-such-command"]) == 2
    assert "unknown command 'no-such-command'" in capsys.readouterr().err


def test_library_configs_bind_by_short_name(demo_command, tmp_path):
    rc = cli.main(["demo", "--workdir", str(tmp_path),
                   "--gin_bindings", "rstar_cli_demo.demo.config = @config.ModelConfig()",
                   "--gin_bindings", "config.ModelConfig.hidden_size = 64"])
    assert rc == 0
    assert demo_command[0][1] == ModelConfig(hidden_size=64)
    assert "config.ModelConfig.hidden_size = 64" in (tmp_path / "config.gin").read_text()


def test_a_class_binding_reaches_a_plain_default_without_a_gin_file(demo_command, tmp_path):
    rc = cli.main(["demo", "--workdir", str(tmp_path),
                   "--gin_bindings", "rstar_cli_demo.DemoConfig.steps = 7"])
    assert rc == 0
    assert demo_command[0][1] == DemoConfig(steps=7)


def test_a_binding_that_nothing_builds_is_refused(demo_command, tmp_path, capsys):
    # No gin reference builds a ModelConfig here: the binding would silently change nothing.
    rc = cli.main(["demo", "--workdir", str(tmp_path),
                   "--gin_bindings", "config.ModelConfig.hidden_size = 64"])
    err = capsys.readouterr().err
    assert rc == 2 and "rstar_jax.config.ModelConfig changes nothing" in err
    assert "Traceback" not in err and demo_command == []


def test_a_scoped_binding_reaches_a_reference_under_its_scope(demo_command, tmp_path):
    gin_file = tmp_path / "demo.gin"
    gin_file.write_text("from __gin__ import dynamic_registration\nimport rstar_cli_demo\n"
                        "rstar_cli_demo.demo.config = @outer/inner/rstar_cli_demo.DemoConfig()\n")
    rc = cli.main(["demo", "--workdir", str(tmp_path), "--gin_file", str(gin_file),
                   "--gin_bindings", "outer/rstar_cli_demo.DemoConfig.steps = 7"])
    assert rc == 0 and demo_command[0][1] == DemoConfig(steps=7)
    assert cli.main(["demo", "--workdir", str(tmp_path), "--gin_file", str(gin_file),
                     "--gin_bindings", "other/rstar_cli_demo.DemoConfig.steps = 7"]) == 2


def test_unknown_name_in_a_binding_is_one_clear_line(demo_command, tmp_path, capsys):
    rc = cli.main(["demo", "--workdir", str(tmp_path), "--gin_bindings", "nomodule.X.y = 4"])
    err = capsys.readouterr().err
    assert rc == 2 and "bad config" in err and "Traceback" not in err


@pytest.mark.parametrize("env_cache", [False, True])
def test_compiled_programs_persist_in_the_workdir_unless_jax_is_told_otherwise(tmp_path, env_cache):
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    if env_cache:
        env.update(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "elsewhere"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    program = ("import pathlib, jax, jax.numpy as jnp; from rstar_jax import cli; "
               f"cli.persist_compilations(pathlib.Path({str(tmp_path)!r})); jax.jit(lambda x: x * 2)(jnp.ones(3))")
    subprocess.run([sys.executable, "-c", program], env={**env, "JAX_PLATFORMS": "cpu"}, check=True)
    cache = tmp_path / ("elsewhere" if env_cache else "xla_cache")
    assert cache.is_dir() and any(cache.iterdir())
    assert (tmp_path / "xla_cache").exists() != env_cache



@pytest.mark.parametrize("cores, env, devices", [(6, {}, 4), (1, {}, 1), (16, {}, 4), (6, {"JAX_NUM_CPU_DEVICES": "1"}, 1),
                                                 (6, {"XLA_FLAGS": "--xla_force_host_platform_device_count=3"}, 3)])
def test_commands_get_a_cpu_device_per_core_unless_told_otherwise(cores, env, devices):
    program = ("import os, jax; from rstar_jax import cli; "
               f"os.sched_getaffinity = lambda pid: set(range({cores})); cli.use_every_core(); print(jax.device_count())")
    if cores == 16:  # as on macOS: no affinity, the CPU count
        program = program.replace("os.sched_getaffinity = lambda pid: set(range(16))",
                                  "del os.sched_getaffinity; os.cpu_count = lambda: 16")
    clean = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
    out = subprocess.run([sys.executable, "-c", program], env={**clean, **env, "JAX_PLATFORMS": "cpu"}, check=True,
                         capture_output=True, text=True).stdout
    assert int(out.split()[-1]) == devices


def _demo_gin(tmp_path, *lines: str) -> str:
    gin_file = tmp_path / "demo.gin"
    header = "from __gin__ import dynamic_registration\nimport rstar_cli_demo\nfrom rstar_jax import config\n"
    gin_file.write_text(header + "\n".join(lines) + "\n")
    return str(gin_file)


@pytest.mark.parametrize("lines, message", [
    (["rstar_cli_demo.DemoConfig.rat = 0.5"], "doesn't have a parameter named 'rat'. In file \"{file}\", line 4"),
    (["rstar_cli_demo.DemoConfg.rate = 0.5"], "Couldn't resolve selector rstar_cli_demo.DemoConfg"),
    (["rstar_cli_demo.demo.confg = @rstar_cli_demo.DemoConfig()"], "doesn't have a parameter named 'confg'"),
    # nothing builds a ModelConfig: a binding that would change nothing, named with its file
    (["config.ModelConfig.hidden_size = 64"], "{file}: binding of rstar_jax.config.ModelConfig changes nothing"),
])
def test_a_misspelled_or_unused_binding_in_a_gin_file_is_one_line_naming_the_file(
        demo_command, tmp_path, capsys, lines, message):
    gin_file = _demo_gin(tmp_path, *lines)
    rc = cli.main(["demo", "--workdir", str(tmp_path / "run"), "--gin_file", gin_file])
    err = capsys.readouterr().err
    assert rc == 2 and message.format(file=gin_file) in err, err
    assert len(err.strip().splitlines()) == 1 and demo_command == []


def test_a_gin_file_may_configure_other_commands_and_leave_a_scope_unused(demo_command, tmp_path):
    """As experiments/paper/*.gin do: bind train_sft too, and override a macro that an included
    file's scoped config was bound for."""
    gin_file = _demo_gin(tmp_path, "import rstar_jax.training.sft",
                         "rstar_jax.training.sft.train_sft.config = @sft/config.TrainConfig()",
                         "ppm/config.TrainConfig.learning_rate = 1e-5",
                         "rstar_cli_demo.demo.config = @rstar_cli_demo.DemoConfig()")
    assert cli.main(["demo", "--workdir", str(tmp_path / "run"), "--gin_file", gin_file]) == 0
    assert demo_command == [(str(tmp_path / "run"), DemoConfig(), "a", 1)]


def test_a_malformed_input_file_is_one_line_and_exit_status_1(monkeypatch, tmp_path, capsys):
    """Problem, record and HF files the library refuses: the library's message, no traceback."""
    from rstar_jax.data.problems import load_problem_set
    from rstar_jax.models.hf import check_hf_dir

    bad = tmp_path / "problems.json"
    bad.write_text('[{"question": "Q", "answer": "1"}, {"question": "R"}]')
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "gpt2"}')
    module = types.ModuleType("rstar_cli_inputs")
    module.problems = lambda workdir: load_problem_set(str(bad))
    module.model = lambda workdir: check_hf_dir(tmp_path / "hf")
    monkeypatch.setitem(sys.modules, "rstar_cli_inputs", module)
    for name, message in (("problems", f'{bad}: record 1: missing field "answer"'),
                          ("model", f"{tmp_path / 'hf' / 'config.json'}: model_type 'gpt2' is not supported")):
        monkeypatch.setitem(cli.COMMANDS, name, f"rstar_cli_inputs:{name}")
        assert cli.main([name, "--workdir", str(tmp_path / "run")]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"rstar-jax {name}: {message}"), err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    cli.gin.clear_config()

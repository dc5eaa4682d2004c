"""`rstar-jax <command>`: the one place where gin configs meet the config-free library.

Every command is a plain library function called as `fn(workdir=..., **kwargs)`. Its keyword
arguments come from `--gin_file` (repeatable; also looked up in experiments/), `--gin_bindings`
(repeatable) and plain `--name value` flags, which become bindings of the function's own
parameters. The operative config is written to `<workdir>/config.gin`. A command given no gin
file runs its default one, if it has one (`DEFAULT_GIN_FILES`: `evolve` runs tiny_cpu.gin).

A parameter whose default is its dataclass's plain `Config()` is built by gin, so
`--gin_bindings 'config.EvolveConfig.seed_replay = 200'` reaches it without a gin file. A command
line binding that nothing builds or calls through gin (e.g. of a `TrainConfig` nested in an
`EvolveConfig` default, or of another command's function) would change nothing, and is refused.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import importlib.resources
import inspect
import logging
import os
import sys
from pathlib import Path

import gin

# command -> "module:function"
COMMANDS: dict[str, str] = {
    "plan": "rstar_jax.evolve.plan:plan",
    "evolve": "rstar_jax.evolve.run:evolve",
    "train-sft": "rstar_jax.training.sft:train_sft",
    "train-ppm": "rstar_jax.training.ppm:train_ppm",
    "generate": "rstar_jax.inference.generate:generate",
    "import-hf": "rstar_jax.models.checkpoint:import_hf",
    "export-hf": "rstar_jax.models.checkpoint:export_hf",
    "eval": "rstar_jax.evaluation.run:evaluate",
}

# What a command runs when given no --gin_file: `rstar-jax evolve` is the tiny CPU self-evolution.
DEFAULT_GIN_FILES: dict[str, str] = {"evolve": "tiny_cpu"}

# experiments/ ships as the package rstar_jax.experiments (setup.py), editable install or not.
EXPERIMENTS_DIR = Path(str(importlib.resources.files("rstar_jax.experiments")))
# `include` lines in gin files name other files relative to experiments/ (as t5x does).
gin.add_config_file_search_path(str(EXPERIMENTS_DIR))
# gin's package-resource reader logs an error for every search path an include is not under,
# even when the next path has it; those records say nothing.
logging.getLogger().addFilter(lambda record: not record.getMessage().startswith("Path not found: "))


class CommandLineError(Exception):
    """A mistake on the command line or in a config file; printed as one line, no traceback."""


def resolve_gin_file(name: str) -> Path:
    """Finds a gin file as given, or by name in experiments/ (with or without `.gin`)."""
    for candidate in (Path(name), EXPERIMENTS_DIR / name, EXPERIMENTS_DIR / f"{name}.gin"):
        if candidate.is_file():
            return candidate
    raise CommandLineError(f"gin file not found: {name} (looked in . and {EXPERIMENTS_DIR})")


def gin_files_for(command: str, given: list[str]) -> list[str]:
    """The gin files a command runs with: those given, else its default one (if any)."""
    return given or ([DEFAULT_GIN_FILES[command]] if command in DEFAULT_GIN_FILES else [])


def flag_to_binding(scope: str, name: str, raw: str) -> str:
    """`--name value` -> `scope.name = value`; Python literals stay literals, the rest are strings."""
    try:
        ast.literal_eval(raw)
        value = raw
    except (ValueError, SyntaxError):
        value = repr(raw)
    return f"{scope}.{name} = {value}"


def parse_flags(pairs: list[str]) -> list[tuple[str, str]]:
    """Pairs up leftover `--name value` / `--name=value` tokens."""
    flags, i = [], 0
    while i < len(pairs):
        token = pairs[i]
        if not token.startswith("--") or len(token) == 2:
            raise CommandLineError(f"unexpected argument: {token!r} (flags look like --name value)")
        if "=" in token:
            name, raw = token[2:].split("=", 1)
            i += 1
        elif i + 1 < len(pairs):
            name, raw = token[2:], pairs[i + 1]
            i += 2
        else:
            raise CommandLineError(f"flag {token} has no value")
        flags.append((name.replace("-", "_"), raw))
    return flags


def load_command(command: str):
    if command not in COMMANDS:
        known = ", ".join(sorted(COMMANDS)) or "(none)"
        raise CommandLineError(f"unknown command {command!r}; known commands: {known}")
    module_name, fn_name = COMMANDS[command].split(":")
    return importlib.import_module(module_name), fn_name


def default_config_bindings(scope: str, function) -> list[str]:
    """`scope.param = @module.Config()` for each parameter of `function` whose default equals its
    dataclass's own default, so gin builds it (the same value) and class bindings reach it."""
    lines = []
    for name, param in inspect.signature(function).parameters.items():
        cls = type(param.default)
        if dataclasses.is_dataclass(cls) and param.default == cls():
            module = cls.__module__
            if module == "rstar_jax.config":
                module = "config"  # as the header imports it, so config.gin keeps the short names
            else:
                lines.append(f"import {module}")
            lines.append(f"{scope}.{name} = @{module}.{cls.__qualname__}()")
    return lines


def refuse_unbuilt(command: str | set[str], bound: list[tuple[str, str]], where: str = "") -> None:
    """Raises for a (scope, selector) binding of anything but the command(s) that no gin
    reference builds or calls in that scope (a scope applies to references under it): a binding
    that changes nothing is most often a misspelled scope, or a config no file builds."""
    commands = {command} if isinstance(command, str) else command
    built = [(ref.configurable.selector, {"/".join(ref.scopes[:i]) for i in range(1, len(ref.scopes) + 1)})
             for ref in gin.config.iterate_references(gin.config._CONFIG)]
    for scope, selector in bound:
        if selector in commands:
            continue
        if not any(name == selector and (not scope or scope in scopes) for name, scopes in built):
            name = f"{scope}/{selector}" if scope else selector
            raise CommandLineError(
                f"{where}binding of {name} changes nothing: no gin reference builds it (nested configs "
                "are plain defaults); use a gin file that builds it, as experiments/tiny_cpu.gin "
                "builds every config of evolve")


def _bindings(config: dict) -> dict[tuple[str, str], dict]:
    """Gin's bindings, less macros, as a copy to compare with later."""
    return {key: dict(values) for key, values in config.items() if key[1] != "gin.macro"}


def configure(module_name: str, fn_name: str, gin_files: list[str], bindings: list[str],
              flags: list[tuple[str, str]], function=None) -> None:
    """Parses gin files, then bindings, then flags (later ones win)."""
    scope = f"{module_name}.{fn_name}"
    # `config.X` names the library's dataclasses in bindings without the package path.
    header = (f"from __gin__ import dynamic_registration\nimport {module_name}\n"
              "from rstar_jax import config\n")
    flag_bindings = [flag_to_binding(scope, name, raw) for name, raw in flags]
    defaults = default_config_bindings(scope, function) if function else []
    origins: dict[tuple[str, str], Path] = {}  # a gin file's binding -> the file (includes count as it)
    try:
        gin.parse_config(header + "\n".join(defaults))
        for path in gin_files:
            file = resolve_gin_file(path)
            before = _bindings(gin.config._CONFIG)
            gin.parse_config_file(str(file))
            for key, values in _bindings(gin.config._CONFIG).items():
                if before.get(key) != values:
                    origins.setdefault(key, file)
        before = _bindings(gin.config._CONFIG)
        gin.parse_config(header + "\n".join(bindings + flag_bindings))
    except CommandLineError:
        raise
    except (ValueError, SyntaxError, ImportError, AttributeError, NameError, TypeError) as e:
        raise CommandLineError("bad config: " + " ".join(line.strip() for line in str(e).splitlines())) from None
    # A gin file may configure several commands (experiments/paper/*.gin), and a file may override
    # a macro so that what an included file binds goes unused; so a file's binding is refused only
    # when nothing, in any scope, builds what it binds (e.g. a misspelled configurable).
    commands = {target.replace(":", ".") for target in COMMANDS.values()}
    for (_, selector), file in origins.items():
        refuse_unbuilt(commands, [("", selector)], where=f"{file}: ")
    refuse_unbuilt(scope, [key for key, values in _bindings(gin.config._CONFIG).items() if before.get(key) != values])


def write_config(workdir: Path, text: str) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = workdir / f"config.gin.tmp{os.getpid()}"  # each process of a multi-host run writes its own
    tmp.write_text(text)
    os.replace(tmp, workdir / "config.gin")


MAX_CPU_DEVICES = 4  # the shipped CPU experiments' batch sizes split evenly over up to 4 devices


def use_every_core() -> None:
    """XLA runs a CPU device's program on about one core (docs/performance.md): JAX gets one CPU
    device per core this process may use (a power of two, at most MAX_CPU_DEVICES, so batches
    split evenly), and the stages split their work over them data parallel, as over accelerators.
    JAX_NUM_CPU_DEVICES, or XLA_FLAGS forcing a device count, decide instead; a process that
    already started JAX (a test calling `main`) keeps its devices."""
    if "JAX_NUM_CPU_DEVICES" in os.environ or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    import jax

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # macOS: no affinity
    cores = min(usable, MAX_CPU_DEVICES)
    try:
        jax.config.update("jax_num_cpu_devices", 1 << (cores.bit_length() - 1))
    except RuntimeError:  # JAX already started its backends
        pass


def persist_compilations(workdir: Path) -> None:
    """Keeps every compiled XLA program in `<workdir>/xla_cache` (unless JAX_COMPILATION_CACHE_DIR
    names another place): a resumed run, and each evolve stage after the first, loads the sampler,
    scorer and train steps instead of compiling them again."""
    import jax

    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(workdir / "xla_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # small ones add up


# Errors an input file causes, raised by the library with a message that names the file, record
# and field: printed as one line. Named, not imported, so the CLI starts without the model stack.
INPUT_ERRORS = ("rstar_jax.data.problems.ProblemFormatError", "rstar_jax.data.records.RecordFormatError",
                "rstar_jax.models.hf.HFFormatError")


def is_input_error(e: BaseException) -> bool:
    """A missing file, or one of INPUT_ERRORS (gin re-raises them as subclasses)."""
    return isinstance(e, (FileNotFoundError, NotADirectoryError)) or any(
        f"{c.__module__}.{c.__qualname__}" in INPUT_ERRORS for c in type(e).__mro__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rstar-jax", description=__doc__.split("\n\n")[0],
        epilog="commands: " + ", ".join(sorted(COMMANDS)))
    parser.add_argument("command", help="what to run")
    parser.add_argument("--workdir", default=None, help="output folder (default: runs/<command>)")
    parser.add_argument("--gin_file", action="append", default=[], help="gin config (repeatable)")
    parser.add_argument("--gin_bindings", action="append", default=[],
                        help="gin binding, e.g. 'TrainConfig.learning_rate = 1e-4' (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    try:
        module, fn_name = load_command(args.command)
        configure(module.__name__, fn_name, gin_files_for(args.command, args.gin_file), args.gin_bindings,
                  parse_flags(rest), getattr(module, fn_name))
    except CommandLineError as e:
        print(f"rstar-jax {args.command}: {e}", file=sys.stderr)
        return 2
    workdir = Path(args.workdir or Path("runs") / args.command)
    write_config(workdir, gin.config_str())
    use_every_core()
    persist_compilations(workdir)
    function = getattr(module, fn_name)
    try:
        function = gin.get_configurable(function)
    except ValueError:  # nothing bound any of its parameters: gin never registered it
        pass
    try:
        function(workdir=str(workdir))
    except Exception as e:
        if not is_input_error(e):
            raise
        print(f"rstar-jax {args.command}: {str(e).splitlines()[0]}", file=sys.stderr)  # less gin's "In call to"
        return 1
    write_config(workdir, gin.operative_config_str())
    return 0


if __name__ == "__main__":
    sys.exit(main())

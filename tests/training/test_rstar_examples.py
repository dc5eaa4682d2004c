"""rStar's released example records train our policy (through the CLI) and PPM, and the exports load."""

import json
from pathlib import Path

import numpy as np
import pytest

from rstar_jax import cli
from rstar_jax.config import TrainConfig
from rstar_jax.models.hf import load_hf, load_ppm_hf
from rstar_jax.training.ppm import train_ppm

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "rstar_examples"


def _metrics(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # two training runs and two exports: over a minute on 2 busy CPU cores
def test_sft_then_ppm_on_rstar_examples(policy_dir, tmp_path):
    # 8 SFT records: 2 held out, 6 in one batch of 4 per epoch; sequences fit one 256-token bucket.
    sft_dir = tmp_path / "sft"
    code = cli.main([
        "train-sft", "--workdir", str(sft_dir), "--base_model", str(policy_dir),
        "--train_file", str(EXAMPLES / "sft_data_examples.json"),
        "--gin_bindings", "rstar_jax.training.sft.train_sft.config = @rstar_jax.config.TrainConfig()",
        "--gin_bindings", "rstar_jax.config.TrainConfig.learning_rate = 1e-3",
        "--gin_bindings", "rstar_jax.config.TrainConfig.batch_size = 4",
        "--gin_bindings", "rstar_jax.config.TrainConfig.max_length = 256",
        "--gin_bindings", "rstar_jax.config.TrainConfig.min_bucket_length = 256",
        "--gin_bindings", "rstar_jax.config.TrainConfig.compute_dtype = 'float32'",
        "--gin_bindings", "rstar_jax.config.TrainConfig.eval_fraction = 0.25",
        "--gin_bindings", "rstar_jax.config.TrainConfig.log_every = 1",
    ])
    assert code == 0
    metrics = _metrics(sft_dir)
    assert [m["step"] for m in metrics] == [1, 2] and np.isfinite(metrics[-1]["eval/loss"])
    policy, _ = load_hf(sft_dir / "hf")
    assert policy.config.vocab_size >= 512

    # 5 pairs; one's prompt alone fills the 256 tokens (nothing left to compare: dropped); of the
    # other 4, 1 is held out and 3 train in batches of 2, one batch an epoch.
    ppm_dir = tmp_path / "ppm"
    config = TrainConfig(learning_rate=1e-3, batch_size=2, max_length=256, min_bucket_length=256,
                         compute_dtype="float32", eval_fraction=0.2, log_every=1)
    out = train_ppm(str(ppm_dir), policy_model=str(sft_dir / "hf"), train_file=str(EXAMPLES / "rm_data_examples.json"),
                    config=config)
    metrics = _metrics(ppm_dir)
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(0.0 <= m["accuracy"] <= 1.0 for m in metrics) and "eval/accuracy" in metrics[-1]
    ppm, _ = load_ppm_hf(out)
    exported = np.asarray(ppm.value_head.linear.kernel.get_value())
    assert np.abs(exported).max() > 1e-4  # trained away from the ~1e-6 initialisation

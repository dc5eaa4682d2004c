"""The PPM: score at the last real token, rStar's tiny head init, dropout, HF export layout."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import load_file

from rstar_jax.config import ModelConfig, PPMConfig
from rstar_jax.models.hf import VALUE_HEAD_FILE, load_ppm_hf, save_ppm_hf
from rstar_jax.models.ppm import ProcessRewardModel, search_value

CONFIG = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                     num_attention_heads=4, num_key_value_heads=2)
TOKENS = np.random.default_rng(0).integers(0, 64, (1, 6)).astype(np.int32)


@nnx.jit(static_argnames="deterministic")
def score(ppm, tokens, positions, mask, deterministic=True):
    return ppm(tokens, positions, mask, deterministic=deterministic)


def _padded(left: bool):
    """The same 6 tokens padded to 9, on the left or the right."""
    pad = np.zeros((1, 3), np.int32)
    tokens = np.concatenate([pad, TOKENS] if left else [TOKENS, pad], axis=1)
    mask = np.concatenate([pad, np.ones_like(TOKENS)] if left else [np.ones_like(TOKENS), pad], 1)
    return tokens, np.maximum(mask.cumsum(1) - 1, 0), mask.astype(bool)


@pytest.fixture(scope="module")
def ppm():
    model = ProcessRewardModel(CONFIG, rngs=nnx.Rngs(0))
    # A visible head so that scores differ between tokens (the real init is ~0).
    model.value_head.linear.kernel.set_value(jnp.linspace(-1, 1, 32)[:, None])
    return model


def test_initial_scores_are_about_zero():
    fresh = ProcessRewardModel(CONFIG, rngs=nnx.Rngs(1))
    raw = score(fresh, *_padded(left=False))
    assert raw.shape == (1,) and abs(float(raw[0])) < 1e-4


def test_score_is_read_at_last_real_token_left_or_right(ppm):
    right, left = score(ppm, *_padded(left=False)), score(ppm, *_padded(left=True))
    unpadded = score(ppm, TOKENS, np.arange(6)[None], np.ones((1, 6), bool))
    np.testing.assert_allclose(right, unpadded, atol=1e-5)
    np.testing.assert_allclose(left, unpadded, atol=1e-5)
    shorter = score(ppm, TOKENS[:, :5], np.arange(5)[None], np.ones((1, 5), bool))
    assert abs(float(shorter[0] - unpadded[0])) > 1e-4


def test_branches_packed_after_a_prompt_score_as_each_alone(ppm):
    """prompt + a + b in one padded row, b seeing the prompt and itself only, scores a and b as
    the rows prompt + a and prompt + b do."""
    prompt, a, b = TOKENS[0, :3], TOKENS[0, 3:5], TOKENS[0, 5:] + 1
    tokens = np.zeros((1, 9), np.int32)
    tokens[0, :6] = np.concatenate([prompt, a, b])
    positions = np.zeros((1, 9), np.int32)
    positions[0, :6] = [0, 1, 2, 3, 4, 3]
    branches = np.zeros((1, 9), np.int32)
    branches[0, 3:6] = [1, 1, 2]
    mask = np.arange(9)[None] < 6
    packed = nnx.jit(lambda m, *args: m.score_branches(*args))(ppm, tokens, positions, mask, branches,
                                                            np.array([[4, 5]], np.int32))
    alone = [score(ppm, ids[None], np.arange(len(ids))[None], np.ones((1, len(ids)), bool))[0]
             for ids in (np.concatenate([prompt, a]), np.concatenate([prompt, b]))]
    np.testing.assert_allclose(packed[0], alone, atol=1e-5)
    unmasked = nnx.jit(lambda m, *args: m.score_branches(*args))(ppm, tokens, positions, mask, 0 * branches,
                                                              np.array([[4, 5]], np.int32))
    assert abs(float(unmasked[0, 1] - alone[1])) > 1e-4  # without branches, b would see a


def test_dropout_only_when_not_deterministic(ppm):
    tokens, positions, mask = _padded(left=False)
    train = score(ppm, tokens, positions, mask, deterministic=False)
    assert not np.allclose(train, score(ppm, tokens, positions, mask))


def test_search_value_is_tanh_of_scaled_raw():
    np.testing.assert_allclose(search_value(np.array([0.0, 5.0, -50.0]), 5.0),
                               np.tanh([0.0, 1.0, -10.0]), rtol=1e-6)


def test_hf_export_round_trip(ppm, spm_dir, tmp_path):
    _, tokenizer = spm_dir
    save_ppm_hf(ppm, tokenizer, tmp_path / "ppm")
    head = load_file(str(tmp_path / "ppm" / VALUE_HEAD_FILE))
    assert head["summary.weight"].shape == (1, 32) and head["summary.bias"].shape == (1,)
    loaded, _ = load_ppm_hf(tmp_path / "ppm", ppm_config=PPMConfig(dropout=0.2))
    assert loaded.value_head.dropout.rate == 0.2
    np.testing.assert_allclose(score(loaded, *_padded(left=True)),
                               score(ppm, *_padded(left=True)), atol=1e-6)


def test_original_value_head_bin_loads(ppm, spm_dir, tmp_path):
    """rStar's PPM directories carry the head as torch `value_head.bin` with `v_head.` keys."""
    _, tokenizer = spm_dir
    save_ppm_hf(ppm, tokenizer, tmp_path / "ppm")
    head = tmp_path / "ppm" / VALUE_HEAD_FILE
    torch.save({f"v_head.{k}": torch.from_numpy(v) for k, v in load_file(str(head)).items()},
               tmp_path / "ppm" / "value_head.bin")
    head.unlink()
    loaded, _ = load_ppm_hf(tmp_path / "ppm")
    np.testing.assert_allclose(score(loaded, *_padded(left=False)),
                               score(ppm, *_padded(left=False)), atol=1e-6)


def _head_per_token(ppm, ids):
    """The value head at every position of the row `ids` [T]."""
    h, _ = ppm.backbone.hidden_states(jnp.asarray(ids)[None], jnp.arange(len(ids))[None],
                                      attention_mask_bt=jnp.ones((1, len(ids)), bool))
    linear = ppm.value_head.linear
    return np.asarray(h[0] @ linear.kernel.get_value()[:, 0] + linear.bias.get_value()[0])


@pytest.fixture(scope="module")
def step_mean_ppm():
    model = ProcessRewardModel(CONFIG, PPMConfig(readout="step_mean"), rngs=nnx.Rngs(0))
    model.value_head.linear.kernel.set_value(jnp.linspace(-1, 1, 32)[:, None])
    return model


def test_step_mean_readout_averages_the_head_over_the_step(step_mean_ppm):
    """Packed steps score the head's mean over their own tokens, as a row prompt + step with the
    step marked does; an empty step reads the prompt's last token."""
    prompt, a, b = TOKENS[0, :3], TOKENS[0, 3:5], TOKENS[0, 5:] + 1
    with_a, with_b = (_head_per_token(step_mean_ppm, np.concatenate([prompt, s])) for s in (a, b))
    branches = nnx.jit(lambda m, *args: m.score_branches(*args))
    packed = branches(step_mean_ppm, np.concatenate([prompt, a, b])[None], np.array([[0, 1, 2, 3, 4, 3]]),
                      np.ones((1, 6), bool), np.array([[0, 0, 0, 1, 1, 2]]), np.array([[4, 5]], np.int32))
    np.testing.assert_allclose(packed[0], [with_a[3:].mean(), with_b[3]], atol=1e-5)
    row = np.concatenate([prompt, a])[None]
    marked = nnx.jit(lambda m, *args: m(*args))(step_mean_ppm, row, np.arange(5)[None], np.ones((1, 5), bool),
                                                 np.array([[0, 0, 0, 1, 1]], bool))
    np.testing.assert_allclose(marked, [with_a[3:].mean()], atol=1e-5)
    empty = branches(step_mean_ppm, np.concatenate([prompt, b])[None], np.array([[0, 1, 2, 3]]),
                     np.ones((1, 4), bool), np.array([[0, 0, 0, 2]]), np.array([[2, 3]], np.int32))
    np.testing.assert_allclose(empty[0], [with_b[2], with_b[3]], atol=1e-5)
    with pytest.raises(ValueError, match="step_bt"):
        step_mean_ppm(row, np.arange(5)[None], np.ones((1, 5), bool))
    with pytest.raises(ValueError, match="readout"):
        PPMConfig(readout="first")


def test_the_readout_is_saved_with_the_ppm_and_kept(step_mean_ppm, spm_dir, tmp_path):
    _, tokenizer = spm_dir
    save_ppm_hf(step_mean_ppm, tokenizer, tmp_path / "ppm")
    loaded, _ = load_ppm_hf(tmp_path / "ppm")
    assert loaded.ppm_config.readout == "step_mean"
    with pytest.raises(ValueError, match="readout 'step_mean', asked to read 'last'"):
        load_ppm_hf(tmp_path / "ppm", ppm_config=PPMConfig(dropout=0.2))

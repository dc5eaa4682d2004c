"""HF checkpoint directories <-> NNX models: the exchange format between pipeline stages.

A directory holds config.json, model.safetensors (or shards + model.safetensors.index.json, or
torch pytorch_model*.bin), generation_config.json and the tokenizer files; it loads in
`transformers.AutoModelForCausalLM.from_pretrained`. A PPM is the backbone directory plus
`value_head.safetensors` (the layout rStar's reward engine reads, in safetensors).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy
import transformers
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from rstar_jax.config import ModelConfig, PPMConfig, RopeScaling
from rstar_jax.models.decoder import Decoder
from rstar_jax.models.files import write_dir_atomically
from rstar_jax.models.ppm import ProcessRewardModel
from rstar_jax.models.tokenizer import load_tokenizer
from rstar_jax.parallel.rules import DECODE_RULES, Rules
from rstar_jax.parallel.sharding import state_shardings

log = logging.getLogger(__name__)

VALUE_HEAD_FILE = "value_head.safetensors"
_VALUE_HEAD_KEYS = ("summary.weight", "summary.bias")  # rStar's ValueHead.summary (torch Linear)


class HFFormatError(ValueError):
    """An HF model directory we cannot load; the message names the file and the key or tensor."""


# --- config.json ----------------------------------------------------------------------------

def config_from_hf(hf: transformers.PretrainedConfig, *, dtype: str = "float32",
                   param_dtype: str | None = None) -> ModelConfig:
    """Our ModelConfig for an HF Qwen2 / Llama config (transformers normalises legacy rope keys)."""
    where = os.path.join(hf.name_or_path, "config.json") if hf.name_or_path else "config.json (in memory)"
    if hf.model_type not in ("qwen2", "llama"):
        raise HFFormatError(f"{where}: model_type {hf.model_type!r} is not supported (qwen2, llama)")
    if hf.hidden_act != "silu" or getattr(hf, "mlp_bias", False):
        raise HFFormatError(f"{where}: only hidden_act='silu' without MLP bias is supported")
    if getattr(hf, "use_sliding_window", False):
        raise HFFormatError(f"{where}: sliding-window attention is not supported")
    rope = dict(hf.rope_parameters)
    rope_theta = rope.pop("rope_theta")
    return ModelConfig(
        vocab_size=hf.vocab_size,
        hidden_size=hf.hidden_size,
        intermediate_size=hf.intermediate_size,
        num_hidden_layers=hf.num_hidden_layers,
        num_attention_heads=hf.num_attention_heads,
        num_key_value_heads=hf.num_key_value_heads,
        head_dim=getattr(hf, "head_dim", None),
        rms_norm_eps=hf.rms_norm_eps,
        rope_theta=rope_theta,
        rope_scaling=_rope_scaling(rope, where),
        max_position_embeddings=hf.max_position_embeddings,
        initializer_range=hf.initializer_range,
        # HF Qwen2 always has q/k/v biases; Llama's are optional (and then include o_proj).
        attention_bias=hf.model_type == "qwen2" or hf.attention_bias,
        tie_word_embeddings=hf.tie_word_embeddings,
        model_type=hf.model_type,
        bos_token_id=hf.bos_token_id,
        eos_token_id=hf.eos_token_id,
        pad_token_id=hf.pad_token_id,
        dtype=dtype,
        param_dtype=param_dtype or dtype,
    )


def _rope_scaling(rope: dict, where: str) -> RopeScaling | None:
    """HF's rope parameters as our hashable `RopeScaling` (None for plain RoPE)."""
    try:
        return RopeScaling.from_hf(rope)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


def _hf_eos(config: ModelConfig) -> int | list[int] | None:
    """HF lists several end-of-sequence ids; ModelConfig keeps them as a (hashable) tuple."""
    eos = config.eos_token_id
    return list(eos) if isinstance(eos, tuple) else eos


def config_to_hf(config: ModelConfig) -> transformers.PretrainedConfig:
    """The transformers config of our ModelConfig.

    Qwen2 without q/k/v bias has no HF Qwen2 equivalent; it is exactly a bias-free Llama, so it is
    exported as one.
    """
    is_qwen2 = config.model_type == "qwen2" and config.attention_bias
    common = dict(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.resolved_head_dim,
        rms_norm_eps=config.rms_norm_eps,
        rope_parameters={"rope_type": "default", **(config.rope_scaling.to_hf() if config.rope_scaling else {}),
                         "rope_theta": config.rope_theta},
        max_position_embeddings=config.max_position_embeddings,
        initializer_range=config.initializer_range,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=config.bos_token_id,
        eos_token_id=_hf_eos(config),
        pad_token_id=config.pad_token_id,
        dtype=config.param_dtype,
    )
    if is_qwen2:
        return transformers.Qwen2Config(architectures=["Qwen2ForCausalLM"], **common)
    return transformers.LlamaConfig(architectures=["LlamaForCausalLM"],
                                    attention_bias=config.attention_bias, **common)


# --- parameter names ------------------------------------------------------------------------

def _param_specs(config: ModelConfig) -> Iterator[tuple[str, tuple, str]]:
    """(HF tensor name, our parameter path, layout) for every parameter of the Decoder.

    Layouts: 'copy' (same array), 'linear' (torch [out, in] = our kernel.T), 'in_heads'
    (torch [H*Dh, D] <-> [D, H, Dh]), 'out_heads' (torch [D, H*Dh] <-> [H, Dh, D]),
    'head_bias' ([H*Dh] <-> [H, Dh]).
    """
    yield "model.embed_tokens.weight", ("embed_tokens", "embedding"), "copy"
    for i in range(config.num_hidden_layers):
        hf, ours = f"model.layers.{i}", ("layers", i)
        for name in ("q_proj", "k_proj", "v_proj"):
            yield f"{hf}.self_attn.{name}.weight", (*ours, "self_attn", name, "kernel"), "in_heads"
            if config.attention_bias:
                yield f"{hf}.self_attn.{name}.bias", (*ours, "self_attn", name, "bias"), "head_bias"
        yield f"{hf}.self_attn.o_proj.weight", (*ours, "self_attn", "o_proj", "kernel"), "out_heads"
        if config.attention_bias and config.model_type == "llama":
            yield f"{hf}.self_attn.o_proj.bias", (*ours, "self_attn", "o_proj", "bias"), "copy"
        for name in ("gate_proj", "up_proj", "down_proj"):
            yield f"{hf}.mlp.{name}.weight", (*ours, "mlp", name, "kernel"), "linear"
        for name in ("input_layernorm", "post_attention_layernorm"):
            yield f"{hf}.{name}.weight", (*ours, name, "scale"), "copy"
    yield "model.norm.weight", ("norm", "scale"), "copy"
    if not config.tie_word_embeddings:
        yield "lm_head.weight", ("lm_head", "kernel"), "linear"


def _to_ours(layout: str, w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if layout in ("linear", "in_heads", "out_heads"):
        w = w.T
    return w.reshape(shape)


def _to_hf(layout: str, a: np.ndarray) -> np.ndarray:
    if layout == "in_heads":
        return a.reshape(a.shape[0], -1).T
    if layout == "out_heads":
        return a.reshape(-1, a.shape[-1]).T
    if layout == "linear":
        return a.T
    return a.reshape(-1) if layout == "head_bias" else a


# --- tensor files ---------------------------------------------------------------------------

def _weight_files(path: Path) -> list[Path]:
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (path / index).exists():
            weight_map = json.loads((path / index).read_text())["weight_map"]
            return [path / f for f in sorted(set(weight_map.values()))]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (path / single).exists():
            return [path / single]
    raise FileNotFoundError(f"{path}: no model.safetensors, model.safetensors.index.json or "
                            "pytorch_model.bin")


def _iter_tensors(files: list[Path]) -> Iterator[tuple[str, np.ndarray]]:
    """(name, host array) of every tensor, one at a time (torch files: one file at a time)."""
    for file in files:
        if not file.exists():
            raise FileNotFoundError(f"{file}: weight file not found")
        if file.suffix == ".bin":
            import torch  # optional: only legacy torch checkpoints need it

            for name, value in torch.load(file, map_location="cpu", weights_only=True).items():
                yield name, value.float().numpy()
            continue
        # framework="flax" reads bf16 (numpy cannot); this process's CPU device keeps it off accelerators.
        with jax.default_device(jax.local_devices(backend="cpu")[0]), \
                safetensors.safe_open(str(file), framework="flax") as f:
            for name in f.keys():
                yield name, np.asarray(f.get_tensor(name))


def _to_host(x: jax.Array) -> np.ndarray:
    """A parameter as one host array, gathering shards from other hosts when needed."""
    if not x.is_fully_addressable:
        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(jax.device_get(x))


# --- models ---------------------------------------------------------------------------------

def _at(state: nnx.State, path: tuple) -> nnx.Variable:
    return functools.reduce(lambda node, key: node[key], path, state)


def _fill(abstract: Decoder, files: list[Path], source: Path, mesh: Mesh | None,
          rules: Rules) -> Decoder:
    """Streams the tensors of `files` into `abstract` (from nnx.eval_shape), sharded when a mesh
    is given; tensors are converted and placed one at a time, so peak host memory stays small."""
    graphdef, state = nnx.split(abstract)
    shardings = state_shardings(state, mesh, rules) if mesh is not None else None
    specs = {hf_name: (path, layout) for hf_name, path, layout in _param_specs(abstract.config)}
    unused = []
    for name, w in _iter_tensors(files):
        if name not in specs:
            unused.append(name)
            continue
        path, layout = specs.pop(name)
        variable = _at(state, path)
        try:
            w = _to_ours(layout, w, variable.shape).astype(variable.dtype)
        except ValueError:
            raise HFFormatError(f"{source}: tensor {name!r} has shape {tuple(w.shape)}, which does not fit "
                                f"config.json ({_hf_shape(layout, variable.shape)} expected)") from None
        target = None if shardings is None else _at(shardings, path).get_value()
        variable.set_value(jax.device_put(w, target))
    if specs:
        more = f" (and {len(specs) - 1} more that config.json implies)" if len(specs) > 1 else ""
        raise HFFormatError(f"{source}: tensor {next(iter(specs))!r} is missing{more}")
    # Tied checkpoints may still store lm_head.weight; older ones store rotary inv_freq buffers.
    unused = [k for k in unused if k != "lm_head.weight" and "rotary_emb" not in k]
    if unused:
        log.warning("%s: ignored %d unexpected tensors, e.g. %s", source, len(unused), unused[:3])
    return nnx.merge(graphdef, state)


def read_config(path: str | os.PathLike, *, dtype: str = "float32", param_dtype: str | None = None) -> ModelConfig:
    """The ModelConfig of an HF directory's config.json; one clear error when it cannot be one."""
    file = Path(path) / "config.json"
    if not file.exists():
        raise FileNotFoundError(f"{file}: not found (expected an HF model directory)")
    try:
        hf = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except (ValueError, OSError, KeyError, TypeError) as e:  # bad JSON, no or unknown model_type
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HFFormatError(f"{file}: transformers cannot read it ({first})") from None
    return config_from_hf(hf, dtype=dtype, param_dtype=param_dtype)


def check_hf_dir(path: str | os.PathLike) -> ModelConfig:
    """Checks an HF model directory without loading its weights, so a run fails before its first
    stage rather than deep inside one: config.json describes a supported model, and (safetensors
    files, from their headers) every tensor it implies is there with its shape."""
    path = Path(path)
    config = read_config(path)
    files = _weight_files(path)
    for file in files:
        if not file.exists():
            raise FileNotFoundError(f"{file}: weight file not found")
    if any(f.suffix != ".safetensors" for f in files):
        return config  # torch files must be loaded to be listed; load_decoder checks them
    shapes = {}
    for file in files:
        try:
            with safetensors.safe_open(str(file), framework="numpy") as f:
                shapes.update((name, tuple(f.get_slice(name).get_shape())) for name in f.keys())
        except (OSError, safetensors.SafetensorError) as e:
            raise HFFormatError(f"{file}: not a safetensors file ({e})") from None
    with nnx.use_eager_sharding(False):
        state = nnx.state(nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0))), nnx.Param)
    for name, at, layout in _param_specs(config):
        if name not in shapes:
            raise HFFormatError(f"{path}: tensor {name!r} is missing")
        want = _hf_shape(layout, _at(state, at).shape)
        if shapes[name] != want:
            raise HFFormatError(f"{path}: tensor {name!r} has shape {shapes[name]}, which does not fit "
                                f"config.json ({want} expected)")
    return config


def _hf_shape(layout: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The torch shape of a parameter of ours with `shape` (the inverse of `_to_ours`'s reshape)."""
    if layout == "in_heads":  # [D, H, Dh] -> [H * Dh, D]
        return (math.prod(shape[1:]), shape[0])
    if layout == "out_heads":  # [H, Dh, D] -> [D, H * Dh]
        return (shape[-1], math.prod(shape[:-1]))
    if layout == "linear":
        return tuple(reversed(shape))
    return (math.prod(shape),) if layout == "head_bias" else tuple(shape)


def load_decoder(path: str | os.PathLike, *, mesh: Mesh | None = None,
                 rules: Rules = DECODE_RULES, dtype: str = "float32",
                 param_dtype: str | None = None) -> Decoder:
    """The Decoder of an HF directory (no tokenizer); sharded by `rules` when a mesh is given."""
    path = Path(path)
    config = read_config(path, dtype=dtype, param_dtype=param_dtype)
    with nnx.use_eager_sharding(False):
        abstract = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
    return _fill(abstract, _weight_files(path), path, mesh, rules)


def load_hf(path: str | os.PathLike, *, mesh: Mesh | None = None, rules: Rules = DECODE_RULES,
            dtype: str = "float32", param_dtype: str | None = None,
            ) -> tuple[Decoder, transformers.PreTrainedTokenizerFast]:
    """Loads an HF Qwen2 / Llama directory as (Decoder, tokenizer with rStar's special tokens).

    With a mesh, each parameter is placed on its NamedSharding from `rules` (logical axis names).
    The embeddings are not resized here: call `rstar_jax.models.tokenizer.resize_embeddings`
    when the tokenizer has more tokens than the model.
    """
    path = Path(path)
    model = load_decoder(path, mesh=mesh, rules=rules, dtype=dtype, param_dtype=param_dtype)
    return model, load_tokenizer(path)


def save_hf(model: Decoder, tokenizer: transformers.PreTrainedTokenizerBase | None,
            path: str | os.PathLike) -> None:
    """Writes `model` (and the tokenizer's files) as an HF directory, atomically."""
    _save_dir(model, tokenizer, path, extra_files={}, metadata={})


def _save_dir(model: Decoder, tokenizer: transformers.PreTrainedTokenizerBase | None,
              path: str | os.PathLike, extra_files: dict[str, dict[str, np.ndarray]],
              metadata: dict[str, dict[str, str]]) -> None:
    """The HF directory of `model` plus `extra_files` (name -> tensors, with `metadata[name]` in
    the file's header), swapped in at once.

    Tensors stay on the host (no full copy on an accelerator); process 0 writes.
    """
    config = model.config
    params = nnx.state(model, nnx.Param)
    tensors = {hf_name: _to_hf(layout, _to_host(_at(params, ours).get_value()))
               for hf_name, ours, layout in _param_specs(config)}
    hf_config = config_to_hf(config)

    def write(tmp: Path) -> None:
        hf_config.save_pretrained(tmp)
        transformers.GenerationConfig(bos_token_id=config.bos_token_id,
                                      eos_token_id=_hf_eos(config),
                                      pad_token_id=config.pad_token_id).save_pretrained(tmp)
        for name, contents in {"model.safetensors": tensors, **extra_files}.items():
            safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in contents.items()},
                                        str(tmp / name), metadata={"format": "pt", **metadata.get(name, {})})
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)

    if jax.process_index() == 0:
        write_dir_atomically(path, write)


def load_ppm_hf(path: str | os.PathLike, *, ppm_config: PPMConfig | None = None,
                mesh: Mesh | None = None, rules: Rules = DECODE_RULES, dtype: str = "float32",
                param_dtype: str | None = None, seed: int = 0,
                ) -> tuple[ProcessRewardModel, transformers.PreTrainedTokenizerFast]:
    """Loads a PPM saved by `save_ppm_hf`: the backbone directory plus `value_head.safetensors`
    (or the original's `value_head.bin`).

    `seed` seeds the value head's dropout stream (used only when training). The head reads steps
    as it was trained to (`saved_readout`); a `ppm_config` with another readout is refused.
    """
    ppm_config = PPMConfig(readout=saved_readout(path)) if ppm_config is None else check_readout(ppm_config, path)
    backbone = load_decoder(path, mesh=mesh, rules=rules, dtype=dtype, param_dtype=param_dtype)
    ppm = ProcessRewardModel(backbone.config, ppm_config, rngs=nnx.Rngs(seed), backbone=backbone)
    load_value_head(ppm, path)
    return ppm, load_tokenizer(path)


def load_value_head(ppm: ProcessRewardModel, path: str | os.PathLike) -> None:
    """Sets `ppm`'s value head from the PPM directory `path` (`value_head.safetensors`, or the
    original's `value_head.bin`)."""
    path = Path(path)
    head_file = path / VALUE_HEAD_FILE
    if not head_file.exists() and (path / "value_head.bin").exists():
        head_file = path / "value_head.bin"  # the original's torch layout
    tensors = {k.removeprefix("v_head."): v for k, v in _iter_tensors([head_file])}
    for key in _VALUE_HEAD_KEYS:
        if key not in tensors:
            raise HFFormatError(f"{head_file}: tensor {key!r} is missing")
    linear = ppm.value_head.linear
    linear.kernel.set_value(jnp.asarray(tensors["summary.weight"].T, linear.kernel.dtype))
    linear.bias.set_value(jnp.asarray(tensors["summary.bias"], linear.bias.dtype))


def saved_readout(path: str | os.PathLike) -> str:
    """`PPMConfig.readout` of the PPM directory `path`: its value head file's header says it, and
    a head saved without it (the original's, or before the readout was saved) reads the last token."""
    head_file = Path(path) / VALUE_HEAD_FILE
    if not head_file.exists():
        return "last"
    with safetensors.safe_open(str(head_file), framework="numpy") as f:
        return (f.metadata() or {}).get("readout", "last")


def check_readout(ppm_config: PPMConfig, path: str | os.PathLike) -> PPMConfig:
    """`ppm_config`, if its readout is the one the PPM directory `path` was trained with."""
    if ppm_config.readout != (saved := saved_readout(path)):
        raise ValueError(f"{path}: a PPM trained with readout {saved!r}, asked to read {ppm_config.readout!r}")
    return ppm_config


def save_ppm_hf(ppm: ProcessRewardModel, tokenizer: transformers.PreTrainedTokenizerBase | None,
                path: str | os.PathLike) -> None:
    """Writes the PPM as an HF backbone directory plus `value_head.safetensors` (its header names
    the readout), atomically."""
    linear = ppm.value_head.linear
    head = {"summary.weight": _to_host(linear.kernel.get_value()).T,  # torch layout [1, hidden]
            "summary.bias": _to_host(linear.bias.get_value())}
    _save_dir(ppm.backbone, tokenizer, path, extra_files={VALUE_HEAD_FILE: head},
              metadata={VALUE_HEAD_FILE: {"readout": ppm.ppm_config.readout}})

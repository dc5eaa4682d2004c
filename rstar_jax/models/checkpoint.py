"""Our model checkpoint: `model_config.json` + orbax `params/` + the tokenizer files.

Unlike an HF directory it keeps any dtype and sharding as is and restores straight into shards,
so it suits large models moving between our own stages; `import_hf` / `export_hf` (CLI commands
`import-hf` / `export-hf`) convert between the two. `model_config.json` is written last: a
checkpoint without it is incomplete.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jax
import orbax.checkpoint as ocp
import transformers
from flax import nnx
from jax.sharding import Mesh

from rstar_jax.config import ModelConfig
from rstar_jax.models.decoder import Decoder
from rstar_jax.models.hf import load_hf, save_hf
from rstar_jax.models.tokenizer import load_tokenizer
from rstar_jax.parallel.rules import DECODE_RULES, Rules
from rstar_jax.parallel.sharding import state_shardings

CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"


def save_checkpoint(model: Decoder, tokenizer: transformers.PreTrainedTokenizerBase,
                    path: str | os.PathLike) -> None:
    """Writes the model's parameters (every host its shards), tokenizer and config to `path`."""
    path = Path(path).absolute()
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path / PARAMS_DIR, nnx.state(model, nnx.Param), force=True)
    if jax.process_index() == 0:
        tokenizer.save_pretrained(path)
        tmp = path / f"{CONFIG_FILE}.tmp"
        tmp.write_text(json.dumps(dataclasses.asdict(model.config), indent=2))
        os.replace(tmp, path / CONFIG_FILE)


def load_checkpoint(path: str | os.PathLike, *, mesh: Mesh | None = None,
                    rules: Rules = DECODE_RULES,
                    ) -> tuple[Decoder, transformers.PreTrainedTokenizerFast]:
    """Restores (Decoder, tokenizer) from `path`, into the shardings of `rules` when given a mesh."""
    path = Path(path).absolute()
    if not (path / CONFIG_FILE).exists():
        raise FileNotFoundError(f"{path / CONFIG_FILE}: not found (not a complete model checkpoint)")
    fields = json.loads((path / CONFIG_FILE).read_text())
    try:
        config = ModelConfig(**fields)
    except TypeError as e:
        raise ValueError(f"{path / CONFIG_FILE}: {e}") from None
    with nnx.use_eager_sharding(False):
        abstract = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    if mesh is not None:
        shardings = state_shardings(params, mesh, rules)
        params = jax.tree.map(
            lambda p, s: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=s), params, shardings)
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(path / PARAMS_DIR, params)
    return nnx.merge(graphdef, params, rest), load_tokenizer(path)


def import_hf(workdir: str, *, hf_dir: str, dtype: str = "float32") -> str:
    """CLI `import-hf`: converts the HF directory `hf_dir` into `<workdir>/checkpoint`."""
    model, tokenizer = load_hf(hf_dir, dtype=dtype)
    out = os.path.join(workdir, "checkpoint")
    save_checkpoint(model, tokenizer, out)
    return out


def export_hf(workdir: str, *, out_dir: str, checkpoint: str = "") -> str:
    """CLI `export-hf`: writes the checkpoint (default `<workdir>/checkpoint`) as an HF directory."""
    model, tokenizer = load_checkpoint(checkpoint or os.path.join(workdir, "checkpoint"))
    save_hf(model, tokenizer, out_dir)
    return out_dir

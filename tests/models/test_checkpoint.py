"""Our orbax checkpoint and the `import-hf` / `export-hf` commands."""

import jax
import numpy as np
import pytest
from flax import nnx

from rstar_jax import cli
from rstar_jax.config import MeshConfig
from rstar_jax.models.checkpoint import load_checkpoint
from rstar_jax.models.hf import load_decoder
from rstar_jax.parallel.mesh import make_mesh


def _params(model):
    return jax.tree.leaves(nnx.state(model, nnx.Param))


def test_import_then_export_keeps_every_parameter(hf_dir, tmp_path):
    _, path, _ = hf_dir
    work, out = tmp_path / "work", tmp_path / "exported"
    assert cli.main(["import-hf", "--workdir", str(work), "--hf_dir", str(path)]) == 0
    model, tokenizer = load_checkpoint(work / "checkpoint")
    assert tokenizer.convert_tokens_to_ids("<end_of_step>") != tokenizer.unk_token_id
    assert cli.main(["export-hf", "--workdir", str(work), "--out_dir", str(out)]) == 0
    reference = load_decoder(path)
    assert model.config == reference.config
    sharded, _ = load_checkpoint(work / "checkpoint", mesh=make_mesh(MeshConfig()))
    assert isinstance(sharded.norm.scale.get_value().sharding, jax.sharding.NamedSharding)
    for got, want in zip(_params(load_decoder(out)), _params(reference), strict=True):
        np.testing.assert_array_equal(got, want)


def test_missing_checkpoint_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="model_config.json"):
        load_checkpoint(tmp_path)
    code = cli.main(["export-hf", "--workdir", str(tmp_path), "--out_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and str(tmp_path / "checkpoint" / "model_config.json") in err
    assert "Traceback" not in err


def test_missing_hf_config_is_one_clear_error(tmp_path, capsys):
    code = cli.main(["import-hf", "--workdir", str(tmp_path), "--hf_dir", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 1 and str(tmp_path / "none" / "config.json") in err

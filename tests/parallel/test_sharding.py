"""Mesh shapes and logical-axis rules (specs resolved on abstract meshes: no devices needed)."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from rstar_jax.config import MeshConfig
from rstar_jax.parallel.mesh import make_mesh, resolve_shape
from rstar_jax.parallel.rules import DECODE_RULES, TRAIN_RULES
from rstar_jax.parallel.sharding import like_params, logical_to_spec, state_shardings

P = jax.sharding.PartitionSpec
MESH_2x4x2 = jax.sharding.AbstractMesh((2, 4, 2), ("data", "fsdp", "tensor"))


def test_resolve_shape_fills_the_rest_and_rejects_bad_sizes():
    assert resolve_shape((-1, 2, 2), 8, "ICI") == (2, 2, 2)
    assert resolve_shape((8, 1, 1), 8, "ICI") == (8, 1, 1)
    with pytest.raises(ValueError, match="at most one"):
        resolve_shape((-1, -1, 1), 8, "ICI")
    with pytest.raises(ValueError, match="do not divide"):
        resolve_shape((-1, 3, 1), 8, "ICI")
    with pytest.raises(ValueError, match="need 4 devices"):
        resolve_shape((2, 2, 1), 8, "ICI")


def test_make_mesh_on_one_device():
    mesh = make_mesh(MeshConfig())
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert mesh.devices.shape == (len(jax.devices()), 1, 1)


def test_training_rules_shard_params_over_fsdp_and_tensor_and_activations_over_batch():
    assert logical_to_spec(("embed", "mlp"), TRAIN_RULES, MESH_2x4x2, (64, 128)) == P("fsdp", "tensor")
    assert logical_to_spec(("vocab", "embed"), TRAIN_RULES, MESH_2x4x2, (256, 64)) == P("tensor", "fsdp")
    # 'batch' takes 'fsdp' first, so the activation's 'embed' stays whole.
    assert logical_to_spec(("batch", "length", "embed"), TRAIN_RULES, MESH_2x4x2, (16, 8, 64)) == P(
        ("data", "fsdp"), None, None)


def test_axes_that_do_not_divide_a_dimension_are_dropped():
    # 1 kv head cannot be split over tensor=2; a batch of 2 keeps 'data' but not 'fsdp'.
    assert logical_to_spec(("embed", "kv_heads", "head_dim"), TRAIN_RULES, MESH_2x4x2, (64, 1, 16)) == P(
        "fsdp", None, None)
    assert logical_to_spec(("batch", "length"), TRAIN_RULES, MESH_2x4x2, (2, 8)) == P("data", None)


def test_decode_rules_replicate_over_batch_axes():
    assert logical_to_spec(("embed", "mlp"), DECODE_RULES, MESH_2x4x2, (64, 128)) == P(None, "tensor")


class _Tiny(nnx.Module):
    def __init__(self):
        init = nnx.with_partitioning(nnx.initializers.normal(), ("embed", "mlp"), eager_sharding=False)
        self.dense = nnx.Linear(4, 8, kernel_init=init, rngs=nnx.Rngs(0))


def test_state_and_optimizer_shardings_follow_parameter_names():
    mesh = make_mesh(MeshConfig())
    params = nnx.state(_Tiny(), nnx.Param)
    shardings = state_shardings(params, mesh, TRAIN_RULES)
    assert shardings["dense"]["kernel"].get_value().mesh == mesh
    opt_state = jax.eval_shape(optax.adam(1e-3).init, params)
    opt_shardings = like_params(opt_state, params, shardings, mesh)
    assert opt_shardings[0].mu["dense"]["kernel"].get_value() == shardings["dense"]["kernel"].get_value()
    assert opt_shardings[0].count.spec == P()
    assert np.shape(opt_state[0].mu["dense"]["kernel"].get_value()) == (4, 8)

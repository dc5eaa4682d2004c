"""StaticGraph: one instance per model structure, hashed as the GraphDef it wraps."""

import dataclasses

from flax import nnx

from rstar_jax.config import ModelConfig
from rstar_jax.inference.static_graph import StaticGraph
from rstar_jax.models.decoder import Decoder

CONFIG = ModelConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)


def structure(config: ModelConfig) -> nnx.GraphDef:
    return nnx.split(nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0))))[0]


def test_one_instance_per_structure():
    graphdef = structure(CONFIG)
    graph = StaticGraph.of(graphdef)
    assert StaticGraph.of(structure(CONFIG)) is graph and hash(graph) == hash(graphdef)
    deeper = StaticGraph.of(structure(dataclasses.replace(CONFIG, num_hidden_layers=3)))
    assert deeper is not graph and deeper != graph

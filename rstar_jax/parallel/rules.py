"""Logical-axis rules: which mesh axes each logical array dimension is split over.

Parameters and activations name their dimensions ('embed', 'mlp', 'batch', ...); a rules table
maps those names to mesh axes, so changing the parallelism never touches model code. Rules are
tried in order and a mesh axis is used at most once per array, so listing 'batch' before 'embed'
shards activations over the batch while parameters (which have no 'batch' dimension) take 'fsdp'
on 'embed'. Names missing from a table stay unsharded.
"""

from __future__ import annotations

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]


def hashable(rules) -> Rules:
    """`rules` as tuples throughout (gin gives lists), so they can key a cache of compiled programs."""
    return tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in rules)


# Training: data parallel over ('data', 'fsdp'), parameters and optimizer state fully sharded over
# 'fsdp' (ZeRO-3 style), Megatron-style tensor parallelism over 'tensor'.
TRAIN_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("embed", "fsdp"),
    ("head_dim", None),
)

# Decoding: parameters replicated over the batch axes (no per-step all-gathers), split over 'tensor';
# the KV cache follows the batch and the kv heads.
DECODE_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("embed", None),
    ("head_dim", None),
)

"""Plain frozen dataclasses that configure the library.

The library never reads gin; experiments/*.gin bind these classes (and library functions) through
`from __gin__ import dynamic_registration`, and `rstar_jax.cli` applies the bindings.
Each area of the library keeps its configuration here, one dataclass per concern.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Decoder hyper-parameters of the Qwen2 / Llama family (names follow HF `config.json`)."""

    vocab_size: int = 32000
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # HF dict, e.g. {"rope_type": "llama3", ...}
    max_position_embeddings: int = 4096
    initializer_range: float = 0.02  # std of the normal init of weight matrices and embeddings
    attention_bias: bool = False  # q/k/v bias (True for Qwen2)
    tie_word_embeddings: bool = False
    model_type: str = "qwen2"  # "qwen2" or "llama"
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    dtype: str = "float32"  # compute dtype: "float32" or "bfloat16"
    param_dtype: str = "float32"
    remat: bool = False  # rematerialise each decoder layer in the backward pass

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh ('data', 'fsdp', 'tensor'): sizes within a slice (ICI) and across slices (DCN).

    One of `data`, `fsdp`, `tensor` may be -1: it takes the devices the others leave.
    The DCN sizes multiply the ICI ones (multi-slice); all 1 means a single slice.
    """

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    dcn_data: int = 1
    dcn_fsdp: int = 1
    dcn_tensor: int = 1


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation, data and bookkeeping of one training run (SFT or PPM; spec §5-6 defaults)."""

    learning_rate: float = 7e-6
    schedule: str = "linear"  # "linear", "cosine" or "constant", after `warmup_steps` of linear warmup
    warmup_steps: int = 0
    weight_decay: float = 0.1
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0  # global-norm clipping; 0 disables it
    batch_size: int = 128  # sequences (SFT) or pairs (PPM) per optimizer step, over all hosts
    grad_accum_steps: int = 1  # micro-batches per optimizer step; divides batch_size
    num_epochs: int = 2
    max_steps: int = 0  # > 0: stop after this many optimizer steps (overrides num_epochs)
    max_length: int = 2048  # tokens per sequence; longer ones keep their beginning
    min_bucket_length: int = 64  # batches are padded to a power of two >= this (bounded recompiles)
    compute_dtype: str = "bfloat16"  # activations; parameters stay float32 (master weights)
    remat: bool = False  # rematerialise decoder layers in the backward pass
    eval_fraction: float = 0.0  # held-out share of the records (PPM: 0.05 in rStar)
    eval_every: int = 0  # evaluate every n steps (0: only at the end)
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 42


@dataclasses.dataclass(frozen=True)
class CurriculumConfig:
    """Synthetic arithmetic word problems (data/curriculum.py): levels = number of operations."""

    levels: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    seed_levels: tuple[int, ...] = (1, 2, 3)  # levels whose worked solutions form the seed set
    seed_per_level: int = 600
    train_per_level: int = 200
    test_per_level: int = 50
    seed_seed: int = 0  # each split draws from its own seed
    train_seed: int = 1
    test_seed: int = 2

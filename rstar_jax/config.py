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
    eos_token_id: int | list[int] | None = None  # a list where HF lists several (Llama 3)
    pad_token_id: int | None = None
    dtype: str = "float32"  # compute dtype: "float32" or "bfloat16"
    param_dtype: str = "float32"
    remat: bool = False  # rematerialise each decoder layer in the backward pass

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True)
class PPMConfig:
    """Process preference model head (models/ppm.py); the search-time scale is ScorerConfig's."""

    dropout: float = 0.1  # value-head dropout while training (spec §5)


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
    # SFT: whether interpreter output in a response (`<output>...<end_of_output>`) carries loss, as
    # in the original; the policy never writes it, and predicting it teaches guessing results.
    train_on_outputs: bool = True
    min_bucket_length: int = 64  # batches are padded to 2^k or 3 * 2^(k-2) >= this (bounded recompiles)
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

    levels: tuple[int, ...] = (1, 2, 3, 4)  # the generator knows 1-6; level 4 is the one above the seed
    seed_levels: tuple[int, ...] = (1, 2, 3)  # levels whose worked solutions form the seed set
    seed_per_level: int | tuple[int, ...] = 1500  # or one count per seed level (a sparse seed)
    train_per_level: int | tuple[int, ...] = 32  # or one count per level (more of the hard ones)
    test_per_level: int = 100  # 20 would leave about +-5.6 points of noise on a round's greedy mean
    seed_seed: int = 0  # each split draws from its own seed
    train_seed: int = 1
    test_seed: int = 2


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Batched decoding engine (inference/sampler.py): slot count, buckets and host hand-offs."""

    max_batch: int = 64  # rows decoded together (rounded down to a power of two); more work queues
    max_len: int = 4096  # prompt + completion tokens per row (vLLM's max_model_len)
    chunk_tokens: int = 32  # decode steps per jitted call between host-side stop-string checks
    min_prompt_bucket: int = 16  # prompts are padded to a power of two >= this
    refill_fraction: float = 0.25  # with work queued, hand back once this share of rows finished


@dataclasses.dataclass(frozen=True)
class ScorerConfig:
    """Batched PPM scoring (inference/scorer.py)."""

    max_batch: int = 32  # texts per jitted forward (rounded down to a power of two)
    max_len: int = 4096  # longer inputs keep their prompt and the end of their solution
    min_bucket: int = 64  # inputs are padded to a power of two >= this
    value_scale: float = 5.0  # search value = tanh(raw / value_scale) (spec §5)


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """MCTS and step beam search (search/). Defaults: rStar's rounds 2-4 data generation (spec §3.9).

    Presets: `data_generation(round)` (sample_mcts / sft_sample_mcts), `evaluation()`
    (sft_eval_mcts), `beam_search()` (sft_eval_bs).
    """

    num_rollouts: int = 48  # `iterations`
    num_candidates: int = 12  # `n_generate_sample`: samples per expansion
    max_depth: int = 16  # steps; a child deeper than this is a TOO_MANY_STEPS terminal
    errors_threshold: int = 1  # consecutive code errors that make a child terminal
    c_puct: float = 2.0
    selection: str = "uct"  # "uct" (the original) or "puct" (sampling priors as P)
    leaves_per_tree: int = 1  # > 1: that many rollouts per tree at once, under virtual loss
    virtual_loss: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1: off
    max_step_tokens: int = 2048
    stop: tuple[str, ...] = ("<end_of_step>", "<end_of_code>", "<end_of_answer>")
    use_ppm: bool = True  # `need_value_func`: PPM values start Q of new steps
    ground_truth_rewards: bool = True  # `is_sampling`: answers get +-1 from the gold answer
    positive_reward: float = 1.0
    negative_reward: float = -1.0
    prompt: str = "sft"  # "sft" (rounds 2-4, evaluation) or "few_shot" (round-1 bootstrap)
    max_nodes: int = 4096  # node slots per tree (rounded up to a power of two)
    batch_size: int = 256  # problems searched together as one batch of trees
    beam_width: int = 8  # `step_beam_width` (beam search only)
    seed: int = 0

    @classmethod
    def data_generation(cls, round_index: int, **overrides: Any) -> SearchConfig:
        """Round 1: few-shot bootstrap without a PPM (sample_mcts); rounds 2-4: sft_sample_mcts.

        The paper used 8 rollouts x 5 candidates in round 1 and 16 x 8 later; pass
        num_rollouts / num_candidates to match it instead of the released code.
        """
        if round_index == 1:
            bootstrap = dict(
                temperature=0.7, errors_threshold=2, use_ppm=False, prompt="few_shot",
                stop=("<end_of_step>", "<end_of_code>", "<end_of_output>", "<end_of_answer>"),
            )
            return cls(**{**bootstrap, **overrides})
        return cls(**overrides)

    @classmethod
    def evaluation(cls, **overrides: Any) -> SearchConfig:
        """sft_eval_mcts: 12 rollouts x 32 candidates, PPM scores answers, no ground truth."""
        return cls(**{**dict(num_rollouts=12, num_candidates=32, ground_truth_rewards=False), **overrides})

    @classmethod
    def beam_search(cls, **overrides: Any) -> SearchConfig:
        """sft_eval_bs: step beam search, width 8, 8 samples per beam node."""
        return cls(**{**dict(num_candidates=8, ground_truth_rewards=False), **overrides})


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Benchmark evaluation (evaluate.py; spec §7). Defaults: the original's greedy eval."""

    methods: tuple[str, ...] = ("greedy",)  # of "greedy", "sample", "best_of_n", "mcts", "beam"
    prompt_format: str = "rstar"  # "rstar" (code-augmented steps) or "chat" (chat template, \boxed{})
    num_samples: int = 8  # solutions per problem for "sample" and "best_of_n"
    ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)  # k of maj@k, pass@k, ... (those <= candidates)
    num_runs: int = 1  # independent MCTS runs (seed, seed + 1, ...), one answer each
    top_n: int = 4  # the top-K answers by PPM score that vote across runs (spec §3.7)
    step_score: str = "min"  # best-of-n solution score from its step scores: "min", "last" or "mean"
    temperature: float = 1.0  # sampled methods; greedy is always 0
    top_p: float = 1.0
    top_k: int = -1  # -1: off
    max_new_tokens: int = 4096  # per generation call (the greedy format emits a whole code block)
    max_depth: int = 2  # generation calls per sampled solution: the code block, then the answer
    batch_size: int = 64  # problems per batch; each batch is one resumable write
    max_problems: int = 0  # > 0: only the first n problems of each set
    exec_workers: int = 4
    exec_timeout_s: float = 30.0  # per program, as the original's interpreter
    grade_workers: int = 2  # processes that grade answers; 0: grade in this process
    seed: int = 0
    paper_round: int = 4  # the round whose paper numbers are shown beside ours


@dataclasses.dataclass(frozen=True)
class RoundConfig:
    """One round of self-evolution (evolve.py; spec §1.2): how its training problems are searched."""

    search: SearchConfig = SearchConfig(use_ppm=False)  # `use_ppm`: PPM-augmented (rounds 3-4)
    # Further searches, each with a new seed, of the problems still without a correct trajectory:
    # rollouts per pass (the paper: one more 16-rollout pass; round 4 also 64 and 128).
    unsolved_rollouts: tuple[int, ...] = (16,)


def _tiny_search(use_ppm: bool, **overrides: Any) -> SearchConfig:
    """Data-generation search of the tiny CPU default: few rollouts, short steps, small trees."""
    return SearchConfig(**{**dict(num_rollouts=4, num_candidates=4, max_depth=10, max_step_tokens=48,
                                  max_nodes=256, batch_size=64, temperature=0.8, use_ppm=use_ppm),
                           **overrides})


# Batch 8: four times the updates of batch 32 for the same epochs; the from-scratch policy only learns
# to copy names and numbers from the question with them. Two epochs of 4500 seed solutions beat six of
# 1800 (which it starts to memorise), and no loss on interpreter output stops it guessing results
# (measured in the README).
_TINY_TRAIN = TrainConfig(learning_rate=2e-3, schedule="cosine", warmup_steps=20, weight_decay=0.0,
                          batch_size=8, num_epochs=2, max_length=512, min_bucket_length=64,
                          train_on_outputs=False, compute_dtype="float32", checkpoint_every=200,
                          log_every=20)
# Each round fine-tunes what `EvolveConfig.round_base` names on that round's trajectories and a seed
# replay, gently: at 1e-3 the bootstrap's level-3 greedy fell from 35 % to 10 % in round 1, at 2e-4 it held.
_TINY_ROUND_TRAIN = dataclasses.replace(_TINY_TRAIN, learning_rate=2e-4)


@dataclasses.dataclass(frozen=True)
class EvolveConfig:
    """The self-evolution run (evolve.py). Defaults: the tiny CPU run on the synthetic curriculum
    (experiments/tiny_cpu.gin restates them), with the paper's schedule: rounds 1-2 terminal-guided,
    rounds 3-4 PPM-augmented, a second pass for unsolved problems, round 4's extra passes."""

    rounds: tuple[RoundConfig, ...] = (
        RoundConfig(_tiny_search(False), (4,)),
        RoundConfig(_tiny_search(False), (4,)),
        RoundConfig(_tiny_search(True), (4,)),
        RoundConfig(_tiny_search(True), (8,)),
    )
    # From-scratch policy (vocab_size and special token ids come from the trained tokenizer).
    model: ModelConfig = ModelConfig(hidden_size=128, intermediate_size=384, num_hidden_layers=3,
                                     num_attention_heads=4, num_key_value_heads=2,
                                     max_position_embeddings=512, tie_word_embeddings=True)
    tokenizer_vocab: int = 800
    seed_train: TrainConfig = _TINY_TRAIN  # round 0: the seed set -> bootstrap policy
    policy_train: TrainConfig = _TINY_ROUND_TRAIN  # every round, from what `round_base` names
    # What round r's policy fine-tunes. "base", as the paper: the base model every round (on the
    # curriculum the bootstrap policy plays that part: it knows the step format); "init": the
    # curriculum's random init; "previous": round r-1's policy, so training compounds over rounds.
    # The CPU default compounds: a round yields about 100 new trajectories, and fine-tuned from the
    # bootstrap each round, no round's policy got far past round 1's.
    round_base: str = "previous"
    ppm_train: TrainConfig = dataclasses.replace(_TINY_TRAIN, learning_rate=1e-3, num_epochs=4, batch_size=16)
    sampler: SamplerConfig = SamplerConfig(max_batch=64, max_len=512, chunk_tokens=16)
    scorer: ScorerConfig = ScorerConfig(max_batch=64, max_len=512)
    evaluation: EvalConfig = EvalConfig(methods=("greedy", "mcts"), max_new_tokens=320, ks=(1,),
                                        batch_size=64, exec_workers=2, exec_timeout_s=5.0,
                                        grade_workers=0)
    # A search evaluation (MCTS) costs far more per problem than greedy: it runs on the first n test
    # problems of each set (0: all), where the report also scores greedy to compare the two.
    search_eval_problems: int = 20
    # At temperature 0.5 MCTS + PPM scored 5-9 points below greedy on the same problems; at 0.2 its
    # candidates stay near the greedy path and the PPM picks among fewer wrong answers.
    eval_search: SearchConfig = SearchConfig.evaluation(
        num_rollouts=4, num_candidates=4, max_depth=10, max_step_tokens=48, max_nodes=256, batch_size=64,
        temperature=0.2)
    mesh: MeshConfig = MeshConfig()
    sft_per_problem: int = 2  # top-n correct trajectories per problem (spec §4.1)
    # Worked solutions of the seed set (a fixed random sample; -1: all) that join every round's SFT
    # data, so a round's short fine-tune on mostly 1-2 step trajectories keeps longer solutions.
    seed_replay: int = 400
    min_step_margin: float = 0.5  # PPM step-pair filters (spec §4.2)
    min_edit_distance: int = 1  # the paper's 20 drops most pairs of short steps that differ in a number
    # Share of training problems (by a hash of the question) whose pairs are kept out of PPM
    # training to measure its accuracy: held out by problem, the same problems in every round.
    ppm_heldout_fraction: float = 0.15
    # > 1: the training problems are cut into this many shards (every n-th problem of each set),
    # and round r searches shard (r - 1) % n only, so each round sees fresh problems.
    train_shards: int = 1
    # The PPM of round r trains (and is measured) on the pairs of rounds r - n + 1 .. r; 1: its own
    # round's, as the paper (whose rounds each yield millions of pairs; ours yield about a hundred).
    ppm_pair_rounds: int = 4
    search_chunk: int = 64  # problems per resumable search write
    exec_workers: int = 2
    exec_timeout_s: float = 5.0
    seed: int = 0

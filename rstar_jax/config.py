"""Plain frozen dataclasses that configure the library.

The library never reads gin; experiments/*.gin bind these classes (and library functions) through
`from __gin__ import dynamic_registration`, and `rstar_jax.cli` applies the bindings.
Each area of the library keeps its configuration here, one dataclass per concern.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

# Keys of HF `rope_parameters` (transformers 5) each rope type reads, besides rope_type and rope_theta.
_ROPE_KEYS = {
    "linear": {"factor"},
    "dynamic": {"factor"},
    "llama3": {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"},
    "yarn": {"factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale", "mscale_all_dim",
             "attention_factor", "truncate"},
}
_ROPE_REQUIRED = {"linear": {"factor"}, "dynamic": {"factor"},
                  "llama3": {"factor", "low_freq_factor", "high_freq_factor"}, "yarn": set()}


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """RoPE scaling of a long-context checkpoint: HF's `rope_scaling` / `rope_parameters`.

    Frozen and hashable, so a ModelConfig that holds one can be static in jitted code (the
    sampler's and scorer's graphs). Names and defaults follow transformers 5; None: its default.
    """

    rope_type: str  # "linear", "dynamic" (NTK, grows past max_position_embeddings), "yarn" or "llama3"
    factor: float | None = None  # yarn: None is max_position_embeddings / original_max_position_embeddings
    original_max_position_embeddings: int | None = None  # llama3, yarn (None: max_position_embeddings)
    low_freq_factor: float | None = None  # llama3
    high_freq_factor: float | None = None  # llama3
    beta_fast: float | None = None  # yarn (None: 32)
    beta_slow: float | None = None  # yarn (None: 1)
    mscale: float | None = None  # yarn
    mscale_all_dim: float | None = None  # yarn
    attention_factor: float | None = None  # yarn: scale of cos and sin (None: from factor and mscale)
    truncate: bool | None = None  # yarn (None: True)

    def __post_init__(self):
        if self.rope_type not in _ROPE_KEYS:
            raise ValueError(f"rope_scaling: unsupported rope_type {self.rope_type!r} "
                             f"(supported: 'default', {', '.join(map(repr, _ROPE_KEYS))})")
        given = {f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None} - {"rope_type"}
        if extra := given - _ROPE_KEYS[self.rope_type]:
            raise ValueError(f"rope_scaling: {sorted(extra)} do not apply to rope_type {self.rope_type!r}")
        if missing := _ROPE_REQUIRED[self.rope_type] - given:
            raise ValueError(f"rope_scaling: rope_type {self.rope_type!r} needs {sorted(missing)}")

    @classmethod
    def from_hf(cls, params: Mapping[str, Any] | RopeScaling | None) -> RopeScaling | None:
        """From HF's dict (legacy `type` and a `rope_theta` entry allowed); None for 'default'."""
        if params is None or isinstance(params, RopeScaling):
            return params
        params = dict(params)
        params.pop("rope_theta", None)
        rope_type = params.pop("rope_type", None) or params.pop("type", "default")
        params.pop("type", None)
        if params.pop("partial_rotary_factor", 1.0) != 1.0:
            raise ValueError("rope_scaling: partial_rotary_factor != 1 is not supported by Qwen2 / Llama")
        if rope_type == "default" and not params:
            return None
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := set(params) - known:
            raise ValueError(f"rope_scaling: unknown keys {sorted(unknown)} for rope_type {rope_type!r}")
        return cls(rope_type, **params)

    def to_hf(self) -> dict[str, Any]:
        """HF's dict: the set fields."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


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
    rope_scaling: RopeScaling | None = None  # an HF dict ({"rope_type": "llama3", ...}) is converted
    max_position_embeddings: int = 4096
    initializer_range: float = 0.02  # std of the normal init of weight matrices and embeddings
    attention_bias: bool = False  # q/k/v bias (True for Qwen2)
    tie_word_embeddings: bool = False
    model_type: str = "qwen2"  # "qwen2" or "llama"
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None  # several where HF lists several (Llama 3)
    pad_token_id: int | None = None
    dtype: str = "float32"  # compute dtype: "float32" or "bfloat16"
    param_dtype: str = "float32"
    remat: bool = False  # rematerialise each decoder layer in the backward pass

    def __post_init__(self):
        # Hashable fields only: a model's config is static in jitted code (sampler, scorer).
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, RopeScaling):
            object.__setattr__(self, "rope_scaling", RopeScaling.from_hf(self.rope_scaling))
        if isinstance(self.eos_token_id, list):
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads


PPM_READOUTS = ("last", "step_mean")


@dataclasses.dataclass(frozen=True)
class PPMConfig:
    """Process preference model head (models/ppm.py); the search-time scale is ScorerConfig's."""

    dropout: float = 0.1  # value-head dropout while training (spec §5)
    # Where a step's score is read: "last", the value head at the step's last token (the paper's),
    # or "step_mean", the head's mean over the step's tokens. Saved with the PPM (models/hf.py).
    readout: str = "last"

    def __post_init__(self):
        if self.readout not in PPM_READOUTS:
            raise ValueError(f"PPMConfig.readout must be one of {PPM_READOUTS}, got {self.readout!r}")


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
class ParallelConfig:
    """How a stage lays its models on devices (inference/stack.py): mesh, dtypes, logical rules.

    Sampling and scoring use each host's own devices: `mesh` folds into ('data', 'tensor') over
    them (inference/stack.py `decode_mesh_config`). "auto" dtypes are bfloat16 on GPU and TPU,
    float32 on CPU. `rules`: logical-axis rules as data (None: parallel/rules.py DECODE_RULES).
    """

    mesh: MeshConfig = MeshConfig()
    dtype: str = "auto"  # compute dtype: "auto", "float32" or "bfloat16"
    param_dtype: str = "auto"  # "auto": the compute dtype
    rules: tuple[tuple[str, Any], ...] | None = None


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

    levels: tuple[int, ...] = (1, 2, 3, 4)  # the generator knows 1-6
    seed_levels: tuple[int, ...] = (1, 2, 3)  # levels whose worked solutions form the seed set
    seed_per_level: int | tuple[int, ...] = 1500  # or one count per seed level (a sparse seed)
    train_per_level: int | tuple[int, ...] = 32  # or one count per level
    test_per_level: int = 100
    # Problems searched beside the training problems (a train_shards share of them each round)
    # whose pairs only measure the PPM: neither model trains on them. Drawn from the train seed in
    # a stream of their own, so the training problems, the tokenizer and round 0 stay the same.
    heldout_per_level: int = 0
    seed_seed: int = 0  # each split draws from its own seed
    train_seed: int = 1
    test_seed: int = 2
    # Numbered stories: the question's sentences are labelled "(1) ... (2) ..." and each worked step's
    # comment carries its sentence's label ("# (2) She buys 3 more apples."), so a step copies its
    # sentence by label and the solution ends where the question has no next label.
    numbered: bool = False
    # Operand ranges (the opening count and the added / subtracted amounts) times this factor:
    # wider ranges make a wrong program's answer rarely equal the right one by luck.
    operand_scale: int = 1
    # The operations a story draws from (data/curriculum.py OPERATIONS). Without the inverse pairs
    # (divide, half against multiply, twice), a program that skips steps rarely lands on the answer.
    operations: tuple[str, ...] = ("add", "subtract", "multiply", "divide", "twice", "half", "fewer", "more")
    # How often the seed's stories use each of `operations` (one weight each; empty: uniform, as
    # train and test always are). Rare weights make a seed that shows some operations only a few
    # times: a base model that has seen little of them, whose search must find how they are solved.
    seed_operation_weights: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Batched decoding engine (inference/sampler.py): slot count, buckets and host hand-offs."""

    max_batch: int = 64  # rows decoded together (rounded down to a power of two); more work queues
    max_len: int = 4096  # prompt + completion tokens per row (vLLM's max_model_len)
    chunk_tokens: int = 32  # decode steps per jitted call between host-side stop-string checks
    min_prompt_bucket: int = 16  # prompts are padded to a power of two >= this
    refill_fraction: float = 0.25  # with work queued, hand back once this share of rows finished
    # Prefix pool: KV of this many recent prompts (max_len tokens each) kept on device, so a prompt
    # extending one of them (a search step's parent) prefills only its new tokens. 0: off; else at
    # least max_batch (one refill stores up to that many prompts).
    prefix_cache_rows: int = 0


@dataclasses.dataclass(frozen=True)
class ScorerConfig:
    """Batched PPM scoring (inference/scorer.py)."""

    max_batch: int = 32  # texts per jitted forward (rounded down to a power of two)
    max_len: int = 4096  # longer inputs keep their prompt and the end of their solution
    min_bucket: int = 64  # inputs are padded to a power of two >= this
    value_scale: float = 5.0  # search value = tanh(raw / value_scale) (spec §5)
    # PPM caches of recently scored texts kept for the texts that extend them (a search's children);
    # 0 is off, else at least max_batch (rounded down to a power of two).
    prefix_cache_rows: int = 0


# Stop strings of a search step, of a round-1 bootstrap step and of a greedy-eval generation call
# (the same tuples as rstar_jax.steps, which sits above this module).
SEARCH_STOP = ("<end_of_step>", "<end_of_code>", "<end_of_answer>")
BOOTSTRAP_STOP = ("<end_of_step>", "<end_of_code>", "<end_of_output>", "<end_of_answer>")
GREEDY_STOP = ("<end_of_code>", "<end_of_answer>")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How one generation call samples (vLLM conventions): `Sampler.sample` takes it whole.

    temperature 0 is greedy; top_k -1 and top_p 1.0 are off. A completion ends at EOS, at the
    first of the `stop` strings (kept in its text) or after `max_new_tokens` tokens.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1: off
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        # gin and callers may hand a list or one string; a tuple keeps the config frozen and hashable.
        object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))


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
    # Each expansion samples one step: up to `max_new_tokens`, ending at one of the `stop` strings.
    sampling: SamplingConfig = SamplingConfig(max_new_tokens=2048, stop=SEARCH_STOP)
    use_ppm: bool = True  # `need_value_func`: PPM values start Q of new steps
    ground_truth_rewards: bool = True  # `is_sampling`: answers get +-1 from the gold answer
    positive_reward: float = 1.0
    negative_reward: float = -1.0
    prompt: str = "sft"  # "sft" (rounds 2-4, evaluation) or "few_shot" (round-1 bootstrap)
    # Node slots per tree (rounded up to a power of two); 0: the search's budget (`node_budget`),
    # which a tree can never outgrow. A value below the budget is refused before any work.
    max_nodes: int = 0
    batch_size: int = 256  # problems searched together as one batch of trees
    beam_width: int = 8  # `step_beam_width` (beam search only)
    seed: int = 0

    def __post_init__(self):
        if not self.sampling.stop:  # a step ends at a stop string; without one it runs to max_new_tokens
            raise ValueError("SearchConfig.sampling.stop is empty: search steps end at stop strings, e.g. "
                             f"{SEARCH_STOP} (rstar_jax.config.SEARCH_STOP)")

    def node_budget(self, beam: bool = False) -> int:
        """The most nodes one tree of this search can hold, root included.

        MCTS: a rollout expands one leaf per level, at most `max_depth` levels (the original's
        step budget), each into at most `num_candidates` children; rollouts run in rounds of
        `leaves_per_tree`. Beam search: the root's children, then up to `beam_width` nodes per
        level down to `max_depth`, each with `num_candidates` children.
        """
        k = self.num_candidates
        if beam:
            return 1 + k * (1 + self.max_depth * self.beam_width)
        slots = max(self.leaves_per_tree, 1)
        rollouts = -(-self.num_rollouts // slots) * slots
        return 1 + rollouts * self.max_depth * k

    def tree_nodes(self, beam: bool = False) -> int:
        """Node slots of each tree: `max_nodes`, or the budget when it is 0; refuses a tree too
        small for the budget, where candidates would be dropped after their sampling, execution
        and scoring were paid for."""
        budget = self.node_budget(beam)
        if not self.max_nodes:
            return budget
        if self.max_nodes < budget:
            if beam:
                how = (f"1 + num_candidates ({self.num_candidates}) x (1 + max_depth ({self.max_depth}) x "
                       f"beam_width ({self.beam_width}))")
            else:
                rounds = f" (in rounds of leaves_per_tree={self.leaves_per_tree})" if self.leaves_per_tree > 1 else ""
                how = (f"1 + num_rollouts ({self.num_rollouts}){rounds} x max_depth ({self.max_depth}) x "
                       f"num_candidates ({self.num_candidates})")
            raise ValueError(f"SearchConfig.max_nodes = {self.max_nodes} is too small for the "
                             f"{'beam search' if beam else 'MCTS'} budget {how} = {budget} nodes per tree; "
                             f"set max_nodes >= {budget}, or 0 to size trees from the budget")
        return self.max_nodes

    @classmethod
    def data_generation(cls, round_index: int, **overrides: Any) -> SearchConfig:
        """Round 1: few-shot bootstrap without a PPM (sample_mcts); rounds 2-4: sft_sample_mcts.

        The paper used 8 rollouts x 5 candidates in round 1 and 16 x 8 later; pass
        num_rollouts / num_candidates to match it instead of the released code. Round 1 samples at
        temperature 0.7 and also stops at `<end_of_output>`; a `sampling` override replaces that whole.
        """
        if round_index == 1:
            sampling = SamplingConfig(temperature=0.7, max_new_tokens=2048, stop=BOOTSTRAP_STOP)
            bootstrap = dict(sampling=sampling, errors_threshold=2, use_ppm=False, prompt="few_shot")
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
    ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)  # k of maj@k, pass@k, ... (those <= candidates; k = candidates too)
    num_runs: int = 1  # independent MCTS runs (seed, seed + 1, ...), one answer each
    top_n: int = 4  # the top-K answers by PPM score that vote across runs (spec §3.7)
    step_score: str = "min"  # best-of-n solution score from its step scores: "min", "last" or "mean"
    # Per generation call (the greedy format emits a whole code block, then stops at GREEDY_STOP);
    # temperature for the sampled methods: greedy is always 0. Chat prompts drop the stop strings.
    sampling: SamplingConfig = SamplingConfig(max_new_tokens=4096, stop=GREEDY_STOP)
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
    # This round's PPM training; None: `EvolveConfig.ppm_train` (e.g. fewer epochs for a round
    # whose PPM only guides the next search).
    ppm_train: TrainConfig | None = None

    def __post_init__(self):
        # Each pass searches new trees with its own rollouts: refuse, at config load, a max_nodes
        # that one of them would outgrow (rather than hours later, when that pass starts).
        for rollouts in (self.search.num_rollouts, *self.unsolved_rollouts):
            try:
                dataclasses.replace(self.search, num_rollouts=rollouts).tree_nodes()
            except ValueError as e:
                raise ValueError(f"RoundConfig: the {rollouts}-rollout pass: {e}") from None


@dataclasses.dataclass(frozen=True)
class Targets:
    """What a self-evolution run sets out to show; its report says which it meets and by how much.

    None / False: not checked. The library expects nothing; an experiment states its own goals
    (experiments/tiny_cpu.gin)."""

    coverage_rises: bool = False  # coverage of the training problems a round searched rises every round
    greedy_rise: float | None = None  # points of mean greedy pass@1 from round 0 to the last round
    hardest_sets: int = 2  # the test sets with the lowest round-0 greedy pass@1 that ...
    hardest_rise: float | None = None  # ... must each rise this many points by the last round
    search_margin: float | None = None  # points by which MCTS + PPM beats greedy on the same problems
    search_from_round: int = 1  # ... (and best-of-n beats majority voting) from this round on
    best_of_n_over_majority: bool = False  # PPM-ranked best-of-n beats the majority vote of its samples
    ppm_accuracy: float | None = None  # the last round's PPM pairwise accuracy on held-out pairs ...
    ppm_pairs: int = 0  # ... measured on at least this many pairs
    minutes: float | None = None  # all stages of the run, round 0 included


@dataclasses.dataclass(frozen=True)
class EvolveConfig:
    """The self-evolution run (evolve/; spec §1). Defaults follow the paper's schedule: rounds 1-2
    terminal-guided, rounds 3-4 PPM-augmented, a second pass for unsolved problems, round 4 with
    more. The tiny CPU run that `rstar-jax evolve` starts lives in experiments/tiny_cpu.gin."""

    rounds: tuple[RoundConfig, ...] = (
        RoundConfig(SearchConfig(use_ppm=False)),
        RoundConfig(SearchConfig(use_ppm=False)),
        RoundConfig(SearchConfig(use_ppm=True)),
        RoundConfig(SearchConfig(use_ppm=True), (16, 64, 128)),
    )
    # Curriculum runs: the from-scratch policy (vocab_size and special token ids come from the
    # tokenizer trained on the seed set), that tokenizer's vocabulary size, and whether it splits
    # numbers into digits (as Qwen2's does) or may learn whole numbers as pieces.
    model: ModelConfig = ModelConfig()
    tokenizer_vocab: int = 1000
    tokenizer_split_digits: bool = True
    seed_train: TrainConfig = TrainConfig()  # round 0 on the seed set (curriculum runs)
    # Curriculum runs: before the seed set, round 0 may train the from-scratch policy to recite the
    # training questions' sentences by label (`curriculum.recital`; no answers, no code), the
    # copying a pretrained base model brings; None: no recital stage.
    recital_train: TrainConfig | None = None
    # Every round's policy also recites the curriculum questions that round searched (plain text
    # beside its SFT records), meant to keep the copying the recital stage taught; on the CPU default
    # it kept less of it (docs/results/cpu_default_search_teaches.md, "A recital stage").
    recite_in_rounds: bool = False
    policy_train: TrainConfig = TrainConfig()  # every round's policy SFT
    # What round r's policy fine-tunes: "base", as the paper, the base model every round (on the
    # curriculum the bootstrap policy plays that part); "init": the curriculum's from-scratch model
    # (after its recital, when there is one);
    # "previous": round r-1's policy, so training compounds over rounds.
    round_base: str = "base"
    ppm_train: TrainConfig = TrainConfig()  # every round's PPM training, unless the round sets its own
    ppm: PPMConfig = PPMConfig()  # every round's PPM head
    # What round r's PPM starts from: "policy", as the paper, round r's policy with a fresh value
    # head; "previous": round r-1's PPM (round 1's starts from its policy), so with
    # ppm_pair_rounds = 1 each round trains on its own new pairs only.
    ppm_base: str = "policy"
    sampler: SamplerConfig = SamplerConfig()
    scorer: ScorerConfig = ScorerConfig()
    evaluation: EvalConfig = EvalConfig(methods=("greedy", "mcts"))
    # The search methods (MCTS, best-of-n) cost far more per problem than greedy: they run on the
    # first n test problems of each set (0: all), where the report also scores greedy to compare.
    search_eval_problems: int = 0
    search_eval_from_round: int = 1  # earlier rounds evaluate greedy (and the PPM's accuracy) only
    eval_search: SearchConfig = SearchConfig.evaluation()
    mesh: MeshConfig = MeshConfig()
    sft_per_problem: int = 2  # top-n correct trajectories per problem (spec §4.1)
    # Worked solutions of the seed set (a fixed random sample; -1: all; 0: none) that join every
    # round's SFT data.
    seed_replay: int = -1
    min_step_margin: float = 0.5  # PPM step-pair filters (spec §4.2)
    min_edit_distance: int = 20
    # Final-answer pairs per problem: the top n correct against the bottom n wrong trajectories
    # (spec §4.2: 2); 0: every distinct correct one against every distinct wrong one.
    final_pairs_per_side: int = 2
    # Share of the training problems kept out of PPM and policy training to measure the PPM's
    # pairwise accuracy (held out by problem, from the policy too, as the PPM starts from it: so no
    # held-out pair shares a problem with anything either model trained on). A curriculum's
    # `heldout_per_level` problems are held out besides, at no cost to the training records.
    ppm_heldout_fraction: float = 0.05
    # The PPM of round r trains (and is measured) on the pairs of rounds r - n + 1 .. r; 1: its own
    # round's, as the paper.
    ppm_pair_rounds: int = 1
    # The policy of round r trains on the search's SFT records of rounds r - n + 1 .. r (and the
    # seed replay); 1: its own round's, as the paper. With train_shards the earlier rounds'
    # records are of other problems, so the SFT set grows as the paper's pool of solved problems.
    sft_rounds: int = 1
    # Round r searches shard (r - 1) mod n of every training set (problem i is in shard i mod n), so
    # with n > 1 each round meets problems no earlier round searched, as the paper's rounds draw on
    # a large unlabeled pool; 1: every round searches every training problem.
    train_shards: int = 1
    search_chunk: int = 64  # problems per resumable search write
    exec_workers: int = 4
    exec_timeout_s: float = 30.0  # per program, as the original's interpreter
    targets: Targets = Targets()
    seed: int = 0

    def round_ppm_train(self, round_config: RoundConfig) -> TrainConfig:
        """How a round trains its PPM: the round's own `ppm_train`, else the run's."""
        return self.ppm_train if round_config.ppm_train is None else round_config.ppm_train

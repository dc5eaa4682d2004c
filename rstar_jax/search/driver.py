"""Host driver of the batched MCTS (spec §3.4): device kernels meet text, code and grading here.

`mcts_loop` advances all B trees in lockstep through the select -> propose -> expand -> score ->
backup phases; what a "proposal" is (model samples, executed code, graded answers) is up to the
two callbacks, so the same loop runs on a fake step generator in tests and on the real policy in
`run_mcts`, whose callbacks come from `StepExpander`: one batched sampler call, one batched
executor call and one batched PPM call per phase, for all leaves of all trees.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from rstar_jax.config import SamplingConfig, SearchConfig
from rstar_jax.data import trees
from rstar_jax.data.problems import Problem, stream_id
from rstar_jax.search import kernels
from rstar_jax import steps as sf
from rstar_jax.search.io import NodeRecord, SearchResult, concat
from rstar_jax.search.tree import NO_NODE, ROOT, NodeKind, Tree, padded_batch
from rstar_jax.shapes import bucket
from rstar_jax.verify.grader import grade

log = logging.getLogger(__name__)


class Sample(Protocol):
    """What the driver reads of a sampled step (`inference.sampler.Completion`)."""

    text: str
    token_ids: list[int]
    logprob_sum: float
    stop_string: str | None
    finish_reason: str  # "length" with no tokens: the prompt left no room in the policy's context


class StepGenerator(Protocol):
    """The policy: `inference.sampler.Sampler`, or a fake in tests."""

    def sample(self, prompts: Sequence[str], num_samples: int, sampling: SamplingConfig, *,
               seed: int, streams: Sequence[int] | None) -> list[list[Sample]]: ...


class ValueModel(Protocol):
    """The PPM: `inference.scorer.PPMScorer`; `score` returns (raw, tanh(raw / scale))."""

    def score(self, texts: Sequence[str], step_starts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]: ...


class CodeRunner(Protocol):
    """The sandbox: `verify.executor.Executor`; results have `output`, `error`, `timed_out`."""

    def run(self, programs: Sequence[str]) -> list: ...


@dataclasses.dataclass
class Proposal:
    """The kept candidates of every leaf, as [B, L, K] arrays in generation order."""

    exists: np.ndarray  # bool: a kept candidate sits in this slot
    step_kind: np.ndarray  # int8 NodeKind: STEP, ANSWER, UNPARSABLE or TOO_DEEP (context full)
    code_error: np.ndarray  # bool: its code failed (spec §2.6)
    prior: np.ndarray  # float32: sampling prior among siblings (PUCT only)


# propose(leaves[B, L]) -> Proposal; the host keeps whatever text it needs for the new children.
ProposeFn = Callable[[np.ndarray], Proposal]
# score(leaves[B, L], child_ids[B, L, K], kinds[B, L, K]) -> (rewards, ppm_values), both float32
# [B, L, K]: the reward of answer children (+-1 or their PPM value) and the PPM value of children
# that were scored (NaN elsewhere).
ScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def mcts_loop(
    tree: Tree,
    config: SearchConfig,
    propose: ProposeFn,
    score: ScoreFn,
    *,
    progress: bool = True,
    stats: dict[str, float] | None = None,
) -> Tree:
    """Runs `config.num_rollouts` rollouts on every tree of the batch (spec §3.4).

    A rollout descends from the root to an unexpanded node, expands it, and keeps going from the
    best new child until it selects nothing (all children terminal). Descending through already
    expanded levels happens inside one `select` call; the original spends one solver step per
    level, which only matters for its step budget, reproduced below. `stats`, when given, gets
    the seconds spent in the tree kernels ("kernel_s") and in total ("wall_s"), "phases", and
    "dropped_candidates": kept candidates that found no free slot in a full tree (0 when the tree
    has `config.node_budget()` slots; a warning is logged otherwise).
    """
    num_slots = config.leaves_per_tree
    roots = jnp.full((tree.batch_size, num_slots), ROOT, jnp.int32)
    select_kw = dict(c=config.c_puct, puct=config.selection == "puct", virtual_loss=config.virtual_loss)
    expand_kw = dict(max_depth=config.max_depth, errors_threshold=config.errors_threshold)
    num_outer = -(-config.num_rollouts // num_slots)
    bar = tqdm(total=num_outer * num_slots, desc="mcts rollouts", unit="rollout", disable=not progress)
    start_time, kernel_s, phases, dropped = time.perf_counter(), 0.0, 0, 0

    def report() -> int:
        """Updates the progress line; returns how many trees are finished (root terminal)."""
        done = int(np.asarray(tree.terminal[:, ROOT]).sum())
        wall = time.perf_counter() - start_time
        bar.set_postfix(trees_done=f"{done}/{tree.batch_size}", phases=phases,
                        nodes_per_s=f"{int(np.asarray(tree.node_count).sum()) / wall:.1f}",
                        kernel_share=f"{kernel_s / wall:.1%}")
        return done

    def timed(fn, *args, **kwargs):
        nonlocal kernel_s
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args, **kwargs))
        kernel_s += time.perf_counter() - t0
        return out

    for _ in range(num_outer):
        # The original's rollout has max_depth steps and starts at depth 1 (depth 0 if the root is
        # still unexpanded), one level per step; so a rollout that began at an unexpanded root
        # cannot expand a node at depth max_depth.
        first_depth = np.asarray(tree.expanded[:, ROOT], np.int32)[:, None]
        tree, leaves = timed(kernels.select, tree, roots, **select_kw)
        leaves = _within_budget(tree, np.asarray(leaves), first_depth, config.max_depth)
        while (leaves != NO_NODE).any():
            proposal = propose(leaves)
            tree, ids, kinds = timed(
                kernels.expand, tree, jnp.asarray(leaves), jnp.asarray(proposal.exists),
                jnp.asarray(proposal.step_kind, jnp.int8), jnp.asarray(proposal.code_error),
                jnp.asarray(proposal.prior, jnp.float32), **expand_kw,
            )
            ids, kinds = np.asarray(ids), np.asarray(kinds)
            dropped += int((np.asarray(proposal.exists) & (leaves != NO_NODE)[..., None] & (ids == NO_NODE)).sum())
            rewards, ppm_values = score(leaves, ids, kinds)
            tree = timed(
                kernels.backup, tree, jnp.asarray(leaves), jnp.asarray(ids), jnp.asarray(rewards, jnp.float32),
                jnp.asarray(ppm_values, jnp.float32), negative_reward=config.negative_reward,
            )
            tree, leaves = timed(kernels.select, tree, jnp.asarray(leaves), **select_kw)
            leaves = _within_budget(tree, np.asarray(leaves), first_depth, config.max_depth)
            phases += 1
            report()
        bar.update(num_slots)
        if report() == tree.batch_size:  # every root is terminal: later rollouts do nothing
            break
    bar.close()
    if dropped:
        log.warning("mcts: %d candidates were dropped because their tree was full (%d node slots, "
                    "budget %d); raise SearchConfig.max_nodes", dropped, tree.max_nodes, config.node_budget())
    if stats is not None:
        stats.update(kernel_s=kernel_s, wall_s=time.perf_counter() - start_time, phases=phases,
                     dropped_candidates=dropped)
    return tree


def _within_budget(tree: Tree, leaves: np.ndarray, first_depth: np.ndarray, max_depth: int) -> np.ndarray:
    """Drops leaves the original's per-rollout step budget would not reach (see `mcts_loop`)."""
    depth = np.asarray(jnp.take_along_axis(tree.depth, jnp.maximum(jnp.asarray(leaves), 0), axis=1))
    return np.where(depth - first_depth < max_depth, leaves, NO_NODE).astype(np.int32)


@dataclasses.dataclass
class _Candidate:
    """A kept sample of one leaf, parsed and verified, waiting for its node id."""

    text: str
    kind: NodeKind  # STEP (code), ANSWER or UNPARSABLE
    code: str | None = None
    output: str | None = None
    error: bool = False
    answer: str | None = None
    correct: bool | None = None


class StepExpander:
    """Turns leaves into children: prompts, sampling, post-processing, execution, grading, PPM.

    Holds the host side of a batch of trees (one `NodeRecord` per node) and serves `mcts_loop`'s
    `propose` / `score` callbacks; beam search uses the same pieces.
    """

    def __init__(self, problems: Sequence[Problem], policy: StepGenerator, ppm: ValueModel | None,
                 executor: CodeRunner, config: SearchConfig, num_slots: int):
        self.problems, self.policy, self.ppm, self.executor = list(problems), policy, ppm, executor
        self.config, self.num_slots = config, num_slots
        self.nodes: list[list[NodeRecord]] = [[NodeRecord()] for _ in problems]
        self.parents: list[list[int]] = [[NO_NODE] for _ in problems]
        self._pending: dict[tuple[int, int, int], _Candidate] = {}
        self._expansions = [0] * len(problems)  # per tree: the propose calls that expanded a leaf of it
        # "ungraded_answers": grades that could not finish (rewarded neutrally, never -1);
        # "context_full": leaves whose prompt left no room in the policy's context (TOO_DEEP);
        # the tokens the policy generated, and the seconds spent sampling, executing and scoring.
        self.counts = {"ungraded_answers": 0, "context_full": 0, "generated_tokens": 0,
                       "sample_s": 0.0, "execute_s": 0.0, "score_s": 0.0}

    # -- text of the tree ---------------------------------------------------------------------
    def path(self, b: int, node: int) -> list[int]:
        return trees.path(self.parents[b], node)

    def trajectory_text(self, b: int, node: int) -> str:
        return "".join(self.nodes[b][i].text for i in self.path(b, node))

    def prompt(self, b: int, node: int) -> str:
        problem, steps = self.problems[b], self.trajectory_text(b, node)
        if self.config.prompt == "few_shot":
            # Round 1 shows the demonstrations in a random order; fixed per problem (and seed) here.
            rng = random.Random(stream_id(self.config.seed, problem.source, problem.index))
            return sf.fewshot_prompt(problem.question, sf.FEWSHOT_EXAMPLES, rng, steps)
        return sf.policy_prompt(problem.question, steps)

    def _open_block(self, b: int, node: int) -> list[str]:
        """Texts of the steps since the last closed code block (the original's
        `collect_action_inputs`), timed-out steps included: the original's check
        `"TimeoutError" not in node.state["text"].split(action_input)[-1]` never fires, since a
        step's text is its action input (a timed-out block-closing step ends the walk first)."""
        texts = []
        while node not in (ROOT, NO_NODE):
            rec = self.nodes[b][node]
            if sf.closes_code_block(rec.text):
                break
            texts.append(rec.text)
            node = self.parents[b][node]
        return texts[::-1]

    # -- propose: sample, post-process, parse, execute, grade --------------------------------
    def propose(self, leaves: np.ndarray) -> Proposal:
        cfg, k = self.config, self.config.num_candidates
        shape = (len(self.problems), self.num_slots, k)
        exists, error = np.zeros(shape, bool), np.zeros(shape, bool)
        step_kind = np.full(shape, NodeKind.STEP, np.int8)
        prior = np.ones(shape, np.float32)
        rows = [(b, l) for b, l in zip(*(i.tolist() for i in np.nonzero(leaves != NO_NODE)))]
        start = time.perf_counter()
        # A leaf's samples draw from a stream named by its problem, its slot and its tree's count of
        # expansions: not by the tree's place in the batch (tree b of every chunk would share random
        # numbers) nor by the batch-mates' progress (the count of calls goes on while one waits).
        samples = self.policy.sample(
            [self.prompt(b, int(leaves[b, l])) for b, l in rows], k, cfg.sampling, seed=cfg.seed,
            streams=[stream_id(self.problems[b].source, self.problems[b].index, l, self._expansions[b])
                     for b, l in rows],
        )
        for b in dict.fromkeys(b for b, _ in rows):
            self._expansions[b] += 1
        self.counts["sample_s"] += time.perf_counter() - start
        self.counts["generated_tokens"] += sum(len(c.token_ids) for completions in samples for c in completions)
        self._pending.clear()
        programs: list[tuple[tuple[int, int, int], str]] = []
        for (b, l), completions in zip(rows, samples):
            kept = _postprocess(completions)
            # PUCT prior: softmax over siblings of the mean token log-probability.
            mean_logp = np.array([c.logprob_sum / max(len(c.token_ids), 1) for _, c in kept])
            weights = np.exp(mean_logp - mean_logp.max())
            for (j, c), p in zip(kept, weights / weights.sum()):
                cand = self._parse(b, c)
                if cand.kind == NodeKind.STEP:
                    programs.append(((b, l, j), sf.build_program(self._open_block(b, int(leaves[b, l])), c.text)))
                self._pending[b, l, j] = cand
                exists[b, l, j], step_kind[b, l, j], prior[b, l, j] = True, cand.kind, p
        start = time.perf_counter()
        results = self.executor.run([p for _, p in programs])
        self.counts["execute_s"] += time.perf_counter() - start
        for ((b, l, j), program), result in zip(programs, results):
            cand = self._pending[b, l, j]
            cand.code, cand.error = program, result.error is not None
            cand.output = result.error if cand.error else result.output
            error[b, l, j] = cand.error
        return Proposal(exists, step_kind, error, prior)

    def _parse(self, b: int, sample: Sample) -> _Candidate:
        text = sample.text
        if _context_full(sample):
            # The original's vLLM ignores a prompt over max_model_len (empty text, "length"); its
            # empty steps would pile up to max_depth and end as TOO_MANY_STEPS. We end there now.
            self.counts["context_full"] += 1
            return _Candidate(text, NodeKind.TOO_DEEP)
        parsed = sf.parse_step(text)
        if parsed.kind == "code":
            return _Candidate(text, NodeKind.STEP)
        if parsed.kind == "unparsable":
            return _Candidate(text, NodeKind.UNPARSABLE)
        golds = self.problems[b].golds
        correct = grade(parsed.answer, list(golds)) if any(golds) else None
        if correct is None and any(golds):
            self.counts["ungraded_answers"] += 1
        return _Candidate(text, NodeKind.ANSWER, answer=parsed.answer, correct=correct)

    # -- commit the expansion: node records with their final text ----------------------------
    def commit(self, leaves: np.ndarray, ids: np.ndarray, kinds: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Records the children `expand` created; returns their (b, l, j, node) in id order."""
        created = []
        for (b, l, j), cand in self._pending.items():
            node = int(ids[b, l, j])
            if node == NO_NODE:
                continue
            kind = NodeKind(int(kinds[b, l, j]))
            text = cand.text
            # Only the step closing the code block, or a branch killed by errors, shows the output.
            if cand.code is not None and (sf.CODE_END in text or kind == NodeKind.CODE_ERRORS):
                text = sf.wrap_output(text, cand.output)
            answer = cand.answer if kind == NodeKind.ANSWER else sf.SENTINELS.get(kind)
            assert node == len(self.nodes[b]), "node ids are allocated in order"
            self.nodes[b].append(NodeRecord(text, cand.code, cand.output, answer, cand.correct))
            self.parents[b].append(int(leaves[b, l]))
            created.append((b, l, j, node))
        return sorted(created, key=lambda x: (x[0], x[3]))

    def ppm_values(self, targets: Sequence[tuple[int, int]]) -> np.ndarray:
        """PPM values of the trajectories ending at (tree, node), in one batched call."""
        if not targets:
            return np.zeros(0, np.float32)
        texts, step_starts = zip(*(sf.scored_step(self.problems[b].question,
                                                  self.trajectory_text(b, self.parents[b][n]), self.nodes[b][n].text)
                                   for b, n in targets))
        return np.asarray(self.ppm.score(texts, step_starts)[1], np.float32)

    # -- mcts_loop's score callback ----------------------------------------------------------
    def score(self, leaves: np.ndarray, ids: np.ndarray, kinds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        rewards = np.full(ids.shape, np.nan, np.float32)
        ppm = np.full(ids.shape, np.nan, np.float32)
        to_score = []
        for b, l, j, node in self.commit(leaves, ids, kinds):
            kind = kinds[b, l, j]
            if kind == NodeKind.ANSWER and cfg.ground_truth_rewards:
                rewards[b, l, j] = _reward(self.nodes[b][node].correct, cfg)
            elif (kind == NodeKind.ANSWER) or (kind == NodeKind.STEP and cfg.use_ppm):
                to_score.append((b, l, j, node))
        start = time.perf_counter()
        values = self.ppm_values([(b, node) for b, _, _, node in to_score])
        self.counts["score_s"] += time.perf_counter() - start
        for (b, l, j, _), v in zip(to_score, values):
            ppm[b, l, j] = v
            if kinds[b, l, j] == NodeKind.ANSWER:  # evaluation: the PPM scores answers (spec §3.5)
                rewards[b, l, j] = v
        return rewards, ppm


def _reward(correct: bool | None, config: SearchConfig) -> float:
    """A graded answer's reward; an answer whose grade could not finish gets the midpoint (0 with
    the default +-1): unknown, neither right nor wrong, so a busy grader never costs a right
    answer its reward."""
    if correct is None:
        return (config.positive_reward + config.negative_reward) / 2
    return config.positive_reward if correct else config.negative_reward


def _context_full(sample: Sample) -> bool:
    """The sampler's answer to a prompt with no room left in its context: nothing generated."""
    return sample.finish_reason == "length" and not sample.token_ids


def _dedup_key(sample: Sample) -> str:
    """The text vLLM returns: without the matched stop string, which the original re-appends only
    after deduplicating (`if out.text not in text_set`), so `x<end_of_step>` and `x<end_of_code>`
    are one sample there, the first one kept."""
    stop = sample.stop_string
    return sample.text[: -len(stop)] if stop and sample.text.endswith(stop) else sample.text


def _postprocess(completions: Sequence[Sample]) -> list[tuple[int, Sample]]:
    """Drops duplicate texts; if a sample ended the answer, keeps only the first such (spec §3.3)."""
    kept, seen = [], set()
    for j, c in enumerate(completions):
        if _dedup_key(c) not in seen:
            seen.add(_dedup_key(c))
            kept.append((j, c))
    answers = [(j, c) for j, c in kept if c.stop_string == sf.ANSWER_END]
    return answers[:1] or kept


def _check(problems: Sequence[Problem], ppm: ValueModel | None, config: SearchConfig) -> None:
    if (config.use_ppm or not config.ground_truth_rewards) and ppm is None:
        raise ValueError("SearchConfig: use_ppm=True or ground_truth_rewards=False needs a PPM (ppm=None given)")
    if config.selection not in ("uct", "puct"):
        raise ValueError(f"SearchConfig.selection must be 'uct' or 'puct', got {config.selection!r}")
    if config.prompt not in ("sft", "few_shot"):
        raise ValueError(f"SearchConfig.prompt must be 'sft' or 'few_shot', got {config.prompt!r}")
    if config.ground_truth_rewards:
        missing = [p.index for p in problems if not any(p.golds)]
        if missing:
            raise ValueError(f"ground_truth_rewards=True needs gold answers; problems {missing[:5]} have none")


def run_mcts(
    problems: Sequence[Problem],
    policy: StepGenerator,
    ppm: ValueModel | None,
    config: SearchConfig,
    executor: CodeRunner,
    *,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = True,
    stats: dict[str, float] | None = None,
) -> SearchResult:
    """MCTS on every problem, `config.batch_size` trees at a time (spec §3).

    Data generation (`ground_truth_rewards`): answers are rewarded +-1 against the gold answer.
    Evaluation: the PPM scores answers. Per tree, `result.answer(b)` is the best-scored answer and
    `result.pass_at_n(b)` says whether any answer was right. `stats` sums `mcts_loop`'s timings
    and the expander's counts: "ungraded_answers" (grades that ran out of time, rewarded neither
    +1 nor -1) and "context_full" (leaves whose prompt filled the policy's context; they get one
    TOO_DEEP child).
    """
    _check(problems, ppm, config)
    num_nodes = bucket(config.tree_nodes(), minimum=2)  # refuses a max_nodes below the budget
    results = []
    for start in range(0, len(problems), config.batch_size):
        batch = list(problems[start:start + config.batch_size])
        # On a mesh the batch is padded to a multiple of the data shards with inert trees (root
        # terminal: never selected, so nothing is sampled, executed or scored for them).
        padded = batch + batch[-1:] * (padded_batch(len(batch), mesh) - len(batch))
        steps = StepExpander(padded, policy, ppm, executor, config, config.leaves_per_tree)
        tree = Tree.init(len(padded), num_nodes, config.num_candidates, num_active=len(batch))
        if mesh is not None:
            tree = tree.shard(mesh)
        batch_stats: dict[str, float] = {}
        tree = mcts_loop(tree, config, steps.propose, steps.score, progress=progress, stats=batch_stats)
        batch_stats.update(steps.counts)
        if stats is not None:
            for key, value in batch_stats.items():
                stats[key] = stats.get(key, 0) + value
        results.append(SearchResult.from_tree(padded, tree, steps.nodes).take(range(len(batch))))
    return concat(results)

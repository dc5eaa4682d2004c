"""One tokenization rule for SFT / PPM training, sampling and scoring (`models.tokenizer.encode`),
checked with a tokenizer that adds a BOS (Llama-style) and one that adds none (Qwen-style)."""

from __future__ import annotations

import pytest
import transformers
from flax import nnx
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from rstar_jax import steps as sf
from rstar_jax.config import ModelConfig, SamplerConfig, ScorerConfig
from rstar_jax.data.records import PreferencePair, SFTRecord
from rstar_jax.inference.sampler import Completion, Sampler
from rstar_jax.inference.scorer import PPMScorer
from rstar_jax.models.decoder import Decoder
from rstar_jax.models.ppm import ProcessRewardModel
from rstar_jax.models.tokenizer import encode, sequence_start
from rstar_jax.training.data import encode_pairs, encode_sft

Q = "What is 12 + 30?"
STEP = "<code>\nx = 12 + 30\n<end_of_step>"


def make_tokenizer(bos: bool) -> transformers.PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<s>", "</s>", *sf.SPECIAL_TOKENS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([sf.policy_prompt(Q, STEP)] * 10, trainer)
    if bos:  # what a Llama tokenizer does: "<s>" before every encoded text
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                pad_token="</s>")


@pytest.fixture(scope="module", params=[True, False], ids=["bos", "no_bos"])
def tokenizer(request):
    return make_tokenizer(request.param)


def bare(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def model_config(tokenizer) -> ModelConfig:
    return ModelConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def test_a_sequence_starts_with_the_tokenizers_bos_and_a_continuation_does_not(tokenizer):
    start = sequence_start(tokenizer)
    assert start == ([0] if tokenizer("x")["input_ids"][0] == 0 else [])
    assert encode(tokenizer, [Q]) == [start + bare(tokenizer, Q)]
    assert encode(tokenizer, [STEP], start=False) == [bare(tokenizer, STEP)]
    ids, offsets = encode(tokenizer, [Q], offsets=True)
    assert len(offsets[0]) == len(ids[0]) and offsets[0][: len(start)] == [(0, 0)] * len(start)


def test_training_sampling_and_scoring_see_the_same_stream(tokenizer, monkeypatch):
    start = sequence_start(tokenizer)
    prompt = sf.policy_prompt(Q)
    want = start + bare(tokenizer, prompt)

    sft = encode_sft([SFTRecord(Q, STEP)], tokenizer, max_length=512)[0]
    assert sft.ids[: sft.prompt_len].tolist() == want
    assert sft.ids[sft.prompt_len:].tolist() == bare(tokenizer, STEP) + [tokenizer.eos_token_id]

    pair = encode_pairs([PreferencePair(prompt, STEP, STEP + " ", 1, 1)], tokenizer, max_length=512)[0]
    trained = pair.prompt.tolist() + pair.pos.tolist()
    assert trained == want + bare(tokenizer, STEP)

    config = model_config(tokenizer)
    scorer = PPMScorer(ProcessRewardModel(config, rngs=nnx.Rngs(0)), tokenizer, ScorerConfig(max_len=256))
    assert scorer.tokenize(prompt + STEP) == trained

    sampler = Sampler(Decoder(config, rngs=nnx.Rngs(0)), tokenizer, SamplerConfig(max_len=256))
    seen = []

    def run(prompt_ids, budgets, num_samples, *args, **kwargs):
        seen.extend(prompt_ids)
        return {(i, j): Completion("", [], "eos", 0.0) for i in range(len(prompt_ids)) for j in range(num_samples)}

    monkeypatch.setattr(sampler, "_run", run)
    sampler.sample([prompt], 1)
    assert seen == [want]

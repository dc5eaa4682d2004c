"""Qwen2 / Llama models in Flax NNX, the PPM, tokenizers and checkpoint formats.

    decoder.py     Decoder(config, rngs=...)(tokens_bt, positions_bt, attention_mask_bt=, cache=)
                   -> (logits_btv, cache); KVCache / init_cache for batched decoding
    ppm.py         ProcessRewardModel (decoder + value head) -> raw score of a step, at its last
                   token or over its tokens (PPMConfig.readout);
                   search_value(raw, scale) = tanh(raw / scale)
    tokenizer.py   load_tokenizer (adds rStar's special tokens), train_sentencepiece,
                   resize_embeddings
    hf.py          load_hf / save_hf, load_ppm_hf / save_ppm_hf: HF directories, the exchange
                   format between pipeline stages (load in `transformers` as they are)
    checkpoint.py  our orbax checkpoint; CLI `rstar-jax import-hf` / `export-hf`
"""

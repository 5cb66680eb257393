"""A tiny Qwen2-VL model written locally: real vLLM can load it on the CPU, nothing is downloaded.

Why: the engine tests must run the real ``vllm.LLM`` multi-modal path (processor, vision tower, mrope,
scheduler, workers) on a machine with no accelerator and no network. Everything here is generated in
seconds and is deterministic for a seed:

* a byte-level BPE tokenizer (about 2,000 tokens) trained with the ``tokenizers`` library on a generated
  English corpus, with Qwen2's pre-tokenization regex, Qwen's special tokens and Qwen2-VL's chat template;
* a Qwen2-VL config shaped for vLLM's CPU backend: hidden size 128, 2 layers, 4 heads and 2 KV heads (head
  size 32: CPU attention supports 32, 64, 80, ...), ``mrope_section`` summing to half the head size, a
  2-layer vision tower of width 64 whose merger projects to the text width;
* random weights (``transformers``' own initialisation under ``torch.manual_seed``), saved as safetensors
  in float32 (bfloat16 takes vLLM's AMX kernel, which dies with SIGILL unless the worker asked Linux for
  AMX permission; docs/vllm-facts.md, "Real vLLM on this kind of machine");
* ``preprocessor_config.json`` for ``Qwen2VLImageProcessor`` (patch 14, merge 2) with small pixel bounds,
  so every image becomes at most a few hundred visual tokens.

Engine side: imports ``torch``/``transformers``/``tokenizers`` inside the functions (run it in the vLLM
environment: ``python -m toolkit._testing.tiny_model OUT_DIR``).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

# Qwen2's special tokens, in Qwen's order (tokenizer_config.json of Qwen/Qwen2-VL-7B-Instruct).
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
# Qwen2's pre-tokenizer (tokenizer.json of Qwen/Qwen2-VL-7B-Instruct): GPT-4 style split, then byte level.
QWEN2_PRETOKENIZE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                     r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Qwen2-VL-7B-Instruct's chat template (chat_template.json), verbatim.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in "
    "messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
    "assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string "
    "%}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if "
    "content['type'] == 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = "
    "image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif "
    "%}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content "
    "%}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value "
    "}}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] "
    "}}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt "
    "%}<|im_start|>assistant\n{% endif %}"
)
VOCAB_SIZE = 2048  # embedding rows (>= trained tokens + specials)
BPE_VOCAB = 2000  # trained tokenizer size, special tokens included
HEAD_DIM = 32
# Small pixel bounds keep visual tokens low: 28 * 28 * 4 .. 28 * 28 * 256 pixels -> 4 .. 256 visual tokens.
MIN_PIXELS = 28 * 28 * 4
MAX_PIXELS = 28 * 28 * 256

_WORDS = (
    "what is the content of this image picture photo a an in on with and of to you are helpful assistant "
    "describe color red green blue sky tree house car road people dog cat city street water mountain sun "
    "light dark small large left right top bottom there here it shows some many one two three text screen "
    "window door table chair book phone camera screenshot panorama thumbnail white black yellow person "
    "answer question please short long detail background foreground object scene outdoor indoor"
).split()


_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sta", "ter", "vin", "ga", "po", "chi", "dre", "el", "an", "or",
              "qu", "ish", "ble", "tion", "ment", "ly", "pre", "con", "un", "ing", "er", "est", "ful", "zo")


def _corpus(seed: int, lines: int = 6000) -> list[str]:
    """English-like lines: the prompt's vocabulary plus syllable words, enough for ~2,000 BPE merges."""
    rng = random.Random(seed)
    made = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(1500)]
    vocab = list(_WORDS) * 8 + made
    out = []
    for _ in range(lines):
        words = [rng.choice(vocab) for _ in range(rng.randint(4, 16))]
        line = " ".join(words).capitalize() + rng.choice((".", "?", "!", ",", ":"))
        if rng.random() < 0.3:
            line += f" {rng.randint(0, 9999)}"
        out.append(line)
    return out


def build_tokenizer(seed: int = 0) -> Any:
    """Train the byte-level BPE tokenizer (a ``tokenizers.Tokenizer``); deterministic for a seed."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))  # appended after the trained vocabulary
    return tok


def _tokenizer_config() -> dict[str, Any]:
    return {
        "tokenizer_class": "Qwen2Tokenizer",
        "model_max_length": 4096,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "errors": "replace",
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "additional_special_tokens": list(SPECIAL_TOKENS[1:]),
        "chat_template": CHAT_TEMPLATE,
    }


def _preprocessor_config() -> dict[str, Any]:
    # Qwen2-VL's published preprocessor_config.json, with smaller pixel bounds.
    return {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor",
        "do_resize": True, "do_rescale": True, "do_normalize": True, "do_convert_rgb": True,
        "rescale_factor": 1 / 255,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS,
        "size": {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
        "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    }


def model_config(token_ids: dict[str, int]) -> dict[str, Any]:
    """The flat Qwen2-VL ``config.json`` (the Hub's layout), with the tokenizer's special-token ids."""
    return {
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "model_type": "qwen2_vl",
        "vocab_size": VOCAB_SIZE,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,  # 128 / 4 = head size 32
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "max_window_layers": 2,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]},  # sums to HEAD_DIM / 2
        "use_sliding_window": False,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "bos_token_id": token_ids["<|endoftext|>"],
        "eos_token_id": token_ids["<|im_end|>"],
        "image_token_id": token_ids["<|image_pad|>"],
        "video_token_id": token_ids["<|video_pad|>"],
        "vision_start_token_id": token_ids["<|vision_start|>"],
        "vision_end_token_id": token_ids["<|vision_end|>"],
        "vision_token_id": token_ids["<|vision_pad|>"],
        "torch_dtype": "float32",
        "vision_config": {
            "depth": 2, "embed_dim": 64, "hidden_size": 128, "hidden_act": "quick_gelu", "mlp_ratio": 2,
            "num_heads": 2, "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
    }


def write_tiny_qwen2_vl(out_dir: str | Path, *, seed: int = 0, overwrite: bool = False) -> Path:
    """Write the tiny Qwen2-VL model folder (config, tokenizer, processor, safetensors) and return it.

    An existing complete folder is reused unless ``overwrite``; the result is deterministic for a seed.
    """
    import torch
    from transformers import AutoConfig, Qwen2VLForConditionalGeneration

    out = Path(out_dir)
    done = out / ".memlab-tiny-model"
    if done.is_file() and not overwrite and done.read_text() == str(seed):
        return out
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(seed)
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(), indent=1))
    (out / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    (out / "preprocessor_config.json").write_text(json.dumps(_preprocessor_config(), indent=1))
    (out / "config.json").write_text(json.dumps(model_config(ids), indent=1))
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": ids["<|endoftext|>"], "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
         "pad_token_id": ids["<|endoftext|>"], "do_sample": False}))
    config = AutoConfig.from_pretrained(out)
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration._from_config(config, dtype=torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    (out / "config.json").write_text(json.dumps(model_config(ids), indent=1))  # keep the flat Hub layout
    done.write_text(str(seed))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m toolkit._testing.tiny_model",
                                description="Write the tiny Qwen2-VL model used by the CPU engine tests.")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    print(write_tiny_qwen2_vl(args.out_dir, seed=args.seed, overwrite=args.overwrite))


if __name__ == "__main__":
    main()

"""Prompt length of a Qwen-VL chat request, without the tokenizer (pure).

The simulator has no tokenizer (none can be downloaded), so the text part is *estimated*: Qwen2's
tokenizer first splits text with a GPT-4-style pre-tokenization regex (words with their leading space,
single digits, punctuation runs, newlines) and common English words are single BPE tokens, so the
estimate is one token per pre-token and one per special token. For the seed script's prompt this gives
29 text tokens; the error of a few tokens is negligible next to thousands of visual tokens. Callers who
know the exact count pass it instead (``SimEngine.generate(..., prompt_tokens=...)``).
"""

from __future__ import annotations

import re

IMAGE_PAD = "<|image_pad|>"
# the seed script's chat prompt (vllm-ascend PR #5855), one image placeholder
SEED_QUESTION = "What is the content of this image?"


def chat_prompt(question: str = SEED_QUESTION) -> str:
    """The Qwen chat prompt of the seed script, with one image."""
    return ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            f"<|im_start|>user\n<|vision_start|>{IMAGE_PAD}<|vision_end|>{question}<|im_end|>\n"
            "<|im_start|>assistant\n")


def prompt_for_image(prompt: str | None) -> str:
    """The prompt sent with one image: ``None`` -> the seed's question; a plain question (no special tokens)
    -> wrapped in the chat template with the image placeholder, as the seed script does; a prompt that
    already has special tokens is used as given (the engine checks its placeholder count)."""
    if prompt is None:
        return chat_prompt()
    if IMAGE_PAD not in prompt and "<|im_start|>" not in prompt:
        return chat_prompt(prompt)
    return prompt


_SPECIAL = re.compile(r"<\|[a-z_]+\|>")
# Qwen2 pre-tokenizer pattern with \p{L} -> [^\W\d_] and \p{N} -> \d (Python's re has no \p classes)
_PRETOKEN = re.compile(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\w]?[^\W\d_]+|\d| ?[^\s\w]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def estimate_text_tokens(text: str) -> int:
    """Estimated tokens of ``text``: special tokens count one each (the image placeholder included)."""
    count = 0
    pos = 0
    for m in _SPECIAL.finditer(text):
        count += len(_PRETOKEN.findall(text[pos:m.start()])) + 1
        pos = m.end()
    return count + len(_PRETOKEN.findall(text[pos:]))


def prompt_tokens(prompt: str, visual_tokens: int) -> int:
    """Tokens the engine schedules: each ``<|image_pad|>`` expands to the image's visual tokens."""
    n_images = prompt.count(IMAGE_PAD)
    if visual_tokens and n_images != 1:
        raise ValueError(f"the prompt must contain exactly one {IMAGE_PAD} for one image, found {n_images}")
    return estimate_text_tokens(prompt) - n_images + (visual_tokens if n_images else 0)

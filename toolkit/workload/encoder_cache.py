"""vLLM V1's encoder-cache bookkeeping (pure), which decides when an image's embeddings are freed.

Mirrors ``vllm/v1/core/encoder_cache_manager.py``: the scheduler budgets the cache in *embeddings*
(``encoder_cache_size = max(max_num_batched_encoder_embeds (default: max_num_batched_tokens),
max tokens of one item)``); a finished request's entry is not freed but becomes *freeable*; a new image
that does not fit the free slots evicts the oldest freeable entries first, and only then does the model
runner drop those tensors (``free_encoder_mm_hashes`` at the start of the step that encodes the new image).
So encoder outputs of earlier photos stay on the device, interleaved with the activations of later ones:
long-lived allocations of varying size in the middle of the transient ones.
"""

from __future__ import annotations

from collections import OrderedDict


class EncoderCacheBook:
    """Which cached encoder outputs exist and which must be freed before the next image is encoded."""

    def __init__(self, cache_size: int) -> None:
        if cache_size < 1:
            raise ValueError("encoder cache size must be positive")
        self.cache_size = cache_size
        self.num_free_slots = cache_size
        self.num_freeable_slots = cache_size
        self.referenced: dict[str, int] = {}  # key -> embeddings, entries used by a running request
        self.freeable: OrderedDict[str, int] = OrderedDict()  # oldest first

    def admit(self, key: str, num_embeds: int) -> list[str] | None:
        """Make room for ``key`` and reference it; returns the keys to free first (oldest first), ``[]``
        on a cache hit or when it fits, ``None`` if it can never fit (vLLM would not schedule it)."""
        if key in self.referenced:
            return []
        if key in self.freeable:  # cache hit on an unreferenced entry
            n = self.freeable.pop(key)
            self.num_freeable_slots -= n
            self.referenced[key] = n
            return []
        if num_embeds > self.num_freeable_slots:
            return None
        evicted: list[str] = []
        while num_embeds > self.num_free_slots:
            old, n = self.freeable.popitem(last=False)
            evicted.append(old)
            self.num_free_slots += n
        self.referenced[key] = num_embeds
        self.num_free_slots -= num_embeds
        self.num_freeable_slots -= num_embeds
        return evicted

    def release(self, key: str) -> None:
        """The request using ``key`` finished: the entry stays cached but becomes freeable."""
        n = self.referenced.pop(key)
        self.freeable[key] = n
        self.num_freeable_slots += n

"""Allocator configuration strings: parse, validate, format and explain (pure; never imports torch).

CONTRACT (written before the implementation so the simulator can code against it):

    parse(text, platform="npu", version=None) -> AllocConf      # raises ConfError (a ValueError)
    AllocConf: frozen dataclass
        .platform: "npu" | "cuda"
        .version: str                    # resolved dialect version
        .options: dict[str, value]       # typed values of the keys given (duplicates: last wins)
        .warnings: tuple[ConfWarning, ...]
        str(conf) -> canonical string
        behaviour properties (defaults applied):
            expandable_segments: bool
            max_split_size_bytes: int | None            # None = unlimited
            max_non_split_rounding_bytes: int           # 20 MiB default (2.11: = large segment size)
            roundup_power2_divisions: tuple[int, ...]   # 16 entries, interval table of spec 2.4
            garbage_collection_threshold: float         # 0.0 = off
            per_process_memory_fraction: float | None
            large_segment_size_bytes: int               # 20 MiB default
            page_size_1g: bool                          # NPU page_size:1g
            base_addr_aligned_kb: int                   # NPU, default 16
            multi_stream_lazy_reclaim: bool             # NPU
            backend: str                                # CUDA "native" | "cudaMallocAsync"
"""

"""The allocator-conf tokenizer, both flavours (docs/allocator.md §1.3).

Each of ``, : [ ]`` is a one-character token; every other character joins the current word; whitespace
is dropped *anywhere*, even inside a word (``"max split"`` -> ``"maxsplit"``). The legacy parsers
(CUDA <= 2.9, torch_npu <= 26.1.0: ``lexArgs``) drop only ``' '``; c10's ``ConfigTokenizer`` drops every
``std::isspace`` char of the "C" locale. No quoting, no escapes, case-sensitive.
"""

from __future__ import annotations

from typing import NamedTuple

_C_SPACE = frozenset(" \t\n\v\f\r")
_LEGACY_SPACE = frozenset(" ")
SEPARATORS = frozenset(",:[]")


class Token(NamedTuple):
    text: str
    pos: int  # offset of its first character in the conf text


def tokenize(text: str, *, unified: bool) -> list[Token]:
    """Split ``text`` the way the upstream lexer does, remembering where each token starts."""
    space = _C_SPACE if unified else _LEGACY_SPACE
    tokens: list[Token] = []
    word: list[str] = []
    start = 0
    for pos, ch in enumerate(text):
        if ch in SEPARATORS:
            if word:
                tokens.append(Token("".join(word), start))
                word = []
            tokens.append(Token(ch, pos))
        elif ch not in space:
            if not word:
                start = pos
            word.append(ch)
    if word:
        tokens.append(Token("".join(word), start))
    return tokens

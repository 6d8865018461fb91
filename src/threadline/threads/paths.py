"""Materialised paths: an order-preserving, prefix-free encoding of sibling ranks from the root.

A message's path is its parent's path plus the encoding of its rank among its siblings (0 for the
first reply). Byte order of paths is then depth-first order with siblings oldest first, so a whole
thread is one range scan on (root_id, path) and a subtree is a path-prefix range.

Ranks below 240 take one byte; up to 65,775 three; beyond that five. The lead byte fixes the length,
so no encoding is a prefix of another and shorter encodings sort before longer ones.
"""

from __future__ import annotations

_ONE = 0xF0
_THREE = 0xF0 + 0x10000


def encode_rank(rank: int) -> bytes:
    if rank < 0:
        raise ValueError("rank must not be negative")
    if rank < _ONE:
        return bytes((rank,))
    if rank < _THREE:
        return b"\xf0" + (rank - _ONE).to_bytes(2, "big")
    return b"\xf1" + (rank - _THREE).to_bytes(4, "big")


def segments(path: bytes) -> list[bytes]:
    """The per-level encodings of `path`, root's child first."""
    out = []
    i = 0
    while i < len(path):
        lead = path[i]
        width = 1 if lead < 0xF0 else 3 if lead == 0xF0 else 5
        out.append(path[i : i + width])
        i += width
    return out


def ancestor_paths(path: bytes) -> list[bytes]:
    """Paths of every proper ancestor, root (the empty path) first."""
    prefixes = [b""]
    acc = b""
    for seg in segments(path)[:-1]:
        acc += seg
        prefixes.append(acc)
    return prefixes if path else []


def subtree_upper_bound(path: bytes) -> bytes:
    """Exclusive upper bound of the subtree at `path`: no segment starts with 0xFF."""
    return path + b"\xff"

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


def ancestor_lengths(path: bytes) -> list[int]:
    """The lengths of `ancestor_paths(path)` (0, the root's, first), in time linear in the path: each ancestor's
    path is the prefix of that length."""
    if not path:
        return []
    lengths = [0]
    i = 0
    while True:
        lead = path[i]
        i += 1 if lead < 0xF0 else 3 if lead == 0xF0 else 5
        if i >= len(path):
            return lengths
        lengths.append(i)


def subtree_upper_bound(path: bytes) -> bytes:
    """Exclusive upper bound of the subtree at `path`: no segment starts with 0xFF."""
    return path + b"\xff"


def decode_rank(segment: bytes) -> int:
    """The sibling rank one segment encodes (the inverse of `encode_rank`)."""
    lead = segment[0]
    if lead < _ONE:
        return lead
    if lead == 0xF0:
        return _ONE + int.from_bytes(segment[1:3], "big")
    return _THREE + int.from_bytes(segment[1:5], "big")


def sibling_rank(path: bytes) -> int:
    """A message's rank among its siblings, oldest first (0 for a root or a first reply)."""
    found = segments(path)
    return decode_rank(found[-1]) if found else 0


def parent_path(path: bytes) -> bytes:
    """The path of a reply's parent (the root's empty path for a root's reply)."""
    found = segments(path)
    return path[: len(path) - len(found[-1])] if found else b""

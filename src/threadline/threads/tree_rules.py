"""Where a message sits in its thread: the tree invariants, for live writes and imports alike (pure).

- A root starts a thread: depth 0, the empty path, its own root.
- A reply's depth is its parent's plus one, at most `thread_max_depth` (THREADLINE_THREAD_MAX_DEPTH).
- A reply's path is its parent's path plus `encode_rank(rank)`, its rank among its siblings oldest first
  (0 for the first reply). A parent's `child_count` is its number of replies, so the next reply's rank.
  Byte order of paths is then depth-first order (threads.paths).

`threads.service` places one reply under a locked parent; `porting.importer` places a whole planned tree.
Each turns `TooDeep` into its own report (a BAD_USER_INPUT on the reply, a rejected conversation).
"""

from __future__ import annotations

from dataclasses import dataclass

from threadline.threads.paths import encode_rank


@dataclass(frozen=True)
class Placement:
    depth: int
    path: bytes


ROOT = Placement(depth=0, path=b"")


class TooDeep(Exception):
    def __init__(self, depth: int, limit: int) -> None:
        super().__init__(f"depth {depth} exceeds {limit}")
        self.depth = depth
        self.limit = limit


def reply_placement(parent_depth: int, parent_path: bytes, rank: int, max_depth: int) -> Placement:
    """The depth and path of the `rank`-th reply (0 for the first) to a message at `parent_depth`/`parent_path`."""
    depth = parent_depth + 1
    if depth > max_depth:
        raise TooDeep(depth, max_depth)
    return Placement(depth=depth, path=parent_path + encode_rank(rank))

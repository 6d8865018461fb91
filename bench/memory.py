"""Where a server process's memory goes: RSS and, under tracemalloc, the Python allocations by owner.

Used by bench/server.py (route `/_bench/memory`, always there; tracemalloc only with
THREADLINE_BENCH_TRACEMALLOC=<frames>) and by the idle-socket baseline in bench/fanout.py.

`mark` collects garbage, returns freed heap to the system (glibc malloc_trim) and remembers the RSS and,
under tracemalloc, a snapshot; `diff` does the same and returns the growth since the mark: RSS, the traced
Python bytes grouped by owner (`owner_of`: which library's code allocated them, by the innermost frame outside
the standard library), by allocation site, and the object counts by type.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import tracemalloc
from collections import Counter
from typing import Any

_STDLIB = os.path.dirname(os.__file__)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def settle() -> int:
    """Collects garbage and returns freed heap to the system; the number of unreachable objects collected."""
    found = gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return found


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def heaps() -> dict[str, int]:
    """Where the process's heap memory is: Python's small-object allocator (pymalloc: bytes in objects, free
    bytes in its pools, wholly free pools, arenas) and glibc malloc (objects over 512 bytes, C allocations: bytes
    in use, free bytes it keeps, mmapped blocks)."""
    out: dict[str, int] = {}
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
        out |= {"malloc_in_use": info.uordblks, "malloc_free": info.fordblks, "malloc_mmapped": info.hblkhd}
    except (OSError, AttributeError):
        pass
    import tempfile

    with tempfile.TemporaryFile(mode="w+") as f:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(f.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read()
    wanted = {
        "# arenas allocated current": "pymalloc_arenas",
        "bytes in allocated blocks": "pymalloc_in_use",
        "bytes in available blocks": "pymalloc_free_in_pools",
        "unused pools": "pymalloc_free_pools",
        "bytes lost to pool headers": "pymalloc_pool_headers",
        "bytes lost to quantization": "pymalloc_quantization",
    }
    for line in text.splitlines():
        name, _, value = line.rpartition("=")
        name = name.strip()
        for prefix, key in wanted.items():
            if prefix in name and value.strip().replace(",", "").isdigit():
                number = int(value.strip().replace(",", ""))
                if key == "pymalloc_free_pools":  # "N unused pools * 16384 bytes"
                    number = int(name.split()[0].replace(",", "")) * int(name.split("*")[1].split()[0])
                out[key] = number
    return out


def _package(filename: str) -> str:
    if "site-packages/" in filename:
        rest = filename.split("site-packages/", 1)[1]
        return rest.split("/", 1)[0].removesuffix(".py")
    if "/src/threadline/" in filename:
        rest = filename.split("/src/threadline/", 1)[1]
        return "threadline." + rest.split("/", 1)[0].removesuffix(".py")
    if filename.startswith(_STDLIB):
        return "stdlib." + filename[len(_STDLIB) + 1 :].split("/", 1)[0].removesuffix(".py")
    return filename


def owner_of(traceback: tracemalloc.Traceback) -> tuple[str, str]:
    """(package, site) of an allocation: the innermost frame outside the standard library (asyncio's Task,
    Event, Queue are charged to whoever created them), else the innermost frame."""
    frames = list(traceback)  # oldest first
    for frame in reversed(frames):
        if not frame.filename.startswith(_STDLIB) and "<frozen" not in frame.filename:
            return _package(frame.filename), f"{frame.filename.rsplit('/', 2)[-2:][-1]}:{frame.lineno}"
    frame = frames[-1]
    return _package(frame.filename), f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}"


# Containers and other objects that belong to whoever refers to them (a dict of attributes, a frame's tuple).
_GENERIC = frozenset(
    {
        "dict",
        "list",
        "tuple",
        "set",
        "frozenset",
        "cell",
        "str",
        "bytes",
        "bytearray",
        "int",
        "float",
        "method",
        "partial",
        "hamt",
        "hamt_bitmap_node",
        "hamt_array_node",
        "hamt_collision_node",
        "Context",
        "ReferenceType",
        "KeyedRef",
        "builtin_function_or_method",
        "deque",
        "_SlimDeque",
        "OrderedDict",
        "list_iterator",
        "FutureIter",
        "async_generator_asend",
        "NoneType",
        "bool",
        "traceback",
        "frame",
    }
)
# Kinds that are never one socket's own (shared machinery): the walk stops at them.
_SHARED = frozenset(
    {
        "type",
        "module",
        "function",
        "code",
        "StreamHub",
        "Loop",
        "Server",
        "Config",
        "ServerState",
        "Logger",
        "ThreadlineGraphQL",
        "Schema",
        "ThreadlineSchema",
        "Settings",
        "Services",
        "Pool",
        "GraphQLSchema",
        "LaneGroup",
        "SocketSessions",
        "Database",
    }
)


def _label(obj: Any) -> str | None:
    name = type(obj).__name__
    if name in ("coroutine", "async_generator", "generator"):
        return f"{name} {getattr(obj, '__qualname__', '?')}"
    return None if name in _GENERIC else f"{type(obj).__module__.split('.')[0]}.{name}"


def _socket_roots() -> list[list[Any]]:
    """Each open, accepted uvicorn WebSocket: its protocol object and its ASGI task."""
    import asyncio

    protocols = [
        o
        for o in gc.get_objects()
        if type(o).__name__ == "WebSocketsSansIOProtocol"
        and getattr(o, "handshake_complete", False)
        and not getattr(o, "close_sent", True)
    ]
    tasks: dict[int, Any] = {}
    for task in asyncio.all_tasks():
        frame = getattr(task.get_coro(), "cr_frame", None)
        owner = frame.f_locals.get("self") if frame is not None else None
        if owner is not None:
            tasks[id(owner)] = task
    return [[p, tasks[id(p)]] if id(p) in tasks else [p] for p in protocols]


def _walk(roots: list[Any], old: set[int], others: set[int]) -> dict[int, tuple[Any, str]]:
    """Objects reachable from `roots` through objects made since the mark (`old`: the ids then) and not through
    another socket's roots (`others`), each with its owner: its own kind, or for a container, the kind of the
    object it was reached from."""
    seen: dict[int, tuple[Any, str]] = {}
    old = old | (others - {id(r) for r in roots})
    pending = [(r, _label(r) or "root") for r in roots]
    while pending:
        obj, parent = pending.pop()
        key = id(obj)
        if key in seen or key in old or type(obj).__name__ in _SHARED or isinstance(obj, type):
            continue
        owner = _label(obj) or parent
        seen[key] = (obj, owner)
        pending.extend((r, owner) for r in gc.get_referents(obj))
    return seen


def socket_breakdown(old: set[int], samples: int = 4) -> dict[str, Any]:
    """Where one idle socket's Python objects go: the objects only it reaches (from its uvicorn protocol and
    ASGI task, through objects made since the mark; minus whatever another socket reaches too), their
    `sys.getsizeof` bytes by owner and by type. Averaged over `samples` sockets."""
    every = _socket_roots()
    sockets = every[: samples + 1]
    if len(sockets) < 2:
        return {}
    others = {id(r) for roots in every for r in roots}
    walks = [_walk(roots, old, others) for roots in sockets]
    by_owner: Counter[str] = Counter()
    by_type: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    total = 0
    for i, walk in enumerate(walks[:-1]):
        other = walks[i + 1]
        for key, (obj, owner) in walk.items():
            if key in other:
                continue
            size = sys.getsizeof(obj)
            total += size
            by_owner[owner] += size
            by_type[type(obj).__name__] += size
            counts[type(obj).__name__] += 1
    n = len(walks) - 1
    return {
        "bytes": round(total / n),
        "by_owner": {k: round(v / n) for k, v in by_owner.most_common()},
        "by_type": {k: [round(v / n), round(counts[k] / n, 1)] for k, v in by_type.most_common()},
    }


class MemoryProbe:
    def __init__(self) -> None:
        self.rss = 0
        self.snapshot: tracemalloc.Snapshot | None = None
        self.types: Counter[str] = Counter()
        self.heaps: dict[str, int] = {}
        self.old: list[Any] = []  # the objects at the mark, held so that their ids stay theirs

    @staticmethod
    def _types() -> Counter[str]:
        return Counter(type(o).__name__ for o in gc.get_objects())

    def mark(self) -> dict[str, Any]:
        settle()
        self.rss = rss_bytes()
        self.heaps = heaps()
        self.types = self._types()
        self.snapshot = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
        self.old = gc.get_objects() if os.environ.get("THREADLINE_BENCH_SOCKET_GRAPH") else []
        return {"rss": self.rss}

    def diff(self, per: int = 1, top: int = 70) -> dict[str, Any]:
        per = max(per, 1)
        # Objects in reference cycles since the last collection (freed by this one: their memory left holes).
        cyclic = settle()
        rss = rss_bytes()
        out: dict[str, Any] = {
            "rss": rss,
            "rss_delta": rss - self.rss,
            "cyclic_garbage_per": round(cyclic / per, 2),
        }
        now_heaps = heaps()
        out["heaps_per"] = {k: round((v - self.heaps.get(k, 0)) / per) for k, v in now_heaps.items()}
        types = self._types()
        grown = {k: v - self.types.get(k, 0) for k, v in types.items()}
        out["objects"] = {
            k: round(v / per, 2) for k, v in sorted(grown.items(), key=lambda kv: -kv[1])[:top] if v > 0
        }
        if self.snapshot is not None and tracemalloc.is_tracing():
            now = tracemalloc.take_snapshot()
            by_package: Counter[str] = Counter()
            by_site: Counter[tuple[str, str]] = Counter()
            stacks: dict[tuple[str, str], str] = {}
            for stat in now.compare_to(self.snapshot, "traceback"):
                if stat.size_diff == 0:
                    continue
                package, site = owner_of(stat.traceback)
                by_package[package] += stat.size_diff
                by_site[(package, site)] += stat.size_diff
                stacks.setdefault(
                    (package, site),
                    " <- ".join(
                        f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}"
                        for f in reversed(list(stat.traceback)[-6:])
                    ),
                )
            out["traced_delta"] = sum(by_package.values())
            out["by_package"] = {k: round(v / per) for k, v in by_package.most_common() if abs(v) >= per * 8}
            out["by_site"] = [
                {"package": p, "site": s, "bytes": round(v / per), "stack": stacks[(p, s)]}
                for (p, s), v in by_site.most_common(top)
            ]
        return out


def start_tracing_from_env() -> None:
    frames = os.environ.get("THREADLINE_BENCH_TRACEMALLOC")
    if frames:
        tracemalloc.start(int(frames))


def memory_route() -> Any:
    """`/_bench/memory?op=mark|diff&per=N` for bench/server.py."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    probe = MemoryProbe()

    async def memory(request: Request) -> JSONResponse:
        op = request.query_params.get("op", "diff")
        if op == "mark":
            return JSONResponse(probe.mark())
        if op == "socket":  # THREADLINE_BENCH_SOCKET_GRAPH=1: the objects made before the mark are shared
            return JSONResponse(socket_breakdown({id(o) for o in probe.old}))
        return JSONResponse(probe.diff(int(request.query_params.get("per", "1"))))

    return Route("/_bench/memory", memory)


if __name__ == "__main__":  # pragma: no cover - a quick check of this module alone
    probe = MemoryProbe()
    print(probe.mark())
    junk = [bytearray(1000) for _ in range(10_000)]
    print(probe.diff(len(junk))["rss_delta"] / len(junk), file=sys.stderr)

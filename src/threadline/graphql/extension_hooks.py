"""Schema extension hooks without strawberry's per-request introspection (issue 14).

For every operation strawberry builds four context managers (operation, parsing, validation, executing), and
each asks every schema extension, with `inspect`, whether it overrides that hook and what kind of function the
hook is, then wraps it with `contextlib.contextmanager` (a new function and `functools.update_wrapper` each
time): ~65 us per request for our eight extensions, more than parsing a cached document. The answer depends
only on the extension's class and the hook, so here it is worked out once per (class, hook) and each request
only binds the hook to its extension instance, to the same context manager classes contextlib would build.
Hooks that are plain functions (not generators) keep strawberry's own wrapping.
"""

from __future__ import annotations

import contextlib
import inspect
from functools import partial
from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.extensions.context import (
    ExecutingContextManager,
    OperationContextManager,
    ParsingContextManager,
    ValidationContextManager,
    WrappedHook,
)
from strawberry.extensions.runner import SchemaExtensionsRunner

__all__ = ["CachedHooksRunner"]

_GENERATOR, _ASYNC_GENERATOR, _CALLABLE = 1, 2, 3
_NONE: tuple[int, Any] = (0, None)
_KINDS: dict[tuple[type, str], tuple[int, Any]] = {}


def _kind(extension_class: type, hook_name: str) -> tuple[int, Any]:
    """strawberry's `ExtensionContextManagerBase.get_hook` decision, for a class of extension."""
    key = (extension_class, hook_name)
    known = _KINDS.get(key)
    if known is not None:
        return known
    hook = getattr(extension_class, hook_name)
    if hook is getattr(SchemaExtension, hook_name) or not hook:
        known = _NONE
    elif inspect.isgeneratorfunction(hook):
        known = (_GENERATOR, hook)
    elif inspect.isasyncgenfunction(hook):
        known = (_ASYNC_GENERATOR, hook)
    else:
        known = (_CALLABLE, hook)  # strawberry's from_callable (or its refusal of a non-callable)
    _KINDS[key] = known
    return known


class _CachedHooks:
    """The hooks of `extensions` from the cached decisions; each context manager is contextlib's own, bound to
    its extension instance (what `contextlib.contextmanager(MethodType(hook, extension))()` builds)."""

    __slots__ = ()
    HOOK_NAME: str

    def __init__(self, extensions: list[SchemaExtension]) -> None:
        self.default_hook = getattr(SchemaExtension, self.HOOK_NAME)  # type: ignore[misc]
        name = self.HOOK_NAME
        hooks: list[WrappedHook] = []
        for extension in extensions:
            kind, hook = _kind(type(extension), name)
            if kind == _ASYNC_GENERATOR:
                manager: Any = partial(_AsyncManager, hook, (extension,), {})
                hooks.append(WrappedHook(extension, manager, True))
            elif kind == _GENERATOR:
                hooks.append(WrappedHook(extension, partial(_Manager, hook, (extension,), {}), False))
            elif kind == _CALLABLE:
                found = self.get_hook(extension)  # type: ignore[attr-defined]
                if found is not None:
                    hooks.append(found)
        self.hooks = hooks  # type: ignore[misc]


_Manager = contextlib._GeneratorContextManager
_AsyncManager = contextlib._AsyncGeneratorContextManager


class _Operation(_CachedHooks, OperationContextManager):
    __slots__ = ()


class _Validation(_CachedHooks, ValidationContextManager):
    __slots__ = ()


class _Parsing(_CachedHooks, ParsingContextManager):
    __slots__ = ()


class _Executing(_CachedHooks, ExecutingContextManager):
    __slots__ = ()


class CachedHooksRunner(SchemaExtensionsRunner):
    """strawberry's runner with the four per-operation context managers above."""

    def operation(self) -> OperationContextManager:
        return _Operation(self.extensions)

    def validation(self) -> ValidationContextManager:
        return _Validation(self.extensions)

    def parsing(self) -> ParsingContextManager:
        return _Parsing(self.extensions)

    def executing(self) -> ExecutingContextManager:
        return _Executing(self.extensions)

"""The project's execution context: every selection runs as compiled code, cached per operation.

graphql-core spends several microseconds on every resolved field (resolve info, path, resolver call through
strawberry's wrapper, completion dispatch); a page of 50 conversations with their owners and participants is
thousands of them, and most only read an attribute. `FastExecutionContext` runs each object selection of the
document through code compiled for it (graphql/compiled_plan.py): plain fields are read and serialized
inline, plain object and list fields are completed through their own compiled selections, and resolvers
go through the stock `execute_field` (so DataLoaders batch as before, and resolve info is the stock one).

The compiled code of an operation is cached across requests, keyed by the operation (its document text and
position) and, inside it, by parent type and selection shape (which `@skip`/`@include` variables can
change): at most `OPERATIONS_CACHED` operations, least recently used first out.

Everything the plans do not cover is the stock executor's: `@defer`/`@stream` and custom directives,
fragment arguments, abstract types (until their runtime object type is known), types with a hand-written
`is_type_of`, lists of lists, and schemas whose extensions wrap resolvers (`resolve` hooks), which turn
compiled execution off entirely. Results, errors, their paths and order stay the stock executor's: see
tests/test_compiled_execution.py, which compares both byte for byte.

Both executors (this one and `StockExecutionContext`, the stock one that tests and benchmarks compare with)
give one response per query and data, whatever order concurrent fields finish in (graphql/compiled_errors.py):
graphql-core's gathers let every awaitable finish and raise the first failure in document order, and a
response's errors are listed in the order of their paths in the data.
"""

from __future__ import annotations

import weakref
from asyncio import gather
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import graphql.execution.executor
from graphql import GraphQLError, GraphQLField, GraphQLObjectType, OperationDefinitionNode, OperationType
from graphql.execution.collect_fields import FieldDetailsList
from graphql.execution.executor import CollectedErrors, collect_iterator_awaitables, to_nodes
from graphql.pyutils import Path, Undefined
from graphql.type import (
    GraphQLList,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLResolveInfoHelpers,
    is_non_null_type,
    is_object_type,
)
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.cast import TYPE_CAST_ATTRIBUTE

from threadline.graphql import budget
from threadline.graphql.compiled_errors import gather_settled, in_path_order
from threadline.graphql.compiled_leaves import LeafRows, leaf_rows
from threadline.graphql.compiled_plan import (
    COLLECTED_DIRECTIVES,
    Bind,
    Shape,
    compile_selection,
    exact_class,
    object_type_check,
    selection_shape,
)
from threadline.graphql.compiled_trees import TREE_DEPTH_MAX, Tree, row_class, tree_fields, tree_rows

__all__ = ["OPERATIONS_CACHED", "FastExecutionContext", "StockExecutionContext"]

# graphql-core's executor looks its gather up in its module at each call: every executor (this one's stock
# fallbacks, the stock one, resolvers' `gather_async_work`) then settles concurrent fields the same way.
setattr(graphql.execution.executor, "gather_with_cancel", gather_settled)  # noqa: B010

OPERATIONS_CACHED = 512  # operations whose compiled selections are kept (least recently used out first)
SELECTIONS_PER_OPERATION = 1024  # past this (many @skip/@include combinations) new shapes are not kept

Run = Callable[[Any, Path | None], Any]
_Plans = dict[tuple[GraphQLObjectType, Shape], Bind | None]
_OPERATIONS: OrderedDict[tuple[str, int], _Plans] = OrderedDict()
_new_tuple = tuple.__new__  # builds a Path without the NamedTuple's generated __new__ (a frame per call)


def _operation_plans(operation: OperationDefinitionNode) -> _Plans:
    """The compiled selections of `operation`, shared by every request that sends the same document."""
    loc = operation.loc
    if loc is None:  # a document built without locations: compiled for this request only
        return {}
    key = (loc.source.body, loc.start)
    plans = _OPERATIONS.get(key)
    if plans is None:
        plans = _OPERATIONS[key] = {}
        if len(_OPERATIONS) > OPERATIONS_CACHED:
            _OPERATIONS.popitem(last=False)
    else:
        _OPERATIONS.move_to_end(key)
    return plans


def _streams(field_details_list: FieldDetailsList) -> bool:
    """Whether a list field carries `@stream` (or another directive field collection did not apply)."""
    return any(
        d.name.value not in COLLECTED_DIRECTIVES
        for details in field_details_list
        for d in details.node.directives or ()
    )


class StockExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """The stock strawberry executor, its errors in path order (graphql/compiled_errors.py)."""

    def build_response(self, data: dict[str, Any] | None) -> Any:
        in_path_order(self.collected_errors.errors, data)
        return super().build_response(data)


class FastExecutionContext(StockExecutionContext):
    """The stock strawberry executor, with every object selection run as compiled code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        manager = self.middleware_manager
        # Schema extensions that implement `resolve` wrap every field: only the stock path runs them.
        self._fast = manager is None or not manager.middlewares
        self._plans = _operation_plans(self.operation) if self._fast else {}
        # Compiled selections bound to this request's field nodes, by the identity of their field set (kept
        # alive with it, as collect_subfields does, so that an id is never reused while cached).
        self._runs: dict[int, tuple[dict[str, FieldDetailsList], Run | None]] = {}
        # child_selection's compiled answers by (object type, identity of the field details list).
        self._children: dict[tuple[GraphQLObjectType, int], tuple[FieldDetailsList, Run]] = {}
        # leaf_rows' answers, keyed as child_selection's.
        self._leaf_rows: dict[tuple[GraphQLObjectType, int], tuple[FieldDetailsList, LeafRows | None]] = {}
        # [twins answer, a twin answered]: resolvers' synchronous twins (graphql.ready) are asked in queries
        # only (see execute_collected_root_fields).
        self.twins = [False, False]
        # graphql-core's resolve info helpers are bound methods of the executor: a reference cycle through it,
        # which kept each request (its context, loaders, rows, objects) alive until a garbage collection, and
        # made collections walk and free it (~0.2-0.9 ms per page request). The same helpers, held weakly.
        me = weakref.ref(self)
        self.async_helpers = GraphQLResolveInfoHelpers(
            gather=partial(_weak_gather, me), track=partial(_weak_track, me)
        )

    def build_per_event_executor(self, payload: Any) -> Any:
        executor: FastExecutionContext = super().build_per_event_executor(payload)  # type: ignore[assignment]
        # Each event collects its root fields afresh, so every cache keyed by field details lists gets new keys
        # each event: graphql-core's copy shares its sub-field memo (and ours) with the subscription's executor,
        # where a long subscription piled up entries (and the lists they hold) without end. Each event's copy
        # has its own, gone with it.
        executor._relevant_sub_fields = {}
        executor._leaf_rows = {}
        executor.forget_bound_selections()
        return executor

    def forget_bound_selections(self) -> None:
        self._runs = {}
        self._children = {}

    def build_response(self, data: dict[str, Any] | None) -> Any:
        # The bound selections hold this executor (their code calls its methods): a cycle that would keep the
        # whole request (context, loaders, rows) alive until a garbage collection. Done with them here; work
        # that goes on after the response (@defer, @stream) binds them again.
        response = super().build_response(data)
        self.forget_bound_selections()
        return response

    # --- plans --------------------------------------------------------------------------------------------

    def compiled_selection(
        self, parent_type: GraphQLObjectType, grouped_field_set: dict[str, FieldDetailsList]
    ) -> Bind | None:
        """The compiled code of a selection of `parent_type` (None: the stock executor runs it)."""
        key = (parent_type, selection_shape(grouped_field_set))
        plans = self._plans
        if key in plans:
            return plans[key]
        try:
            bind: Bind | None = compile_selection(self.schema, parent_type, key[1])
        except Exception:  # noqa: BLE001 - a selection the compiler cannot express runs on the stock path
            bind = None
        if len(plans) < SELECTIONS_PER_OPERATION:
            plans[key] = bind
        return bind

    def _run_for(
        self, parent_type: GraphQLObjectType, grouped_field_set: dict[str, FieldDetailsList]
    ) -> Run | None:
        entry = self._runs.get(id(grouped_field_set))
        if entry is None:
            bind = self.compiled_selection(parent_type, grouped_field_set) if self._fast else None
            run = None if bind is None else bind(self, tuple(grouped_field_set.values()))
            entry = (grouped_field_set, run)
            self._runs[id(grouped_field_set)] = entry
        return entry[1]

    def child_selection(self, object_type: GraphQLObjectType, field_details_list: FieldDetailsList) -> Run:
        """How to complete an object of `object_type` for these field nodes: `complete_object_value` after
        its `is_type_of` check (which the caller has made)."""
        key = (object_type, id(field_details_list))
        known = self._children.get(key)
        if known is not None:  # the same field nodes again (each item of a list of lists, say)
            return known[1]
        grouped_field_set, new_defer_usages, _ = self.collect_subfields(object_type, field_details_list)
        run = None if new_defer_usages else self._run_for(object_type, grouped_field_set)
        if run is not None:
            self._children[key] = (field_details_list, run)  # the list kept alive with its id, as above
            return run

        def stock(source: Any, path: Path | None) -> Any:
            return self.execute_collected_subfields(
                object_type,
                source,
                path,  # type: ignore[arg-type]
                grouped_field_set,
                new_defer_usages,
                None,
            )

        return stock

    def leaf_rows(
        self, object_type: GraphQLObjectType, field_details_list: FieldDetailsList
    ) -> LeafRows | None:
        """Code completing a whole list of `object_type` for these field nodes in one pass, or None: when they
        ask for plain leaf fields only (compiled_leaves.leaf_rows), or for plain leaves and plain or twin-backed
        objects at every level below (compiled_trees.tree_rows)."""
        key = (object_type, id(field_details_list))
        known = self._leaf_rows.get(key)
        if known is not None:  # the same field nodes again (each item of a list of lists, say)
            return known[1]
        grouped_field_set, new_defer_usages, _ = self.collect_subfields(object_type, field_details_list)
        rows = None
        if not new_defer_usages and self._fast:
            shape = selection_shape(grouped_field_set)
            rows = leaf_rows(self.schema, object_type, shape)
            if rows is None:
                tree = self._tree(object_type, grouped_field_set, shape, 0)
                if tree is not None and tree[1]:
                    rows = tree_rows(self.schema, object_type, tree)
        self._leaf_rows[key] = (field_details_list, rows)  # the list kept alive with its id, as above
        return rows

    def _tree(
        self,
        object_type: GraphQLObjectType,
        grouped_field_set: dict[str, FieldDetailsList],
        shape: Shape,
        depth: int,
    ) -> Tree | None:
        """The selection followed down its object fields, each child as collected for this request
        (compiled_trees.Tree), or None if some level has a field a tree cannot complete."""
        found = tree_fields(self.schema, object_type, shape)
        if found is None or (found and depth >= TREE_DEPTH_MAX):
            return None
        children: list[tuple[int, Tree]] = []
        for i, child_type in found:
            sub, new_defer_usages, _ = self.collect_subfields(child_type, grouped_field_set[shape[i][0]])
            if new_defer_usages:
                return None
            child = self._tree(child_type, sub, selection_shape(sub), depth + 1)
            if child is None:
                return None
            children.append((i, child))
        return shape, tuple(children)

    # --- synchronous twins: queries that end without an error ----------------------------------------------

    def execute_collected_root_fields(
        self,
        root_type: GraphQLObjectType,
        root_value: Any,
        grouped_field_set: Any,
        serially: bool,
        new_defer_usages: Any,
    ) -> Any:
        """Runs a query with resolvers' synchronous twins (graphql.ready) answering where they can.

        A twin's value is the resolver's, so the data is the same; but a field answered at once completes
        earlier than the stock executor completes its resolver's value (in a task, turns of the event loop
        later), which could change the order of errors raised in different branches. So a query that ends
        with any error, after a twin answered, is executed once more without twins (from the same loaders,
        with the output budget as it was before the first run): its response is then the stock one, byte for
        byte. Mutations, subscriptions, @defer/@stream and queries of more than one root field never ask the
        twins."""
        args = (root_type, root_value, grouped_field_set, serially, new_defer_usages)
        run = super().execute_collected_root_fields
        if (
            not self._fast
            or serially
            or new_defer_usages
            or self.operation.operation is not OperationType.QUERY
            # One root field only: the re-run below starts from warm loaders, so sibling root fields would
            # settle in another order than the stock executor's and their errors with them; and a second root
            # field may have effects of its own (a share link's view count) that must not happen twice.
            or len(grouped_field_set) != 1
        ):
            return run(*args)
        self.twins[0], self.twins[1] = True, False
        saved = budget.snapshot()
        try:
            result = run(*args)
        except GraphQLError:
            if not self.twins[1]:
                raise
            return self._without_twins(args, saved)
        if self.is_awaitable(result):
            return self._settled(result, args, saved)
        if self.twins[1] and (self.collected_errors.errors or self.background_futures):
            return self._without_twins(args, saved)
        return result

    async def _settled(self, result: Any, args: tuple[Any, ...], saved: Any) -> Any:
        try:
            data = await result
        except GraphQLError:
            if not self.twins[1]:
                raise
            return await self._without_twins(args, saved)
        if self.twins[1] and (self.collected_errors.errors or self.background_futures):
            return await self._without_twins(args, saved)
        return data

    async def _without_twins(self, args: tuple[Any, ...], saved: Any) -> Any:
        self.twins[0] = self.twins[1] = False
        if self.background_futures:  # the first run's work settling after an error: its errors are dropped
            await gather(*self.background_futures, return_exceptions=True)
        self.collected_errors = CollectedErrors()
        budget.restore(saved)
        result = super().execute_collected_root_fields(*args)
        return (await result) if self.is_awaitable(result) else result

    # --- the stock executor's entry points ----------------------------------------------------------------

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: Any,
        position_context: Any,
    ) -> Any:
        if position_context is None:  # not inside @defer (whose delivery groups the stock code tracks)
            run = self._run_for(parent_type, grouped_field_set)
            if run is not None:
                return run(source_value, path)
        return super().execute_fields(parent_type, source_value, path, grouped_field_set, position_context)

    def complete_list_value(
        self,
        return_type: GraphQLList[GraphQLOutputType],
        field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo[Any],
        path: Path,
        result: Any,
        position_context: Any,
    ) -> Any:
        if self._fast and position_context is None and type(result) in (list, tuple):
            item_type = return_type.of_type
            object_type: Any = item_type.of_type if is_non_null_type(item_type) else item_type
            if (
                is_object_type(object_type)
                and object_type_check(object_type)[0]
                and not _streams(field_details_list)
            ):
                return self.complete_objects(result, return_type, field_details_list, path, info, None, None)
        return super().complete_list_value(
            return_type, field_details_list, info, path, result, position_context
        )

    # --- completion used by compiled code -------------------------------------------------------------------

    def complete_objects(
        self,
        items: Iterable[Any],
        return_type: GraphQLOutputType,
        field_details_list: FieldDetailsList,
        path: Path,
        info: GraphQLResolveInfo[Any] | None,
        field_def: GraphQLField | None,
        parent_type: GraphQLObjectType | None,
    ) -> Any:
        """`complete_iterable_value` for a list of objects, each completed by the compiled child selection.

        Items that are not plainly objects of the type (null, an exception, an awaitable, a value
        `is_type_of` refuses) are completed by the stock `complete_list_item_value`. `info` is the list
        field's resolve info; for a plain field it is built (as `execute_field` would) only when needed.
        """
        list_type: Any = return_type.of_type if is_non_null_type(return_type) else return_type
        item_type: Any = list_type.of_type
        object_type: Any = item_type.of_type if is_non_null_type(item_type) else item_type
        is_type_of = object_type_check(object_type)[1]
        exact = exact_class(object_type)
        cls = row_class(object_type)
        if cls is not None and (type(items) is list or type(items) is tuple):
            rows = self.leaf_rows(object_type, field_details_list)
            completed = None if rows is None else rows(items, cls, self)
            if completed is not None:  # every item plainly completed in one loop (compiled_leaves.leaf_rows)
                return completed
        run = self.child_selection(object_type, field_details_list)
        is_awaitable = self.is_awaitable
        completed_results: list[Any] = []
        append = completed_results.append
        awaitable_indices: list[int] = []
        iterator = iter(items)
        index = 0
        try:
            for item in iterator:
                item_path = _new_tuple(Path, (path, index, None))  # Path(path, index, None), no frame
                if type(item) is exact and TYPE_CAST_ATTRIBUTE not in item.__dict__:
                    # An uncast instance of the type (compiled_plan.exact_class): completed by compiled code.
                    try:
                        completed = run(item, item_path)
                    except Exception as raw_error:  # as complete_list_item_value does
                        self.handle_field_error(raw_error, item_type, field_details_list, item_path)
                        append(None)
                    else:
                        if type(completed) is not dict and is_awaitable(completed):
                            append(self.await_item(completed, item_type, field_details_list, item_path))
                            awaitable_indices.append(index)
                        else:
                            append(completed)
                elif is_awaitable(item):
                    if info is None:
                        info = self._list_info(field_def, field_details_list, parent_type, path)
                    append(
                        self.complete_awaitable_list_item_value(
                            item, item_type, field_details_list, info, item_path, None
                        )
                    )
                    awaitable_indices.append(index)
                elif (
                    item is not None
                    and item is not Undefined
                    and not isinstance(item, Exception)
                    and (is_type_of is None or _is_instance(is_type_of, item))
                ):
                    try:
                        completed = run(item, item_path)
                    except Exception as raw_error:  # as complete_list_item_value does
                        self.handle_field_error(raw_error, item_type, field_details_list, item_path)
                        append(None)
                    else:
                        if is_awaitable(completed):
                            append(self.await_item(completed, item_type, field_details_list, item_path))
                            awaitable_indices.append(index)
                        else:
                            append(completed)
                else:
                    if info is None:
                        info = self._list_info(field_def, field_details_list, parent_type, path)
                    if self.complete_list_item_value(
                        item, completed_results, item_type, field_details_list, info, item_path, None
                    ):
                        awaitable_indices.append(index)
                index += 1
        except Exception:
            pending = [completed_results[i] for i in awaitable_indices]
            pending.extend(collect_iterator_awaitables(iterator, is_awaitable))
            if pending:
                self.settle_in_background(pending)
            raise
        if not awaitable_indices:
            return completed_results
        return _gather_items(completed_results, awaitable_indices)

    def _list_info(
        self,
        field_def: GraphQLField | None,
        field_details_list: FieldDetailsList,
        parent_type: GraphQLObjectType | None,
        path: Path,
    ) -> GraphQLResolveInfo[Any]:
        """The resolve info `execute_field` builds for a plain list field (only the stock code reads it)."""
        assert field_def is not None and parent_type is not None
        return self.build_resolve_info(field_def, to_nodes(field_details_list), parent_type, path)

    def complete_resolved(
        self,
        value: Any,
        return_type: GraphQLOutputType,
        object_type: GraphQLObjectType | None,
        is_type_of: Callable[[Any, Any], Any] | None,
        field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo[Any],
        path: Path,
    ) -> Any:
        """`complete_value` of a resolver's value; an object of `object_type` (the field's type, or None if
        it is not an object type) that `is_type_of` accepts is completed by its compiled selection."""
        if (
            object_type is not None
            and value is not None
            and value is not Undefined
            and not isinstance(value, Exception)
            and not self.is_awaitable(value)
            and (is_type_of is None or _is_instance(is_type_of, value))
        ):
            return self.child_selection(object_type, field_details_list)(value, path)
        return self.complete_value(return_type, field_details_list, info, path, value, None)

    async def resolved_field(
        self,
        result: Any,
        return_type: GraphQLOutputType,
        object_type: GraphQLObjectType | None,
        is_type_of: Callable[[Any, Any], Any] | None,
        field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo[Any],
        path: Path,
    ) -> Any:
        """`complete_awaitable_value` without an abort signal (compiled code checks there is none)."""
        try:
            resolved = await result
            completed = self.complete_resolved(
                resolved, return_type, object_type, is_type_of, field_details_list, info, path
            )
            if self.is_awaitable(completed):
                completed = await completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            completed = None
        return completed

    async def await_field(
        self, completed: Any, return_type: GraphQLOutputType, field_details_list: FieldDetailsList, path: Path
    ) -> Any:
        """`execute_field`'s `await_completed`."""
        try:
            return await completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            return None

    async def await_item(
        self, completed: Any, item_type: GraphQLOutputType, field_details_list: FieldDetailsList, path: Path
    ) -> Any:
        """`complete_list_item_value`'s `await_completed`."""
        try:
            return await completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, item_type, field_details_list, path)
            return None


def _weak_gather(executor: weakref.ref[FastExecutionContext], values: Sequence[Any]) -> Any:
    alive = executor()
    if alive is None:
        raise RuntimeError("the operation's execution is over")
    return alive.gather_async_work(values)


def _weak_track(executor: weakref.ref[FastExecutionContext], values: Sequence[Any]) -> None:
    alive = executor()
    if alive is None:
        raise RuntimeError("the operation's execution is over")
    alive.track_async_work(values)


def _is_instance(is_type_of: Callable[[Any, Any], Any], item: Any) -> bool:
    try:
        return bool(is_type_of(item, None))
    except Exception:  # noqa: BLE001 - the stock completion calls it again and reports it
        return False


async def _gather_items(completed_results: list[Any], awaitable_indices: list[int]) -> list[Any]:
    """`complete_iterable_value`'s `get_completed_results`."""
    if len(awaitable_indices) == 1:
        only = awaitable_indices[0]
        completed_results[only] = await completed_results[only]
    else:
        awaited = await gather_settled(*(completed_results[i] for i in awaitable_indices))
        for i, value in zip(awaitable_indices, awaited, strict=True):
            completed_results[i] = value
    return completed_results

"""The gateway's HTTP endpoints: `POST /v1/chat/completions`, `GET /v1/models`, `GET /v1/models/{model}`.

A call is checked in this order, each refusal an OpenAI error object: credentials (401), the body (413 past
THREADLINE_REQUEST_MAX_BYTES, 400 malformed, 400 naming `n` past THREADLINE_RUN_MAX_EXECUTING_PER_TENANT), the model
(404 model_not_found), the caller's rate-limit budgets (429 with Retry-After; a completion draws one `requests` and
one `runs` per choice asked for (`n`), and with a session one `mutations` per message of the request it stores: each
is a write, as a messageReply is), then, side by side, its places (gateway.admission: 429 past
THREADLINE_RUN_MAX_ACTIVE_PER_USER, the user's active runs and calls in progress, or past
THREADLINE_RUN_MAX_EXECUTING_PER_TENANT, the tenant's runs and calls executing, each across every process; held
until the call ends) and the session (404, 403, 409, 400 context_length_exceeded), a cap's refusal first; then the
model itself (its 4xx refusal passed on, 502 when it cannot be reached). The budgets come before the places: a call
they refuse takes no place (it took one and gave it back, two write transactions for nothing); a call refused by a
cap or its session draws from the budgets, as every refused operation does.
Only then is anything stored, so a refused call leaves nothing behind. A stream that breaks midway ends with an
`error` event instead of `[DONE]` (what OpenAI's SDKs raise as an APIError); what was stored of the reply is
kept, made final, and announced with an `error` event as a failed run is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from threadline.auth.principal import Principal
from threadline.auth.service import authenticate
from threadline.db.database import database_unavailable
from threadline.errors import ErrorCode, ThreadlineError
from threadline.gateway import request as chat_request
from threadline.gateway.admission import Places, Release, ReleasingStream
from threadline.gateway.completion import Completion
from threadline.gateway.errors import UpstreamRefused, error_body, error_response, internal_error, unavailable
from threadline.gateway.recorder import Recorder
from threadline.gateway.request import ChatRequest
from threadline.gateway.session import Session, open_session, stored_count
from threadline.gateway.upstream import Batch, chunks, model_list, provider_of, upstream_body
from threadline.ids import Kind, encode_id
from threadline.ratelimits.service import Budget, RateLimited, spend
from threadline.runs.providers import Provider, ProviderError, build_providers

log = logging.getLogger(__name__)

COMPLETION_COSTS = {"requests": 1, "runs": 1}
RECHECK_SECONDS = 1.0  # how often a call in progress authenticates its caller again
REVOKED = "CREDENTIALS_REVOKED"  # the ProviderError code that ends a call whose credentials stopped holding
ANY_METHOD = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class Gateway:
    """The endpoints and what they hold: one set of providers (the OpenAI one keeps a connection pool),
    built at the first call and closed by the app's lifespan."""

    def __init__(self, services: Any) -> None:
        self.services = services
        self._providers: dict[str, Provider] | None = None
        self._background: set[asyncio.Task[None]] = set()
        # the user's and the tenant's runs and calls in progress, across processes (THREADLINE_RUN_MAX_ACTIVE_PER_USER,
        # THREADLINE_RUN_MAX_EXECUTING_PER_TENANT)
        self.places = Places(services, self._spawn)

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/models/{model:path}", self.model, methods=["GET"]),
            # Last: any other path or method under /v1 is answered as OpenAI would, not with Starlette's text.
            Route("/v1/{rest:path}", self.unknown, methods=list(ANY_METHOD)),
        ]

    async def unknown(self, request: Request) -> Response:
        """404 for a path the gateway does not serve (e.g. `/v1/responses`), 405 with `Allow` for a wrong method on
        one it does, each as OpenAI's error object (the SDKs raise NotFoundError / APIStatusError from it)."""
        path, method = request.url.path, request.method
        allowed = "POST" if path == "/v1/chat/completions" else "GET" if _is_models_path(path) else None
        if allowed is None:
            return JSONResponse(
                error_body(f"Invalid URL ({method} {path})", "invalid_request_error", "unknown_url"), 404
            )
        message = f"{method} is not allowed on {path}; use {allowed}"
        response = JSONResponse(error_body(message, "invalid_request_error", "method_not_allowed"), 405)
        response.headers["Allow"] = allowed
        return response

    def providers(self) -> dict[str, Provider]:
        if self._providers is None:
            self._providers = build_providers(self.services.settings)
        return self._providers

    async def close(self) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=self.services.settings.shutdown_grace_seconds)
        await self.places.close()
        for provider in (self._providers or {}).values():
            await provider.close()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task that outlives a cancelled request (a client gone mid-stream): the reply is still finished."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _principal(self, request: Request) -> Principal:
        authorization = request.headers.get("authorization")

        async def load() -> Principal:
            return await authenticate(self.services.db, self.services.settings, authorization)

        credentials = getattr(self.services, "credentials", None)
        if credentials is not None and authorization:
            # Cached in the process like GraphQL callers' (auth.credentials: emptied on every principal.changed).
            return await credentials.principal(authorization, load)  # type: ignore[no-any-return]
        return await load()

    async def _spend(self, principal: Principal, costs: dict[str, int]) -> Budget | None:
        settings = self.services.settings
        if not settings.rate_limit_enabled:
            return None
        return await spend(self.services.db, settings, principal, costs)

    async def _caller(self, request: Request, costs: dict[str, int]) -> tuple[Principal, Budget | None]:
        principal = await self._principal(request)
        return principal, await self._spend(principal, costs)

    async def models(self, request: Request) -> Response:
        async def answer() -> Response:
            _, budget = await self._caller(request, {"requests": 1})
            return _with_budget(
                JSONResponse({"object": "list", "data": model_list(self.services.settings)}), budget
            )

        return await _answered(answer())

    async def model(self, request: Request) -> Response:
        async def answer() -> Response:
            _, budget = await self._caller(request, {"requests": 1})
            name = request.path_params["model"]
            provider_of(self.services.settings, name)  # 404 model_not_found
            found = next(m for m in model_list(self.services.settings) if m["id"] == name)
            return _with_budget(JSONResponse(found), budget)

        return await _answered(answer())

    async def chat_completions(self, request: Request) -> Response:
        return await _answered(self._complete(request))

    async def _complete(self, request: Request) -> Response:
        settings = self.services.settings
        principal = await self._principal(request)
        raw = await chat_request.read_body(request, settings.request_max_bytes)
        chat = chat_request.parse(raw, request.headers.get(chat_request.SESSION_HEADER))
        provider = self.providers()[provider_of(settings, chat.model)]
        self.places.check(chat.choices)  # 400: more choices than the tenant's cap could ever admit
        # The budgets first: a call they refuse takes no place (two write transactions for nothing).
        budget = await self._spend(principal, _costs(chat))
        release, session = await self._admitted(principal, chat)
        try:
            return await self._answer(
                principal, chat, provider, release, lambda: self._principal(request), budget, session
            )
        except BaseException:
            release()
            raise

    async def _admitted(self, principal: Principal, chat: ChatRequest) -> tuple[Release, Session | None]:
        """The call's places (429 past the user's or the tenant's cap; 400 when `n` alone is past the tenant's) and
        the session's prompt, read side by side (each is a round trip or more before the model is called: the time
        to the first token). A cap's refusal is the answer before the session's; places taken for a call the
        session refuses are given back."""
        if not chat.session_id:
            return await self.places.take(principal, chat.choices), None
        taking = asyncio.ensure_future(self.places.take(principal, chat.choices))
        try:
            session = await open_session(self.services.db, self.services.settings, principal, chat)
        except BaseException as exc:
            taking.add_done_callback(_give_back_taken)  # whenever it ends, even if this request is cancelled
            if isinstance(exc, Exception):
                await asyncio.wait({taking})
                if not taking.cancelled() and isinstance(taking.exception(), ThreadlineError):
                    raise taking.exception() from None  # type: ignore[misc]
            raise
        return await taking, session

    async def _answer(
        self,
        principal: Principal,
        chat: ChatRequest,
        provider: Provider,
        release: Release,
        recheck: Callable[[], Awaitable[Principal]],
        budget: Budget | None,
        session: Session | None,
    ) -> Response:
        """The model's answer to an admitted call; `release` gives its place back once it is answered, `recheck`
        authenticates its caller again (Relay)."""
        settings = self.services.settings
        stream = chunks(
            provider, upstream_body(chat.body, chat.model, session.prompt if session else chat.messages)
        )
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            raise ProviderError("PROVIDER_BAD_STREAM", "The model's stream ended before it began") from None
        except BaseException:
            await stream.aclose()
            raise
        recorder = None
        if session is not None:
            recorder = Recorder(self.services.db, settings, principal, session, chat.model)
            if not chat.stream:
                recorder.start()
        relay = Relay(self, stream, first, recorder, chat.include_usage, recheck)
        headers = dict(SSE_HEADERS)
        if session is not None:
            headers["X-Threadline-Conversation-Id"] = encode_id(Kind.CONVERSATION, session.conversation["id"])
        if chat.stream:
            response: Response = ReleasingStream(
                relay.events(), release, media_type="text/event-stream", headers=headers
            )
        else:
            error = await relay.drain()
            release()
            if error is not None:
                response = JSONResponse(_stream_error(error), status_code=401 if error[0] == REVOKED else 502)
            else:
                response = JSONResponse(relay.completion.response(chat.model))
            for name in ("X-Threadline-Conversation-Id",):
                if name in headers:
                    response.headers[name] = headers[name]
        return _with_budget(response, budget)


def _costs(chat: ChatRequest) -> dict[str, int]:
    """A completion's draw from the caller's budgets. A session call also draws a `mutations` token per message it
    would store: one call could otherwise write hundreds of replies (each deeper than the last, so ever slower) for
    a single `requests` token."""
    costs = dict(COMPLETION_COSTS)
    costs["runs"] = chat.choices  # `n` answers are n runs' worth of the model (OpenAI bills each)
    if chat.session_id:
        costs["mutations"] = stored_count(chat)
    return costs


def _give_back_taken(taking: asyncio.Future[Release]) -> None:
    """Gives back the places a call took once it was refused by its session (or cancelled) meanwhile."""
    if not taking.cancelled() and taking.exception() is None:
        taking.result()()


class Relay:
    """Passes the model's chunks to the client while the recorder stores them."""

    def __init__(
        self,
        gateway: Gateway,
        stream: AsyncGenerator[Batch, None],
        first: Batch,
        recorder: Recorder | None,
        include_usage: bool,
        recheck: Callable[[], Awaitable[Principal]] | None = None,
    ) -> None:
        self.gateway = gateway
        self.stream = stream
        self.first = first
        self.recorder = recorder
        self.include_usage = include_usage
        self.recheck = recheck
        self.completion = Completion()
        self.error: tuple[str, str] | None = None

    async def _chunks(self) -> AsyncIterator[Batch]:
        """The model's chunks, within THREADLINE_RUN_TIMEOUT_SECONDS of the first, as a run is bounded: a model
        that hangs ends the call with a TIMEOUT error instead of holding it (and its stored reply) open."""
        timeout = self.gateway.services.settings.run_timeout_seconds
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        check_at = loop.time() + RECHECK_SECONDS
        yield self.first
        while True:
            try:
                async with asyncio.timeout_at(deadline):  # around the wait only, never around a yield
                    batch = await anext(self.stream)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise ProviderError(
                    "TIMEOUT", f"The model did not finish within {timeout:g} seconds"
                ) from None
            if self.recheck is not None and loop.time() >= check_at:
                check_at = loop.time() + RECHECK_SECONDS
                await self._still_authenticated(self.recheck)
            yield batch

    async def _still_authenticated(self, recheck: Callable[[], Awaitable[Principal]]) -> None:
        """Credentials are live (ARCHITECTURE.md, Trust): a call whose key is revoked (or whose user is erased, or
        whose token expires) mid-answer stops within RECHECK_SECONDS, as a socket is closed, instead of streaming
        the model's answer for up to THREADLINE_RUN_TIMEOUT_SECONDS. The credential cache (emptied everywhere by
        `principal.changed`) makes the check a lookup in memory, not a statement, for most of them."""
        try:
            await recheck()
        except ThreadlineError as exc:
            if exc.code is ErrorCode.UNAUTHENTICATED:
                raise ProviderError(
                    REVOKED, f"The call's credentials no longer hold: {exc.message}"
                ) from None
            log.warning("gateway: a call's credentials could not be checked again (%s)", exc.code)
        except Exception as exc:  # noqa: BLE001 - a database blip must not cut answers short: checked again later
            log.warning("gateway: a call's credentials could not be checked again (%s)", type(exc).__name__)

    def _take(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        """Record the chunk; the chunk as the client gets it (None: not for this client)."""
        text = self.completion.add(chunk)
        if self.recorder is not None:
            self.recorder.add(text)
        if not self.include_usage:
            if not chunk.get("choices") and chunk.get("usage") is not None:
                return None  # the usage the gateway asked for, which the client did not
            chunk.pop("usage", None)
        return chunk

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await self.stream.aclose()  # a client gone midway: the model's connection is closed too

    def _end(self) -> asyncio.Task[None] | None:
        if self.recorder is None:
            return None
        return self.gateway._spawn(self.recorder.end(self.completion, self.error))

    async def drain(self) -> tuple[str, str] | None:
        """A non-streaming call: read everything; the model's error, if it failed midway."""
        ending = None
        try:
            async for batch in self._chunks():
                for chunk in batch:
                    self._take(chunk)
        except ProviderError as exc:
            self.error = (exc.code, exc.message)
        finally:
            ending = self._end()
            await self._close()
        if ending is not None:
            await ending
        return self.error

    async def events(self) -> AsyncIterator[bytes]:
        ending = None
        try:
            async for batch in self._chunks():
                # What arrived together leaves together: one write for the chunks of one network read.
                out = [self._take(chunk) for chunk in batch]
                sent = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in out if c is not None)
                if sent:
                    yield sent
                if self.recorder is not None and self.completion.first().content:
                    # Stored once the first token is out: its transaction stays off the time to the first token.
                    self.recorder.start()
        except ProviderError as exc:
            self.error = (exc.code, exc.message)
        finally:
            ending = self._end()  # first: a cancelled request may not get past the next await
            await self._close()
        if ending is not None:
            await ending  # the reply is final before the client reads [DONE]
        if self.error is not None:
            body = _stream_error(self.error)
            yield b"data: " + orjson.dumps(body) + b"\n\n"
            return
        yield b"data: [DONE]\n\n"


def _stream_error(error: tuple[str, str]) -> dict[str, Any]:
    """The error object of a call that failed midway: the model's failure, or its caller's credentials revoked."""
    code, message = error
    if code == REVOKED:
        return error_body(message, "invalid_request_error", "invalid_api_key")
    return error_body(message, "server_error", code.lower())


def _is_models_path(path: str) -> bool:
    return path == "/v1/models" or (path.startswith("/v1/models/") and len(path) > len("/v1/models/"))


def _with_budget(response: Response, budget: Budget | None) -> Response:
    if budget is not None:
        response.headers["RateLimit-Limit"] = str(budget.limit)
        response.headers["RateLimit-Remaining"] = str(budget.remaining)
        response.headers["RateLimit-Reset"] = str(budget.reset_seconds)
    return response


async def _answered(work: Coroutine[Any, Any, Response]) -> Response:
    """The response, or the OpenAI error object for whatever refused the call."""
    try:
        return await work
    except chat_request.BodyTooLarge as exc:
        response = error_response(chat_request.too_large(exc.limit))
        response.status_code = 413
        return response
    except RateLimited as exc:
        return _with_budget(error_response(exc), exc.budget)
    except ThreadlineError as exc:
        return error_response(exc)
    except UpstreamRefused as exc:
        return exc.response()
    except ProviderError as exc:
        return JSONResponse(error_body(exc.message, "server_error", exc.code.lower()), status_code=502)
    except Exception as exc:
        if database_unavailable(exc):
            return unavailable()
        log.exception("gateway: unexpected failure")
        return internal_error()

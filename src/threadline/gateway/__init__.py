"""The OpenAI-compatible gateway: `POST /v1/chat/completions` and `GET /v1/models` for any OpenAI client.

With a `session_id` (body field or `X-Threadline-Session` header) naming a conversation (its `sessionId`, or
its id) the branch history is prepended and both sides are stored, as a run would; without one it is a plain
proxy that stores nothing. Authentication, rate limits and tenant rules are the API's own.
"""

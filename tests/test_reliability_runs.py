"""A requeued run announces its restart: a client that follows `MessageDeltaEvent.attempt`'s documented rule
shows the final text once, live and on replay (real `threadline worker` processes, one killed mid-run)."""

from __future__ import annotations

from typing import Any

from tests.api import create_conversation, start_thread
from tests.harness import Actor, Loop, ServerThread
from tests.test_runs_recovery import REPLY, WORDS, WorkerProcess, _start, owner, queue, server, workers
from tests.test_runs_support import create_run, wait_for, wait_for_chunks
from tests.ws import WsClient

__all__ = ["owner", "queue", "server", "workers"]  # fixtures shared with test_runs_recovery

EVENTS = """subscription($c: ID!, $since: String) {
  conversationEvents(conversationId: $c, since: $since) {
    type
    ... on MessageDeltaEvent { messageId attempt index delta }
    ... on MessageDoneEvent { messageId }
  }
}"""


class Screen:
    """What a client shows per message, following the documented rule: a delta with a higher attempt than
    any seen before for the message resets its text; a lower attempt is ignored."""

    def __init__(self) -> None:
        self.text: dict[str, str] = {}
        self.attempt: dict[str, int] = {}
        self.naive: dict[str, str] = {}  # what a client that only concatenates would show

    def apply(self, event: dict[str, Any]) -> None:
        message, attempt = event["messageId"], event["attempt"]
        self.naive[message] = self.naive.get(message, "") + event["delta"]
        seen = self.attempt.get(message, 0)
        if attempt < seen:
            return
        if attempt > seen:
            self.attempt[message], self.text[message] = attempt, ""
        self.text[message] += event["delta"]


def follow_until_done(socket: WsClient, op_id: str) -> tuple[Screen, list[dict[str, Any]]]:
    screen, deltas = Screen(), []
    while True:
        event = socket.next_event(op_id, timeout=30)["conversationEvents"]
        if event["type"] == "message.done":
            return screen, deltas
        if event["type"] == "message.delta":
            deltas.append(event)
            screen.apply(event)


def test_a_requeued_run_announces_its_restart_and_the_rule_shows_the_reply_once(
    owner: Actor, workers: list[WorkerProcess], dsn: str, queue: str, server: ServerThread, loop: Loop
) -> None:
    cid = create_conversation(owner)
    live = WsClient(server.ws_url, owner.api_key)
    try:
        live.subscribe(EVENTS, {"c": cid, "since": None})
        first = _start(workers, dsn, queue)
        run = create_run(owner, start_thread(owner, cid, WORDS))
        partial = wait_for_chunks(owner, run["id"])["output"]
        first.kill()  # mid-run: its deltas were delivered live with their text
        survivor = _start(workers, dsn, queue, THREADLINE_RUN_ON_LOST_WORKER="requeue")
        screen, deltas = follow_until_done(live, "1")
    finally:
        live.ws.close()

    assert wait_for(owner, run["id"])["attempt"] == 2
    message = partial["id"]
    # The restart is visible: attempt 2 starts again at index 0, after attempt 1's deltas.
    attempts = [d["attempt"] for d in deltas]
    assert attempts == sorted(attempts) and set(attempts) == {1, 2}
    restart = attempts.index(2)
    assert deltas[restart]["index"] == 0
    assert [d["index"] for d in deltas[restart:]] == list(range(len(deltas) - restart))
    assert screen.naive[message] != REPLY  # concatenating everything shows the first attempt's text too
    assert screen.text[message] == REPLY
    assert "stopped after 1 runs" in survivor.stop()

    # Replayed from the start, the lost attempt's deltas are empty (scrubbed) and the rule still holds.
    replay = WsClient(server.ws_url, owner.api_key)
    try:
        replay.subscribe(EVENTS, {"c": cid, "since": "0"})
        replayed, _ = follow_until_done(replay, "1")
    finally:
        replay.ws.close()
    assert replayed.text[message] == REPLY

"""Events: what services announce, how it is logged, and how the log is read (the hub is streaming/'s).

- kinds.py: the event kinds (`EventType`), the dotted names clients see in `type`.
- payloads.py: one typed payload per kind, in internal ids and values (the event contract).
- announce.py: one `publish_*` per kind, the only way services announce an event (the only caller of
  publish.publish; tests/test_architecture.py holds that).
- publish.py: `publish()`, an event row and a NOTIFY in the writer's transaction, and the advisory-lock
  protocol that lets the hub tell which ids may still commit.
- stored.py: how payloads are stored in `stream_event.payload` and decoded back (older rows included).
- log.py: reading the log as LoggedEvent: the hub's commit-safe tail, replay for `since`, retention.
- scrub.py: logged events follow the content of the message they carry (edit, delete, erasure).
- repository.py: all SQL of `stream_event` and `stream_state` (tenant first; the few cross-tenant
  statements say why).
- tables.py: the Piccolo tables.
"""

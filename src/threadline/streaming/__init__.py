"""Streaming: the per-process StreamHub and the GraphQL subscriptions it feeds (domains never import it:
they publish events through events.announce, and the hub reads them from the log).

- hub.py: reads the log's commit-safe tail once per process and routes each event to its subscribers;
  listener.py: the supervised LISTEN connection that wakes it; maintenance.py: periodic expiry and pruning.
- schema.py: conversationEvents and viewerEvents (access, replay with `since`, then live); subscriber.py:
  one subscription and its bounded queue; render.py: a logged event to its GraphQL event (types.py).
- direct.py and fanout.py: live events executed once per group of identical subscribers and written
  straight to sockets; transport.py: the one module that touches the server's internals.
- cursors.py: the opaque per-tenant cursors; sessions.py: open sockets by user (live credentials).
- repository.py: the package's SQL (the cursor key; pg_notify and the ping on the LISTEN connection). Its
  other reads go through their owners: the log through events.log (events.repository), participants
  through conversations.repository, thread roots through threads.repository.
"""

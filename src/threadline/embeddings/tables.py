"""Message chunk vectors per embedding model, and the queue of messages the indexer must (re-)embed.

`message_embedding.embedding` is a pgvector column (no Piccolo type): the migration creates it, and a
partial HNSW index per model is built by the indexer (`repository.ensure_model_index`).
"""

from piccolo.columns import UUID, BigInt, ForeignKey, Integer, Text, Timestamptz
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from threadline.auth.tables import Tenant
from threadline.threads.tables import Message


class MessageEmbedding(Table, tablename="message_embedding"):
    id = BigInt(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    message_id = ForeignKey(Message, null=False)
    conversation_id = UUID()
    model_id = Integer()  # repository.model_id(name): a stable number per model name
    chunk = Integer()  # the chunk's index in the message, from 0
    start_char = Integer()  # where the chunk starts and ends in the message's content
    end_char = Integer()


class EmbeddingQueue(Table, tablename="embedding_queue"):
    message_id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    version = BigInt(default=1)  # bumped by every change: a batch embedded from older text is not stored
    attempts = Integer(default=0)
    enqueued_at = Timestamptz(default=TimestamptzNow())
    leased_until = Timestamptz(null=True, default=None)  # claimed by `worker` until then
    worker = Text(null=True, default=None)

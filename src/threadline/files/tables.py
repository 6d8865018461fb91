"""Uploaded files: an upload names a blob of its tenant (deduplicated by checksum), whose bytes are chunks
in PostgreSQL or a file in a directory; messages hold files in their parts."""

from piccolo.columns import UUID, BigInt, Bytea, ForeignKey, Integer, Text, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from threadline.auth.tables import AppUser, Tenant
from threadline.threads.tables import Message


class FileBlob(Table, tablename="file_blob"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    sha256 = Bytea()
    size = BigInt()
    content_type = Text()  # sniffed from the bytes, never taken from the client
    storage = Varchar(length=16, default="postgres")
    created_at = Timestamptz(default=TimestamptzNow())


class FileChunk(Table, tablename="file_chunk"):
    blob_id = ForeignKey(FileBlob, null=False, primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    seq = Integer()
    data = Bytea()


class File(Table, tablename="file"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    blob_id = ForeignKey(FileBlob, null=False)
    uploaded_by = ForeignKey(AppUser, null=True)
    filename = Text()
    # Set when a message first holds it: from then on the messages' access rules apply, and the file goes
    # when no message holds it any more.
    attached_at = Timestamptz(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())


class MessageFile(Table, tablename="message_file"):
    tenant_id = ForeignKey(Tenant, null=False)
    message_id = ForeignKey(Message, null=False, primary_key=True)
    file_id = ForeignKey(File, null=False)
    position = Integer(default=0)


class FileBlobGone(Table, tablename="file_blob_gone"):
    """Directory blobs deleted in the database whose files the server still has to unlink."""

    id = UUID(primary_key=True)
    tenant_id = UUID()
    sha256 = Bytea()
    gone_at = Timestamptz(default=TimestamptzNow())
    storage = Varchar(length=16, default="directory")  # which store holds the bytes to remove

"""Every Piccolo table of every domain, in dependency order."""

from piccolo.table import Table

from threadline.audit.tables import AuditLog
from threadline.auth.tables import ApiKey, AppUser, ErasedSubject, Tenant
from threadline.conversations.tables import Conversation, Invite, Participant
from threadline.crypto.tables import DataKey, KeyRotation
from threadline.documents.tables import PersistedDocument
from threadline.embeddings.tables import EmbeddingQueue, MessageEmbedding
from threadline.enrich.tables import EnrichmentJob
from threadline.events.tables import StreamEvent, StreamState
from threadline.feedback.tables import MessageFeedback
from threadline.files.tables import File, FileBlob, FileBlobGone, FileChunk, MessageFile
from threadline.gateway.tables import GatewayCall
from threadline.idempotency.tables import IdempotencyKey
from threadline.links.tables import ConversationLink
from threadline.organise.tables import ConversationFolder, ConversationPin, Folder, MessageBookmark
from threadline.porting.tables import ImportSource, MessageAttachment
from threadline.presence.tables import Presence, TypingState
from threadline.ratelimits.tables import RateLimitAssignment, RateLimitBucket, RateLimitProfile
from threadline.runs.tables import MessageStream, Run, RunStep
from threadline.search.tables import SearchTerm
from threadline.sharing.tables import ShareLink, ShareRateWindow
from threadline.streaming.tables import StreamCursorKey
from threadline.threads.tables import (
    Message,
    MessageChunk,
    MessageEdit,
    ReadMarker,
    Thread,
    ThreadCurrentLeaf,
)
from threadline.tiers.tables import ConversationTier, TierRestore

ALL_TABLES: tuple[type[Table], ...] = (
    Tenant,
    AppUser,
    ApiKey,
    ErasedSubject,
    Conversation,
    Participant,
    Invite,
    Message,
    Thread,
    MessageEdit,
    ReadMarker,
    MessageChunk,
    MessageFeedback,
    StreamEvent,
    StreamState,
    StreamCursorKey,
    Presence,
    TypingState,
    ImportSource,
    MessageAttachment,
    AuditLog,
    Run,
    RunStep,
    MessageStream,
    SearchTerm,
    RateLimitProfile,
    RateLimitAssignment,
    RateLimitBucket,
    IdempotencyKey,
    PersistedDocument,
    ThreadCurrentLeaf,
    Folder,
    ConversationFolder,
    ConversationPin,
    MessageBookmark,
    ConversationLink,
    ShareLink,
    ShareRateWindow,
    FileBlob,
    FileChunk,
    File,
    MessageFile,
    FileBlobGone,
    MessageEmbedding,
    EmbeddingQueue,
    ConversationTier,
    DataKey,
    KeyRotation,
    TierRestore,
    EnrichmentJob,
    GatewayCall,
)

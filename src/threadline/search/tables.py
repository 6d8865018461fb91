"""The search lexicon: distinct title and tag words per tenant, with their trigrams (typo tolerance).

The full-text columns (`conversation.search_vector`, `message.search_vector`) are not Piccolo
columns: triggers in the search migration keep them, and Piccolo has no tsvector type.
"""

from piccolo.columns import UUID, Array, ForeignKey, Text, Varchar
from piccolo.table import Table

from threadline.auth.tables import Tenant


class SearchTerm(Table, tablename="search_term"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    term = Varchar(length=64)
    trigrams = Array(base_column=Text(), default=list)

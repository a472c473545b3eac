"""blinded search index: drop the clear name/address and birth-date index rows

Revision ID: 0017
Revises: 0016

Why (issue #18 item 5): ``search_string`` held names and addresses and
``search_date`` birth dates in clear.  They are now keyed hashes
(``fhir_store/blind_text.py``), which a migration cannot compute: it has no
key.  So it deletes the clear rows at once (no personal data stays in them
after an upgrade), and the first start with the store key rebuilds the index
from the sealed resources (``fhir_store.key_registry`` sees resources without
string rows and runs ``blind_index.reindex``, as ``carebridge store reindex``
does).  Until then name, address and birth-date searches find nothing.
Downgrade restores nothing: the clear values are not to come back.
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM search_string")
    op.execute("DELETE FROM search_date WHERE param = 'birthdate'")


def downgrade() -> None:
    pass

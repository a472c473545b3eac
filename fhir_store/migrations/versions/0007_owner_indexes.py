"""owner indexes keyed by resource id first, so they never compete with the lookup indexes

Revision ID: 0007
Revises: 0006

Why (issue #3, measured): ``identifier_claim`` and the ``search_*`` tables
had a second index on ``(res_type, res_id)`` (who owns these rows).  On a
table PostgreSQL has not analyzed yet -- every fresh installation, and any
table that grew since autovacuum last looked -- that index and the lookup
index cost the same to the planner, and a prepared statement's generic plan
picked it for ``res_type = $1 AND system = $2 AND value = $3``: an index scan
over every claim of the type, filtered row by row (0.45 ms with 1,200
patients, linear in their number, twice per HL7 message).  With ``res_id``
leading, the owner index can only serve the owner lookups and deletes it was
made for, and the lookups always go to the primary key or the search index.
``resource_current``'s ``(res_type, last_updated_us)`` index competed with its
primary key the same way (a read by id scanning every resource of the type);
it becomes ``(last_updated_us, res_type)``, which still serves ``_lastUpdated``
ranges and sorts.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLES = ("identifier_claim", "search_token", "search_string", "search_date", "search_reference")


def upgrade() -> None:
    for table in TABLES:
        op.drop_index(f"ix_{table}_res_type_res_id", table_name=table)
        op.create_index(f"ix_{table}_res_id_res_type", table, ["res_id", "res_type"])
    op.drop_index("ix_resource_current_res_type_last_updated_us", table_name="resource_current")
    op.create_index(
        "ix_resource_current_last_updated_us_res_type", "resource_current", ["last_updated_us", "res_type"]
    )


def downgrade() -> None:
    op.drop_index("ix_resource_current_last_updated_us_res_type", table_name="resource_current")
    op.create_index(
        "ix_resource_current_res_type_last_updated_us", "resource_current", ["res_type", "last_updated_us"]
    )
    for table in TABLES:
        op.drop_index(f"ix_{table}_res_id_res_type", table_name=table)
        op.create_index(f"ix_{table}_res_type_res_id", table, ["res_type", "res_id"])

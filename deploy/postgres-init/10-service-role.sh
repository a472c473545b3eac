#!/bin/sh
# Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d), as the owner.
# carebridge_app: the rights group (migration 0002 grants it SELECT/INSERT/UPDATE/DELETE on the store's
# tables and only SELECT/INSERT on the audit tables); carebridge_svc: the login role of `carebridge serve`.
# Neither owns a table, so neither can DISABLE TRIGGER on the audit tables (issue #18, docs/operations.md).
set -eu
: "${SERVICE_ROLE_PASSWORD:?set SERVICE_ROLE_PASSWORD in deploy/postgres.env}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v service_password="$SERVICE_ROLE_PASSWORD" <<'SQL'
CREATE ROLE carebridge_app NOLOGIN;
CREATE ROLE carebridge_svc LOGIN PASSWORD :'service_password' IN ROLE carebridge_app;
SQL

#!/bin/sh
# Runs once, when the postgres container initialises an empty data directory
# (mounted into /docker-entrypoint-initdb.d). One database per SQL service,
# each owned by a login role of the same name that can reach only its own
# database; `gofund migrate` then creates the tables as that role.
# The passwords come from the container's environment (docker-compose.yml, .env).
# Changing them later needs ALTER ROLE: this script does not run again.
# No `set -u`: if the file loses its executable bit the entrypoint sources it,
# and the option would leak into the entrypoint; each password is checked below.
set -e

create_database() {
    # psql variables (:"name" an identifier, :'password' a literal) quote both values.
    psql --no-psqlrc --set ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        --set name="$1" --set password="$2" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
}

create_database identity "${GOFUND_IDENTITY_DB_PASSWORD:?}"
create_database goals "${GOFUND_GOALS_DB_PASSWORD:?}"
create_database ledger "${GOFUND_LEDGER_DB_PASSWORD:?}"

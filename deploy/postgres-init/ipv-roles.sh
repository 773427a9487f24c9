#!/bin/sh
# First start of the PostgreSQL container (docker-entrypoint-initdb.d): the two roles of DEPLOY.md, "Database".
# ipv_owner owns the database and runs `db upgrade` (the migrate service); ipv is the app's and the worker's
# runtime role, which may only INSERT and SELECT the access audit. The second block is DEPLOY.md's, as written
# (tests/test_deploy_kit.py compares them). A database made before this script keeps its roles: DEPLOY.md says
# how to move it to the two roles.
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    --set=owner_password="$IPV_OWNER_DB_PASSWORD" --set=app_password="$IPV_DB_PASSWORD" <<'SQL'
CREATE ROLE ipv_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE ipv LOGIN PASSWORD :'app_password';
CREATE DATABASE ipv OWNER ipv_owner;
SQL
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname ipv <<'SQL'
ALTER SCHEMA public OWNER TO ipv_owner;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO ipv;
ALTER DEFAULT PRIVILEGES FOR ROLE ipv_owner IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ipv;
ALTER DEFAULT PRIVILEGES FOR ROLE ipv_owner IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO ipv;
SQL

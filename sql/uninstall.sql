-- sse-service: remove everything sql/install.sql created, and nothing else.
--
-- Idempotent (harmless when nothing is installed, or when run twice), one
-- transaction, no psql meta-commands. The core tables and their rows are left
-- untouched; only our triggers on them and our index go.

BEGIN;

SELECT pg_advisory_xact_lock(7365657365727669);
SET LOCAL lock_timeout = '5s';

-- Our triggers: named sse_* and calling a function of schema sse (so that a
-- trigger of someone else's that happens to start with sse_ survives).
DO $do$
DECLARE
    _t record;
BEGIN
    IF to_regnamespace('sse') IS NULL THEN
        RETURN;
    END IF;
    FOR _t IN
        SELECT t.tgname, t.tgrelid::regclass AS tbl
          FROM pg_trigger t
          JOIN pg_proc p ON p.oid = t.tgfoid
         WHERE NOT t.tgisinternal
           AND t.tgname LIKE 'sse\_%'
           AND p.pronamespace = to_regnamespace('sse')
    LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', _t.tgname, _t.tbl);
    END LOOP;
END
$do$;

DROP INDEX IF EXISTS public.sse_bookmarks_wishlist_idx;

-- Functions, the event id sequence, and anything else left in it.
DROP SCHEMA IF EXISTS sse CASCADE;

COMMIT;

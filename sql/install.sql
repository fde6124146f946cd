-- sse-service: database objects that turn core API writes into NOTIFY events.
--
-- Idempotent: running it again updates every function and trigger in place
-- (and picks up columns the core API added since) without resetting the
-- configured channel. One transaction; no psql meta-commands, so it runs both
-- with `psql -f sql/install.sql` and as one multi-statement asyncpg execute.
-- Afterwards run `SELECT sse.set_channel('name')` to use a channel other than
-- the default 'sse_events'. `sql/uninstall.sql` removes all of it again.
--
-- Everything lives in schema "sse" except the triggers on the core tables and
-- one index on public.shared_wishlist_bookmarks.
--
-- Payload of every notification (a JSON object, always < 8000 bytes):
--   {"id": <bigint>, "ts": <epoch seconds>, "event": "<name>", "data": {...},
--    "users": ["<uuid>", ...]}
-- An event with many recipients is split over several notifications that
-- carry the same event and data, disjoint "users" lists and each its own id.
--
-- Events (recipients in brackets):
--   wishlists:updated {"id"}                   [owner + viewers]
--   items:updated     {"id","wishlist_id"}     [owner + viewers]
--   items:resolved    {"id","wishlist_id","status","title"}
--                     [owner only; viewers get items:updated for that change]
--   marks:updated     {"item_id","wishlist_id"} [viewers + markers, never the owner]
-- "viewers" are the users with a shared_wishlist_bookmarks row for the wishlist.

BEGIN;

-- Concurrent installs (and set_channel) serialise on this key.
SELECT pg_advisory_xact_lock(7365657365727669);

-- CREATE TRIGGER needs a SHARE ROW EXCLUSIVE lock on the core tables, which
-- waits for running writes and makes new writes queue behind it. Rather fail
-- the install (and retry it) than stall the core API behind a long transaction.
SET LOCAL lock_timeout = '5s';

CREATE SCHEMA IF NOT EXISTS sse;
COMMENT ON SCHEMA sse IS 'sse-service: NOTIFY triggers for Server-Sent Events (sql/install.sql)';

-- The triggers run as whichever role writes the core tables; that role must be
-- able to resolve sse.* and to draw event ids.
GRANT USAGE ON SCHEMA sse TO PUBLIC;

-- "Viewers of wishlist W" is the hot lookup of every trigger; the table's own
-- unique constraint is (user_id, wishlist_id), useless for it.
CREATE INDEX IF NOT EXISTS sse_bookmarks_wishlist_idx
    ON public.shared_wishlist_bookmarks (wishlist_id) INCLUDE (user_id);

CREATE SEQUENCE IF NOT EXISTS sse.event_id AS bigint;
GRANT USAGE ON SEQUENCE sse.event_id TO PUBLIC;


-- ---------------------------------------------------------------------------
-- Channel
-- ---------------------------------------------------------------------------

-- sse.channel() is an IMMUTABLE constant so that the planner folds it into the
-- callers' plans: no lookup per event. set_channel() redefines it; plans that
-- folded the old value are invalidated in every session (checked on PG 15: a
-- session with a cached sse.emit plan notifies on the new channel right after
-- another session's set_channel). Created only when missing: a re-install
-- keeps the configured channel.
DO $do$
BEGIN
    IF to_regprocedure('sse.channel()') IS NULL THEN
        CREATE FUNCTION sse.channel() RETURNS text
            LANGUAGE sql IMMUTABLE PARALLEL SAFE
            AS $f$SELECT 'sse_events'::text$f$;
    END IF;
END
$do$;

CREATE OR REPLACE FUNCTION sse.set_channel(name text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION 'sse channel name must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF octet_length(name) > 63 THEN
        RAISE EXCEPTION 'sse channel name "%" is longer than 63 bytes', name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(7365657365727669);
    -- Read the current value from the catalog, not through a (possibly
    -- cached) call of sse.channel().
    IF (SELECT prosrc FROM pg_proc WHERE oid = 'sse.channel()'::regprocedure)
            = format('SELECT %L::text', name) THEN
        RETURN;  -- unchanged: leave plans alone
    END IF;
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION sse.channel() RETURNS text'
        ' LANGUAGE sql IMMUTABLE PARALLEL SAFE AS %L',
        format('SELECT %L::text', name));
    -- Cached plans that folded the old constant depend on sse.channel() and
    -- are invalidated in every session by this redefinition.
END
$$;
REVOKE ALL ON FUNCTION sse.set_channel(text) FROM PUBLIC;


-- ---------------------------------------------------------------------------
-- sse.emit: one event to a set of users, in as many NOTIFYs as needed
-- ---------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION sse.emit(event text, users uuid[], data jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    _users uuid[];
    _n     int;
    _head  text;
    _per   int;
    _i     int;
BEGIN
    IF emit.users IS NULL OR emit.event IS NULL THEN
        RETURN;
    END IF;
    -- Distinct, non-NULL recipients (one recipient: nothing to sort).
    IF cardinality(emit.users) = 1 AND emit.users[1] IS NOT NULL THEN
        _users := emit.users;  -- a plain one-element array
    ELSE
        _users := ARRAY(SELECT DISTINCT u FROM unnest(emit.users) AS u WHERE u IS NOT NULL);
    END IF;
    _n := cardinality(_users);
    IF _n = 0 THEN
        RETURN;
    END IF;
    -- Every chunk is '{"id":<n>' || _head || '"uuid","uuid",...,"uuid"' || ']}'.
    -- Each chunk draws its own id, so that an id names exactly one notification:
    -- the service uses ids as resume points, and a resume from an id that named
    -- several chunks could skip the later ones. "ts" (epoch seconds) lets the
    -- service measure trigger-to-delivery latency.
    _head := ',"ts":' || extract(epoch FROM clock_timestamp())::text
          || ',"event":' || to_json(emit.event)::text
          || ',"data":' || coalesce(emit.data, '{}'::jsonb)::text
          || ',"users":["';
    -- Each uuid costs 36 bytes + 2 quotes + 1 separator = 39 (the missing
    -- separator after the last one pays for the closing "]}); 27 bytes for
    -- '{"id":' and a bigint. NOTIFY rejects payloads of 8000 bytes and more
    -- INSIDE the writer's transaction, so stay well under it.
    _per := (7900 - 27 - octet_length(_head)) / 39;
    IF _per < 1 THEN
        -- Cannot happen with this file's events (data holds ids and at most a
        -- 200-character title); never fail the core API's write over it.
        RAISE WARNING 'sse.emit: % data too large for a notification, event dropped', emit.event;
        RETURN;
    END IF;
    FOR _i IN 0 .. (_n - 1) / _per LOOP
        PERFORM pg_notify(
            sse.channel(),
            '{"id":' || nextval('sse.event_id') || _head
            || array_to_string(_users[_i * _per + 1 : (_i + 1) * _per], '","') || '"]}');
    END LOOP;
END
$$;


-- ---------------------------------------------------------------------------
-- Helpers (lookups by index only)
-- ---------------------------------------------------------------------------

-- items:updated {"id","wishlist_id"} to the wishlist's owner and viewers.
CREATE OR REPLACE FUNCTION sse.item_updated(item_id uuid, wishlist_id uuid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    _owner   uuid;
    _viewers uuid[];
BEGIN
    SELECT w.user_id,
           ARRAY(SELECT b.user_id FROM public.shared_wishlist_bookmarks b
                 WHERE b.wishlist_id = w.id AND b.user_id <> w.user_id)
      INTO _owner, _viewers
      FROM public.wishlists w
     WHERE w.id = item_updated.wishlist_id;
    IF FOUND THEN
        PERFORM sse.emit('items:updated', array_prepend(_owner, _viewers),
                         jsonb_build_object('id', item_updated.item_id,
                                            'wishlist_id', item_updated.wishlist_id));
    END IF;
END
$$;

-- marks:updated {"item_id","wishlist_id"} to the viewers of the item's
-- wishlist and to `markers`, never to the owner (surprise mode). Nothing when
-- the item or its wishlist is gone (a cascade: the parent's delete covered it).
CREATE OR REPLACE FUNCTION sse.mark_updated(item_id uuid, markers uuid[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    _wishlist uuid;
    _owner    uuid;
    _viewers  uuid[];
BEGIN
    SELECT i.wishlist_id, w.user_id,
           ARRAY(SELECT b.user_id FROM public.shared_wishlist_bookmarks b
                 WHERE b.wishlist_id = w.id)
      INTO _wishlist, _owner, _viewers
      FROM public.items i
      JOIN public.wishlists w ON w.id = i.wishlist_id
     WHERE i.id = mark_updated.item_id;
    IF FOUND THEN
        PERFORM sse.emit('marks:updated', array_remove(_viewers || markers, _owner),
                         jsonb_build_object('item_id', mark_updated.item_id,
                                            'wishlist_id', _wishlist));
    END IF;
END
$$;


-- ---------------------------------------------------------------------------
-- Trigger functions
--
-- INSERT and UPDATE: AFTER ROW triggers (UPDATE only when a column changed).
-- DELETE: BEFORE ROW triggers. A wishlist delete cascades (RI triggers run
-- after the statement) to items, marks, share links and bookmarks; by then
-- the wishlist row is gone and nested triggers could not find its owner and
-- viewers. So the parent's BEFORE DELETE trigger, which still sees everything,
-- announces the whole subtree, and the children's BEFORE DELETE triggers stay
-- silent when their parent no longer exists.
--
-- Each body runs in an exception block: a notification is best effort and
-- must never fail the core API's write (e.g. after a core schema change this
-- file does not know yet); the error is logged as a WARNING instead.
-- ---------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION sse.on_wishlist() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    _viewers uuid[];
    _all     uuid[];
    _r       record;
BEGIN
    BEGIN
        IF TG_OP = 'DELETE' THEN
            _viewers := ARRAY(SELECT b.user_id FROM public.shared_wishlist_bookmarks b
                              WHERE b.wishlist_id = OLD.id AND b.user_id <> OLD.user_id);
            _all := array_prepend(OLD.user_id, _viewers);
            PERFORM sse.emit('wishlists:updated', _all, jsonb_build_object('id', OLD.id));
            -- The cascade's item and mark triggers will stay silent: announce them here.
            FOR _r IN
                SELECT i.id,
                       ARRAY(SELECT m.user_id FROM public.marks m WHERE m.item_id = i.id) AS markers
                  FROM public.items i
                 WHERE i.wishlist_id = OLD.id
            LOOP
                PERFORM sse.emit('items:updated', _all,
                                 jsonb_build_object('id', _r.id, 'wishlist_id', OLD.id));
                IF cardinality(_r.markers) > 0 THEN
                    PERFORM sse.emit('marks:updated',
                                     array_remove(_viewers || _r.markers, OLD.user_id),
                                     jsonb_build_object('item_id', _r.id, 'wishlist_id', OLD.id));
                END IF;
            END LOOP;
        ELSE
            _all := ARRAY(SELECT b.user_id FROM public.shared_wishlist_bookmarks b
                          WHERE b.wishlist_id = NEW.id AND b.user_id <> NEW.user_id);
            _all := array_prepend(NEW.user_id, _all);
            IF TG_OP = 'UPDATE' AND OLD.user_id IS DISTINCT FROM NEW.user_id THEN
                _all := array_prepend(OLD.user_id, _all);  -- the previous owner too
            END IF;
            PERFORM sse.emit('wishlists:updated', _all, jsonb_build_object('id', NEW.id));
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'sse: % on %.% not notified: % (SQLSTATE %)',
            TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM, SQLSTATE;
    END;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION sse.on_item() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    _owner   uuid;
    _viewers uuid[];
    _markers uuid[];
BEGIN
    BEGIN
        IF TG_OP = 'DELETE' THEN
            SELECT w.user_id,
                   ARRAY(SELECT b.user_id FROM public.shared_wishlist_bookmarks b
                         WHERE b.wishlist_id = w.id AND b.user_id <> w.user_id)
              INTO _owner, _viewers
              FROM public.wishlists w
             WHERE w.id = OLD.wishlist_id;
            IF FOUND THEN  -- else: inside the wishlist's cascade, already announced
                PERFORM sse.emit('items:updated', array_prepend(_owner, _viewers),
                                 jsonb_build_object('id', OLD.id, 'wishlist_id', OLD.wishlist_id));
                -- The cascade's mark triggers will stay silent: announce them here.
                _markers := ARRAY(SELECT m.user_id FROM public.marks m WHERE m.item_id = OLD.id);
                IF cardinality(_markers) > 0 THEN
                    PERFORM sse.emit('marks:updated', array_remove(_viewers || _markers, _owner),
                                     jsonb_build_object('item_id', OLD.id,
                                                        'wishlist_id', OLD.wishlist_id));
                END IF;
            END IF;
        ELSIF TG_OP = 'UPDATE'
              AND OLD.status::text IS DISTINCT FROM NEW.status::text
              AND NEW.status::text IN ('RESOLVED', 'FAILED') THEN
            -- The owner gets items:resolved instead of items:updated; viewers
            -- get items:updated.
            SELECT w.user_id,
                   ARRAY(SELECT b.user_id FROM public.shared_wishlist_bookmarks b
                         WHERE b.wishlist_id = w.id AND b.user_id <> w.user_id)
              INTO _owner, _viewers
              FROM public.wishlists w
             WHERE w.id = NEW.wishlist_id;
            IF FOUND THEN
                PERFORM sse.emit('items:resolved', ARRAY[_owner],
                                 jsonb_build_object('id', NEW.id,
                                                    'wishlist_id', NEW.wishlist_id,
                                                    'status', lower(NEW.status::text),
                                                    'title', NEW.title));
                PERFORM sse.emit('items:updated', _viewers,
                                 jsonb_build_object('id', NEW.id, 'wishlist_id', NEW.wishlist_id));
            END IF;
        ELSE
            PERFORM sse.item_updated(NEW.id, NEW.wishlist_id);
        END IF;
        IF TG_OP = 'UPDATE' AND OLD.wishlist_id IS DISTINCT FROM NEW.wishlist_id THEN
            -- Moved: the old wishlist's audience sees the item leave.
            PERFORM sse.item_updated(OLD.id, OLD.wishlist_id);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'sse: % on %.% not notified: % (SQLSTATE %)',
            TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM, SQLSTATE;
    END;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION sse.on_mark() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        IF TG_OP = 'DELETE' THEN
            -- Silent when the item or its wishlist is gone (cascade, announced).
            PERFORM sse.mark_updated(OLD.item_id, ARRAY[OLD.user_id]);
        ELSIF TG_OP = 'INSERT' THEN
            PERFORM sse.mark_updated(NEW.item_id, ARRAY[NEW.user_id]);
        ELSIF OLD.item_id IS NOT DISTINCT FROM NEW.item_id THEN
            PERFORM sse.mark_updated(NEW.item_id, ARRAY[NEW.user_id, OLD.user_id]);
        ELSE
            PERFORM sse.mark_updated(OLD.item_id, ARRAY[OLD.user_id]);
            PERFORM sse.mark_updated(NEW.item_id, ARRAY[NEW.user_id]);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'sse: % on %.% not notified: % (SQLSTATE %)',
            TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM, SQLSTATE;
    END;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NULL;
END
$$;

-- A bookmark appearing or disappearing changes what its viewer can see:
-- wishlists:updated {"id": wishlist_id} to that viewer. The viewer always gets
-- it, even when the viewer is the wishlist's owner (it reveals nothing about
-- marks). Bookmark UPDATEs (last_accessed_at on every visit) send nothing.
CREATE OR REPLACE FUNCTION sse.on_bookmark() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        IF TG_OP = 'DELETE' THEN
            IF EXISTS (SELECT 1 FROM public.wishlists w WHERE w.id = OLD.wishlist_id) THEN
                PERFORM sse.emit('wishlists:updated', ARRAY[OLD.user_id],
                                 jsonb_build_object('id', OLD.wishlist_id));
            END IF;  -- else: inside the wishlist's cascade, already announced
        ELSE
            PERFORM sse.emit('wishlists:updated', ARRAY[NEW.user_id],
                             jsonb_build_object('id', NEW.wishlist_id));
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'sse: % on %.% not notified: % (SQLSTATE %)',
            TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM, SQLSTATE;
    END;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NULL;
END
$$;

GRANT EXECUTE ON FUNCTION
    sse.channel(), sse.emit(text, uuid[], jsonb),
    sse.item_updated(uuid, uuid), sse.mark_updated(uuid, uuid[]),
    sse.on_wishlist(), sse.on_item(), sse.on_mark(), sse.on_bookmark()
TO PUBLIC;


-- ---------------------------------------------------------------------------
-- Triggers (all named sse_*; uninstall.sql finds them by that prefix)
-- ---------------------------------------------------------------------------

DO $do$
DECLARE
    -- table, trigger name stem, function
    _spec   text[] := ARRAY[
        ['wishlists', 'sse_wishlists', 'on_wishlist'],
        ['items', 'sse_items', 'on_item'],
        ['marks', 'sse_marks', 'on_mark'],
        ['shared_wishlist_bookmarks', 'sse_bookmarks', 'on_bookmark']];
    _wanted text[] := ARRAY[]::text[];
    _i      int;
    _table  regclass;
    _stem   text;
    _fn     text;
    _col    record;
    _cmp    text;
    _cond   text;
    _old    record;
BEGIN
    FOR _i IN 1 .. array_length(_spec, 1) LOOP
        _table := format('public.%I', _spec[_i][1])::regclass;
        _stem := _spec[_i][2];
        _fn := _spec[_i][3];

        EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER INSERT ON %s'
                       ' FOR EACH ROW EXECUTE FUNCTION sse.%I()',
                       _stem || '_insert', _table, _fn);
        EXECUTE format('CREATE OR REPLACE TRIGGER %I BEFORE DELETE ON %s'
                       ' FOR EACH ROW EXECUTE FUNCTION sse.%I()',
                       _stem || '_delete', _table, _fn);
        _wanted := _wanted || (_stem || '_insert') || (_stem || '_delete');

        CONTINUE WHEN _spec[_i][1] = 'shared_wishlist_bookmarks';

        -- UPDATE fires only when some column changed. Compare column by column
        -- (a whole-row comparison fails on json, which has no equality
        -- operator); a type without "=" is compared as text. Generated from
        -- the live columns, so a re-install covers columns added since.
        _cond := NULL;
        FOR _col IN
            SELECT a.attname, format_type(a.atttypid, NULL) AS typ
              FROM pg_attribute a
             WHERE a.attrelid = _table AND a.attnum > 0 AND NOT a.attisdropped
             -- OR stops at the first change: compare fixed-width columns
             -- (updated_at, status...) before bounded, then unbounded
             -- varlena ones (image_base64 would be detoasted twice).
             ORDER BY CASE WHEN a.attlen > 0 THEN 0 WHEN a.atttypmod >= 0 THEN 1 ELSE 2 END,
                      a.attnum
        LOOP
            BEGIN
                EXECUTE format('SELECT NULL::%s IS DISTINCT FROM NULL::%s', _col.typ, _col.typ);
                _cmp := format('OLD.%1$I IS DISTINCT FROM NEW.%1$I', _col.attname);
            EXCEPTION WHEN OTHERS THEN
                _cmp := format('OLD.%1$I::text IS DISTINCT FROM NEW.%1$I::text', _col.attname);
            END;
            _cond := coalesce(_cond || ' OR ', '') || _cmp;
        END LOOP;
        EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER UPDATE ON %s'
                       ' FOR EACH ROW WHEN (%s) EXECUTE FUNCTION sse.%I()',
                       _stem || '_update', _table, _cond, _fn);
        _wanted := _wanted || (_stem || '_update');
    END LOOP;

    -- Triggers of an older version of this file that this one no longer has.
    FOR _old IN
        SELECT t.tgname, t.tgrelid::regclass AS tbl
          FROM pg_trigger t
          JOIN pg_proc p ON p.oid = t.tgfoid
         WHERE NOT t.tgisinternal
           AND t.tgname LIKE 'sse\_%'
           AND p.pronamespace = 'sse'::regnamespace
           AND t.tgname <> ALL (_wanted)
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', _old.tgname, _old.tbl);
    END LOOP;
END
$do$;

COMMIT;

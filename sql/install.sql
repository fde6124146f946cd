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

-- Who may do what. Any role that can connect to the database could otherwise
-- send events to any user, or make every stream reset (docs/threat-model.md).
-- The trigger functions are SECURITY DEFINER: they run as the role that ran
-- this file (their owner) whichever role writes the core tables, with a pinned
-- search_path. So the writing role needs no grant here, and sse.send(), the
-- sequences and the helpers are granted to nobody: only the triggers (and the
-- installing role) send events, draw ids or count drops and failures. The
-- installing role must be able to SELECT the core tables the triggers read.
-- USAGE on the schema stays public: the service's role resolves the counters
-- by name, and everything inside is closed by its own ACL.
GRANT USAGE ON SCHEMA sse TO PUBLIC;

-- "Viewers of wishlist W" is the hot lookup of every trigger; the table's own
-- unique constraint is (user_id, wishlist_id), useless for it.
CREATE INDEX IF NOT EXISTS sse_bookmarks_wishlist_idx
    ON public.shared_wishlist_bookmarks (wishlist_id) INCLUDE (user_id);

CREATE SEQUENCE IF NOT EXISTS sse.event_id AS bigint;
REVOKE ALL ON SEQUENCE sse.event_id FROM PUBLIC;

-- Count events the triggers had to drop (a NOTIFY queue 90 % full), and
-- trigger bodies that failed (the event is lost, the write goes through). Not
-- transactional, so they count even when the writer rolls back (at worst one
-- needless reset); the service's LISTEN probe reads them
-- (pg_sequence_last_value) and sends sync:reset when one moves, so a loss is
-- never silent for the clients. Anyone may read them (SELECT), only the
-- triggers move them (nextval needs USAGE or UPDATE, granted to nobody):
-- otherwise any role could make every stream reset at will.
CREATE SEQUENCE IF NOT EXISTS sse.dropped_events AS bigint;
REVOKE ALL ON SEQUENCE sse.dropped_events FROM PUBLIC;
GRANT SELECT ON SEQUENCE sse.dropped_events TO PUBLIC;
CREATE SEQUENCE IF NOT EXISTS sse.failed_events AS bigint;
REVOKE ALL ON SEQUENCE sse.failed_events FROM PUBLIC;
GRANT SELECT ON SEQUENCE sse.failed_events TO PUBLIC;


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
    -- The NOTIFY queue usage (0..1) from which the triggers drop events rather
    -- than risk failing the writer's COMMIT (see "What the triggers cost").
    -- Folded into plans like sse.channel(); kept by a re-install. A test
    -- redefines it (0: every event dropped) to drive the drop path for real.
    IF to_regprocedure('sse.queue_limit()') IS NULL THEN
        CREATE FUNCTION sse.queue_limit() RETURNS double precision
            LANGUAGE sql IMMUTABLE PARALLEL SAFE
            AS $f$SELECT 0.9::double precision$f$;
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
-- What the triggers cost, and how this file keeps it low
-- ---------------------------------------------------------------------------
--
-- Every core API write runs these triggers inside its own transaction, so
-- they are written for the cheapest hot path that PostgreSQL 15's executor
-- and PL/pgSQL allow (profiled with callgrind; see docs/performance.md):
--
-- * A trigger's WHEN clause is read back from its stored node text and
--   planned again by every statement that fires the trigger: for the
--   column-by-column no-op test on items that took more CPU instructions
--   than the whole UPDATE without triggers. So the UPDATE triggers have no
--   WHEN clause; the same test is generated into their functions (see the
--   DO block at the end).
-- * PL/pgSQL compiles each simple expression (an IF condition, an
--   assignment) again in every transaction that reaches it, and every SQL
--   statement it runs (SELECT ... INTO, PERFORM) starts and stops an
--   executor. The hot paths therefore evaluate few, short expressions, run
--   one query, and never PERFORM: PERFORM is an executor run even for a bare
--   function call, while an assignment is evaluated directly.
--   `_sent := pg_notify(...) IS NOT NULL` is that assignment for pg_notify,
--   whose void result no variable can hold.
-- * A call of another PL/pgSQL function sets up a function of its own, so
--   the hottest path (an item UPDATE that changes neither status nor
--   wishlist) writes its event out inline, and the helpers below serve the
--   rest. Each event type has its own UPDATE trigger function, so no path
--   tests TG_OP more than it must.
-- * The exception block of each trigger (a subtransaction per row) is cheap
--   next to the rest and keeps every core write safe: it stays.
--
-- What each part costs, measured, is in docs/performance.md ("What the
-- triggers cost").
--
-- A full NOTIFY queue. pg_notify() only queues the payload in memory; it
-- enters the shared queue (8 GB) at COMMIT, and when the queue is full
-- PostgreSQL fails that COMMIT -- the core API's write, long after the
-- trigger returned, where no exception block can catch it. The queue only
-- fills while some LISTENing session stops reading (a stalled listener of the
-- service, or any other LISTENing session idle in a transaction), and
-- PostgreSQL logs warnings from 50 % on. The core API must not fail over SSE,
-- so the triggers stop sending when the queue is 90 % full (a WARNING per
-- dropped event instead): the core API keeps working, and the events of that
-- period are lost. 10 % of the queue (800 MB) is far more than concurrent
-- writers can add between the check and their COMMIT.


-- ---------------------------------------------------------------------------
-- Sending
-- ---------------------------------------------------------------------------

-- sse.send: one event to `users` (distinct and not NULL: the caller sees to
-- it), in as many notifications as needed. Returns how many it sent.
CREATE OR REPLACE FUNCTION sse.send(event text, data text, users uuid[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    _n    int := cardinality(send.users);
    _head text;
    _per  int;
    _i    int;
    _sent boolean;
BEGIN
    IF _n IS NULL OR _n = 0 OR send.event IS NULL THEN
        RETURN 0;
    END IF;
    IF pg_notification_queue_usage() >= sse.queue_limit() THEN
        RAISE WARNING 'sse: NOTIFY queue % %% full, % event dropped',
            round(pg_notification_queue_usage() * 100), send.event;
        -- Tell the service (its probe reads this sequence): it sends sync:reset.
        _i := nextval('sse.dropped_events');
        RETURN 0;
    END IF;
    -- Every chunk is '{"id":<n>' || _head || '"uuid","uuid",...,"uuid"' || ']}'.
    -- Each chunk draws its own id, so that an id names exactly one notification:
    -- the service uses ids as resume points, and a resume from an id that named
    -- several chunks could skip the later ones. "ts" (epoch seconds) lets the
    -- service measure trigger-to-delivery latency.
    _head := ',"ts":' || extract(epoch FROM clock_timestamp())::text
          || ',"event":' || to_json(send.event)::text
          || ',"data":' || coalesce(send.data, '{}')
          || ',"users":["';
    -- Each uuid costs 36 bytes + 2 quotes + 1 separator = 39 (the missing
    -- separator after the last one pays for the closing "]}); 27 bytes for
    -- '{"id":' and a bigint. NOTIFY rejects payloads of 8000 bytes and more
    -- INSIDE the writer's transaction, so stay well under it.
    _per := (7900 - 27 - octet_length(_head)) / 39;
    IF _per < 1 THEN
        -- Cannot happen with this file's events (data holds ids and at most a
        -- 200-character title); never fail the core API's write over it.
        RAISE WARNING 'sse.send: % data too large for a notification, event dropped', send.event;
        _i := nextval('sse.failed_events');
        RETURN 0;
    END IF;
    FOR _i IN 0 .. (_n - 1) / _per LOOP
        _sent := pg_notify(
            sse.channel(),
            '{"id":' || nextval('sse.event_id') || _head
            || array_to_string(send.users[_i * _per + 1 : (_i + 1) * _per], '","') || '"]}')
            IS NOT NULL;
    END LOOP;
    RETURN (_n - 1) / _per + 1;
END
$$;

-- sse.emit: the same for any set of users (NULLs and duplicates dropped) and
-- jsonb data; for manual use, the triggers call sse.send(). SECURITY DEFINER,
-- like the triggers: a role granted EXECUTE on it needs nothing else of ours.
CREATE OR REPLACE FUNCTION sse.emit(event text, users uuid[], data jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    _sent int;
BEGIN
    _sent := sse.send(emit.event, coalesce(emit.data, '{}'::jsonb)::text,
                      ARRAY(SELECT DISTINCT u FROM unnest(emit.users) AS u WHERE u IS NOT NULL));
END
$$;

-- Event data. jsonb's own text form, written out: the uuids need no escaping.
--   items:updated   {"id": "<item>", "wishlist_id": "<wishlist>"}
--   wishlists:updated {"id": "<wishlist>"}
--   marks:updated   {"item_id": "<item>", "wishlist_id": "<wishlist>"}
-- A single notification holds 150 recipients of these events with room to
-- spare (about 6 KB: 39 bytes per uuid and 200 for the rest); the inline fast
-- paths send that many at once and leave larger audiences to sse.send().


-- ---------------------------------------------------------------------------
-- Helpers (lookups by index only)
-- ---------------------------------------------------------------------------

-- items:updated to the wishlist's owner and viewers; nothing when the
-- wishlist is gone.
CREATE OR REPLACE FUNCTION sse.items_updated(item_id uuid, wishlist_id uuid) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    _all uuid[];
BEGIN
    -- The owner, then the viewers but the owner: distinct by construction.
    SELECT array_prepend(w.user_id,
                         ARRAY(SELECT b.user_id FROM public.shared_wishlist_bookmarks b
                               WHERE b.wishlist_id = w.id AND b.user_id <> w.user_id))
      INTO _all
      FROM public.wishlists w
     WHERE w.id = items_updated.wishlist_id;
    RETURN sse.send('items:updated',
                    format('{"id": "%s", "wishlist_id": "%s"}',
                           items_updated.item_id, items_updated.wishlist_id),
                    _all);
END
$$;

-- marks:updated to the viewers of the item's wishlist and to `markers` (not
-- NULL), never to the owner (surprise mode). Nothing when the item or its
-- wishlist is gone (a cascade: the parent's delete covered it).
CREATE OR REPLACE FUNCTION sse.marks_updated(item_id uuid, markers uuid[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    _wishlist uuid;
    _users    uuid[];
BEGIN
    -- The viewers who are neither the owner nor markers, then the markers
    -- but the owner: distinct by construction.
    SELECT i.wishlist_id,
           ARRAY(SELECT b.user_id FROM public.shared_wishlist_bookmarks b
                 WHERE b.wishlist_id = w.id AND b.user_id <> w.user_id
                   AND b.user_id <> ALL (marks_updated.markers))
           || ARRAY(SELECT DISTINCT m FROM unnest(marks_updated.markers) AS m
                    WHERE m <> w.user_id)
      INTO _wishlist, _users
      FROM public.items i
      JOIN public.wishlists w ON w.id = i.wishlist_id
     WHERE i.id = marks_updated.item_id;
    RETURN sse.send('marks:updated',
                    format('{"item_id": "%s", "wishlist_id": "%s"}',
                           marks_updated.item_id, _wishlist),
                    _users);
END
$$;


-- ---------------------------------------------------------------------------
-- Trigger functions
--
-- INSERT and UPDATE: AFTER ROW triggers. DELETE: BEFORE ROW triggers. A
-- wishlist delete cascades (RI triggers run after the statement) to items,
-- marks, share links and bookmarks; by then the wishlist row is gone and
-- nested triggers could not find its owner and viewers. So the parent's
-- BEFORE DELETE trigger, which still sees everything, announces the whole
-- subtree, and the children's BEFORE DELETE triggers stay silent when their
-- parent no longer exists.
--
-- No-op UPDATEs (no column changed) send nothing. The test is generated from
-- the live columns by the DO block at the end of this file, which puts it in
-- place of the line "-- @@ no-op UPDATE test @@" of each *_update function.
--
-- Each body runs in an exception block: a notification is best effort and
-- must never fail the core API's write; the error is logged as a WARNING
-- instead and counted in sse.failed_events, which the service turns into
-- sync:reset for every stream (the recipients of a failed event are unknown).
-- What can fail: a core schema change this file does not know yet (a renamed
-- or dropped column or table: until the next install), the installing role
-- losing SELECT on a table read here (the functions run as that role), a lock
-- or statement timeout while a migration holds a table, an oversized payload
-- if someone changes this file. The block costs one subtransaction per row;
-- without it any of these would fail the core API's write, so it stays. (A full NOTIFY
-- queue fails at COMMIT, out of its reach: see "What the triggers cost".)
-- ---------------------------------------------------------------------------

-- wishlists: INSERT and DELETE.
CREATE OR REPLACE FUNCTION sse.on_wishlist() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    _viewers uuid[];
    _all     uuid[];
    _r       record;
    _n       int;
BEGIN
    BEGIN
        IF TG_OP = 'DELETE' THEN
            _viewers := ARRAY(SELECT b.user_id FROM public.shared_wishlist_bookmarks b
                              WHERE b.wishlist_id = OLD.id AND b.user_id <> OLD.user_id);
            _all := array_prepend(OLD.user_id, _viewers);
            _n := sse.send('wishlists:updated', format('{"id": "%s"}', OLD.id), _all);
            -- The cascade's item and mark triggers will stay silent: announce them here.
            FOR _r IN
                SELECT i.id,
                       ARRAY(SELECT m.user_id FROM public.marks m WHERE m.item_id = i.id) AS markers
                  FROM public.items i
                 WHERE i.wishlist_id = OLD.id
            LOOP
                _n := sse.send('items:updated',
                               format('{"id": "%s", "wishlist_id": "%s"}', _r.id, OLD.id), _all);
                IF cardinality(_r.markers) > 0 THEN
                    _n := sse.send('marks:updated',
                                   format('{"item_id": "%s", "wishlist_id": "%s"}', _r.id, OLD.id),
                                   ARRAY(SELECT DISTINCT u FROM unnest(_viewers || _r.markers) AS u
                                         WHERE u <> OLD.user_id));
                END IF;
            END LOOP;
        ELSE
            _n := sse.send('wishlists:updated', format('{"id": "%s"}', NEW.id),
                           array_prepend(NEW.user_id,
                                         ARRAY(SELECT b.user_id FROM public.shared_wishlist_bookmarks b
                                               WHERE b.wishlist_id = NEW.id
                                                 AND b.user_id <> NEW.user_id)));
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'sse: % on %.% not notified: % (SQLSTATE %)',
            TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM, SQLSTATE;
        BEGIN  -- the service turns the count into sync:reset; never fail the write over it
            _n := nextval('sse.failed_events');
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'sse: the failure could not be counted: %', SQLERRM;
        END;
    END;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NULL;
END
$$;

-- wishlists: UPDATE. wishlists:updated to the owner and the viewers, and to
-- the previous owner when the owner changed.
CREATE OR REPLACE FUNCTION sse.on_wishlist_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    _all  uuid[];
    _n    int;
    _sent boolean;
BEGIN
    BEGIN
        -- @@ no-op UPDATE test @@
        _all := array_prepend(NEW.user_id,
                              ARRAY(SELECT b.user_id FROM public.shared_wishlist_bookmarks b
                                    WHERE b.wishlist_id = NEW.id AND b.user_id <> NEW.user_id));
        IF OLD.user_id IS DISTINCT FROM NEW.user_id THEN
            -- The previous owner too, who may be a viewer by now.
            _n := sse.send('wishlists:updated', format('{"id": "%s"}', NEW.id),
                           ARRAY(SELECT DISTINCT u FROM unnest(array_prepend(OLD.user_id, _all)) AS u));
        ELSIF cardinality(_all) <= 150 AND pg_notification_queue_usage() < sse.queue_limit() THEN
            -- sse.send(), written out for the common case: one notification.
            _sent := pg_notify(sse.channel(), format(
                '{"id":%s,"ts":%s,"event":"wishlists:updated","data":{"id": "%s"},"users":["%s"]}',
                nextval('sse.event_id'), extract(epoch FROM clock_timestamp()),
                NEW.id, array_to_string(_all, '","'))) IS NOT NULL;
        ELSE
            _n := sse.send('wishlists:updated', format('{"id": "%s"}', NEW.id), _all);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'sse: % on %.% not notified: % (SQLSTATE %)',
            TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM, SQLSTATE;
        BEGIN  -- the service turns the count into sync:reset; never fail the write over it
            _n := nextval('sse.failed_events');
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'sse: the failure could not be counted: %', SQLERRM;
        END;
    END;
    RETURN NULL;
END
$$;

-- items: INSERT and DELETE.
CREATE OR REPLACE FUNCTION sse.on_item() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    _owner   uuid;
    _viewers uuid[];
    _markers uuid[];
    _n       int;
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
                _n := sse.send('items:updated',
                               format('{"id": "%s", "wishlist_id": "%s"}', OLD.id, OLD.wishlist_id),
                               array_prepend(_owner, _viewers));
                -- The cascade's mark triggers will stay silent: announce them here.
                _markers := ARRAY(SELECT m.user_id FROM public.marks m WHERE m.item_id = OLD.id);
                IF cardinality(_markers) > 0 THEN
                    _n := sse.send('marks:updated',
                                   format('{"item_id": "%s", "wishlist_id": "%s"}',
                                          OLD.id, OLD.wishlist_id),
                                   ARRAY(SELECT DISTINCT u FROM unnest(_viewers || _markers) AS u
                                         WHERE u <> _owner));
                END IF;
            END IF;
        ELSE
            _n := sse.items_updated(NEW.id, NEW.wishlist_id);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'sse: % on %.% not notified: % (SQLSTATE %)',
            TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM, SQLSTATE;
        BEGIN  -- the service turns the count into sync:reset; never fail the write over it
            _n := nextval('sse.failed_events');
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'sse: the failure could not be counted: %', SQLERRM;
        END;
    END;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NULL;
END
$$;

-- items: UPDATE. The owner gets items:resolved instead of items:updated when
-- the status becomes RESOLVED or FAILED (the viewers get items:updated); a
-- move also tells the old wishlist's audience.
CREATE OR REPLACE FUNCTION sse.on_item_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    _all     uuid[];
    _owner   uuid;
    _viewers uuid[];
    _n       int;
    _sent    boolean;
BEGIN
    BEGIN
        -- @@ no-op UPDATE test @@
        IF OLD.status IS NOT DISTINCT FROM NEW.status
           AND OLD.wishlist_id IS NOT DISTINCT FROM NEW.wishlist_id THEN
            -- The hot path: sse.items_updated(NEW.id, NEW.wishlist_id), written out.
            SELECT array_prepend(w.user_id,
                                 ARRAY(SELECT b.user_id FROM public.shared_wishlist_bookmarks b
                                       WHERE b.wishlist_id = w.id AND b.user_id <> w.user_id))
              INTO _all
              FROM public.wishlists w
             WHERE w.id = NEW.wishlist_id;
            IF cardinality(_all) <= 150 AND pg_notification_queue_usage() < sse.queue_limit() THEN
                _sent := pg_notify(sse.channel(), format(
                    '{"id":%s,"ts":%s,"event":"items:updated",'
                    '"data":{"id": "%s", "wishlist_id": "%s"},"users":["%s"]}',
                    nextval('sse.event_id'), extract(epoch FROM clock_timestamp()),
                    NEW.id, NEW.wishlist_id, array_to_string(_all, '","'))) IS NOT NULL;
            ELSE
                _n := sse.send('items:updated',
                               format('{"id": "%s", "wishlist_id": "%s"}', NEW.id, NEW.wishlist_id),
                               _all);
            END IF;
            RETURN NULL;
        END IF;
        IF OLD.status::text IS DISTINCT FROM NEW.status::text
           AND NEW.status::text IN ('RESOLVED', 'FAILED') THEN
            SELECT w.user_id,
                   ARRAY(SELECT b.user_id FROM public.shared_wishlist_bookmarks b
                         WHERE b.wishlist_id = w.id AND b.user_id <> w.user_id)
              INTO _owner, _viewers
              FROM public.wishlists w
             WHERE w.id = NEW.wishlist_id;
            IF FOUND THEN
                _n := sse.send('items:resolved',
                               jsonb_build_object('id', NEW.id,
                                                  'wishlist_id', NEW.wishlist_id,
                                                  'status', lower(NEW.status::text),
                                                  'title', NEW.title)::text,
                               ARRAY[_owner]);
                _n := sse.send('items:updated',
                               format('{"id": "%s", "wishlist_id": "%s"}', NEW.id, NEW.wishlist_id),
                               _viewers);
            END IF;
        ELSE
            _n := sse.items_updated(NEW.id, NEW.wishlist_id);
        END IF;
        IF OLD.wishlist_id IS DISTINCT FROM NEW.wishlist_id THEN
            -- Moved: the old wishlist's audience sees the item leave.
            _n := sse.items_updated(OLD.id, OLD.wishlist_id);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'sse: % on %.% not notified: % (SQLSTATE %)',
            TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM, SQLSTATE;
        BEGIN  -- the service turns the count into sync:reset; never fail the write over it
            _n := nextval('sse.failed_events');
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'sse: the failure could not be counted: %', SQLERRM;
        END;
    END;
    RETURN NULL;
END
$$;

-- marks: INSERT and DELETE.
CREATE OR REPLACE FUNCTION sse.on_mark() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    _n int;
BEGIN
    BEGIN
        IF TG_OP = 'DELETE' THEN
            -- Silent when the item or its wishlist is gone (cascade, announced).
            _n := sse.marks_updated(OLD.item_id, ARRAY[OLD.user_id]);
        ELSE
            _n := sse.marks_updated(NEW.item_id, ARRAY[NEW.user_id]);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'sse: % on %.% not notified: % (SQLSTATE %)',
            TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM, SQLSTATE;
        BEGIN  -- the service turns the count into sync:reset; never fail the write over it
            _n := nextval('sse.failed_events');
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'sse: the failure could not be counted: %', SQLERRM;
        END;
    END;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NULL;
END
$$;

-- marks: UPDATE.
CREATE OR REPLACE FUNCTION sse.on_mark_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    _n int;
BEGIN
    BEGIN
        -- @@ no-op UPDATE test @@
        IF OLD.item_id IS NOT DISTINCT FROM NEW.item_id THEN
            _n := sse.marks_updated(NEW.item_id, ARRAY[NEW.user_id, OLD.user_id]);
        ELSE
            _n := sse.marks_updated(OLD.item_id, ARRAY[OLD.user_id]);
            _n := sse.marks_updated(NEW.item_id, ARRAY[NEW.user_id]);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'sse: % on %.% not notified: % (SQLSTATE %)',
            TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM, SQLSTATE;
        BEGIN  -- the service turns the count into sync:reset; never fail the write over it
            _n := nextval('sse.failed_events');
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'sse: the failure could not be counted: %', SQLERRM;
        END;
    END;
    RETURN NULL;
END
$$;

-- A bookmark appearing or disappearing changes what its viewer can see:
-- wishlists:updated {"id": wishlist_id} to that viewer. The viewer always gets
-- it, even when the viewer is the wishlist's owner (it reveals nothing about
-- marks). Bookmark UPDATEs (last_accessed_at on every visit) send nothing.
CREATE OR REPLACE FUNCTION sse.on_bookmark() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    _n int;
BEGIN
    BEGIN
        IF TG_OP = 'DELETE' THEN
            IF EXISTS (SELECT 1 FROM public.wishlists w WHERE w.id = OLD.wishlist_id) THEN
                _n := sse.send('wishlists:updated', format('{"id": "%s"}', OLD.wishlist_id),
                               ARRAY[OLD.user_id]);
            END IF;  -- else: inside the wishlist's cascade, already announced
        ELSE
            _n := sse.send('wishlists:updated', format('{"id": "%s"}', NEW.wishlist_id),
                           ARRAY[NEW.user_id]);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'sse: % on %.% not notified: % (SQLSTATE %)',
            TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM, SQLSTATE;
        BEGIN  -- the service turns the count into sync:reset; never fail the write over it
            _n := nextval('sse.failed_events');
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'sse: the failure could not be counted: %', SQLERRM;
        END;
    END;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NULL;
END
$$;

-- Functions of earlier versions of this file.
DO $do$
BEGIN
    IF to_regprocedure('sse.item_updated(uuid, uuid)') IS NOT NULL THEN
        DROP FUNCTION sse.item_updated(uuid, uuid);
    END IF;
    IF to_regprocedure('sse.mark_updated(uuid, uuid[])') IS NOT NULL THEN
        DROP FUNCTION sse.mark_updated(uuid, uuid[]);
    END IF;
END
$do$;

-- Functions are executable by PUBLIC when created: take that back from all
-- but sse.channel() (the name of the channel, which `sse-service check` reads).
-- A trigger's EXECUTE right is checked when the trigger is created, not when
-- it fires, so no writing role needs one; sse.emit() is for the installing
-- role (GRANT it to an operator's role to let it send events by hand).
REVOKE ALL ON FUNCTION
    sse.queue_limit(), sse.send(text, text, uuid[]), sse.emit(text, uuid[], jsonb),
    sse.items_updated(uuid, uuid), sse.marks_updated(uuid, uuid[]),
    sse.on_wishlist(), sse.on_wishlist_update(), sse.on_item(), sse.on_item_update(),
    sse.on_mark(), sse.on_mark_update(), sse.on_bookmark()
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sse.channel() TO PUBLIC;


-- ---------------------------------------------------------------------------
-- No-op UPDATEs, and the triggers (all named sse_*; uninstall.sql finds them
-- by that prefix)
-- ---------------------------------------------------------------------------

DO $do$
DECLARE
    -- table, trigger name stem, INSERT/DELETE function, UPDATE function
    _spec   text[] := ARRAY[
        ['wishlists', 'sse_wishlists', 'on_wishlist', 'on_wishlist_update'],
        ['items', 'sse_items', 'on_item', 'on_item_update'],
        ['marks', 'sse_marks', 'on_mark', 'on_mark_update'],
        ['shared_wishlist_bookmarks', 'sse_bookmarks', 'on_bookmark', NULL]];
    -- Compared first, on their own: the core API sets updated_at on every
    -- write, so this one comparison settles almost every UPDATE.
    _first  text[] := ARRAY['updated_at'];
    _marker text := '-- @@ no-op UPDATE test @@';
    _wanted text[] := ARRAY[]::text[];
    _i      int;
    _table  regclass;
    _stem   text;
    _fn     text;
    _upd    text;
    _col    record;
    _cmp    text;
    _head   text;
    _rest   text;
    _test   text;
    _src    text;
    _old    record;
BEGIN
    FOR _i IN 1 .. array_length(_spec, 1) LOOP
        _table := format('public.%I', _spec[_i][1])::regclass;
        _stem := _spec[_i][2];
        _fn := _spec[_i][3];
        _upd := _spec[_i][4];

        EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER INSERT ON %s'
                       ' FOR EACH ROW EXECUTE FUNCTION sse.%I()',
                       _stem || '_insert', _table, _fn);
        EXECUTE format('CREATE OR REPLACE TRIGGER %I BEFORE DELETE ON %s'
                       ' FOR EACH ROW EXECUTE FUNCTION sse.%I()',
                       _stem || '_delete', _table, _fn);
        _wanted := _wanted || (_stem || '_insert') || (_stem || '_delete');

        CONTINUE WHEN _upd IS NULL;

        -- The no-op test: nothing to send unless some column changed. Compare
        -- column by column (a whole-row comparison fails on json, which has
        -- no equality operator, and would detoast every large value); a type
        -- without "=" is compared as text. Generated from the live columns,
        -- so a re-install covers columns added since. OR stops at the first
        -- change: compare fixed-width columns (status...) before bounded, then
        -- unbounded varlena ones (image_base64 would be detoasted twice).
        --
        -- It is a test in the function, not the trigger's WHEN clause: a WHEN
        -- clause is parsed and planned again by every statement. PL/pgSQL
        -- compiles an expression once per transaction that reaches it, so the
        -- _first columns get an IF of their own and the long rest is only
        -- compiled when they did not change:
        --     IF NOT (OLD.updated_at IS DISTINCT FROM NEW.updated_at) THEN
        --         IF NOT (OLD.id IS DISTINCT FROM NEW.id OR ...) THEN
        --             RETURN NULL;
        --         END IF;
        --     END IF;
        -- A column dropped or renamed later makes the test fail, and so every
        -- UPDATE notification of its table (a WARNING each, the write goes
        -- through) until the next install; but unlike a WHEN clause, which
        -- depends on the columns it names, it never blocks the core API's
        -- ALTER TABLE ... DROP COLUMN.
        _head := NULL;
        _rest := NULL;
        FOR _col IN
            SELECT a.attname, format_type(a.atttypid, NULL) AS typ
              FROM pg_attribute a
             WHERE a.attrelid = _table AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY CASE WHEN a.attlen > 0 THEN 0 WHEN a.atttypmod >= 0 THEN 1 ELSE 2 END,
                      a.attnum
        LOOP
            BEGIN
                EXECUTE format('SELECT NULL::%s IS DISTINCT FROM NULL::%s', _col.typ, _col.typ);
                _cmp := format('OLD.%1$I IS DISTINCT FROM NEW.%1$I', _col.attname);
            EXCEPTION WHEN OTHERS THEN
                _cmp := format('OLD.%1$I::text IS DISTINCT FROM NEW.%1$I::text', _col.attname);
            END;
            IF _col.attname = ANY (_first) THEN
                _head := coalesce(_head || ' OR ', '') || _cmp;
            ELSE
                _rest := coalesce(_rest || E'\n            OR ', '') || _cmp;
            END IF;
        END LOOP;
        _test := format(E'IF NOT (%s) THEN\n            RETURN NULL;  -- no column changed\n'
                        || '        END IF;',
                        coalesce(_rest, 'false'));
        IF _head IS NOT NULL THEN
            _test := format(E'IF NOT (%s) THEN\n            %s\n        END IF;',
                            _head, replace(_test, E'\n', E'\n    '));
        END IF;
        _src := (SELECT p.prosrc FROM pg_proc p
                  WHERE p.oid = format('sse.%I()', _upd)::regprocedure);
        IF strpos(_src, _marker) = 0 THEN
            RAISE EXCEPTION 'sse.%() lacks the line "%"', _upd, _marker;
        END IF;
        EXECUTE format('CREATE OR REPLACE FUNCTION sse.%I() RETURNS trigger'
                       ' LANGUAGE plpgsql SECURITY DEFINER'
                       ' SET search_path = pg_catalog, pg_temp AS %L',
                       _upd, replace(_src, _marker, _test));

        EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER UPDATE ON %s'
                       ' FOR EACH ROW EXECUTE FUNCTION sse.%I()',
                       _stem || '_update', _table, _upd);
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

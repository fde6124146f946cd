-- A copy of the Wish With Me core API's schema: the contract this service's
-- triggers are written against. The core API owns these tables; this copy is
-- the fixture that the tests, `sse-service bench` and `sse-service demo` load
-- into throw-away databases. Taken from the core API's reference copy
-- (shared/wishwithme-schema.sql of the project, 2026-11); when the core API's
-- models change, copy the new schema here and run the tests.
--
-- The Wish With Me core API's tables, as its SQLAlchemy models create them in
-- PostgreSQL. The core API owns these tables; the SSE service never writes to
-- them and must not require any change to them or to the core API's code.
-- The service may add its own objects (trigger functions, triggers, indexes,
-- a sequence) in an idempotent install script, and remove them again.
--
-- Note: SQLAlchemy's Enum(ItemStatus) stores the Python enum's member NAMES,
-- so item status values in the database are upper case ('RESOLVED'), while the
-- API and the seed's event payloads use the lower-case values ('resolved').

CREATE EXTENSION IF NOT EXISTS pgcrypto;  -- gen_random_uuid() on PG < 13

CREATE TYPE itemstatus AS ENUM ('PENDING', 'RESOLVING', 'RESOLVED', 'FAILED');

CREATE TABLE users (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email       VARCHAR(255) NOT NULL UNIQUE,
    name        VARCHAR(100) NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at  TIMESTAMPTZ
);

CREATE TABLE wishlists (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,  -- the owner
    name        VARCHAR(100) NOT NULL,
    description VARCHAR(500),
    is_public   BOOLEAN NOT NULL DEFAULT false,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at  TIMESTAMPTZ                                             -- soft delete
);

CREATE TABLE items (
    id                UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    wishlist_id       UUID NOT NULL REFERENCES wishlists(id) ON DELETE CASCADE,
    title             VARCHAR(200) NOT NULL,
    description       VARCHAR(1000),
    price             NUMERIC(10, 2),
    currency          VARCHAR(3),
    quantity          INTEGER NOT NULL DEFAULT 1,
    source_url        TEXT,
    image_url         TEXT,
    image_base64      TEXT,              -- can be hundreds of KB: never put it in a payload
    status            itemstatus NOT NULL DEFAULT 'PENDING',
    resolver_metadata JSON,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at        TIMESTAMPTZ
);

-- A mark: a viewer of a shared wishlist says "I will buy this". Surprise mode:
-- marks are hidden from the wishlist's owner.
CREATE TABLE marks (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    item_id     UUID NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    user_id     UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,  -- who marked
    quantity    INTEGER NOT NULL DEFAULT 1,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT unique_user_item_mark UNIQUE (item_id, user_id)
);

CREATE TABLE share_links (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    wishlist_id  UUID NOT NULL REFERENCES wishlists(id) ON DELETE CASCADE,
    token        VARCHAR(32) NOT NULL UNIQUE,
    link_type    VARCHAR(10) NOT NULL DEFAULT 'mark',                   -- 'view' or 'mark'
    expires_at   TIMESTAMPTZ,
    access_count INTEGER NOT NULL DEFAULT 0,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked      BOOLEAN NOT NULL DEFAULT false
);

-- A viewer who opened a share link keeps a bookmark: this is how the database
-- knows who views (and may mark items of) someone else's wishlist.
CREATE TABLE shared_wishlist_bookmarks (
    id               UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id          UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,      -- the viewer
    wishlist_id      UUID NOT NULL REFERENCES wishlists(id) ON DELETE CASCADE,
    share_token      VARCHAR(32) NOT NULL,
    last_accessed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT uq_bookmark_user_wishlist UNIQUE (user_id, wishlist_id)
);

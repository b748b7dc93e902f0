-- aistack's registry of collections; each collection's records live in a table of its own,
-- aistack_vec_<id>, created with the collection (its vector column has the collection's dims).
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE IF NOT EXISTS aistack_collections (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    dims       INTEGER NOT NULL CHECK (dims > 0),
    metric     TEXT NOT NULL CHECK (metric IN ('cosine', 'dot', 'l2')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

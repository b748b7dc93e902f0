-- Lexical search. Each collection has a text analyzer, and each collection's table gains
-- `lexemes` (its records' terms, written by aistack with that analyzer, as a tsvector literal)
-- and `tsv`, a tsvector the database keeps from them, GIN-indexed. Existing rows get their
-- lexemes when aistack next connects (`lexical_ready` is false until then).
ALTER TABLE aistack_collections
    ADD COLUMN IF NOT EXISTS analyzer TEXT NOT NULL DEFAULT 'english'
        CHECK (analyzer IN ('english', 'simple')),
    ADD COLUMN IF NOT EXISTS lexical_ready BOOLEAN NOT NULL DEFAULT false;

DO $$
DECLARE
    c RECORD;
BEGIN
    FOR c IN SELECT id FROM aistack_collections LOOP
        EXECUTE format('ALTER TABLE aistack_vec_%s ADD COLUMN IF NOT EXISTS lexemes TEXT', c.id);
        EXECUTE format(
            'ALTER TABLE aistack_vec_%s ADD COLUMN IF NOT EXISTS tsv tsvector GENERATED ALWAYS AS (lexemes::tsvector) STORED',
            c.id);
        EXECUTE format('CREATE INDEX IF NOT EXISTS aistack_vec_%s_tsv ON aistack_vec_%s USING gin (tsv)', c.id, c.id);
    END LOOP;
END $$;

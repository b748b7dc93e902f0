-- The model and prompts a collection's texts are embedded with (an aistack EmbeddingOrigin as
-- JSON), recorded when a text front end creates the collection; NULL for vector-only
-- collections and those made before this column.
ALTER TABLE aistack_collections ADD COLUMN IF NOT EXISTS embedding JSONB;

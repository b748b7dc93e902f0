//! The lexical (BM25) index of one collection: a tantivy index in the collection's `lexical/`
//! folder over the records' text ([`TEXT_KEY`](crate::store::TEXT_KEY)), analyzed by the
//! collection's [`Analyzer`]. One tantivy document per record that has text: its slot (indexed
//! and a fast field) and its terms (with frequencies, for BM25).
//!
//! The log stays the source of truth. Every commit carries the log position it reflects (its
//! payload); opening brings the index up to date from there, and an index that is missing,
//! damaged, or at no position of the log is rebuilt from the records. A write is staged and
//! committed under the collection's writer lock *before* it is applied in memory, and the new
//! searcher is swapped in together with the records ([`State::set_lexical`]), so a search
//! always sees the records and the index at the same write.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use roaring::RoaringBitmap;
use tantivy::collector::{FilterCollector, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{doc, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, Term};

use super::log::FramePos;
use super::state::State;
use crate::error::{Error, Result};
use crate::store::Analyzer;

/// Memory the index writer may buffer before it flushes a segment (tantivy's minimum is 15 MB).
const WRITER_MEMORY: usize = 32 * 1024 * 1024;
/// Payload tag: a commit whose payload does not start with it is not at a known log position.
const PAYLOAD_TAG: &str = "aistack-lexical-v1";

/// How segments are merged in the background. Every search visits every segment, so fewer
/// segments answer faster: merge as soon as two of a size exist (tantivy waits for eight; at
/// 100k chunks that left 8 segments against 3, and BM25 top-10 took 0.67 ms against 0.46 ms),
/// and merge away a segment once a quarter of it is deleted (upserts delete the old document).
fn merge_policy() -> tantivy::indexer::LogMergePolicy {
    let mut policy = tantivy::indexer::LogMergePolicy::default();
    policy.set_min_num_segments(2);
    policy.set_del_docs_ratio_before_merge(0.25);
    policy
}

fn lex_err(context: &str, e: tantivy::TantivyError) -> Error {
    Error::internal(format!("lexical index: {context}"), e)
}

/// The fields of the index.
#[derive(Clone, Copy)]
struct Fields {
    slot: Field,
    terms: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let slot = b.add_u64_field("slot", NumericOptions::default().set_indexed().set_fast());
    // Terms come analyzed by our own analyzer, space-separated; the whitespace tokenizer only
    // splits them again.
    let indexing = TextFieldIndexing::default()
        .set_tokenizer("whitespace")
        .set_index_option(IndexRecordOption::WithFreqs);
    let terms = b.add_text_field(
        "terms",
        TextOptions::default().set_indexing_options(indexing),
    );
    (b.build(), Fields { slot, terms })
}

fn payload_of(pos: FramePos, analyzer: Analyzer) -> String {
    format!(
        "{PAYLOAD_TAG} {} {} {}",
        pos.end,
        pos.crc,
        analyzer.as_str()
    )
}

fn parse_payload(p: &str, analyzer: Analyzer) -> Option<FramePos> {
    let mut it = p.split(' ');
    if it.next()? != PAYLOAD_TAG {
        return None;
    }
    let end = it.next()?.parse().ok()?;
    let crc = it.next()?.parse().ok()?;
    (it.next()? == analyzer.as_str()).then_some(FramePos { end, crc })
}

/// What searches read: one committed view of the index.
#[derive(Clone)]
pub(super) struct LexView {
    searcher: Searcher,
    fields: Fields,
    analyzer: Analyzer,
}

impl LexView {
    /// The best `depth` slots for `text` by BM25 (ties broken later, by id), among `allowed`
    /// when given. Fetches past `depth` while the scores at the cut are equal, so the caller can
    /// order ties by id exactly.
    pub(super) fn search(
        &self,
        text: &str,
        depth: usize,
        allowed: Option<Arc<RoaringBitmap>>,
    ) -> Result<Vec<(f32, usize)>> {
        let terms = self.analyzer.query_terms(text);
        if terms.is_empty() || depth == 0 {
            return Ok(Vec::new());
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let term = Term::from_field_text(self.fields.terms, t);
                let q: Box<dyn Query> =
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs));
                (Occur::Should, q)
            })
            .collect();
        let query = BooleanQuery::new(clauses);
        let mut limit = depth + 1;
        loop {
            let top = TopDocs::with_limit(limit).order_by_score();
            let found = match &allowed {
                None => self.searcher.search(&query, &top),
                Some(set) => {
                    let set = set.clone();
                    let keep = move |slot: u64| set.contains(slot as u32);
                    self.searcher
                        .search(&query, &FilterCollector::new("slot".into(), keep, top))
                }
            }
            .map_err(|e| lex_err("searching", e))?;
            // Equal scores past the cut may belong before it in id order: fetch until the
            // last score fetched is below the score at the cut (or everything is fetched).
            let tied_past_cut = found.len() == limit
                && found.len() > depth
                && found[limit - 1].0 == found[depth - 1].0;
            if tied_past_cut {
                limit *= 2;
                continue;
            }
            let mut columns: Vec<Option<tantivy::columnar::Column<u64>>> =
                vec![None; self.searcher.segment_readers().len()];
            let mut out = Vec::with_capacity(found.len());
            for (score, addr) in found {
                let col = match &mut columns[addr.segment_ord as usize] {
                    Some(c) => c,
                    slot @ None => slot.insert(
                        self.searcher
                            .segment_reader(addr.segment_ord)
                            .fast_fields()
                            .u64("slot")
                            .map_err(|e| lex_err("reading slots", e))?,
                    ),
                };
                if let Some(slot) = col.first(addr.doc_id) {
                    out.push((score, slot as usize));
                }
            }
            return Ok(out);
        }
    }
}

/// The writing side of a collection's lexical index (held under the collection's writer lock).
pub(super) struct LexIndex {
    /// Always `Some` until dropped (taken then, to wait for its merges).
    writer: Option<IndexWriter>,
    reader: IndexReader,
    fields: Fields,
    analyzer: Analyzer,
}

impl LexIndex {
    /// The index folder of a collection.
    pub(super) fn dir_of(collection_dir: &Path) -> PathBuf {
        collection_dir.join("lexical")
    }

    /// Opens the index in `collection_dir`, with the log position its last commit reflects
    /// (`None` when it is at no known position). `Err` when it is missing or damaged.
    pub(super) fn open(
        collection_dir: &Path,
        analyzer: Analyzer,
    ) -> Result<(Self, Option<FramePos>)> {
        let dir = Self::dir_of(collection_dir);
        if !dir.join("meta.json").exists() {
            return Err(Error::NotFound {
                what: "lexical index".into(),
            });
        }
        let index = Index::open_in_dir(&dir).map_err(|e| lex_err("opening", e))?;
        let (_, fields) = schema();
        let same_schema = index.schema().get_field("slot").ok() == Some(fields.slot)
            && index.schema().get_field("terms").ok() == Some(fields.terms);
        if !same_schema {
            return Err(Error::Internal {
                context: "lexical index: unexpected schema".into(),
                source: None,
            });
        }
        let pos = index
            .load_metas()
            .map_err(|e| lex_err("reading its commit", e))?
            .payload
            .and_then(|p| parse_payload(&p, analyzer));
        Ok((Self::with_index(&index, fields, analyzer)?, pos))
    }

    /// Creates an empty index in `collection_dir`, replacing whatever is there.
    pub(super) fn create(collection_dir: &Path, analyzer: Analyzer) -> Result<Self> {
        let dir = Self::dir_of(collection_dir);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
        let (schema, fields) = schema();
        let index = Index::create_in_dir(&dir, schema).map_err(|e| lex_err("creating", e))?;
        Self::with_index(&index, fields, analyzer)
    }

    fn with_index(index: &Index, fields: Fields, analyzer: Analyzer) -> Result<Self> {
        // One indexing thread and one merge thread per collection: writes are serialized per
        // collection anyway, and many collections must not mean many idle threads each.
        let options = tantivy::indexer::IndexWriterOptions::builder()
            .memory_budget_per_thread(WRITER_MEMORY)
            .num_worker_threads(1)
            .num_merge_threads(1)
            .build();
        let writer = index
            .writer_with_options(options)
            .map_err(|e| lex_err("starting its writer", e))?;
        writer.set_merge_policy(Box::new(merge_policy()));
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| lex_err("starting its reader", e))?;
        Ok(Self {
            writer: Some(writer),
            reader,
            fields,
            analyzer,
        })
    }

    fn writer(&self) -> &IndexWriter {
        self.writer.as_ref().expect("the writer lives until drop")
    }

    /// Stages `slot` as holding `text` (or nothing): its old document goes, a new one comes.
    pub(super) fn stage(&self, slot: usize, text: Option<&str>) -> Result<()> {
        self.writer()
            .delete_term(Term::from_field_u64(self.fields.slot, slot as u64));
        let Some(text) = text else {
            return Ok(());
        };
        let terms = self.analyzer.terms(text);
        if terms.is_empty() {
            return Ok(());
        }
        self.writer()
            .add_document(
                doc!(self.fields.slot => slot as u64, self.fields.terms => terms.join(" ")),
            )
            .map_err(|e| lex_err("adding a document", e))?;
        Ok(())
    }

    /// Stages every live record of `state` with the slot it will have, dropping what the index
    /// held: `renumbered` maps live slots to dense ones (as compaction does).
    pub(super) fn stage_all(&self, state: &State, renumbered: bool) -> Result<()> {
        self.writer()
            .delete_all_documents()
            .map_err(|e| lex_err("clearing", e))?;
        for (i, slot) in state.live().enumerate() {
            if let Some(text) = state.text(slot) {
                self.stage(if renumbered { i } else { slot }, Some(text))?;
            }
        }
        Ok(())
    }

    /// Commits what is staged as reflecting the log up to `pos` (`None`: at no position, so
    /// the next open rebuilds).
    pub(super) fn commit(&mut self, pos: Option<FramePos>) -> Result<()> {
        let payload = pos.map_or_else(
            || format!("{PAYLOAD_TAG}-stale"),
            |p| payload_of(p, self.analyzer),
        );
        let mut prepared = self
            .writer
            .as_mut()
            .expect("the writer lives until drop")
            .prepare_commit()
            .map_err(|e| lex_err("preparing a commit", e))?;
        prepared.set_payload(&payload);
        prepared.commit().map_err(|e| lex_err("committing", e))?;
        Ok(())
    }

    /// The view of the last commit, for searches.
    pub(super) fn view(&self) -> Result<LexView> {
        self.reader
            .reload()
            .map_err(|e| lex_err("reloading its reader", e))?;
        Ok(LexView {
            searcher: self.reader.searcher(),
            fields: self.fields,
            analyzer: self.analyzer,
        })
    }
}

impl Drop for LexIndex {
    /// Waits for background merges: dropping a tantivy writer leaves them running, writing
    /// into the folder after the store has closed (or while it is reopened).
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            if let Err(e) = writer.wait_merging_threads() {
                tracing::warn!(error = %e, "lexical index: a background merge failed");
            }
        }
    }
}

/// Bytes the lexical index in `collection_dir` takes on disk.
pub(super) fn disk_bytes(collection_dir: &Path) -> u64 {
    std::fs::read_dir(LexIndex::dir_of(collection_dir))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_name_the_analyzer() {
        let pos = FramePos {
            end: 12345,
            crc: 99,
        };
        let p = payload_of(pos, Analyzer::English);
        assert_eq!(parse_payload(&p, Analyzer::English), Some(pos));
        assert_eq!(parse_payload(&p, Analyzer::Simple), None);
        assert_eq!(
            parse_payload("aistack-lexical-v1-stale", Analyzer::English),
            None
        );
        assert_eq!(parse_payload("garbage", Analyzer::English), None);
    }
}

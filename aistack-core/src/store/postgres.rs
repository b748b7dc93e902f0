//! The pgvector backend, on sqlx: embedded migrations run at connect, a pooled connection, one
//! table per collection with an HNSW index, bulk upserts in one `UNNEST` statement, filters
//! compiled to SQL with every value bound, and index-friendly `ORDER BY embedding <=> $1 LIMIT k`
//! searches (iterative index scans for filtered queries, pgvector ≥ 0.8).
//!
//! Lexical search uses a `tsvector` column the database keeps (generated) from the terms aistack
//! writes with each record (`lexemes`, produced by the collection's [`Analyzer`]), with a GIN
//! index and `ts_rank_cd`; a hybrid search runs both arms and their reciprocal rank fusion in one
//! statement.
//!
//! The store keeps no state of its own between calls, so any number of servers can share one
//! database behind a load balancer.

use std::time::Duration;

use async_trait::async_trait;
use pgvector::Vector;
use serde_json::{json, Map, Value};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder, Row};

use super::filter::{Cmp, Filter, Scalar};
use super::{
    prepare_records, prepare_requests, validate_collection_name, Analyzer, CollectionInfo,
    CollectionSpec, Hit, Metric, Record, SearchMode, SearchRequest, VectorStore, TEXT_KEY,
};
use crate::error::{Error, Result};

/// The embedded migrations. Migrations only add (columns with defaults, tables), so a newer
/// server's schema still works for this one: migrations this version does not know are
/// ignored rather than refused, and an older and a newer server can share a database during a
/// rolling upgrade.
fn migrator() -> sqlx::migrate::Migrator {
    let mut m = sqlx::migrate!("./migrations");
    m.set_ignore_missing(true);
    m
}

/// pgvector's HNSW index takes vectors of at most this many dimensions; larger collections are
/// searched exactly.
const HNSW_MAX_DIMS: usize = 2000;

/// Connection and index settings of the pgvector backend.
#[derive(Debug, Clone, PartialEq)]
pub struct PgConfig {
    /// `postgres://user:password@host:port/database`.
    pub dsn: String,
    /// Pool size.
    pub max_connections: u32,
    /// How long a call waits for a pooled connection before failing with `Unavailable`.
    pub acquire_timeout: Duration,
    /// Server-side limit on one statement.
    pub statement_timeout: Duration,
    /// HNSW `m` for new collections.
    pub hnsw_m: u32,
    /// HNSW `ef_construction` for new collections.
    pub hnsw_ef_construction: u32,
    /// HNSW `ef_search` per query (raised to `k` when `k` is larger).
    pub ef_search: u32,
}

impl PgConfig {
    /// Defaults for `dsn`: 10 connections, 5 s acquire timeout, 30 s statement timeout,
    /// m = 16, ef_construction = 64, ef_search = 100.
    pub fn new(dsn: impl Into<String>) -> Self {
        Self {
            dsn: dsn.into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            hnsw_m: 16,
            hnsw_ef_construction: 64,
            ef_search: 100,
        }
    }
}

/// A vector store in PostgreSQL with pgvector.
#[derive(Debug, Clone)]
pub struct PgVectorStore {
    pool: PgPool,
    config: PgConfig,
}

/// Maps a sqlx error to the core error, in one place.
fn db_err(context: &str, e: sqlx::Error) -> Error {
    let unavailable = |e: sqlx::Error| Error::Unavailable {
        reason: format!("PostgreSQL: {context}"),
        source: Some(Box::new(e)),
    };
    match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => unavailable(e),
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            match code.as_str() {
                // The collection's table was dropped by another client.
                "42P01" => Error::NotFound {
                    what: format!("collection ({context})"),
                },
                "23505" => Error::Conflict(format!("{context}: already exists")),
                // disk_full: the database could not write; it keeps serving reads.
                "53100" => Error::io(
                    format!("PostgreSQL: {context}"),
                    std::io::Error::new(std::io::ErrorKind::StorageFull, d.message().to_string()),
                ),
                "57014" => Error::Timeout {
                    what: format!("PostgreSQL statement ({context})"),
                    after: Duration::ZERO,
                },
                c if c.starts_with("22") => Error::invalid(format!(
                    "{context}: the database refused a value: {}",
                    d.message()
                )),
                c if c.starts_with("08") || c.starts_with("53") || c == "57P01" || c == "57P03" => {
                    unavailable(e)
                }
                _ => Error::internal(format!("PostgreSQL: {context}"), e),
            }
        }
        _ => Error::internal(format!("PostgreSQL: {context}"), e),
    }
}

/// A collection as registered: its table and settings.
struct Coll {
    table: String,
    spec: CollectionSpec,
}

/// Largest `lexemes` literal written for one record (PostgreSQL's tsvector holds at most 1 MB);
/// the terms of a longer text past it are left out.
const MAX_LEXEMES_BYTES: usize = 900_000;
/// Rows re-analyzed per statement when a collection's lexemes are filled in after an upgrade.
const BACKFILL_BATCH: i64 = 500;

/// A tsvector literal of `text`'s terms with their positions (`'term':1,5 'other':2`), in the
/// form PostgreSQL reads without analyzing again.
fn lexemes(analyzer: Analyzer, text: &str) -> String {
    let mut positions: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (i, t) in analyzer.terms(text).into_iter().enumerate() {
        let pos = (i + 1).min(16_383);
        let list = positions.entry(t).or_default();
        if list.len() < 255 && list.last() != Some(&pos) {
            list.push(pos);
        }
    }
    let mut out = String::new();
    for (term, list) in positions {
        let mut entry = quote_lexeme(&term);
        entry.push(':');
        let nums: Vec<String> = list.iter().map(|p| p.to_string()).collect();
        entry.push_str(&nums.join(","));
        if out.len() + entry.len() + 1 > MAX_LEXEMES_BYTES {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&entry);
    }
    out
}

/// A term quoted as a tsvector/tsquery lexeme: `'term'`, with `'` and `\` doubled.
fn quote_lexeme(term: &str) -> String {
    let mut q = String::with_capacity(term.len() + 2);
    q.push('\'');
    for c in term.chars() {
        if c == '\'' || c == '\\' {
            q.push(c);
        }
        q.push(c);
    }
    q.push('\'');
    q
}

/// A tsquery literal matching any of the query's terms (`'a' | 'b'`), or `None` without terms.
fn tsquery(analyzer: Analyzer, text: &str) -> Option<String> {
    let terms = analyzer.query_terms(text);
    if terms.is_empty() {
        return None;
    }
    let quoted: Vec<String> = terms.iter().map(|t| quote_lexeme(t)).collect();
    Some(quoted.join(" | "))
}

/// The lexemes of a record's text, where it has text.
fn record_lexemes(analyzer: Analyzer, metadata: &Map<String, Value>) -> Option<String> {
    metadata
        .get(TEXT_KEY)
        .and_then(Value::as_str)
        .map(|t| lexemes(analyzer, t))
}

fn metric_ops(m: Metric) -> (&'static str, &'static str) {
    // (index operator class, distance operator)
    match m {
        Metric::Cosine => ("vector_cosine_ops", "<=>"),
        Metric::Dot => ("vector_ip_ops", "<#>"),
        Metric::L2 => ("vector_l2_ops", "<->"),
    }
}

/// The score from the distance column `d` (higher is better, as in every backend).
fn score_sql(m: Metric) -> &'static str {
    match m {
        Metric::Cosine => "1 - d",
        Metric::Dot => "-d",
        Metric::L2 => "-d",
    }
}

/// A JSON-path string for a validated dotted field: `$."a"."b"[*]`.
fn json_path(field: &str) -> String {
    let mut p = String::from("$");
    for part in field.split('.') {
        p.push_str(".\"");
        p.push_str(part);
        p.push('"');
    }
    p.push_str("[*]");
    p
}

fn path_array(field: &str) -> Vec<String> {
    field.split('.').map(str::to_string).collect()
}

/// Appends `filter` as a boolean SQL expression over the `metadata` column, values bound.
fn push_filter(qb: &mut QueryBuilder<Postgres>, filter: &Filter) {
    let any_of = |qb: &mut QueryBuilder<Postgres>, field: &str, list: &[Scalar]| {
        if list.is_empty() {
            qb.push("FALSE");
            return;
        }
        let mut cond = String::new();
        let mut vars = Map::new();
        for (i, s) in list.iter().enumerate() {
            if i > 0 {
                cond.push_str(" || ");
            }
            cond.push_str(&format!("@ == $v{i}"));
            vars.insert(format!("v{i}"), s.to_json());
        }
        qb.push("jsonb_path_exists(metadata, ");
        qb.push_bind(format!("{} ? ({cond})", json_path(field)));
        qb.push("::jsonpath, ");
        qb.push_bind(Value::Object(vars));
        qb.push(")");
    };
    match filter {
        Filter::Eq(f, s) => any_of(qb, f, std::slice::from_ref(s)),
        Filter::Ne(f, s) => {
            qb.push("NOT ");
            any_of(qb, f, std::slice::from_ref(s));
        }
        Filter::In(f, list) => any_of(qb, f, list),
        Filter::Nin(f, list) => {
            qb.push("NOT ");
            any_of(qb, f, list);
        }
        Filter::Cmp(f, op, x) => {
            let op = match op {
                Cmp::Gt => ">",
                Cmp::Gte => ">=",
                Cmp::Lt => "<",
                Cmp::Lte => "<=",
            };
            qb.push("jsonb_path_exists(metadata, ");
            qb.push_bind(format!("{} ? (@ {op} $x)", json_path(f)));
            qb.push("::jsonpath, ");
            qb.push_bind(json!({ "x": x }));
            qb.push(")");
        }
        Filter::Exists(f, want) => {
            if !*want {
                qb.push("NOT ");
            }
            qb.push("COALESCE(jsonb_typeof(metadata #> ");
            qb.push_bind(path_array(f));
            qb.push("::text[]) <> 'null', FALSE)");
        }
        Filter::And(fs) | Filter::Or(fs) => {
            if fs.is_empty() {
                qb.push(if matches!(filter, Filter::And(_)) {
                    "TRUE"
                } else {
                    "FALSE"
                });
                return;
            }
            let joiner = if matches!(filter, Filter::And(_)) {
                " AND "
            } else {
                " OR "
            };
            qb.push("(");
            for (i, f) in fs.iter().enumerate() {
                if i > 0 {
                    qb.push(joiner);
                }
                qb.push("(");
                push_filter(qb, f);
                qb.push(")");
            }
            qb.push(")");
        }
        Filter::Not(f) => {
            qb.push("NOT (");
            push_filter(qb, f);
            qb.push(")");
        }
    }
}

impl PgVectorStore {
    /// Bytes on disk of a collection's HNSW index (0 when it has none), for capacity planning.
    pub async fn index_bytes(&self, collection: &str) -> Result<u64> {
        let c = self.coll(collection).await?;
        let n: i64 = sqlx::query_scalar(
            "SELECT COALESCE(sum(pg_relation_size(i.indexrelid)), 0)::bigint FROM pg_index i \
             JOIN pg_class t ON t.oid = i.indrelid JOIN pg_class x ON x.oid = i.indexrelid \
             WHERE t.relname = $1 AND x.relname = $1 || '_hnsw'",
        )
        .bind(&c.table)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| db_err("measuring the index", e))?;
        Ok(n as u64)
    }

    /// Connects, creating the pool, and runs the embedded migrations (idempotent, serialized by
    /// sqlx's advisory lock, so several servers may start at once).
    pub async fn connect(config: PgConfig) -> Result<Self> {
        let timeout_ms = config.statement_timeout.as_millis().max(1);
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.acquire_timeout)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    sqlx::query(AssertSqlSafe(format!(
                        "SET statement_timeout = {timeout_ms}"
                    )))
                    .execute(conn)
                    .await?;
                    Ok(())
                })
            })
            .connect(&config.dsn)
            .await
            .map_err(|e| db_err("connecting", e))?;
        migrator()
            .run(&pool)
            .await
            .map_err(|e| Error::Unavailable {
                reason: "PostgreSQL: running migrations failed".into(),
                source: Some(Box::new(e)),
            })?;
        let store = Self { pool, config };
        store.backfill_lexemes().await?;
        Ok(store)
    }

    /// Fills in the lexemes of collections created before lexical search (the migration adds
    /// the columns; only aistack has the analyzer). Serialized across clients; a collection is
    /// marked ready when done, so this runs once.
    async fn backfill_lexemes(&self) -> Result<()> {
        let err = |e| db_err("filling in lexemes", e);
        let pending: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, analyzer FROM aistack_collections WHERE NOT lexical_ready ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        for (id, analyzer) in pending {
            let analyzer = Analyzer::parse(&analyzer)?;
            let table = format!("aistack_vec_{id}");
            let mut tx = self.pool.begin().await.map_err(err)?;
            sqlx::query("SELECT pg_advisory_xact_lock(7316021)")
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            let mut done = 0u64;
            loop {
                let rows: Vec<(String, Option<String>)> = sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT id, metadata->>'{TEXT_KEY}' FROM {table} WHERE lexemes IS NULL LIMIT {BACKFILL_BATCH}"
                )))
                .fetch_all(&mut *tx)
                .await
                .map_err(err)?;
                if rows.is_empty() {
                    break;
                }
                done += rows.len() as u64;
                let (ids, lexes): (Vec<String>, Vec<String>) = rows
                    .into_iter()
                    .map(|(id, text)| {
                        let l = text.map(|t| lexemes(analyzer, &t)).unwrap_or_default();
                        (id, l)
                    })
                    .unzip();
                sqlx::query(AssertSqlSafe(format!(
                    "UPDATE {table} t SET lexemes = u.l FROM UNNEST($1::text[], $2::text[]) u(id, l) WHERE t.id = u.id"
                )))
                .bind(ids)
                .bind(lexes)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            }
            sqlx::query("UPDATE aistack_collections SET lexical_ready = true WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            tx.commit().await.map_err(err)?;
            tracing::info!(table = %table, records = done, "filled in lexemes for lexical search");
        }
        Ok(())
    }

    /// The connection pool (for health checks and metrics).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn coll(&self, name: &str) -> Result<Coll> {
        validate_collection_name(name)?;
        let row = sqlx::query(
            "SELECT id, dims, metric, analyzer, embedding FROM aistack_collections WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_err("looking up a collection", e))?
        .ok_or_else(|| Error::NotFound {
            what: format!("collection {name:?}"),
        })?;
        coll_from_row(name, &row)
    }

    async fn create(&self, spec: &CollectionSpec, exist_ok: bool) -> Result<()> {
        spec.validate()?;
        let err = |e| db_err("creating a collection", e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        // Serialize collection DDL across every client of this database.
        sqlx::query("SELECT pg_advisory_xact_lock(7316021)")
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        let existing = sqlx::query(
            "SELECT id, dims, metric, analyzer, embedding FROM aistack_collections WHERE name = $1",
        )
        .bind(&spec.name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(err)?;
        if let Some(row) = existing {
            let c = coll_from_row(&spec.name, &row)?;
            if exist_ok && c.spec.same_shape(spec) {
                return Ok(());
            }
            return Err(Error::Conflict(format!(
                "collection {:?} already exists with {} dims, metric {} and analyzer {}",
                spec.name,
                c.spec.dims,
                c.spec.metric.as_str(),
                c.spec.analyzer.as_str()
            )));
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO aistack_collections (name, dims, metric, analyzer, embedding, lexical_ready) VALUES ($1, $2, $3, $4, $5, true) RETURNING id",
        )
        .bind(&spec.name)
        .bind(spec.dims as i32)
        .bind(spec.metric.as_str())
        .bind(spec.analyzer.as_str())
        .bind(spec.embedding.as_ref().map(sqlx::types::Json))
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
        let table = format!("aistack_vec_{id}");
        // Only integers and fixed words are formatted into DDL; names are bound values above.
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {table} (id TEXT PRIMARY KEY, embedding vector({}) NOT NULL, metadata JSONB NOT NULL DEFAULT '{{}}', \
             lexemes TEXT, tsv tsvector GENERATED ALWAYS AS (lexemes::tsvector) STORED)",
            spec.dims
        )))
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        sqlx::query(AssertSqlSafe(format!(
            "CREATE INDEX {table}_tsv ON {table} USING gin (tsv)"
        )))
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        if spec.dims <= HNSW_MAX_DIMS {
            let (ops, _) = metric_ops(spec.metric);
            sqlx::query(AssertSqlSafe(format!(
                "CREATE INDEX {table}_hnsw ON {table} USING hnsw (embedding {ops}) WITH (m = {}, ef_construction = {})",
                self.config.hnsw_m, self.config.hnsw_ef_construction
            )))
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }
}

/// The vector arm's ranked ids, `vr` from 1 (ties in id order): the inner query has the one
/// shape the HNSW index serves (`ORDER BY distance LIMIT k`); `min_score` applies after it.
fn push_vector_arm(
    qb: &mut QueryBuilder<Postgres>,
    c: &Coll,
    req: &SearchRequest,
    q: Vec<f32>,
    k: usize,
) {
    let (_, op) = metric_ops(c.spec.metric);
    let score = score_sql(c.spec.metric);
    qb.push(format!(
        "SELECT id, {score} AS score, row_number() OVER (ORDER BY d, id COLLATE \"C\") AS vr FROM (SELECT id, embedding {op} "
    ));
    let v = Vector::from(q);
    qb.push_bind(v.clone());
    qb.push(format!(" AS d FROM {}", c.table));
    if let Some(f) = &req.filter {
        qb.push(" WHERE ");
        push_filter(qb, f);
    }
    qb.push(format!(" ORDER BY embedding {op} "));
    qb.push_bind(v);
    qb.push(" LIMIT ");
    qb.push_bind(k as i64);
    qb.push(") s");
    if let Some(min) = req.min_score {
        qb.push(format!(" WHERE {score} >= "));
        qb.push_bind(min as f64);
    }
}

/// The lexical arm's ranked ids, `lr` from 1: records whose terms match any of the query's,
/// by `ts_rank_cd` (normalized by document length), ties in id order.
fn push_lexical_arm(
    qb: &mut QueryBuilder<Postgres>,
    c: &Coll,
    req: &SearchRequest,
    tq: &str,
    k: usize,
) {
    qb.push("SELECT id, score, row_number() OVER (ORDER BY score DESC, id COLLATE \"C\") AS lr FROM (SELECT id, ts_rank_cd(tsv, ");
    qb.push_bind(tq.to_string());
    qb.push("::tsquery, 1)::float8 AS score FROM ");
    qb.push(&c.table);
    qb.push(" WHERE tsv @@ ");
    qb.push_bind(tq.to_string());
    qb.push("::tsquery");
    if let Some(f) = &req.filter {
        qb.push(" AND (");
        push_filter(qb, f);
        qb.push(")");
    }
    qb.push(" ORDER BY score DESC, id COLLATE \"C\" LIMIT ");
    qb.push_bind(k as i64);
    qb.push(") x");
}

/// A vector search: the best `k` by vector score.
fn vector_sql(c: &Coll, req: &SearchRequest, q: Vec<f32>) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::<Postgres>::new("SELECT t.id, t.metadata, t.embedding, a.score::float8 AS score, a.vr, NULL::bigint AS lr FROM (");
    push_vector_arm(&mut qb, c, req, q, req.k);
    qb.push(format!(
        ") a JOIN {} t ON t.id = a.id ORDER BY a.vr",
        c.table
    ));
    qb
}

/// A lexical search: the best `k` by `ts_rank_cd`.
fn lexical_sql(c: &Coll, req: &SearchRequest, tq: &str) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::<Postgres>::new(
        "SELECT t.id, t.metadata, t.embedding, a.score, NULL::bigint AS vr, a.lr FROM (",
    );
    push_lexical_arm(&mut qb, c, req, tq, req.k);
    qb.push(format!(
        ") a JOIN {} t ON t.id = a.id ORDER BY a.lr",
        c.table
    ));
    qb
}

/// A hybrid search in one statement: both arms, then their reciprocal rank fusion (the
/// formula of [`crate::store::hybrid::rrf_score`], in `float8` and the same order).
fn hybrid_sql(
    c: &Coll,
    req: &SearchRequest,
    q: Vec<f32>,
    tq: Option<String>,
) -> QueryBuilder<Postgres> {
    let f = &req.fusion;
    let mut qb = QueryBuilder::<Postgres>::new("WITH v AS (");
    push_vector_arm(&mut qb, c, req, q, f.vector_depth_for(req.k));
    qb.push("), l AS (");
    match &tq {
        Some(tq) => push_lexical_arm(&mut qb, c, req, tq, f.lexical_depth_for(req.k)),
        None => {
            qb.push(
                "SELECT NULL::text AS id, NULL::float8 AS score, NULL::bigint AS lr WHERE false",
            );
        }
    }
    qb.push("), f AS (SELECT COALESCE(v.id, l.id) AS id, v.vr, l.lr, COALESCE(");
    qb.push_bind(f.vector_weight);
    qb.push("::float8 / (");
    qb.push_bind(f.rrf_k);
    qb.push("::float8 + v.vr), 0) + COALESCE(");
    qb.push_bind(f.lexical_weight);
    qb.push("::float8 / (");
    qb.push_bind(f.rrf_k);
    qb.push(format!(
        "::float8 + l.lr), 0) AS score FROM v FULL JOIN l ON v.id = l.id) \
         SELECT t.id, t.metadata, t.embedding, f.score, f.vr, f.lr FROM f JOIN {} t ON t.id = f.id \
         ORDER BY f.score DESC, f.id COLLATE \"C\" LIMIT ",
        c.table
    ));
    qb.push_bind(req.k as i64);
    qb
}

fn coll_from_row(name: &str, row: &sqlx::postgres::PgRow) -> Result<Coll> {
    let id: i64 = row.get("id");
    let dims: i32 = row.get("dims");
    let metric: String = row.get("metric");
    let analyzer: String = row.get("analyzer");
    // A record another version wrote in a shape this one cannot read is treated as absent.
    let embedding: Option<sqlx::types::Json<serde_json::Value>> = row.get("embedding");
    let embedding = embedding.and_then(|j| serde_json::from_value(j.0).ok());
    Ok(Coll {
        table: format!("aistack_vec_{id}"),
        spec: CollectionSpec {
            name: name.to_string(),
            dims: dims as usize,
            metric: Metric::parse(&metric)?,
            analyzer: Analyzer::parse(&analyzer)?,
            embedding,
        },
    })
}

/// Inserts or replaces `records` (already prepared) in one statement on `exec`.
async fn upsert_rows<'e, E>(exec: E, c: &Coll, records: Vec<Record>) -> Result<()>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    // One statement may not touch a row twice: keep the last record of each id.
    let mut last = std::collections::HashMap::new();
    for (i, r) in records.iter().enumerate() {
        last.insert(r.id.clone(), i);
    }
    let mut ids = Vec::with_capacity(last.len());
    let mut vectors = Vec::with_capacity(last.len());
    let mut metas = Vec::with_capacity(last.len());
    let mut lexes: Vec<Option<String>> = Vec::with_capacity(last.len());
    for (i, r) in records.into_iter().enumerate() {
        if last.get(&r.id) == Some(&i) {
            ids.push(r.id);
            vectors.push(Vector::from(r.vector));
            lexes.push(record_lexemes(c.spec.analyzer, &r.metadata));
            metas.push(Value::Object(r.metadata));
        }
    }
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (id, embedding, metadata, lexemes) \
         SELECT * FROM UNNEST($1::text[], $2::vector[], $3::jsonb[], $4::text[]) \
         ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding, metadata = EXCLUDED.metadata, lexemes = EXCLUDED.lexemes",
        c.table
    )))
    .bind(ids)
    .bind(vectors)
    .bind(metas)
    .bind(lexes)
    .execute(exec)
    .await
    .map_err(|e| db_err("upserting records", e))?;
    Ok(())
}

fn metadata_of(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[async_trait]
impl VectorStore for PgVectorStore {
    fn backend(&self) -> &'static str {
        "pgvector"
    }

    fn pool_stats(&self) -> Option<super::PoolStats> {
        Some(super::PoolStats {
            size: self.pool.size(),
            idle: self.pool.num_idle(),
        })
    }

    async fn create_collection(&self, spec: &CollectionSpec) -> Result<()> {
        self.create(spec, false).await
    }

    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<()> {
        self.create(spec, true).await
    }

    async fn list_collections(&self) -> Result<Vec<CollectionInfo>> {
        let rows = sqlx::query(
            "SELECT id, name, dims, metric, analyzer, embedding FROM aistack_collections ORDER BY name COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_err("listing collections", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row.get("name");
            let c = coll_from_row(&name, &row)?;
            let count: i64 =
                sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {}", c.table)))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| db_err("counting records", e))?;
            out.push(CollectionInfo {
                spec: c.spec,
                count: count as u64,
            });
        }
        Ok(out)
    }

    async fn collection(&self, name: &str) -> Result<CollectionInfo> {
        let c = self.coll(name).await?;
        let count = self.count(name, None).await?;
        Ok(CollectionInfo {
            spec: c.spec,
            count,
        })
    }

    async fn collection_spec(&self, name: &str) -> Result<CollectionSpec> {
        Ok(self.coll(name).await?.spec)
    }

    async fn drop_collection(&self, name: &str) -> Result<bool> {
        validate_collection_name(name)?;
        let err = |e| db_err("dropping a collection", e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        sqlx::query("SELECT pg_advisory_xact_lock(7316021)")
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        let id: Option<i64> =
            sqlx::query_scalar("DELETE FROM aistack_collections WHERE name = $1 RETURNING id")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(err)?;
        let Some(id) = id else {
            return Ok(false);
        };
        sqlx::query(AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS aistack_vec_{id}"
        )))
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(true)
    }

    async fn upsert(&self, collection: &str, mut records: Vec<Record>) -> Result<()> {
        let c = self.coll(collection).await?;
        prepare_records(&c.spec, &mut records)?;
        if records.is_empty() {
            return Ok(());
        }
        upsert_rows(&self.pool, &c, records).await
    }

    async fn replace(
        &self,
        collection: &str,
        mut records: Vec<Record>,
        stale: &Filter,
    ) -> Result<u64> {
        let c = self.coll(collection).await?;
        prepare_records(&c.spec, &mut records)?;
        let err = |e| db_err("replacing records", e);
        let keep: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        // One transaction: the upsert and the delete commit together or not at all.
        let mut tx = self.pool.begin().await.map_err(err)?;
        if !records.is_empty() {
            upsert_rows(&mut *tx, &c, records).await?;
        }
        let mut qb = QueryBuilder::<Postgres>::new(format!("DELETE FROM {} WHERE (", c.table));
        push_filter(&mut qb, stale);
        qb.push(") AND NOT (id = ANY(");
        qb.push_bind(keep);
        qb.push("))");
        let done = qb.build().execute(&mut *tx).await.map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(done.rows_affected())
    }

    async fn get(&self, collection: &str, ids: &[String]) -> Result<Vec<Record>> {
        let c = self.coll(collection).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, embedding, metadata FROM {} WHERE id = ANY($1)",
            c.table
        )))
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_err("reading records", e))?;
        let mut by_id: std::collections::HashMap<String, Record> = rows
            .into_iter()
            .map(|row| {
                let id: String = row.get("id");
                let v: Vector = row.get("embedding");
                let m: Value = row.get("metadata");
                (id.clone(), Record::new(id, v.to_vec(), metadata_of(m)))
            })
            .collect();
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    async fn delete(&self, collection: &str, ids: &[String]) -> Result<u64> {
        let c = self.coll(collection).await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {} WHERE id = ANY($1)",
            c.table
        )))
        .bind(ids)
        .execute(&self.pool)
        .await
        .map_err(|e| db_err("deleting records", e))?;
        Ok(done.rows_affected())
    }

    async fn delete_where(&self, collection: &str, filter: &Filter) -> Result<u64> {
        let c = self.coll(collection).await?;
        let mut qb = QueryBuilder::<Postgres>::new(format!("DELETE FROM {} WHERE ", c.table));
        push_filter(&mut qb, filter);
        let done = qb
            .build()
            .execute(&self.pool)
            .await
            .map_err(|e| db_err("deleting records", e))?;
        Ok(done.rows_affected())
    }

    async fn count(&self, collection: &str, filter: Option<&Filter>) -> Result<u64> {
        let c = self.coll(collection).await?;
        let mut qb = QueryBuilder::<Postgres>::new(format!("SELECT count(*) FROM {}", c.table));
        if let Some(f) = filter {
            qb.push(" WHERE ");
            push_filter(&mut qb, f);
        }
        let n: i64 = qb
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_err("counting records", e))?;
        Ok(n as u64)
    }

    async fn search(&self, collection: &str, requests: &[SearchRequest]) -> Result<Vec<Vec<Hit>>> {
        let c = self.coll(collection).await?;
        let queries = prepare_requests(&c.spec, requests)?;
        let err = |e| db_err("searching", e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        let mut out = Vec::with_capacity(requests.len());
        for (req, q) in requests.iter().zip(queries) {
            let depth = match req.mode {
                SearchMode::Hybrid => req.fusion.vector_depth_for(req.k),
                _ => req.k,
            };
            let ef = self.config.ef_search.max(depth as u32).min(1000);
            sqlx::query("SELECT set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', $2, true)")
                .bind(ef.to_string())
                .bind(if req.filter.is_some() { "relaxed_order" } else { "off" })
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            let mut qb = match req.mode {
                SearchMode::Vector => vector_sql(&c, req, q),
                SearchMode::Lexical => {
                    match tsquery(c.spec.analyzer, req.text.as_deref().unwrap_or("")) {
                        Some(tq) => lexical_sql(&c, req, &tq),
                        None => {
                            out.push(Vec::new());
                            continue;
                        }
                    }
                }
                SearchMode::Hybrid => hybrid_sql(
                    &c,
                    req,
                    q,
                    tsquery(c.spec.analyzer, req.text.as_deref().unwrap_or("")),
                ),
            };
            let rows = qb.build().fetch_all(&mut *tx).await.map_err(err)?;
            out.push(
                rows.into_iter()
                    .map(|row| {
                        let score: f64 = row.get("score");
                        let rank = |col: &str| row.get::<Option<i64>, _>(col).map(|r| r as u32);
                        Hit {
                            id: row.get("id"),
                            score: score as f32,
                            vector_rank: rank("vr"),
                            lexical_rank: rank("lr"),
                            metadata: req
                                .with_metadata
                                .then(|| metadata_of(row.get::<Value, _>("metadata"))),
                            vector: req
                                .with_vector
                                .then(|| row.get::<Vector, _>("embedding").to_vec()),
                        }
                    })
                    .collect(),
            );
        }
        tx.commit().await.map_err(err)?;
        Ok(out)
    }
}

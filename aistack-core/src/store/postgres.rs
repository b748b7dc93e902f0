//! The pgvector backend, on sqlx: embedded migrations run at connect, a pooled connection, one
//! table per collection with an HNSW index, bulk upserts in one `UNNEST` statement, filters
//! compiled to SQL with every value bound, and index-friendly `ORDER BY embedding <=> $1 LIMIT k`
//! searches (iterative index scans for filtered queries, pgvector ≥ 0.8).
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
    prepare_records, prepare_requests, validate_collection_name, CollectionInfo, CollectionSpec,
    Hit, Metric, Record, SearchRequest, VectorStore,
};
use crate::error::{Error, Result};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

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
        MIGRATOR.run(&pool).await.map_err(|e| Error::Unavailable {
            reason: "PostgreSQL: running migrations failed".into(),
            source: Some(Box::new(e)),
        })?;
        Ok(Self { pool, config })
    }

    /// The connection pool (for health checks and metrics).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn coll(&self, name: &str) -> Result<Coll> {
        validate_collection_name(name)?;
        let row = sqlx::query("SELECT id, dims, metric FROM aistack_collections WHERE name = $1")
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
        let existing =
            sqlx::query("SELECT id, dims, metric FROM aistack_collections WHERE name = $1")
                .bind(&spec.name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(err)?;
        if let Some(row) = existing {
            let c = coll_from_row(&spec.name, &row)?;
            if exist_ok && c.spec == *spec {
                return Ok(());
            }
            return Err(Error::Conflict(format!(
                "collection {:?} already exists with {} dims and metric {}",
                spec.name,
                c.spec.dims,
                c.spec.metric.as_str()
            )));
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO aistack_collections (name, dims, metric) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(&spec.name)
        .bind(spec.dims as i32)
        .bind(spec.metric.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
        let table = format!("aistack_vec_{id}");
        // Only integers and fixed words are formatted into DDL; names are bound values above.
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {table} (id TEXT PRIMARY KEY, embedding vector({}) NOT NULL, metadata JSONB NOT NULL DEFAULT '{{}}')",
            spec.dims
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

fn coll_from_row(name: &str, row: &sqlx::postgres::PgRow) -> Result<Coll> {
    let id: i64 = row.get("id");
    let dims: i32 = row.get("dims");
    let metric: String = row.get("metric");
    Ok(Coll {
        table: format!("aistack_vec_{id}"),
        spec: CollectionSpec {
            name: name.to_string(),
            dims: dims as usize,
            metric: Metric::parse(&metric)?,
        },
    })
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
            "SELECT id, name, dims, metric FROM aistack_collections ORDER BY name COLLATE \"C\"",
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
        // One statement may not touch a row twice: keep the last record of each id.
        let mut last = std::collections::HashMap::new();
        for (i, r) in records.iter().enumerate() {
            last.insert(r.id.clone(), i);
        }
        let mut ids = Vec::with_capacity(last.len());
        let mut vectors = Vec::with_capacity(last.len());
        let mut metas = Vec::with_capacity(last.len());
        for (i, r) in records.into_iter().enumerate() {
            if last.get(&r.id) == Some(&i) {
                ids.push(r.id);
                vectors.push(Vector::from(r.vector));
                metas.push(Value::Object(r.metadata));
            }
        }
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (id, embedding, metadata) \
             SELECT * FROM UNNEST($1::text[], $2::vector[], $3::jsonb[]) \
             ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding, metadata = EXCLUDED.metadata",
            c.table
        )))
        .bind(ids)
        .bind(vectors)
        .bind(metas)
        .execute(&self.pool)
        .await
        .map_err(|e| db_err("upserting records", e))?;
        Ok(())
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
        let (_, op) = metric_ops(c.spec.metric);
        let mut out = Vec::with_capacity(requests.len());
        for (req, q) in requests.iter().zip(queries) {
            let ef = self.config.ef_search.max(req.k as u32).min(1000);
            sqlx::query("SELECT set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', $2, true)")
                .bind(ef.to_string())
                .bind(if req.filter.is_some() { "relaxed_order" } else { "off" })
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            // The inner query has the one shape the HNSW index serves (ORDER BY distance LIMIT k);
            // the outer one puts ties in id order and applies min_score.
            let mut qb = QueryBuilder::<Postgres>::new(format!(
                "SELECT id, metadata, embedding, {} AS score \
                 FROM (SELECT id, metadata, embedding, embedding {op} ",
                score_sql(c.spec.metric)
            ));
            let v = Vector::from(q);
            qb.push_bind(v.clone());
            qb.push(format!(" AS d FROM {}", c.table));
            if let Some(f) = &req.filter {
                qb.push(" WHERE ");
                push_filter(&mut qb, f);
            }
            qb.push(format!(" ORDER BY embedding {op} "));
            qb.push_bind(v);
            qb.push(" LIMIT ");
            qb.push_bind(req.k as i64);
            qb.push(") s");
            if let Some(min) = req.min_score {
                qb.push(format!(" WHERE {} >= ", score_sql(c.spec.metric)));
                qb.push_bind(min as f64);
            }
            qb.push(" ORDER BY score DESC, id COLLATE \"C\"");
            let rows = qb.build().fetch_all(&mut *tx).await.map_err(err)?;
            out.push(
                rows.into_iter()
                    .map(|row| {
                        let score: f64 = row.get("score");
                        Hit {
                            id: row.get("id"),
                            score: score as f32,
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

//! The dynamic batcher: bounded admission, then a queue drained by one compute thread that packs
//! waiting sequences into forward passes by a token budget, shortest first so padding stays small.
//!
//! Callers tokenize, submit their sequences and await the reply; a caller that has gone (timed
//! out or dropped) is skipped before its sequences are computed. Two lanes, chosen by the work's
//! own cost:
//! - interactive: a latency-bound request ([`Batcher::submit_bounded`]: a query, an embeddings
//!   call) that costs at most two wait bounds to compute ([`INTERACTIVE_COST`]). It is admitted by its expected wait (the
//!   pass in progress and the interactive work ahead, at the measured rate, within
//!   `max_queue_wait`) and runs before any bulk work still waiting;
//! - bulk: ingestion ([`Batcher::submit`]) and latency-bound requests that cost more (an
//!   `embed_documents` call of 32 long texts). It is admitted by its deadline: when the
//!   whole queue, with it, can be computed within 80% of its deadline at the measured rate, so it
//!   waits and is answered rather than refused for the queries' bound, and is refused at once
//!   (with an honest retry time) only when it could not finish in time. It runs in passes of
//!   about half the wait bound, so a query arriving during an import waits for one short pass.
//!
//! Bulk work that has waited a second gets one pass ahead, so queries cannot stall it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// Computes embeddings for one padded batch of token sequences, in order. Runs on the batcher's
/// own thread and may block.
pub trait BatchCompute: Send + Sync + 'static {
    /// One vector per sequence, in the order given; sequence `i` is pooled from its token
    /// `pool_from[i]` on (after a prompt that pooling leaves out).
    fn compute(&self, batch: &[&[u32]], pool_from: &[usize]) -> Result<Vec<Vec<f32>>>;
}

/// The batcher computes pooled vectors; normalization is applied per request, on the way out.
impl BatchCompute for super::model::SentenceModel {
    fn compute(&self, batch: &[&[u32]], pool_from: &[usize]) -> Result<Vec<Vec<f32>>> {
        self.forward_pooled_from(batch, pool_from)
    }
}

/// One request's token sequences, and the token pooling starts from in each: after the prompt,
/// for a model that leaves its prompt out of pooling (`include_prompt: false`), else 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sequences {
    /// Token ids of each text.
    pub ids: Vec<Vec<u32>>,
    /// Tokens at the start of every sequence that pooling leaves out.
    pub pool_from: usize,
}

impl From<Vec<Vec<u32>>> for Sequences {
    fn from(ids: Vec<Vec<u32>>) -> Self {
        Self { ids, pool_from: 0 }
    }
}

/// Batching limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatcherConfig {
    /// Padded tokens (`longest × sequences`) in one forward pass.
    pub max_batch_tokens: usize,
    /// Sequences in one forward pass.
    pub max_batch_requests: usize,
    /// Requests admitted at once, queued or computing.
    pub max_concurrent_requests: usize,
    /// Longest expected queueing time an interactive request is admitted with
    /// ([`Batcher::check_wait`]); it also turns on admission of bulk work by its deadline.
    /// `None`: admission by count only.
    pub max_queue_wait: Option<Duration>,
}

/// Counters of a batcher, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct BatcherStats {
    /// Requests admitted and not yet answered.
    pub in_flight: u64,
    /// Requests refused because admission was full.
    pub rejected: u64,
    /// Requests refused because their expected queueing time was over the bound, or (bulk work)
    /// because the queue could not have finished them before their deadline.
    pub rejected_wait: u64,
    /// Tokens queued or computing, of every kind of request.
    pub queued_tokens: u64,
    /// Tokens of latency-bound requests (queries, embeddings) waiting for a pass: with the pass
    /// being computed, the work ahead of a new such request.
    pub urgent_tokens: u64,
    /// Recent compute throughput, in tokens per second (`0` until measured).
    pub tokens_per_second: u64,
    /// Forward passes run.
    pub batches: u64,
    /// Sequences computed.
    pub sequences: u64,
    /// Padded tokens computed (the cost actually paid).
    pub padded_tokens: u64,
    /// Real tokens computed.
    pub tokens: u64,
    /// Requests dropped unanswered because their caller had gone.
    pub skipped: u64,
    /// Total time requests spent queued before their first forward pass, in microseconds.
    pub queue_wait_us: u64,
}

#[derive(Default)]
struct Counters {
    rejected: AtomicU64,
    rejected_wait: AtomicU64,
    /// Tokens submitted and not yet computed (or dropped).
    queued_tokens: AtomicU64,
    /// Tokens of latency-bound jobs that no pass has taken yet: the work ahead of a new one
    /// (bulk work waits behind it).
    urgent_tokens: AtomicU64,
    /// Tokens of the pass being computed (`0` between passes).
    pass_tokens: AtomicU64,
    /// Recent tokens per second of compute, as `f64` bits; `0` until the first batch.
    rate_bits: AtomicU64,
    /// The highest throughput estimate so far, as `f64` bits: what a request's cost is judged by
    /// when it is sorted into a lane (it does not sink under overload as the estimate can).
    peak_bits: AtomicU64,
    batches: AtomicU64,
    sequences: AtomicU64,
    padded_tokens: AtomicU64,
    tokens: AtomicU64,
    skipped: AtomicU64,
    queue_wait_us: AtomicU64,
}

struct Job {
    seqs: Vec<Vec<u32>>,
    pool_from: usize,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>>>,
    enqueued: Instant,
    /// Latency-bound: computed before any bulk work still waiting.
    urgent: bool,
    /// Released just before the reply is sent, so an answered caller can be admitted again.
    permit: Option<OwnedSemaphorePermit>,
}

impl Job {
    fn answer(&mut self, result: Result<Vec<Vec<f32>>>) {
        self.permit.take();
        let (tx, _) = oneshot::channel();
        let reply = std::mem::replace(&mut self.reply, tx);
        let _ = reply.send(result);
    }
}

impl Counters {
    /// The highest throughput estimate so far, once measured.
    fn peak_rate(&self) -> Option<f64> {
        let r = f64::from_bits(self.peak_bits.load(Ordering::Relaxed));
        (r > 0.0).then_some(r)
    }

    /// Tokens per second of compute, once measured.
    fn rate(&self) -> Option<f64> {
        let r = f64::from_bits(self.rate_bits.load(Ordering::Relaxed));
        (r > 0.0).then_some(r)
    }

    /// Folds one forward pass of `tokens` that took `took` into the throughput estimate (an
    /// exponentially weighted mean, so it follows the load's mix of lengths).
    fn observe(&self, tokens: usize, took: Duration) {
        let secs = took.as_secs_f64().max(1e-6);
        let now = tokens as f64 / secs;
        let r = match self.rate() {
            Some(old) => old * (1.0 - RATE_WEIGHT) + now * RATE_WEIGHT,
            None => now,
        };
        self.rate_bits.store(r.to_bits(), Ordering::Relaxed);
        let _ = self
            .peak_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                (r > f64::from_bits(p)).then_some(r.to_bits())
            });
    }

    /// A job's `tokens` left the queue unanswered, before any pass took them.
    fn dequeued(&self, tokens: usize, urgent: bool) {
        sub(&self.queued_tokens, tokens);
        if urgent {
            sub(&self.urgent_tokens, tokens);
        }
    }

    /// A pass of `window` tokens (`urgent` of them latency-bound) is starting.
    fn started(&self, window: usize, urgent: usize) {
        // The pass first, so a concurrent admission counts these tokens twice, never not at all
        // (see `Batcher::reserve`).
        self.pass_tokens.store(window as u64, Ordering::SeqCst);
        sub(&self.urgent_tokens, urgent);
    }

    /// The pass of `window` tokens is over (computed or dropped).
    fn finished(&self, window: usize) {
        sub(&self.queued_tokens, window);
        self.pass_tokens.store(0, Ordering::SeqCst);
    }
}

fn sub(counter: &AtomicU64, n: usize) {
    let _ = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
        Some(q.saturating_sub(n as u64))
    });
}

/// Weight of the newest forward pass in the throughput estimate.
const RATE_WEIGHT: f64 = 0.2;

/// The share of its deadline that bulk work may expect to spend queued and computed when it is
/// admitted. The rest is a margin: for interactive work, which goes first, arriving after it,
/// and for the rate estimate, which follows the load's mix of lengths.
const DEADLINE_SHARE: f64 = 0.8;

/// How many wait bounds of compute a latency-bound request may cost and still be interactive,
/// judged at the highest throughput measured (which does not sink under overload): above a
/// typical query or 8-sentence request (a third of a bound), below an `embed_documents` call of
/// 32 texts (two bounds and more), which would rather wait than be refused.
pub const INTERACTIVE_COST: f64 = 2.0;

/// Tokens of a job's sequences, as the queue counts them.
fn job_tokens(seqs: &[Vec<u32>]) -> usize {
    seqs.iter().map(|s| s.len().max(1)).sum()
}

/// A bounded batching queue in front of one compute thread.
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    admission: Arc<Semaphore>,
    max_concurrent: usize,
    max_queue_wait: Option<Duration>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Batcher {
    /// Starts the compute thread. It ends when the batcher is dropped and the queue is empty.
    pub fn start<C: BatchCompute>(compute: Arc<C>, config: BatcherConfig) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let counters = Arc::new(Counters::default());
        let worker_counters = counters.clone();
        std::thread::Builder::new()
            .name("aistack-embed".into())
            .spawn(move || worker(compute, config, rx, worker_counters))
            .map_err(|e| Error::io("spawning the embedding thread", e))?;
        Ok(Self {
            tx,
            admission: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            max_concurrent: config.max_concurrent_requests,
            max_queue_wait: config.max_queue_wait,
            counters,
        })
    }

    /// Admits a request or fails at once with `Overloaded` when `max_concurrent_requests` are
    /// already in flight. Hold the ticket while preparing the request, then [`Batcher::submit`].
    pub fn admit(&self) -> Result<Admission> {
        match self.admission.clone().try_acquire_owned() {
            Ok(permit) => Ok(Admission { permit }),
            Err(_) => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                Err(Error::Overloaded(format!(
                    "{} embedding requests are already in flight",
                    self.max_concurrent
                )))
            }
        }
    }

    /// How long an interactive request queued now would wait before its first forward pass:
    /// the tokens ahead of it (the pass being computed and the interactive work waiting; bulk
    /// work waits behind it) over the recent throughput. `None` until a pass was measured.
    pub fn expected_wait(&self) -> Option<Duration> {
        let rate = self.counters.rate()?;
        let c = &self.counters;
        let ahead = c.urgent_tokens.load(Ordering::SeqCst) + c.pass_tokens.load(Ordering::SeqCst);
        Some(Duration::from_secs_f64(ahead as f64 / rate))
    }

    /// Whether a latency-bound request of `tokens` goes in the interactive lane: it costs at
    /// most [`INTERACTIVE_COST`] wait bounds to compute (always, before a pass was measured or
    /// without a bound).
    pub fn is_interactive(&self, tokens: usize) -> bool {
        match (self.max_queue_wait, self.counters.peak_rate()) {
            (Some(bound), Some(rate)) => {
                tokens as f64 <= INTERACTIVE_COST * bound.as_secs_f64() * rate
            }
            _ => true,
        }
    }

    /// The early, cheap form of admission by wait, before tokenizing: fails at once with
    /// `Overloaded`, retry after the expected wait plus the bound, when a latency-bound request
    /// of at most `max_tokens` tokens would be interactive and would wait longer than
    /// `max_queue_wait`. Larger requests are left to the deadline check when they are queued.
    pub fn check_wait(&self, max_tokens: usize) -> Result<()> {
        let (Some(bound), Some(wait)) = (self.max_queue_wait, self.expected_wait()) else {
            return Ok(());
        };
        if wait <= bound || !self.is_interactive(max_tokens) {
            return Ok(());
        }
        self.counters.rejected_wait.fetch_add(1, Ordering::Relaxed);
        Err(Error::QueueFull { wait, bound })
    }

    /// Queues `seqs` as bulk work (ingestion) and waits for their vectors, in order, for at most
    /// `timeout`. Bulk work waits behind interactive work; with admission by wait on, it is
    /// refused at once only when the queue could not finish it within 80% of `timeout`.
    pub async fn submit(
        &self,
        admission: Admission,
        seqs: impl Into<Sequences>,
        timeout: Duration,
    ) -> Result<Vec<Vec<f32>>> {
        self.enqueue(admission, seqs.into(), timeout, false).await
    }

    /// As [`Batcher::submit`], for a latency-bound request (a query, an embeddings call). If it
    /// costs at most [`INTERACTIVE_COST`] wait bounds it is interactive: it goes before any bulk work still
    /// waiting, and the wait bound is checked and its tokens queued in one step, so requests
    /// admitted at the same moment cannot together overshoot the bound (each sees the others'
    /// tokens). A larger one is bulk work, admitted by its deadline.
    pub async fn submit_bounded(
        &self,
        admission: Admission,
        seqs: impl Into<Sequences>,
        timeout: Duration,
    ) -> Result<Vec<Vec<f32>>> {
        let seqs = seqs.into();
        let urgent = self.is_interactive(job_tokens(&seqs.ids));
        self.enqueue(admission, seqs, timeout, urgent).await
    }

    /// Adds `tokens` to the queue: interactive (`urgent`) work only if the tokens ahead of it
    /// are within the wait bound at the measured rate, bulk work only if the whole queue with it
    /// can be computed within 80% of its `deadline` (or the queue is empty).
    fn reserve(&self, tokens: usize, urgent: bool, deadline: Duration) -> Result<()> {
        let c = &self.counters;
        let add = tokens as u64;
        let (Some(bound), Some(rate)) = (self.max_queue_wait, c.rate()) else {
            if urgent {
                c.urgent_tokens.fetch_add(add, Ordering::SeqCst);
            }
            c.queued_tokens.fetch_add(add, Ordering::SeqCst);
            return Ok(());
        };
        if urgent {
            let limit = bound.as_secs_f64() * rate;
            // The pass is read after the waiting tokens, and the worker writes it before it
            // takes them off (both sequentially consistent): tokens moving into a pass are seen
            // in one place or both, never in neither.
            let mut ahead = 0;
            let admitted = c
                .urgent_tokens
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                    ahead = q + c.pass_tokens.load(Ordering::SeqCst);
                    (ahead as f64 <= limit).then_some(q + add)
                });
            if admitted.is_err() {
                c.rejected_wait.fetch_add(1, Ordering::Relaxed);
                return Err(Error::QueueFull {
                    wait: Duration::from_secs_f64(ahead as f64 / rate),
                    bound,
                });
            }
            c.queued_tokens.fetch_add(add, Ordering::SeqCst);
            return Ok(());
        }
        // Bulk: every queued token is ahead of it or computed before it finishes (interactive
        // work arriving later may still go first: hence a margin of a fifth of the deadline).
        let allowed = deadline.mul_f64(DEADLINE_SHARE);
        let limit = allowed.as_secs_f64() * rate;
        let mut ahead = 0;
        let admitted = c
            .queued_tokens
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                ahead = q;
                (q == 0 || (q + add) as f64 <= limit).then_some(q + add)
            });
        if admitted.is_err() {
            c.rejected_wait.fetch_add(1, Ordering::Relaxed);
            let over = ahead as f64 - (limit - add as f64).max(0.0);
            return Err(Error::DeadlineFull {
                finish: Duration::from_secs_f64((ahead + add) as f64 / rate),
                deadline: allowed,
                retry: Duration::from_secs_f64((over / rate).max(0.001)),
            });
        }
        Ok(())
    }

    async fn enqueue(
        &self,
        admission: Admission,
        seqs: Sequences,
        timeout: Duration,
        urgent: bool,
    ) -> Result<Vec<Vec<f32>>> {
        let Sequences {
            ids: seqs,
            pool_from,
        } = seqs;
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        let tokens = job_tokens(&seqs);
        self.reserve(tokens, urgent, timeout)?;
        let job = Job {
            seqs,
            pool_from,
            reply,
            enqueued: Instant::now(),
            urgent,
            permit: Some(admission.permit),
        };
        if self.tx.send(job).is_err() {
            self.counters.dequeued(tokens, urgent);
            return Err(Error::unavailable("the embedding thread has stopped"));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Internal {
                context: "the embedding thread dropped a request".into(),
                source: None,
            }),
            Err(_) => Err(Error::Timeout {
                what: "embedding request".into(),
                after: timeout,
            }),
        }
    }

    /// Folds a forward pass of `batch` that took `took`, run outside the batcher (the
    /// calibration at start), into the throughput estimate, so admission works from the first
    /// request.
    pub fn observe_pass(&self, batch: &[&[u32]], took: Duration) {
        let tokens = batch.iter().map(|s| s.len().max(1)).sum();
        self.counters.observe(tokens, took);
    }

    /// Current counters.
    pub fn stats(&self) -> BatcherStats {
        let c = &self.counters;
        BatcherStats {
            in_flight: (self.max_concurrent - self.admission.available_permits()) as u64,
            rejected: c.rejected.load(Ordering::Relaxed),
            rejected_wait: c.rejected_wait.load(Ordering::Relaxed),
            queued_tokens: c.queued_tokens.load(Ordering::Relaxed),
            urgent_tokens: c.urgent_tokens.load(Ordering::Relaxed),
            tokens_per_second: c.rate().unwrap_or(0.0) as u64,
            batches: c.batches.load(Ordering::Relaxed),
            sequences: c.sequences.load(Ordering::Relaxed),
            padded_tokens: c.padded_tokens.load(Ordering::Relaxed),
            tokens: c.tokens.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
            queue_wait_us: c.queue_wait_us.load(Ordering::Relaxed),
        }
    }
}

/// Where the wait bound of interactive requests came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueWaitSource {
    /// Measured at start on this CPU and model ([`calibrated_bound`]).
    Calibrated,
    /// Set by `embed.max_queue_wait_ms`.
    Configured,
    /// Admission by count only.
    Off,
}

/// The wait bound a batcher admits interactive requests with, and how it was chosen: for
/// `/health`, the startup log and the Python `Embedder`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QueueWaitInfo {
    /// The bound in milliseconds; `None` when admission is by count only.
    pub bound_ms: Option<u64>,
    /// Where it came from.
    pub source: QueueWaitSource,
    /// The measured forward pass of the reference batch, in milliseconds, when calibrated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration_pass_ms: Option<f64>,
}

/// Median time of `passes` forward passes of `batch`, after one warm-up pass: what a pass of
/// that shape costs on this CPU and model.
pub fn time_passes<C: BatchCompute>(
    compute: &C,
    batch: &[&[u32]],
    passes: usize,
) -> Result<Duration> {
    let from = vec![0; batch.len()];
    compute.compute(batch, &from)?;
    let mut times = Vec::with_capacity(passes.max(1));
    for _ in 0..passes.max(1) {
        let t = Instant::now();
        compute.compute(batch, &from)?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// How many measured reference passes the calibrated wait bound is.
pub const CALIBRATION_FACTOR: u32 = 3;

/// The wait bound calibrated from `pass`, the measured pass of eight short sentences (a typical
/// interactive request): [`CALIBRATION_FACTOR`] passes, kept within 10 ms and 2 s. An admitted
/// request waits at most about one bound, then shares a pass of about one bound's work, so its
/// latency stays near three times its unloaded latency (see `docs/server.md`).
pub fn calibrated_bound(pass: Duration) -> Duration {
    (pass * CALIBRATION_FACTOR).clamp(Duration::from_millis(10), Duration::from_secs(2))
}

/// A place in the batcher, taken by [`Batcher::admit`]; released when the request is answered or
/// abandoned.
#[derive(Debug)]
pub struct Admission {
    permit: OwnedSemaphorePermit,
}

/// One request being answered: its slots fill as its sequences are computed.
struct Pending {
    job: Job,
    out: Vec<Option<Vec<f32>>>,
    left: usize,
    failed: bool,
}

fn worker<C: BatchCompute>(
    compute: Arc<C>,
    config: BatcherConfig,
    rx: mpsc::Receiver<Job>,
    counters: Arc<Counters>,
) {
    let mut urgent: Vec<Job> = Vec::new();
    let mut bulk: Vec<Job> = Vec::new();
    let mut bulk_round: Option<Round> = None;
    let mut open = true;
    // Since when bulk work has waited without a pass: past BULK_MAX_WAIT, it gets one pass
    // ahead of urgent work, so a steady stream of queries cannot stall an import.
    let mut bulk_since: Option<Instant> = None;
    loop {
        let idle = urgent.is_empty() && bulk.is_empty() && bulk_round.is_none();
        if idle {
            if !open {
                return;
            }
            match rx.recv() {
                Ok(job) => sort_job(job, &mut urgent, &mut bulk),
                Err(_) => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(job) => sort_job(job, &mut urgent, &mut bulk),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if bulk.is_empty() && bulk_round.is_none() {
            bulk_since = None;
        } else if bulk_since.is_none() {
            bulk_since = Some(Instant::now());
        }
        let bulk_overdue = bulk_since.is_some_and(|t| t.elapsed() > BULK_MAX_WAIT);
        // Latency-bound requests go first, whole, between the passes of a bulk round.
        if !urgent.is_empty() && !bulk_overdue {
            let mut round = Round::new(std::mem::take(&mut urgent), &counters, false);
            while round.step(&*compute, &config, config.max_batch_tokens, &counters) {}
            continue;
        }
        let round = match &mut bulk_round {
            Some(r) => r,
            None if bulk.is_empty() => continue,
            None => bulk_round.insert(Round::new(std::mem::take(&mut bulk), &counters, true)),
        };
        let budget = bulk_pass_budget(&config, &counters);
        if !round.step(&*compute, &config, budget, &counters) {
            bulk_round = None;
        }
        bulk_since = Some(Instant::now());
    }
}

fn sort_job(job: Job, urgent: &mut Vec<Job>, bulk: &mut Vec<Job>) {
    if job.urgent {
        urgent.push(job)
    } else {
        bulk.push(job)
    }
}

/// Longest bulk work waits behind urgent work before it gets one pass ahead of it.
const BULK_MAX_WAIT: Duration = Duration::from_secs(1);

/// Padded tokens in one pass of bulk work: with a wait bound, about half the bound's worth at
/// the measured rate (at least 128), so a pass in progress leaves room under the bound for the
/// queries arriving during it; without one, the configured budget.
fn bulk_pass_budget(config: &BatcherConfig, counters: &Counters) -> usize {
    match (config.max_queue_wait, counters.rate()) {
        (Some(bound), Some(rate)) => {
            let fits = (bound.as_secs_f64() * rate / 2.0) as usize;
            fits.max(128).min(config.max_batch_tokens)
        }
        _ => config.max_batch_tokens,
    }
}

/// One round of queued jobs: their sequences sorted by length, computed pass by pass under the
/// token and sequence budgets; each job is answered as soon as its last sequence is done. A
/// bulk round can pause between passes while latency-bound work goes first, and keeps its jobs
/// in arrival order (each job's sequences sorted by length): a bulk job is finished after the
/// work that was queued before it, never after work that came later, which is what its
/// admission by deadline assumes.
struct Round {
    pending: Vec<Pending>,
    /// (job, sequence) in ascending length.
    order: Vec<(usize, usize)>,
    /// Where the next pass starts in `order`.
    start: usize,
    waited: Vec<bool>,
}

impl Round {
    fn new(jobs: Vec<Job>, counters: &Counters, in_arrival_order: bool) -> Self {
        let pending: Vec<Pending> = jobs
            .into_iter()
            .filter_map(|job| {
                if job.reply.is_closed() {
                    counters.skipped.fetch_add(1, Ordering::Relaxed);
                    counters.dequeued(job_tokens(&job.seqs), job.urgent);
                    return None;
                }
                let n = job.seqs.len();
                Some(Pending {
                    out: vec![None; n],
                    left: n,
                    failed: false,
                    job,
                })
            })
            .collect();
        let mut order: Vec<(usize, usize)> = pending
            .iter()
            .enumerate()
            .flat_map(|(j, p)| (0..p.job.seqs.len()).map(move |s| (j, s)))
            .collect();
        if in_arrival_order {
            order.sort_by_key(|&(j, s)| (j, pending[j].job.seqs[s].len()));
        } else {
            order.sort_by_key(|&(j, s)| pending[j].job.seqs[s].len());
        }
        let waited = vec![false; pending.len()];
        Self {
            pending,
            order,
            start: 0,
            waited,
        }
    }

    /// Runs the next pass of at most `budget` padded tokens; `false` once the round is done.
    fn step<C: BatchCompute>(
        &mut self,
        compute: &C,
        config: &BatcherConfig,
        budget: usize,
        counters: &Counters,
    ) -> bool {
        let (pending, order) = (&mut self.pending, &self.order);
        let start = self.start;
        if start >= order.len() {
            return false;
        }
        // Longest sequence so far is the current one, as the order is ascending.
        let mut end = start;
        while end < order.len() {
            let (j, s) = order[end];
            let len = pending[j].job.seqs[s].len().max(1);
            let count = end - start + 1;
            if end > start && (count > config.max_batch_requests || len * count > budget) {
                break;
            }
            end += 1;
        }
        self.start = end;
        // A caller that has gone gives its place back now, not at the end of the round.
        for &(j, _) in &order[start..end] {
            if pending[j].job.reply.is_closed() {
                pending[j].job.permit.take();
            }
        }
        let len_of = |&(j, s): &(usize, usize)| pending[j].job.seqs[s].len().max(1);
        let window: usize = order[start..end].iter().map(len_of).sum();
        let window_urgent: usize = order[start..end]
            .iter()
            .filter(|&&(j, _)| pending[j].job.urgent)
            .map(len_of)
            .sum();
        // Drop sequences whose caller has gone or whose request already failed.
        let live: Vec<(usize, usize)> = order[start..end]
            .iter()
            .copied()
            .filter(|&(j, _)| {
                let p = &pending[j];
                !p.failed && !p.job.reply.is_closed()
            })
            .collect();
        counters.started(window, window_urgent);
        if live.is_empty() {
            counters.finished(window);
            return self.start < order.len();
        }
        for &(j, _) in &live {
            if !self.waited[j] {
                self.waited[j] = true;
                let us = pending[j].job.enqueued.elapsed().as_micros() as u64;
                counters.queue_wait_us.fetch_add(us, Ordering::Relaxed);
            }
        }
        let batch: Vec<&[u32]> = live
            .iter()
            .map(|&(j, s)| pending[j].job.seqs[s].as_slice())
            .collect();
        let pool_from: Vec<usize> = live
            .iter()
            .map(|&(j, _)| pending[j].job.pool_from)
            .collect();
        let longest = batch.iter().map(|s| s.len()).max().unwrap_or(0);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters
            .sequences
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        counters
            .padded_tokens
            .fetch_add((longest * batch.len()) as u64, Ordering::Relaxed);
        counters.tokens.fetch_add(
            batch.iter().map(|s| s.len() as u64).sum(),
            Ordering::Relaxed,
        );
        let began = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            compute.compute(&batch, &pool_from)
        }));
        let computed: usize = batch.iter().map(|s| s.len().max(1)).sum();
        counters.observe(computed, began.elapsed());
        counters.finished(window);
        let result = match result {
            Ok(Ok(v)) if v.len() == batch.len() => Ok(v),
            Ok(Ok(v)) => Err(format!(
                "the model returned {} vectors for {} inputs",
                v.len(),
                batch.len()
            )),
            Ok(Err(e)) => Err(e.chain()),
            Err(_) => Err("the model panicked during a forward pass".to_string()),
        };
        match result {
            Ok(vectors) => {
                for (&(j, s), v) in live.iter().zip(vectors) {
                    let p = &mut pending[j];
                    p.out[s] = Some(v);
                    p.left -= 1;
                    if p.left == 0 {
                        finish(p);
                    }
                }
            }
            Err(msg) => {
                tracing::error!(error = %msg, sequences = live.len(), "embedding batch failed");
                let shared = Arc::new(BatchFailure(msg));
                for &(j, _) in &live {
                    let p = &mut pending[j];
                    if !p.failed {
                        p.failed = true;
                        p.job.answer(Err(Error::Internal {
                            context: "embedding computation failed".into(),
                            source: Some(Box::new(shared.clone())),
                        }));
                    }
                }
            }
        }
        self.start < order.len()
    }
}

/// Runs a whole round at the configured budget (the tests' way in).
#[cfg(test)]
fn run_round<C: BatchCompute>(
    compute: &C,
    config: &BatcherConfig,
    jobs: Vec<Job>,
    counters: &Counters,
) {
    let mut round = Round::new(jobs, counters, false);
    while round.step(compute, config, config.max_batch_tokens, counters) {}
}

fn finish(p: &mut Pending) {
    let out: Vec<Vec<f32>> = std::mem::take(&mut p.out)
        .into_iter()
        .map(|v| v.unwrap_or_default())
        .collect();
    p.job.answer(Ok(out));
}

/// A compute failure shared by every request of the failed batch.
#[derive(Debug)]
struct BatchFailure(String);

impl std::fmt::Display for BatchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BatchFailure {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A deterministic compute: each vector is [len, first token, batch size], and every batch
    /// shape is recorded. A gate can hold the thread to test admission and timeouts.
    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<Vec<usize>>>,
        gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
        fail_on_len: Option<usize>,
        /// How long each pass takes.
        pass_time: Option<Duration>,
    }

    impl BatchCompute for Recorder {
        fn compute(&self, batch: &[&[u32]], _: &[usize]) -> Result<Vec<Vec<f32>>> {
            if let Some(rx) = self.gate.lock().unwrap().as_ref() {
                rx.recv().ok();
            }
            if let Some(t) = self.pass_time {
                std::thread::sleep(t);
            }
            self.batches
                .lock()
                .unwrap()
                .push(batch.iter().map(|s| s.len()).collect());
            if let Some(bad) = self.fail_on_len {
                if batch.iter().any(|s| s.len() == bad) {
                    return Err(Error::invalid("synthetic failure"));
                }
            }
            Ok(batch
                .iter()
                .map(|s| vec![s.len() as f32, s[0] as f32, batch.len() as f32])
                .collect())
        }
    }

    fn cfg(tokens: usize, reqs: usize, conc: usize) -> BatcherConfig {
        BatcherConfig {
            max_batch_tokens: tokens,
            max_batch_requests: reqs,
            max_concurrent_requests: conc,
            max_queue_wait: None,
        }
    }

    fn seq(len: usize, tag: u32) -> Vec<u32> {
        vec![tag; len]
    }

    const T: Duration = Duration::from_secs(10);

    /// A batcher over a gated recorder (each pass waits for one message on the gate), with
    /// admission by wait at `bound_ms`.
    fn gated(
        mut config: BatcherConfig,
        bound_ms: u64,
    ) -> (Arc<Batcher>, Arc<Recorder>, std::sync::mpsc::Sender<()>) {
        let (gate_tx, gate_rx) = std::sync::mpsc::channel();
        let rec = Arc::new(Recorder {
            gate: Mutex::new(Some(gate_rx)),
            ..Default::default()
        });
        config.max_queue_wait = Some(Duration::from_millis(bound_ms));
        let b = Arc::new(Batcher::start(rec.clone(), config).unwrap());
        (b, rec, gate_tx)
    }

    /// Runs one bulk pass of `tokens` held about 100 ms, checks that it was measured, then sets
    /// the rate to exactly `10 × tokens` a second (as if it had taken 100 ms), so the tests do
    /// not depend on when the threads ran.
    async fn hold_one_pass(b: &Arc<Batcher>, gate: &std::sync::mpsc::Sender<()>, tokens: usize) {
        let b2 = b.clone();
        let h = tokio::spawn(async move {
            b2.submit(b2.admit().unwrap(), vec![seq(tokens, 1)], T)
                .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        gate.send(()).unwrap();
        h.await.unwrap().unwrap();
        assert!(b.stats().tokens_per_second > 0, "{:?}", b.stats());
        let rate = tokens as f64 * 10.0;
        b.counters
            .rate_bits
            .store(rate.to_bits(), Ordering::Relaxed);
        b.counters
            .peak_bits
            .store(rate.to_bits(), Ordering::Relaxed);
    }

    #[tokio::test]
    async fn results_keep_request_order() {
        let rec = Arc::new(Recorder::default());
        let b = Batcher::start(rec.clone(), cfg(1000, 64, 8)).unwrap();
        let seqs = vec![seq(9, 1), seq(2, 2), seq(5, 3), seq(2, 4)];
        let out = b.submit(b.admit().unwrap(), seqs, T).await.unwrap();
        let got: Vec<(f32, f32)> = out.iter().map(|v| (v[0], v[1])).collect();
        assert_eq!(got, [(9.0, 1.0), (2.0, 2.0), (5.0, 3.0), (2.0, 4.0)]);
    }

    #[test]
    fn packs_by_token_budget_shortest_first() {
        let rec = Recorder::default();
        let counters = Counters::default();
        let mut jobs = Vec::new();
        let sem = Arc::new(Semaphore::new(10));
        let mut rxs = Vec::new();
        for lens in [vec![10, 3], vec![3, 10, 4], vec![4]] {
            let (tx, rx) = oneshot::channel();
            rxs.push(rx);
            jobs.push(Job {
                seqs: lens.iter().map(|&l| seq(l, l as u32)).collect(),
                pool_from: 0,
                reply: tx,
                enqueued: Instant::now(),
                urgent: false,
                permit: sem.clone().try_acquire_owned().ok(),
            });
        }
        // Budget 20 padded tokens, at most 4 sequences.
        run_round(&rec, &cfg(20, 4, 10), jobs, &counters);
        let batches = rec.batches.lock().unwrap().clone();
        assert_eq!(batches, vec![vec![3, 3, 4, 4], vec![10, 10]]);
        for batch in &batches {
            assert!(batch.iter().max().unwrap() * batch.len() <= 20);
        }
        let out: Vec<Vec<Vec<f32>>> = rxs
            .into_iter()
            .map(|mut rx| rx.try_recv().unwrap().unwrap())
            .collect();
        assert_eq!(
            out[1].iter().map(|v| v[0]).collect::<Vec<_>>(),
            [3.0, 10.0, 4.0]
        );
        assert_eq!(counters.padded_tokens.load(Ordering::Relaxed), 16 + 20);
    }

    #[test]
    fn a_sequence_longer_than_the_budget_still_runs_alone() {
        let rec = Recorder::default();
        let counters = Counters::default();
        let sem = Arc::new(Semaphore::new(1));
        let (tx, mut rx) = oneshot::channel();
        let job = Job {
            seqs: vec![seq(50, 1), seq(50, 2)],
            pool_from: 0,
            reply: tx,
            enqueued: Instant::now(),
            urgent: false,
            permit: sem.try_acquire_owned().ok(),
        };
        run_round(&rec, &cfg(30, 8, 1), vec![job], &counters);
        assert_eq!(*rec.batches.lock().unwrap(), vec![vec![50], vec![50]]);
        assert_eq!(rx.try_recv().unwrap().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn concurrent_callers_are_batched_together() {
        let (gate_tx, gate_rx) = std::sync::mpsc::channel();
        let rec = Arc::new(Recorder {
            gate: Mutex::new(Some(gate_rx)),
            ..Default::default()
        });
        let b = Arc::new(Batcher::start(rec.clone(), cfg(10_000, 64, 64)).unwrap());
        // The first request holds the thread at the gate while 20 more queue up.
        let first = {
            let b = b.clone();
            tokio::spawn(async move { b.submit(b.admit().unwrap(), vec![seq(3, 99)], T).await })
        };
        while rec.batches.lock().unwrap().is_empty() && b.stats().batches == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut handles = Vec::new();
        for i in 0..20u32 {
            let b = b.clone();
            handles.push(tokio::spawn(async move {
                let s = vec![seq(2 + (i as usize % 5), i)];
                // Interactive work: one round sorted by length across callers (bulk rounds keep
                // their callers in arrival order).
                b.submit_bounded(b.admit().unwrap(), s, T).await
            }));
        }
        while b.stats().in_flight < 21 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for _ in 0..21 {
            gate_tx.send(()).unwrap();
        }
        first.await.unwrap().unwrap();
        for (i, h) in handles.into_iter().enumerate() {
            let v = h.await.unwrap().unwrap();
            assert_eq!(v[0][1], i as f32, "each caller gets its own vector");
        }
        // The 20 waiting requests went through in one forward pass.
        let batches = rec.batches.lock().unwrap().clone();
        assert_eq!(batches.len(), 2, "{batches:?}");
        assert_eq!(batches[1].len(), 20);
        let lens = &batches[1];
        assert!(lens.windows(2).all(|w| w[0] <= w[1]), "sorted by length");
    }

    #[tokio::test]
    async fn admission_is_bounded() {
        let (gate_tx, gate_rx) = std::sync::mpsc::channel();
        let rec = Arc::new(Recorder {
            gate: Mutex::new(Some(gate_rx)),
            ..Default::default()
        });
        let b = Arc::new(Batcher::start(rec, cfg(1000, 8, 2)).unwrap());
        let a1 = b.admit().unwrap();
        let a2 = b.admit().unwrap();
        let err = b.admit().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Overloaded);
        assert_eq!(b.stats().rejected, 1);
        drop(a2);
        let b2 = b.clone();
        let h = tokio::spawn(async move { b2.submit(a1, vec![seq(2, 1)], T).await });
        gate_tx.send(()).unwrap();
        h.await.unwrap().unwrap();
        // Both places are free again once answered.
        let _x = b.admit().unwrap();
        let _y = b.admit().unwrap();
    }

    #[tokio::test]
    async fn admission_by_wait_refuses_what_would_queue_too_long() {
        let (b, _, gate_tx) = gated(cfg(1000, 8, 8), 500);
        // Nothing measured yet: admitted.
        assert_eq!(b.expected_wait(), None);
        b.check_wait(10).unwrap();
        // 20 tokens a second: the bound is 10 tokens of work.
        hold_one_pass(&b, &gate_tx, 2).await;
        assert_eq!(b.stats().queued_tokens, 0);
        assert_eq!(b.stats().tokens_per_second, 20);
        b.check_wait(10).unwrap();
        // Two interactive queries of 8 tokens: the first is held in its pass (400 ms of work
        // ahead of the next), the second waits behind it (800 ms in all, over the bound).
        let mut held = Vec::new();
        for i in 0..2 {
            let b2 = b.clone();
            let seqs: Vec<Vec<u32>> = (0..4).map(|_| seq(2, i)).collect();
            held.push(tokio::spawn(async move {
                b2.submit_bounded(b2.admit().unwrap(), seqs, T).await
            }));
            let deadline = Instant::now() + Duration::from_secs(5);
            while b.stats().queued_tokens < 8 * (i as u64 + 1) {
                assert!(Instant::now() < deadline, "the job was never queued");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let err = b.check_wait(8).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Overloaded);
        let after = err.retry_after().unwrap();
        assert!(after >= Duration::from_millis(800), "{after:?}");
        assert_eq!(b.stats().rejected_wait, 1);
        // A request too large to be interactive (over two bounds of work) is not refused for
        // the queries' bound: it is bulk work, admitted by its deadline when it is queued.
        b.check_wait(41).unwrap();
        assert_eq!(b.stats().rejected_wait, 1);
        // Once the queue drains, requests are admitted again.
        gate_tx.send(()).unwrap();
        gate_tx.send(()).unwrap();
        for h in held {
            assert_eq!(h.await.unwrap().unwrap().len(), 4);
        }
        assert_eq!(b.stats().queued_tokens, 0);
        b.check_wait(8).unwrap();
    }

    #[tokio::test]
    async fn bulk_work_waits_within_its_deadline_and_is_refused_honestly_past_it() {
        // One sequence a pass; bound 150 ms.
        let (b, rec, gate_tx) = gated(cfg(1000, 1, 64), 150);
        // 100 tokens a second: a request of 80 tokens (800 ms) is more than two bounds, so
        // latency-bound or not, it is bulk work. A 5 s deadline admits 4 s of queue (80% of it:
        // 400 tokens).
        hold_one_pass(&b, &gate_tx, 10).await;
        let deadline = Duration::from_secs(5);
        assert!(!b.is_interactive(80) && b.is_interactive(30) && !b.is_interactive(31));
        let many = |i: u32| (0..16).map(|_| seq(5, i)).collect::<Vec<_>>();
        let mut admitted = Vec::new();
        for i in 0..5u32 {
            let b2 = b.clone();
            let a = b.admit().unwrap();
            let seqs = many(i);
            admitted.push(tokio::spawn(async move {
                b2.submit_bounded(a, seqs, deadline).await
            }));
            let until = Instant::now() + Duration::from_secs(5);
            while b.stats().queued_tokens < 80 * (u64::from(i) + 1) {
                assert!(Instant::now() < until, "{:?}", b.stats());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // Five of them make 400 tokens, 4 s of work: all waited, none refused, though the
        // queue ahead of the later ones was far over the 150 ms bound.
        assert_eq!(b.stats().rejected_wait, 0);
        assert_eq!(
            b.stats().urgent_tokens,
            0,
            "bulk work is not in the interactive lane"
        );
        // A sixth would finish after 4.8 s, past 80% of its deadline: refused at once, told to
        // come back when 80 tokens are done (800 ms), not after the whole queue.
        let err = b
            .submit_bounded(b.admit().unwrap(), many(9), deadline)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Overloaded, "{err}");
        let retry = err.retry_after().unwrap();
        assert!(
            (Duration::from_millis(790)..=Duration::from_millis(810)).contains(&retry),
            "{retry:?}: {err}"
        );
        assert!(err.to_string().contains("4800 ms"), "{err}");
        assert_eq!(b.stats().rejected_wait, 1);
        assert_eq!(b.stats().queued_tokens, 400);
        // An interactive query still gets in ahead of them: only the pass in progress (one
        // sequence of 5 tokens) is ahead of it.
        let b2 = b.clone();
        let query = tokio::spawn(async move {
            b2.submit_bounded(b2.admit().unwrap(), vec![seq(5, 7)], deadline)
                .await
        });
        let until = Instant::now() + Duration::from_secs(5);
        while b.stats().urgent_tokens < 5 {
            assert!(Instant::now() < until, "{:?}", b.stats());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for _ in 0..81 {
            gate_tx.send(()).unwrap();
        }
        let q = query.await.unwrap().unwrap();
        assert_eq!(q[0][..2], [5.0, 7.0]);
        for h in admitted {
            assert_eq!(h.await.unwrap().unwrap().len(), 16);
        }
        // The held pass, then the query, then the other 79 bulk sequences.
        assert_eq!(rec.batches.lock().unwrap().len(), 1 + 81);
        assert_eq!(b.stats().queued_tokens, 0);
    }

    #[tokio::test]
    async fn a_bulk_request_larger_than_its_whole_deadline_runs_when_the_queue_is_empty() {
        let (b, _, gate_tx) = gated(cfg(1000, 8, 8), 100);
        hold_one_pass(&b, &gate_tx, 10).await;
        // 300 tokens at 100 a second: 3 s, more than a 2 s deadline even alone.
        let b2 = b.clone();
        let h = tokio::spawn(async move {
            let seqs: Vec<_> = (0..3).map(|i| seq(100, i)).collect();
            b2.submit(b2.admit().unwrap(), seqs, Duration::from_secs(2))
                .await
        });
        // Bulk passes of at most 128 tokens here: one sequence each.
        for _ in 0..3 {
            gate_tx.send(()).unwrap();
        }
        assert_eq!(h.await.unwrap().unwrap().len(), 3);
        assert_eq!(b.stats().rejected_wait, 0);
    }

    #[test]
    fn the_calibrated_bound_is_three_reference_passes_within_limits() {
        assert_eq!(
            calibrated_bound(Duration::from_millis(22)),
            Duration::from_millis(66)
        );
        assert_eq!(
            calibrated_bound(Duration::from_millis(1)),
            Duration::from_millis(10)
        );
        assert_eq!(
            calibrated_bound(Duration::from_secs(5)),
            Duration::from_secs(2)
        );
        // The pass is timed on the compute itself: the median of the timed passes, after one
        // warm-up that is not counted.
        let rec = Recorder {
            pass_time: Some(Duration::from_millis(20)),
            ..Default::default()
        };
        let one = seq(4, 1);
        let pass = time_passes(&rec, &[&one], 3).unwrap();
        assert!(
            (Duration::from_millis(20)..Duration::from_millis(200)).contains(&pass),
            "{pass:?}"
        );
        assert_eq!(rec.batches.lock().unwrap().len(), 4);
        // A batcher seeded with the measured pass admits by wait from its first request.
        let b = Batcher::start(
            Arc::new(Recorder::default()),
            BatcherConfig {
                max_queue_wait: Some(calibrated_bound(pass)),
                ..cfg(1000, 8, 8)
            },
        )
        .unwrap();
        assert_eq!(b.expected_wait(), None);
        b.observe_pass(&[&one], pass);
        assert_eq!(b.expected_wait(), Some(Duration::ZERO));
        assert!(b.stats().tokens_per_second > 0);
    }

    #[tokio::test]
    async fn bounded_submits_arriving_together_cannot_overshoot_the_bound() {
        let (b, _, gate_tx) = gated(cfg(1000, 64, 64), 100);
        // 100 tokens a second, so the bound lets 10 tokens be ahead of a request (and a request
        // of 10 tokens is interactive).
        hold_one_pass(&b, &gate_tx, 10).await;
        // Hold the thread on a pass of 1 token, so the queue is not empty.
        let b2 = b.clone();
        let held =
            tokio::spawn(async move { b2.submit(b2.admit().unwrap(), vec![seq(1, 2)], T).await });
        while b.stats().queued_tokens < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Twenty requests of 10 tokens arrive together: each passes the early check (1 token
        // ahead), but as they join the queue only the first finds few enough tokens ahead.
        let admissions: Vec<Admission> = (0..20)
            .map(|_| {
                b.check_wait(10).unwrap();
                b.admit().unwrap()
            })
            .collect();
        let mut tasks = Vec::new();
        for (i, a) in admissions.into_iter().enumerate() {
            let b2 = b.clone();
            tasks.push(tokio::spawn(async move {
                b2.submit_bounded(a, vec![seq(10, i as u32)], T).await
            }));
        }
        // The refused answer at once, while the thread is still held.
        let deadline = Instant::now() + Duration::from_secs(5);
        while b.stats().rejected_wait < 19 {
            assert!(Instant::now() < deadline, "{:?}", b.stats());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(b.stats().queued_tokens, 11, "{:?}", b.stats());
        gate_tx.send(()).unwrap();
        gate_tx.send(()).unwrap();
        held.await.unwrap().unwrap();
        let mut admitted = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(v) => {
                    assert_eq!(v.len(), 1);
                    admitted += 1;
                }
                Err(e) => {
                    assert_eq!(e.kind(), crate::ErrorKind::Overloaded);
                    assert!(
                        e.retry_after().unwrap() >= Duration::from_millis(100),
                        "{e}"
                    );
                }
            }
        }
        assert_eq!(admitted, 1);
        assert_eq!(b.stats().rejected_wait, 19);
        assert_eq!(b.stats().queued_tokens, 0);
        assert_eq!(
            b.stats().in_flight,
            0,
            "refused requests gave their places back"
        );
    }

    #[tokio::test]
    async fn bulk_jobs_are_finished_in_arrival_order() {
        // One sequence a pass, so the order of passes is the order of sequences.
        let (b, rec, gate_tx) = gated(cfg(1000, 1, 16), 100);
        hold_one_pass(&b, &gate_tx, 10).await;
        // A pass of a first job is held while two more jobs queue: one of long sequences, then
        // one of short ones.
        let mut jobs = Vec::new();
        for lens in [vec![1], vec![6, 5], vec![3, 2]] {
            let b2 = b.clone();
            let seqs: Vec<Vec<u32>> = lens.iter().map(|&l| seq(l, l as u32)).collect();
            let queued = b.stats().queued_tokens;
            jobs.push(tokio::spawn(async move {
                b2.submit(b2.admit().unwrap(), seqs, T).await
            }));
            let until = Instant::now() + Duration::from_secs(5);
            while b.stats().queued_tokens == queued {
                assert!(Instant::now() < until, "{:?}", b.stats());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        for _ in 0..5 {
            gate_tx.send(()).unwrap();
        }
        for j in jobs {
            j.await.unwrap().unwrap();
        }
        // The later job's shorter sequences did not go before the earlier job's: that job is
        // finished after the work queued before it, as its admission by deadline counted.
        let batches = rec.batches.lock().unwrap().clone();
        assert_eq!(
            batches[1..],
            [vec![1], vec![5], vec![6], vec![2], vec![3]],
            "{batches:?}"
        );
    }

    #[tokio::test]
    async fn queries_go_before_bulk_work_and_are_not_refused_for_it() {
        // One sequence a pass, so a bulk round is several passes.
        let (b, rec, gate_tx) = gated(cfg(1000, 1, 16), 100);
        // 100 tokens a second, so the bound allows 10 tokens ahead of a query.
        hold_one_pass(&b, &gate_tx, 10).await;
        // A bulk import of five sequences; its first pass (2 tokens) is held.
        let b2 = b.clone();
        let bulk = tokio::spawn(async move {
            let seqs: Vec<_> = (2..=6).map(|l| seq(l, 3)).collect();
            b2.submit(b2.admit().unwrap(), seqs, T).await
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while b.stats().batches < 2 {
            assert!(Instant::now() < deadline, "the bulk pass never started");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // 18 bulk tokens wait (with the pass, 20: over the bound if they counted); a query
        // waits only for the pass in progress.
        assert_eq!(b.stats().queued_tokens, 20);
        b.check_wait(9).unwrap();
        let b2 = b.clone();
        let query = tokio::spawn(async move {
            b2.submit_bounded(b2.admit().unwrap(), vec![seq(9, 4)], T)
                .await
        });
        while b.stats().urgent_tokens < 9 {
            assert!(Instant::now() < deadline, "the query was never queued");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for _ in 0..6 {
            gate_tx.send(()).unwrap();
        }
        let q = query.await.unwrap().unwrap();
        assert_eq!(q[0][..2], [9.0, 4.0]);
        assert_eq!(bulk.await.unwrap().unwrap().len(), 5);
        // The query ran right after the held pass, before the rest of the import.
        let batches = rec.batches.lock().unwrap().clone();
        assert_eq!(
            batches[1..],
            [vec![2], vec![9], vec![3], vec![4], vec![5], vec![6]]
        );
        let stats = b.stats();
        assert_eq!(stats.rejected_wait, 0);
        assert_eq!((stats.queued_tokens, stats.urgent_tokens), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_steady_stream_of_queries_cannot_stall_bulk_work() {
        let rec = Arc::new(Recorder {
            pass_time: Some(Duration::from_millis(10)),
            ..Default::default()
        });
        let b = Arc::new(Batcher::start(rec, cfg(1000, 1, 16)).unwrap());
        // Four clients keep the latency-bound lane full for 4 s.
        let until = Instant::now() + Duration::from_secs(4);
        let mut stream = Vec::new();
        for i in 0..4 {
            let b2 = b.clone();
            stream.push(tokio::spawn(async move {
                while Instant::now() < until {
                    let a = b2.admit().unwrap();
                    b2.submit_bounded(a, vec![seq(3, i)], T).await.unwrap();
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = Instant::now();
        b.submit(b.admit().unwrap(), vec![seq(5, 9)], T)
            .await
            .unwrap();
        // One pass after waiting about BULK_MAX_WAIT, while the queries still flow.
        let took = sent.elapsed();
        assert!(
            Instant::now() < until,
            "{took:?}: bulk work waited for the queries to stop"
        );
        for t in stream {
            t.await.unwrap();
        }
    }

    #[tokio::test]
    async fn timed_out_callers_are_skipped() {
        let (gate_tx, gate_rx) = std::sync::mpsc::channel();
        let rec = Arc::new(Recorder {
            gate: Mutex::new(Some(gate_rx)),
            ..Default::default()
        });
        let b = Arc::new(Batcher::start(rec.clone(), cfg(1000, 1, 8)).unwrap());
        let b1 = b.clone();
        let blocker =
            tokio::spawn(async move { b1.submit(b1.admit().unwrap(), vec![seq(2, 1)], T).await });
        while b.stats().batches == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Queued behind the blocked batch with a short deadline: it times out.
        let err = b
            .submit(
                b.admit().unwrap(),
                vec![seq(4, 2)],
                Duration::from_millis(20),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Timeout);
        gate_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        // The abandoned request is never computed.
        let b2 = b.clone();
        let after =
            tokio::spawn(async move { b2.submit(b2.admit().unwrap(), vec![seq(3, 3)], T).await });
        gate_tx.send(()).unwrap();
        after.await.unwrap().unwrap();
        let lens: Vec<usize> = rec
            .batches
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .copied()
            .collect();
        assert_eq!(lens, [2, 3]);
        assert_eq!(b.stats().skipped, 1);
    }

    #[tokio::test]
    async fn a_failing_batch_fails_only_its_requests() {
        let rec = Arc::new(Recorder {
            fail_on_len: Some(7),
            ..Default::default()
        });
        let b = Batcher::start(rec, cfg(1000, 1, 8)).unwrap();
        let err = b
            .submit(b.admit().unwrap(), vec![seq(7, 1)], T)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Internal);
        let ok = b.submit(b.admit().unwrap(), vec![seq(3, 1)], T).await;
        assert!(ok.is_ok());
    }
}

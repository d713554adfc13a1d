//! The access log: one JSON line per request, written off the request path.
//!
//! Each worker owns an [`AccessLogger`]: the producer side of its own bounded channel
//! (`std::sync::mpsc::sync_channel`, a preallocated ring), so no lock or queue is shared
//! between workers. At request completion the connection fills a fixed-size [`AccessRecord`]
//! (no heap allocation; host, path and ids are copied into inline arrays, truncated when
//! longer) and the worker offers it with `try_send`: when the ring is full the line is dropped
//! and counted in a counter only that worker writes. One writer thread drains every ring,
//! applies sampling and per-route disable, keeps per-route latency totals for the control API,
//! formats the line into a reused buffer and writes it to the [`LogTarget`].
//!
//! Sampling is deterministic: with `sample = s` the writer keeps a running sum and writes a
//! line each time it passes a whole number, so exactly `s` of the lines are written.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use super::target::LogTarget;
use crate::metrics::{ErrorReason, Metrics, RouteMetricId};

/// Bytes of method, host and path kept per record (longer values are truncated).
pub const TEXT_CAPACITY: usize = 512;
/// Bytes of request id kept per record.
pub const REQUEST_ID_CAPACITY: usize = 128;
/// Lines a writer pass takes from one worker before visiting the next.
const BATCH: usize = 1024;
/// Writer pause when every ring was empty.
const IDLE_PAUSE: Duration = Duration::from_millis(5);

/// What the access log does, swapped whole on reload.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessPolicy {
    /// Write lines at all.
    pub enabled: bool,
    /// Fraction of lines written (0.0 to 1.0).
    pub sample: f64,
    /// Routes whose lines are not written (`routes[].access_log: false`).
    pub disabled_routes: HashSet<RouteMetricId>,
}

impl Default for AccessPolicy {
    fn default() -> Self {
        AccessPolicy {
            enabled: true,
            sample: 1.0,
            disabled_routes: HashSet::new(),
        }
    }
}

/// One finished request, fixed size so it travels through the ring without allocating.
#[derive(Clone, Copy)]
pub struct AccessRecord {
    /// When the request completed (the writer turns it into wall-clock time).
    pub end: Instant,
    pub client: SocketAddr,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    pub upstream: Option<SocketAddr>,
    pub upstream_duration: Option<Duration>,
    pub route: Option<RouteMetricId>,
    pub trace_id: Option<u128>,
    pub retries: u8,
    pub error: Option<ErrorReason>,
    method_len: u16,
    host_len: u16,
    path_len: u16,
    text: [u8; TEXT_CAPACITY],
    request_id_len: u8,
    request_id: [u8; REQUEST_ID_CAPACITY],
}

impl std::fmt::Debug for AccessRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessRecord")
            .field("method", &self.method())
            .field("host", &self.host())
            .field("path", &self.path())
            .field("status", &self.status)
            .field("request_id", &self.request_id())
            .finish_non_exhaustive()
    }
}

impl AccessRecord {
    /// An empty record.
    pub fn new(now: Instant) -> Self {
        AccessRecord {
            end: now,
            client: SocketAddr::from(([0, 0, 0, 0], 0)),
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            duration: Duration::ZERO,
            upstream: None,
            upstream_duration: None,
            route: None,
            trace_id: None,
            retries: 0,
            error: None,
            method_len: 0,
            host_len: 0,
            path_len: 0,
            text: [0; TEXT_CAPACITY],
            request_id_len: 0,
            request_id: [0; REQUEST_ID_CAPACITY],
        }
    }

    fn slice(&self, from: u16, len: u16) -> &str {
        let from = usize::from(from);
        let to = from + usize::from(len);
        self.text
            .get(from..to)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    /// The request method.
    pub fn method(&self) -> &str {
        self.slice(0, self.method_len)
    }

    /// The request host (authority or Host header).
    pub fn host(&self) -> &str {
        self.slice(self.method_len, self.host_len)
    }

    /// The request path (truncated to what fits).
    pub fn path(&self) -> &str {
        self.slice(self.method_len + self.host_len, self.path_len)
    }

    /// The request id sent upstream (generated or the client's), if the request was proxied.
    pub fn request_id(&self) -> &str {
        self.request_id
            .get(..usize::from(self.request_id_len))
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    fn set_text(&mut self, method: &str, host: &str, path: &str) {
        let mut used = 0usize;
        let mut put = |s: &str| -> u16 {
            let room = TEXT_CAPACITY - used;
            let n = floor_char_boundary(s, room);
            if let (Some(dst), Some(src)) = (self.text.get_mut(used..used + n), s.get(..n)) {
                dst.copy_from_slice(src.as_bytes());
            }
            used += n;
            u16::try_from(n).unwrap_or(0)
        };
        let m = put(method);
        let h = put(host);
        let p = put(path);
        self.method_len = m;
        self.host_len = h;
        self.path_len = p;
    }
}

/// The largest `n <= max` that ends on a char boundary of `s`.
fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut n = max;
    while n > 0 && !s.is_char_boundary(n) {
        n -= 1;
    }
    n
}

/// The access-log state one connection keeps for its current request; the proxy core calls
/// these at the matching points of an exchange. The record (about 700 bytes) is allocated once
/// per connection, at its first [`begin`](Self::begin); a connection that never logs costs a
/// pointer.
#[derive(Debug, Clone)]
pub struct RequestLog {
    client: SocketAddr,
    state: Option<Box<LogState>>,
}

impl RequestLog {
    /// A request log for a connection from `client` (allocates nothing yet).
    pub fn new(client: SocketAddr, _now: Instant) -> Self {
        RequestLog {
            client,
            state: None,
        }
    }

    /// Hands this log (its record storage kept) to another connection, from `client`, that has
    /// nothing left to write: nothing of the previous connection's exchanges carries over. Lets
    /// an idle connection give its record back to the worker instead of keeping it.
    pub fn rebind(&mut self, client: SocketAddr) {
        self.client = client;
        if let Some(s) = &mut self.state {
            s.rec.client = client;
            s.written = 0;
            s.out_base = 0;
        }
    }

    /// A request head arrived; `queued_out` is the response bytes still waiting to be written.
    pub fn begin(&mut self, now: Instant, method: &str, host: &str, path: &str, queued_out: u64) {
        let client = self.client;
        self.state
            .get_or_insert_with(|| Box::new(LogState::new(client, now)))
            .begin(now, method, host, path, queued_out);
    }

    /// `n` request bytes (head or body) were consumed.
    pub fn read(&mut self, n: usize) {
        if let Some(s) = &mut self.state {
            s.read(n);
        }
    }

    /// `n` bytes were written to the client.
    pub fn wrote(&mut self, n: usize) {
        if let Some(s) = &mut self.state {
            s.wrote(n);
        }
    }

    /// The request goes to `endpoint` with the `X-Request-ID` and `traceparent` values sent
    /// upstream (empty when absent).
    pub fn proxied(&mut self, endpoint: SocketAddr, request_id: &[u8], traceparent: &[u8]) {
        if let Some(s) = &mut self.state {
            s.proxied(endpoint, request_id, traceparent);
        }
    }

    /// A connection attempt to the upstream starts (`retries` earlier attempts failed).
    pub fn attempt(&mut self, now: Instant, retries: u8) {
        if let Some(s) = &mut self.state {
            s.attempt(now, retries);
        }
    }

    /// Arc gave up on the request or answered an error itself.
    pub fn error(&mut self, reason: ErrorReason) {
        if let Some(s) = &mut self.state {
            s.error(reason);
        }
    }

    /// Completes the record (`None` when no request began); `queued_out` is the response bytes
    /// still waiting to be written.
    pub fn finish(
        &mut self,
        now: Instant,
        status: u16,
        route: Option<RouteMetricId>,
        queued_out: u64,
    ) -> Option<&AccessRecord> {
        let s = self.state.as_deref_mut()?;
        Some(s.finish(now, status, route, queued_out))
    }
}

/// The fields of [`RequestLog`] once it is in use.
#[derive(Debug, Clone, Copy)]
struct LogState {
    rec: AccessRecord,
    started: Instant,
    up_started: Option<Instant>,
    written: u64,
    out_base: u64,
}

impl LogState {
    fn new(client: SocketAddr, now: Instant) -> Self {
        let mut rec = AccessRecord::new(now);
        rec.client = client;
        LogState {
            rec,
            started: now,
            up_started: None,
            written: 0,
            out_base: 0,
        }
    }

    /// A request head arrived; `queued_out` is the response bytes still waiting to be written.
    fn begin(&mut self, now: Instant, method: &str, host: &str, path: &str, queued_out: u64) {
        let client = self.rec.client;
        self.rec.bytes_in = 0;
        self.rec.upstream = None;
        self.rec.upstream_duration = None;
        self.rec.trace_id = None;
        self.rec.retries = 0;
        self.rec.error = None;
        self.rec.request_id_len = 0;
        self.rec.client = client;
        self.rec.set_text(method, host, path);
        self.started = now;
        self.up_started = None;
        self.out_base = self.written.saturating_add(queued_out);
    }

    /// `n` request bytes (head or body) were consumed.
    fn read(&mut self, n: usize) {
        self.rec.bytes_in = self.rec.bytes_in.saturating_add(n as u64);
    }

    /// `n` bytes were written to the client.
    fn wrote(&mut self, n: usize) {
        self.written = self.written.saturating_add(n as u64);
    }

    /// The request goes to `endpoint` with the `X-Request-ID` and `traceparent` values sent
    /// upstream (empty when absent).
    fn proxied(&mut self, endpoint: SocketAddr, request_id: &[u8], traceparent: &[u8]) {
        self.rec.upstream = Some(endpoint);
        self.rec.trace_id = traceparent
            .get(3..35)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u128::from_str_radix(h, 16).ok());
        let n = request_id.len().min(REQUEST_ID_CAPACITY);
        if let (Some(dst), Some(src)) = (self.rec.request_id.get_mut(..n), request_id.get(..n)) {
            dst.copy_from_slice(src);
            self.rec.request_id_len = u8::try_from(n).unwrap_or(0);
        }
    }

    /// A connection attempt to the upstream starts (`retries` earlier attempts failed).
    fn attempt(&mut self, now: Instant, retries: u8) {
        if self.up_started.is_none() {
            self.up_started = Some(now);
        }
        self.rec.retries = retries;
    }

    /// Arc gave up on the request or answered an error itself.
    fn error(&mut self, reason: ErrorReason) {
        self.rec.error = Some(reason);
    }

    /// Completes the record; `queued_out` is the response bytes still waiting to be written.
    fn finish(
        &mut self,
        now: Instant,
        status: u16,
        route: Option<RouteMetricId>,
        queued_out: u64,
    ) -> &AccessRecord {
        let r = &mut self.rec;
        r.end = now;
        r.status = status;
        r.route = route;
        r.duration = now.saturating_duration_since(self.started);
        r.upstream_duration = self
            .up_started
            .filter(|_| r.upstream.is_some())
            .map(|t| now.saturating_duration_since(t));
        r.bytes_out = self
            .written
            .saturating_add(queued_out)
            .saturating_sub(self.out_base);
        &self.rec
    }
}

/// A worker's side of the access log (see the module doc). Not shared between workers.
#[derive(Debug)]
pub struct AccessLogger {
    tx: Option<SyncSender<AccessRecord>>,
    dropped: Arc<AtomicU64>,
}

impl AccessLogger {
    /// A logger that records nothing.
    pub fn off() -> Self {
        AccessLogger {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A logger over a fresh ring of `capacity` records whose receiving end the caller
    /// drains itself (tests, custom writers).
    pub fn channel(capacity: usize) -> (Self, Receiver<AccessRecord>) {
        let (tx, rx) = sync_channel(capacity);
        let logger = AccessLogger {
            tx: Some(tx),
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (logger, rx)
    }

    /// Whether records are taken at all (lets the caller skip filling one).
    #[inline]
    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    /// Offers a record without blocking; a full ring drops it and counts the drop.
    #[inline]
    pub fn push(&self, rec: &AccessRecord) {
        let Some(tx) = &self.tx else {
            return;
        };
        match tx.try_send(*rec) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                // Single writer of this cell: a plain load/store is enough.
                self.dropped
                    .store(self.dropped.load(Relaxed).wrapping_add(1), Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Lines this worker dropped because its ring was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

/// Per-route latency totals the writer keeps for the control API.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RouteLatency {
    /// Records seen for the route.
    pub count: u64,
    /// Sum of request durations, in seconds.
    pub sum_seconds: f64,
    /// Longest request, in seconds.
    pub max_seconds: f64,
}

/// Passive health of one upstream endpoint, from the requests that went to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EndpointStats {
    /// Requests sent to the endpoint.
    pub requests: u64,
    /// Requests that failed on the upstream side (connect, timeout, reset, invalid response).
    pub failures: u64,
    /// Failures since the last success.
    pub consecutive_failures: u64,
    /// Reason of the latest failure.
    pub last_error: Option<&'static str>,
}

/// Whether an error reason is the upstream's fault.
fn upstream_failure(reason: ErrorReason) -> bool {
    matches!(
        reason,
        ErrorReason::UpstreamConnect
            | ErrorReason::UpstreamTimeout
            | ErrorReason::UpstreamReset
            | ErrorReason::UpstreamInvalidResponse
    )
}

struct Shared {
    endpoints: Mutex<std::collections::HashMap<SocketAddr, EndpointStats>>,
    receivers: Mutex<Vec<Receiver<AccessRecord>>>,
    dropped: Mutex<Vec<Arc<AtomicU64>>>,
    policy: ArcSwap<AccessPolicy>,
    stop: AtomicBool,
    capacity: usize,
    written: AtomicU64,
    latency: Mutex<Vec<RouteLatency>>,
    dropped_metric: Counter,
}

impl Shared {
    fn dropped_total(&self) -> u64 {
        self.dropped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|d| d.load(Relaxed))
            .sum()
    }
}

/// The access log: hands out per-worker loggers and runs the writer thread.
pub struct AccessLog {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("capacity", &self.shared.capacity)
            .field("stopping", &self.shared.stop.load(Relaxed))
            .finish()
    }
}

impl AccessLog {
    /// Starts the writer thread writing to `target`; each worker ring holds `capacity`
    /// records. `arc_access_log_dropped_total` is registered in `metrics`, whose route registry
    /// names routes in the lines.
    pub fn start(
        target: Arc<LogTarget>,
        policy: AccessPolicy,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, super::LoggingError> {
        let log = Self::unstarted(policy, capacity);
        metrics.register(
            "arc_access_log_dropped",
            "Access-log lines dropped because a worker's buffer was full",
            log.shared.dropped_metric.clone(),
        );
        Self::spawn(log, target, metrics)
    }

    fn unstarted(policy: AccessPolicy, capacity: usize) -> Self {
        AccessLog {
            shared: Arc::new(Shared {
                endpoints: Mutex::new(std::collections::HashMap::new()),
                receivers: Mutex::new(Vec::new()),
                dropped: Mutex::new(Vec::new()),
                policy: ArcSwap::from_pointee(policy),
                stop: AtomicBool::new(false),
                capacity: capacity.max(1),
                written: AtomicU64::new(0),
                latency: Mutex::new(Vec::new()),
                dropped_metric: Counter::default(),
            }),
            thread: Mutex::new(None),
        }
    }

    fn spawn(
        log: Self,
        target: Arc<LogTarget>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, super::LoggingError> {
        let shared = Arc::clone(&log.shared);
        let thread = std::thread::Builder::new()
            .name("arc-access-log".into())
            .spawn(move || Writer::new(shared, target, metrics).run())
            .map_err(super::LoggingError::Thread)?;
        *log.thread.lock().unwrap_or_else(PoisonError::into_inner) = Some(thread);
        Ok(log)
    }

    /// A logger for one more worker, with its own ring.
    pub fn worker(&self) -> AccessLogger {
        let (tx, rx) = sync_channel(self.shared.capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        self.shared
            .receivers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(rx);
        self.shared
            .dropped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&dropped));
        AccessLogger {
            tx: Some(tx),
            dropped,
        }
    }

    /// Replaces the policy (reload).
    pub fn set_policy(&self, policy: AccessPolicy) {
        self.shared.policy.store(Arc::new(policy));
    }

    /// Lines dropped by all workers because their ring was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped_total()
    }

    /// Lines written so far.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Relaxed)
    }

    /// Latency totals per route id (index = [`RouteMetricId::index`]).
    pub fn route_latency(&self) -> Vec<RouteLatency> {
        self.shared
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Passive health per upstream endpoint.
    pub fn endpoint_stats(&self) -> std::collections::HashMap<SocketAddr, EndpointStats> {
        self.shared
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Writes what the rings still hold and stops the writer (call after the workers stopped).
    pub fn stop(&self) {
        self.shared.stop.store(true, Relaxed);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// JSON shape of one access-log line.
#[derive(Serialize)]
struct Line<'a> {
    time: &'a str,
    client: SocketAddr,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    upstream: Option<SocketAddr>,
    upstream_duration_ms: Option<f64>,
    route: Option<&'a str>,
    request_id: Option<&'a str>,
    trace_id: Option<&'a str>,
    retries: u8,
    error: Option<&'static str>,
}

struct Writer {
    shared: Arc<Shared>,
    target: Arc<LogTarget>,
    metrics: Arc<Metrics>,
    names: Vec<Option<Arc<str>>>,
    anchor: (Instant, SystemTime),
    sample_acc: f64,
    line: Vec<u8>,
    time: String,
    reported_drops: u64,
}

impl Writer {
    fn new(shared: Arc<Shared>, target: Arc<LogTarget>, metrics: Arc<Metrics>) -> Self {
        Writer {
            shared,
            target,
            metrics,
            names: Vec::new(),
            anchor: (Instant::now(), SystemTime::now()),
            sample_acc: 0.0,
            line: Vec::with_capacity(1024),
            time: String::with_capacity(32),
            reported_drops: 0,
        }
    }

    fn run(mut self) {
        loop {
            let stopping = self.shared.stop.load(Relaxed);
            let got = self.drain();
            let drops = self.shared.dropped_total();
            if drops > self.reported_drops {
                self.shared
                    .dropped_metric
                    .inc_by(drops - self.reported_drops);
                self.reported_drops = drops;
            }
            if got == 0 {
                if stopping {
                    break;
                }
                std::thread::sleep(IDLE_PAUSE);
            }
        }
    }

    fn drain(&mut self) -> usize {
        let shared = Arc::clone(&self.shared);
        let receivers = shared
            .receivers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let policy = shared.policy.load_full();
        let mut got = 0;
        for rx in receivers.iter() {
            for _ in 0..BATCH {
                match rx.try_recv() {
                    Ok(rec) => {
                        got += 1;
                        self.handle(&rec, &policy);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
        }
        got
    }

    /// Route names are interned once and never change, so they are cached here.
    fn route_name(&mut self, id: RouteMetricId) -> Option<Arc<str>> {
        if let Some(Some(name)) = self.names.get(id.index()) {
            return Some(Arc::clone(name));
        }
        let name = self.metrics.routes().name(id)?;
        if self.names.len() <= id.index() {
            self.names.resize(id.index() + 1, None);
        }
        if let Some(slot) = self.names.get_mut(id.index()) {
            *slot = Some(Arc::clone(&name));
        }
        Some(name)
    }

    fn handle(&mut self, rec: &AccessRecord, policy: &AccessPolicy) {
        if let Some(route) = rec.route {
            let mut lat = self
                .shared
                .latency
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if lat.len() <= route.index() {
                lat.resize(route.index() + 1, RouteLatency::default());
            }
            if let Some(l) = lat.get_mut(route.index()) {
                let secs = rec.duration.as_secs_f64();
                l.count += 1;
                l.sum_seconds += secs;
                if secs > l.max_seconds {
                    l.max_seconds = secs;
                }
            }
        }
        if let Some(up) = rec.upstream {
            let mut eps = self
                .shared
                .endpoints
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let e = eps.entry(up).or_default();
            e.requests += 1;
            match rec.error.filter(|r| upstream_failure(*r)) {
                Some(reason) => {
                    e.failures += 1;
                    e.consecutive_failures += 1;
                    e.last_error = Some(reason.as_str());
                }
                None => e.consecutive_failures = 0,
            }
        }
        if !policy.enabled
            || rec
                .route
                .is_some_and(|r| policy.disabled_routes.contains(&r))
        {
            return;
        }
        self.sample_acc += policy.sample;
        if self.sample_acc < 1.0 {
            return;
        }
        self.sample_acc -= 1.0;
        self.write(rec);
    }

    fn write(&mut self, rec: &AccessRecord) {
        let wall = self.anchor.1
            + rec
                .end
                .checked_duration_since(self.anchor.0)
                .unwrap_or_default();
        self.time.clear();
        push_rfc3339(&mut self.time, wall);
        let route = rec.route.and_then(|r| self.route_name(r));
        let mut trace = [0u8; 32];
        let trace_id = rec.trace_id.map(|t| hex32(t, &mut trace));
        let request_id = rec.request_id();
        let line = Line {
            time: &self.time,
            client: rec.client,
            method: rec.method(),
            host: rec.host(),
            path: rec.path(),
            status: rec.status,
            bytes_in: rec.bytes_in,
            bytes_out: rec.bytes_out,
            duration_ms: millis(rec.duration),
            upstream: rec.upstream,
            upstream_duration_ms: rec.upstream_duration.map(millis),
            route: route.as_deref(),
            request_id: (!request_id.is_empty()).then_some(request_id),
            trace_id,
            retries: rec.retries,
            error: rec.error.map(ErrorReason::as_str),
        };
        self.line.clear();
        if serde_json::to_writer(&mut self.line, &line).is_err() {
            return;
        }
        self.line.push(b'\n');
        // A failing log output must not stop the writer; the process log says nothing either
        // (it may be the same broken disk).
        if self.target.write_line(&self.line).is_ok() {
            self.shared.written.fetch_add(1, Relaxed);
        }
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

fn hex32(v: u128, out: &mut [u8; 32]) -> &str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate() {
        let shift = (31 - i) * 4;
        *b = HEX[((v >> shift) & 0xf) as usize];
    }
    std::str::from_utf8(out).unwrap_or("")
}

/// Appends `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn push_rfc3339(out: &mut String, t: SystemTime) {
    use std::fmt::Write as _;
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    );
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests;

//! OpenTelemetry export, optional and off by default: a span per answered request and GenAI
//! metrics, over OTLP (HTTP, protobuf) to the team's own collector, following the GenAI semantic
//! conventions (`gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`,
//! `gen_ai.response.model`, `gen_ai.usage.input_tokens`/`output_tokens`, the
//! `gen_ai.client.token.usage` and `gen_ai.client.operation.duration` histograms) plus tollgate's
//! own attributes (cache, redactions, cost, caller, outcome).
//!
//! Off the request path: a request hands its settled row to a bounded queue ([`Telemetry::observe`]
//! never waits); a task batches and sends. A full queue drops the observation and counts it
//! (`tollgate.telemetry.dropped`) rather than grow. Message contents are never sent unless the
//! config asks and the policy allows, and then only as the provider saw them: redacted.

pub mod otlp;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prost::Message as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use otlp::{Value, kv};
use tollgate_protocol::{Outcome, Row};

/// `[telemetry]` in the config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP collector's base URL (`http://localhost:4318`): traces go to `/v1/traces`,
    /// metrics to `/v1/metrics`. Unset (the default): nothing is exported.
    pub otlp_endpoint: Option<String>,
    /// Put each request's messages in its span (`gen_ai.input.messages`), as redacted for the
    /// provider. Only where the policy's `telemetry.allow_content` is true, or no policy is in force.
    pub content: bool,
    /// Most observations waiting to be sent; more are dropped and counted.
    pub queue: usize,
    /// How often spans and metrics are sent, in milliseconds.
    pub interval_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { otlp_endpoint: None, content: false, queue: 4096, interval_ms: 5000 }
    }
}

impl TelemetryConfig {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.otlp_endpoint {
            let parsed = reqwest::Url::parse(url).map_err(|e| format!("otlp_endpoint {url:?}: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(format!("otlp_endpoint {url:?}: OTLP/HTTP needs http:// or https://"));
            }
        }
        if !(1..=1_000_000).contains(&self.queue) {
            return Err("queue: 1 to 1000000 observations".into());
        }
        if !(100..=600_000).contains(&self.interval_ms) {
            return Err("interval_ms: 100 to 600000".into());
        }
        Ok(())
    }
}

/// `[telemetry]` in the policy: the team's collector, and whether contents may be exported.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryPolicy {
    /// The team's OTLP/HTTP collector; replaces the user's.
    pub otlp_endpoint: Option<String>,
    /// Whether a user may export the (redacted) messages in spans.
    pub allow_content: bool,
}

/// What a settled request tells the exporter.
pub struct Observation {
    pub row: Row,
    /// The provider's kind (`openai`, `anthropic`, `gemini`, `ollama`).
    pub provider_kind: Option<&'static str>,
    /// The redacted messages, when contents are exported.
    pub content: Option<String>,
}

/// The sending side: cheap to call on the request path.
pub struct Telemetry {
    tx: mpsc::Sender<Observation>,
    dropped: Arc<AtomicU64>,
    /// Whether spans carry the redacted messages.
    pub content: bool,
}

impl Telemetry {
    /// Starts the exporter when `config` names a collector.
    pub fn start(config: &TelemetryConfig, http: reqwest::Client, user: &str) -> Option<Arc<Self>> {
        let endpoint = config.otlp_endpoint.as_deref()?.trim_end_matches('/').to_string();
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let exporter = Exporter {
            endpoint,
            http,
            interval: Duration::from_millis(config.interval_ms),
            dropped: Arc::clone(&dropped),
            resource: otlp::Resource {
                attributes: vec![
                    kv("service.name", Value::String("tollgate".into())),
                    kv("service.version", Value::String(env!("CARGO_PKG_VERSION").into())),
                    kv("user.name", Value::String(user.into())),
                ],
            },
            started_ns: now_ns(),
            aggregates: Aggregates::default(),
            last_failure: None,
        };
        tokio::spawn(exporter.run(rx));
        Some(Arc::new(Self { tx, dropped, content: config.content }))
    }

    /// Hands a settled request over; never waits. A full queue drops it, counted.
    pub fn observe(&self, observation: Observation) {
        if self.tx.try_send(observation).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let _ = getrandom::fill(&mut b);
    b
}

/// Spans sent in one request at most.
const BATCH: usize = 512;

/// The semantic conventions' advised bucket boundaries.
const TOKEN_BOUNDS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];
const DURATION_BOUNDS: [f64; 14] =
    [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Hist {
    count: u64,
    sum: f64,
    buckets: Vec<u64>,
}

impl Hist {
    fn add(&mut self, bounds: &[f64], v: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; bounds.len() + 1];
        }
        self.count += 1;
        self.sum += v;
        let i = bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
        self.buckets[i] += 1;
    }
}

/// Cumulative metrics since the daemon started, by attribute set.
#[derive(Default)]
struct Aggregates {
    tokens: BTreeMap<Labels, Hist>,
    duration: BTreeMap<Labels, Hist>,
    requests: BTreeMap<Labels, i64>,
    cost: BTreeMap<Labels, f64>,
    redactions: BTreeMap<Labels, i64>,
    changed: bool,
}

/// The GenAI operation a ledger entry point stands for.
fn operation(row: &Row) -> &'static str {
    match (row.entry.as_str(), row.task.as_str()) {
        (_, "embeddings") => "embeddings",
        (_, "completion") => "text_completion",
        _ => "chat",
    }
}

/// The conventions' provider name for a provider kind.
fn provider_name(kind: Option<&str>) -> String {
    match kind {
        Some("gemini") => "gcp.gemini".into(),
        Some(k) => k.to_string(),
        None => "_OTHER".into(),
    }
}

impl Aggregates {
    fn add(&mut self, o: &Observation) {
        let r = &o.row;
        let model = r.model.clone().unwrap_or_default();
        let base: Labels = vec![
            ("gen_ai.operation.name", operation(r).into()),
            ("gen_ai.provider.name", provider_name(o.provider_kind)),
            ("gen_ai.request.model", model.clone()),
            ("gen_ai.response.model", model),
        ];
        if !r.cache_hit {
            for (kind, n) in [("input", r.input_tokens), ("output", r.output_tokens)] {
                let mut labels = base.clone();
                labels.push(("gen_ai.token.type", kind.into()));
                self.tokens.entry(labels).or_default().add(&TOKEN_BOUNDS, n as f64);
            }
        }
        let mut timed = base.clone();
        if r.outcome != Outcome::Ok {
            timed.push(("error.type", r.outcome.as_str().into()));
        }
        self.duration.entry(timed).or_default().add(&DURATION_BOUNDS, r.latency_ms / 1000.0);
        let own: Labels = vec![
            ("tollgate.outcome", r.outcome.as_str().into()),
            ("tollgate.cache.hit", r.cache_hit.to_string()),
            ("tollgate.caller", r.caller.clone()),
            ("gen_ai.provider.name", provider_name(o.provider_kind)),
        ];
        *self.requests.entry(own.clone()).or_default() += 1;
        *self.cost.entry(own.clone()).or_default() += r.cost_micros.unwrap_or(0) as f64 / 1e6;
        *self.redactions.entry(own).or_default() += i64::from(r.redactions);
        self.changed = true;
    }
}

fn attributes(labels: &Labels) -> Vec<otlp::KeyValue> {
    labels.iter().map(|(k, v)| kv(k, Value::String(v.clone()))).collect()
}

struct Exporter {
    endpoint: String,
    http: reqwest::Client,
    interval: Duration,
    dropped: Arc<AtomicU64>,
    resource: otlp::Resource,
    started_ns: u64,
    aggregates: Aggregates,
    last_failure: Option<String>,
}

impl Exporter {
    async fn run(mut self, mut rx: mpsc::Receiver<Observation>) {
        let mut spans = Vec::new();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(o) => {
                        self.aggregates.add(&o);
                        spans.push(span(o));
                        if spans.len() >= BATCH {
                            self.send_spans(std::mem::take(&mut spans)).await;
                        }
                    }
                    None => {
                        self.send_spans(std::mem::take(&mut spans)).await;
                        self.send_metrics().await;
                        return;
                    }
                },
                _ = tick.tick() => {
                    if !spans.is_empty() {
                        self.send_spans(std::mem::take(&mut spans)).await;
                    }
                    self.send_metrics().await;
                }
            }
        }
    }

    fn scope() -> Option<otlp::InstrumentationScope> {
        Some(otlp::InstrumentationScope { name: "tollgate".into(), version: env!("CARGO_PKG_VERSION").into() })
    }

    async fn send_spans(&mut self, spans: Vec<otlp::Span>) {
        if spans.is_empty() {
            return;
        }
        let request = otlp::ExportTraceServiceRequest {
            resource_spans: vec![otlp::ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![otlp::ScopeSpans { scope: Self::scope(), spans }],
            }],
        };
        self.post("/v1/traces", request.encode_to_vec()).await;
    }

    async fn send_metrics(&mut self) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if !self.aggregates.changed && dropped == 0 {
            return;
        }
        let (start, now) = (self.started_ns, now_ns());
        let a = &self.aggregates;
        let hist =
            |name: &str, unit: &str, description: &str, bounds: &[f64], m: &BTreeMap<Labels, Hist>| otlp::Metric {
                name: name.into(),
                description: description.into(),
                unit: unit.into(),
                data: Some(otlp::Data::Histogram(otlp::Histogram {
                    aggregation_temporality: otlp::CUMULATIVE,
                    data_points: m
                        .iter()
                        .map(|(labels, h)| otlp::HistogramDataPoint {
                            attributes: attributes(labels),
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            count: h.count,
                            sum: Some(h.sum),
                            bucket_counts: h.buckets.clone(),
                            explicit_bounds: bounds.to_vec(),
                        })
                        .collect(),
                })),
            };
        let sum = |name: &str, unit: &str, description: &str, points: Vec<(Labels, otlp::Number)>| otlp::Metric {
            name: name.into(),
            description: description.into(),
            unit: unit.into(),
            data: Some(otlp::Data::Sum(otlp::Sum {
                aggregation_temporality: otlp::CUMULATIVE,
                is_monotonic: true,
                data_points: points
                    .into_iter()
                    .map(|(labels, value)| otlp::NumberDataPoint {
                        attributes: attributes(&labels),
                        start_time_unix_nano: start,
                        time_unix_nano: now,
                        value: Some(value),
                    })
                    .collect(),
            })),
        };
        let ints = |m: &BTreeMap<Labels, i64>| m.iter().map(|(l, v)| (l.clone(), otlp::Number::Int(*v))).collect();
        let metrics = vec![
            hist("gen_ai.client.token.usage", "{token}", "Tokens used per request", &TOKEN_BOUNDS, &a.tokens),
            hist("gen_ai.client.operation.duration", "s", "Request duration", &DURATION_BOUNDS, &a.duration),
            sum("tollgate.requests", "{request}", "Requests answered", ints(&a.requests)),
            sum(
                "tollgate.cost",
                "USD",
                "Cost of requests, at the configured prices",
                a.cost.iter().map(|(l, v)| (l.clone(), otlp::Number::Double(*v))).collect(),
            ),
            sum("tollgate.redactions", "{value}", "Values masked before leaving the machine", ints(&a.redactions)),
            sum(
                "tollgate.telemetry.dropped",
                "{observation}",
                "Observations dropped because the export queue was full",
                vec![(Vec::new(), otlp::Number::Int(i64::try_from(dropped).unwrap_or(i64::MAX)))],
            ),
        ];
        let request = otlp::ExportMetricsServiceRequest {
            resource_metrics: vec![otlp::ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![otlp::ScopeMetrics { scope: Self::scope(), metrics }],
            }],
        };
        self.aggregates.changed = false;
        self.post("/v1/metrics", request.encode_to_vec()).await;
    }

    /// Sends one export; a failure is logged once per kind of failure, and the data is dropped
    /// (the collector is someone else's: the daemon never queues without bound for it).
    async fn post(&mut self, path: &str, body: Vec<u8>) {
        let result = self
            .http
            .post(format!("{}{path}", self.endpoint))
            .header("content-type", "application/x-protobuf")
            .body(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let failure = match result {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("the collector answered {}", r.status())),
            Err(e) => Some(format!("cannot reach the collector: {}", e.without_url())),
        };
        if failure.is_some() && failure != self.last_failure {
            tracing::warn!(endpoint = %self.endpoint, "telemetry export: {}", failure.as_deref().unwrap_or_default());
        }
        self.last_failure = failure;
    }
}

/// The span of one request.
fn span(o: Observation) -> otlp::Span {
    let r = &o.row;
    let model = r.model.clone().unwrap_or_default();
    let op = operation(r);
    let start = u64::try_from(r.ts_ms).unwrap_or(0).saturating_mul(1_000_000);
    let end = start.saturating_add((r.latency_ms.max(0.0) * 1e6) as u64);
    let mut attributes = vec![
        kv("gen_ai.operation.name", Value::String(op.into())),
        kv("gen_ai.provider.name", Value::String(provider_name(o.provider_kind))),
        kv("gen_ai.request.model", Value::String(model.clone())),
        kv("gen_ai.response.model", Value::String(model.clone())),
        kv("gen_ai.usage.input_tokens", Value::Int(i64::try_from(r.input_tokens).unwrap_or(i64::MAX))),
        kv("gen_ai.usage.output_tokens", Value::Int(i64::try_from(r.output_tokens).unwrap_or(i64::MAX))),
        kv("tollgate.request_id", Value::String(r.request_id.clone())),
        kv("tollgate.provider", Value::String(r.provider.clone().unwrap_or_default())),
        kv("tollgate.task", Value::String(r.task.clone())),
        kv("tollgate.caller", Value::String(r.caller.clone())),
        kv("tollgate.cache.hit", Value::Bool(r.cache_hit)),
        kv("tollgate.redactions", Value::Int(i64::from(r.redactions))),
        kv("tollgate.outcome", Value::String(r.outcome.as_str().into())),
    ];
    if let Some(p) = &r.project {
        attributes.push(kv("tollgate.project", Value::String(p.clone())));
    }
    if let Some(micros) = r.cost_micros {
        attributes.push(kv("tollgate.cost_usd", Value::Double(micros as f64 / 1e6)));
    }
    if let Some(content) = o.content {
        attributes.push(kv("gen_ai.input.messages", Value::String(content)));
    }
    let ok = r.outcome == Outcome::Ok;
    otlp::Span {
        trace_id: random::<16>().to_vec(),
        span_id: random::<8>().to_vec(),
        name: format!("{op} {model}"),
        kind: otlp::SPAN_KIND_CLIENT,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        status: Some(otlp::Status {
            code: if ok { otlp::STATUS_OK } else { otlp::STATUS_ERROR },
            message: if ok { String::new() } else { r.outcome.as_str().into() },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn http() -> reqwest::Client {
        let defaults = crate::config::Loaded::load(None, false, &Default::default()).unwrap();
        crate::providers::http_client(&defaults.config.limits)
    }

    fn row(n: u64) -> Row {
        Row {
            request_id: format!("r{n}"),
            model: Some("gpt-a".into()),
            provider: Some("oa".into()),
            input_tokens: n,
            output_tokens: 2 * n,
            latency_ms: 30.0,
            outcome: Outcome::Ok,
            ..Default::default()
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_growing_or_waiting() {
        // On a current-thread runtime the exporter cannot run while the loop below does: the queue
        // of 4 fills, and every observation after it is dropped at once, counted.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let config =
                TelemetryConfig { otlp_endpoint: Some("http://127.0.0.1:9".into()), queue: 4, ..Default::default() };
            let t = Telemetry::start(&config, http(), "alice").unwrap();
            for n in 0..100 {
                t.observe(Observation { row: row(n), provider_kind: Some("openai"), content: None });
            }
            assert_eq!(t.dropped(), 96);
        });
        assert!(Telemetry::start(&TelemetryConfig::default(), http(), "alice").is_none(), "off by default");
    }

    #[test]
    fn histograms_count_into_the_conventions_buckets() {
        let mut a = Aggregates::default();
        for n in [1, 3, 5000] {
            a.add(&Observation { row: row(n), provider_kind: Some("gemini"), content: None });
        }
        let input = a
            .tokens
            .iter()
            .find(|(l, _)| l.contains(&("gen_ai.token.type", "input".to_string())))
            .map(|(l, h)| (l.clone(), h))
            .unwrap();
        assert!(input.0.contains(&("gen_ai.provider.name", "gcp.gemini".to_string())));
        let h = input.1;
        assert_eq!((h.count, h.sum), (3, 5004.0));
        // 1 <= 1; 3 <= 4; 5000 <= 16384.
        assert_eq!((h.buckets[0], h.buckets[1], h.buckets[7]), (1, 1, 1));
        assert_eq!(h.buckets.len(), TOKEN_BOUNDS.len() + 1);
    }
}

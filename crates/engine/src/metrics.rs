//! Counters and histograms for `GET /metrics`, in Prometheus' text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::ledger::Row;
use crate::ledger::budgets::BudgetReport;

const DURATION_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const ADDED_BUCKETS: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len()];
        }
        for (i, b) in bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<String, u64>,
    tokens: BTreeMap<String, u64>,
    cost_micros: BTreeMap<String, i64>,
    cache_hits: u64,
    cache_misses: u64,
    duration: BTreeMap<String, Histogram>,
    added: Histogram,
    /// The model names seen, up to [`MAX_MODELS`]; later ones are counted as `other`.
    models: std::collections::HashSet<String>,
}

/// Distinct model labels kept: a caller may send any name (`provider/anything`), and each new
/// label would be a new series for as long as the daemon runs.
const MAX_MODELS: usize = 200;

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// The counters; a panic elsewhere while they were held leaves them usable (they are counts,
    /// each update whole), rather than failing every later request and `/metrics`.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a settled call.
    pub fn record(&self, row: &Row) {
        let provider = label(row.provider.as_deref().unwrap_or("-"));
        let mut m = self.lock();
        let model = match row.model.as_deref().unwrap_or("-") {
            known if m.models.contains(known) => label(known),
            new if m.models.len() < MAX_MODELS => {
                m.models.insert(new.to_string());
                label(new)
            }
            _ => "other".to_string(),
        };
        *m.requests
            .entry(format!(
                "entry=\"{}\",provider=\"{provider}\",model=\"{model}\",outcome=\"{}\"",
                label(&row.entry),
                row.outcome.as_str()
            ))
            .or_default() += 1;
        // Figures come bounded from the pipeline; a counter saturates rather than wraps all the same.
        for (kind, n) in [("input", row.input_tokens), ("output", row.output_tokens), ("cached", row.cached_tokens)] {
            let t = m.tokens.entry(format!("provider=\"{provider}\",model=\"{model}\",kind=\"{kind}\"")).or_default();
            *t = t.saturating_add(n);
        }
        if let Some(c) = row.cost_micros {
            let total = m.cost_micros.entry(format!("provider=\"{provider}\",model=\"{model}\"")).or_default();
            *total = total.saturating_add(c);
        }
        if row.cache_hit {
            m.cache_hits += 1;
        }
        m.duration
            .entry(format!("entry=\"{}\"", label(&row.entry)))
            .or_default()
            .observe(DURATION_BUCKETS, row.latency_ms / 1000.0);
        m.added.observe(ADDED_BUCKETS, row.added_ms / 1000.0);
    }

    pub fn cache_miss(&self) {
        self.lock().cache_misses += 1;
    }

    pub fn render(&self, budgets: &[BudgetReport]) -> String {
        let m = self.lock();
        let mut out = String::new();
        let o = &mut out;
        head(o, "tollgate_requests_total", "counter", "Requests, by entry point, provider, model and outcome.");
        for (l, v) in &m.requests {
            let _ = writeln!(o, "tollgate_requests_total{{{l}}} {v}");
        }
        head(o, "tollgate_tokens_total", "counter", "Tokens, by provider, model and kind (input includes cached).");
        for (l, v) in &m.tokens {
            let _ = writeln!(o, "tollgate_tokens_total{{{l}}} {v}");
        }
        head(o, "tollgate_cost_usd_total", "counter", "Known cost in US dollars, by provider and model.");
        for (l, v) in &m.cost_micros {
            let _ = writeln!(o, "tollgate_cost_usd_total{{{l}}} {}", *v as f64 / 1e6);
        }
        head(o, "tollgate_cache_hits_total", "counter", "Answers served from the cache.");
        let _ = writeln!(o, "tollgate_cache_hits_total {}", m.cache_hits);
        head(o, "tollgate_cache_misses_total", "counter", "Cacheable requests not found in the cache.");
        let _ = writeln!(o, "tollgate_cache_misses_total {}", m.cache_misses);
        head(o, "tollgate_request_duration_seconds", "histogram", "Time from request to complete answer.");
        for (l, h) in &m.duration {
            histogram(o, "tollgate_request_duration_seconds", l, DURATION_BUCKETS, h);
        }
        head(o, "tollgate_added_seconds", "histogram", "The gateway's own time per request, provider time excluded.");
        histogram(o, "tollgate_added_seconds", "", ADDED_BUCKETS, &m.added);
        head(o, "tollgate_budget_remaining_usd", "gauge", "Money left in each budget's current period.");
        for b in budgets {
            if let Some(r) = b.remaining_micros {
                let _ = writeln!(
                    o,
                    "tollgate_budget_remaining_usd{{budget=\"{}\",key=\"{}\"}} {}",
                    label(&b.name),
                    label(&b.key),
                    r as f64 / 1e6
                );
            }
        }
        head(o, "tollgate_budget_remaining_tokens", "gauge", "Tokens left in each budget's current period.");
        for b in budgets {
            if let Some(r) = b.remaining_tokens {
                let _ = writeln!(
                    o,
                    "tollgate_budget_remaining_tokens{{budget=\"{}\",key=\"{}\"}} {r}",
                    label(&b.name),
                    label(&b.key)
                );
            }
        }
        out
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, bounds: &[f64], h: &Histogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (i, b) in bounds.iter().enumerate() {
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}", h.counts.get(i).copied().unwrap_or(0));
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count);
    let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
    let _ = writeln!(out, "{name}_sum{braces} {}", h.sum);
    let _ = writeln!(out, "{name}_count{braces} {}", h.count);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Outcome;

    #[test]
    fn exposition_has_types_labels_and_cumulative_buckets() {
        let m = Metrics::default();
        let row = Row {
            entry: "openai".into(),
            provider: Some("oa".into()),
            model: Some("gpt-4.1".into()),
            outcome: Outcome::Ok,
            input_tokens: 10,
            output_tokens: 5,
            cost_micros: Some(1_500_000),
            latency_ms: 30.0,
            added_ms: 0.2,
            ..Default::default()
        };
        m.record(&row);
        let text = m.render(&[]);
        assert!(text.contains("# TYPE tollgate_requests_total counter"));
        assert!(
            text.contains(
                "tollgate_requests_total{entry=\"openai\",provider=\"oa\",model=\"gpt-4.1\",outcome=\"ok\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("tollgate_cost_usd_total{provider=\"oa\",model=\"gpt-4.1\"} 1.5"));
        assert!(text.contains("tollgate_request_duration_seconds_bucket{entry=\"openai\",le=\"0.025\"} 0"));
        assert!(text.contains("tollgate_request_duration_seconds_bucket{entry=\"openai\",le=\"0.05\"} 1"));
        assert!(text.contains("tollgate_added_seconds_bucket{le=\"0.00025\"} 1"));
        assert!(text.contains("tollgate_added_seconds_count 1"));
    }

    #[test]
    fn model_labels_stop_growing_at_their_limit() {
        let m = Metrics::default();
        for i in 0..(MAX_MODELS + 100) {
            m.record(&Row {
                entry: "openai".into(),
                model: Some(format!("m{i}")),
                outcome: Outcome::Ok,
                ..Default::default()
            });
        }
        // A name seen before the limit keeps its own series.
        m.record(&Row { entry: "openai".into(), model: Some("m0".into()), outcome: Outcome::Ok, ..Default::default() });
        let text = m.render(&[]);
        let requests: Vec<&str> = text.lines().filter(|l| l.starts_with("tollgate_requests_total{")).collect();
        assert_eq!(requests.len(), MAX_MODELS + 1, "one series per model kept, and one for the rest");
        assert!(text.contains("model=\"other\",outcome=\"ok\"} 100"), "{text}");
        assert!(text.contains("model=\"m0\",outcome=\"ok\"} 2"), "{text}");
    }
}

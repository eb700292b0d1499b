//! Rate limits: requests and tokens per minute, per caller (entry point and API token), per project
//! and per model, as token buckets that refill continuously. A request over a limit is refused with
//! 429 and the time after which it would fit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LimitScope {
    Caller,
    Project,
    Model,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub scope: LimitScope,
    /// Which callers, projects or `provider/model`s (a glob) the limit covers; each gets its own
    /// bucket.
    #[serde(default = "star", rename = "match")]
    pub matches: String,
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
}

fn star() -> String {
    "*".into()
}

#[derive(Debug)]
struct Bucket {
    level: f64,
    at: Instant,
}

impl Bucket {
    /// Takes `n` from a bucket of `capacity` refilled over a minute; or the wait until it could.
    fn take(&mut self, n: f64, capacity: f64, now: Instant) -> Result<(), Duration> {
        let per_sec = capacity / 60.0;
        self.level = (self.level + now.duration_since(self.at).as_secs_f64() * per_sec).min(capacity);
        self.at = now;
        if n <= self.level {
            self.level -= n;
            Ok(())
        } else if n > capacity {
            // Larger than the bucket can ever hold: it fits once the bucket is full.
            Err(Duration::from_secs_f64((capacity - self.level) / per_sec))
        } else {
            Err(Duration::from_secs_f64((n - self.level) / per_sec))
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limited {
    pub what: String,
    pub retry_after: Duration,
}

impl std::fmt::Display for Limited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rate limit reached: {}; retry in {:.1}s", self.what, self.retry_after.as_secs_f64())
    }
}

pub struct RateLimits {
    rules: Vec<(RateLimitConfig, globset::GlobMatcher)>,
    buckets: Mutex<HashMap<(usize, bool, String), Bucket>>,
}

impl RateLimits {
    pub fn new(rules: &[RateLimitConfig]) -> Self {
        let rules = rules
            .iter()
            .filter_map(|r| globset::Glob::new(&r.matches).ok().map(|g| (r.clone(), g.compile_matcher())))
            .collect();
        Self { rules, buckets: Mutex::default() }
    }

    /// Carries over the buckets of the limits this set shares with `old` (the set it replaces
    /// on a reload), so that a reload does not refill them.
    pub fn adopt(&self, old: &RateLimits) {
        let id = |r: &RateLimitConfig| serde_json::to_string(r).unwrap_or_default();
        let new_index: HashMap<String, usize> = self.rules.iter().enumerate().map(|(j, (r, _))| (id(r), j)).collect();
        let mut mine = self.buckets.lock().expect("rate limit lock");
        for ((i, is_tokens, value), bucket) in old.buckets.lock().expect("rate limit lock").drain() {
            if let Some(&j) = old.rules.get(i).and_then(|(r, _)| new_index.get(&id(r))) {
                mine.insert((j, is_tokens, value), bucket);
            }
        }
    }

    /// Takes one request and `tokens` from every bucket of `scope` that covers `value`; all or
    /// nothing.
    pub fn admit(&self, scope: LimitScope, value: &str, tokens: u64, now: Instant) -> Result<(), Limited> {
        let mut buckets = self.buckets.lock().expect("rate limit lock");
        let mut taken: Vec<((usize, bool, String), f64)> = Vec::new();
        let mut refusal = None;
        'rules: for (i, (rule, matcher)) in self.rules.iter().enumerate() {
            if rule.scope != scope || !matcher.is_match(value) {
                continue;
            }
            let checks = [
                (false, rule.requests_per_minute.map(f64::from), 1.0),
                (true, rule.tokens_per_minute.map(|t| t as f64), tokens as f64),
            ];
            for (is_tokens, capacity, n) in checks {
                let Some(capacity) = capacity else { continue };
                let key = (i, is_tokens, value.to_string());
                let bucket = buckets.entry(key.clone()).or_insert(Bucket { level: capacity, at: now });
                match bucket.take(n, capacity, now) {
                    Ok(()) => taken.push((key, n)),
                    Err(wait) => {
                        let unit = if is_tokens { "tokens" } else { "requests" };
                        refusal = Some(Limited {
                            what: format!("{} per minute for {scope:?} {value:?} ({capacity} {unit}/min)", unit)
                                .to_lowercase(),
                            retry_after: wait,
                        });
                        break 'rules;
                    }
                }
            }
        }
        match refusal {
            None => Ok(()),
            Some(limited) => {
                for (key, n) in taken {
                    if let Some(b) = buckets.get_mut(&key) {
                        b.level += n;
                    }
                }
                Err(limited)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_reload_keeps_the_buckets_of_the_limits_it_keeps() {
        let limit = RateLimitConfig {
            scope: LimitScope::Caller,
            matches: "*".into(),
            requests_per_minute: Some(1),
            tokens_per_minute: None,
        };
        let other = RateLimitConfig {
            scope: LimitScope::Project,
            matches: "*".into(),
            requests_per_minute: Some(5),
            tokens_per_minute: None,
        };
        let now = Instant::now();
        let old = RateLimits::new(std::slice::from_ref(&limit));
        assert!(old.admit(LimitScope::Caller, "openai", 0, now).is_ok());
        // The same limit, now second (a policy rule came before it): still spent.
        let new = RateLimits::new(&[other, limit]);
        new.adopt(&old);
        assert!(new.admit(LimitScope::Caller, "openai", 0, now).is_err());
        assert!(new.admit(LimitScope::Caller, "anthropic", 0, now).is_ok());
    }

    use super::*;

    fn limits(rpm: Option<u32>, tpm: Option<u64>) -> RateLimits {
        RateLimits::new(&[RateLimitConfig {
            scope: LimitScope::Caller,
            matches: "*".into(),
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
        }])
    }

    #[test]
    fn requests_beyond_the_bucket_wait_for_the_refill() {
        let l = limits(Some(2), None);
        let t = Instant::now();
        assert!(l.admit(LimitScope::Caller, "openai", 0, t).is_ok());
        assert!(l.admit(LimitScope::Caller, "openai", 0, t).is_ok());
        let err = l.admit(LimitScope::Caller, "openai", 0, t).unwrap_err();
        assert!((29.0..=30.1).contains(&err.retry_after.as_secs_f64()), "{err:?}");
        assert!(l.admit(LimitScope::Caller, "anthropic", 0, t).is_ok(), "each caller has its own bucket");
        assert!(l.admit(LimitScope::Caller, "openai", 0, t + Duration::from_secs(31)).is_ok());
    }

    #[test]
    fn a_refused_request_takes_nothing_from_the_other_buckets() {
        let l = limits(Some(10), Some(100));
        let t = Instant::now();
        assert!(l.admit(LimitScope::Caller, "c", 150, t).is_err());
        // The request bucket was given back: ten more requests fit.
        for _ in 0..10 {
            assert!(l.admit(LimitScope::Caller, "c", 1, t).is_ok());
        }
    }
}

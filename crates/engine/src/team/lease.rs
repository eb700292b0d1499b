//! The leases a daemon holds and the `[team]` settings: what `ledger::budgets` reads on the request
//! path. Nothing here touches the network or the database.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

/// `[team]` in the config or the policy (the policy's wins).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TeamConfig {
    /// The team server (`https://...`; `http://` only on a loopback address). Unset: budgets are
    /// counted on this machine alone.
    pub server: Option<String>,
    /// GitLab groups (globs) whose members may read the whole team's usage.
    pub admins: Vec<String>,
    /// The share of what a shared budget has left that one lease may take.
    pub lease_share_percent: u8,
    /// The most one grant adds, as a share of the budget's limit: what one daemon can hold unspent,
    /// and so the team's worst case if that daemon vanishes until its lease ends.
    pub lease_max_percent: u8,
    /// How long a grant holds.
    pub lease_ttl_secs: u64,
}

impl Default for TeamConfig {
    fn default() -> Self {
        Self { server: None, admins: Vec::new(), lease_share_percent: 10, lease_max_percent: 5, lease_ttl_secs: 300 }
    }
}

impl TeamConfig {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.server {
            check_server_url(url)?;
        }
        if !(1..=100).contains(&self.lease_share_percent) || !(1..=100).contains(&self.lease_max_percent) {
            return Err("lease_share_percent and lease_max_percent are percentages (1 to 100)".into());
        }
        if !(10..=86_400).contains(&self.lease_ttl_secs) {
            return Err("lease_ttl_secs is between 10 and 86400".into());
        }
        for g in &self.admins {
            globset::Glob::new(g).map_err(|e| format!("admins: bad glob {g:?}: {e}"))?;
        }
        Ok(())
    }
}

/// `https://...`, or `http://` to a loopback address (the token would cross the network in clear).
pub fn check_server_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("team server {url:?}: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http"
            if parsed.host_str().is_some_and(|h| {
                h == "localhost"
                    || h.trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }) =>
        {
            Ok(())
        }
        "http" => Err(format!("team server {url:?}: plain http would send the GitLab token in clear; use https")),
        other => Err(format!("team server {url:?}: {other}:// is not http(s)")),
    }
}

/// A lease as the daemon holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub period_start: i64,
    pub granted_micros: Option<i64>,
    pub granted_tokens: Option<u64>,
    /// Local time (ms) after which none of it is spent: the server's time to live, counted from
    /// when the request was sent, less a margin.
    pub until_ms: i64,
    /// What the last grant added, to tell when the lease runs low.
    pub slice_micros: i64,
    pub slice_tokens: u64,
    /// What the team had left to lease after the last grant.
    pub team_left_micros: Option<i64>,
    pub team_left_tokens: Option<u64>,
}

impl Held {
    /// Whether this lease may be spent at `now`, in the period starting at `period_start`.
    pub fn live(&self, period_start: i64, now: i64) -> bool {
        self.period_start == period_start && self.until_ms > now
    }

    /// Whether less than half of the last slice is left once `micros` and `tokens` (spent and
    /// reserved) are counted: time to ask for more.
    pub fn runs_low(&self, micros: i64, tokens: u64) -> bool {
        let low_m = self.granted_micros.is_some_and(|g| (g - micros) * 2 < self.slice_micros);
        let low_t = self
            .granted_tokens
            .is_some_and(|g| (i128::from(g) - i128::from(tokens)) * 2 < i128::from(self.slice_tokens));
        low_m || low_t
    }
}

/// The leases this daemon holds, by budget name; shared by every runtime a reload builds.
///
/// Leases follow demand: a budget is leased only once a request needs it, renewed while requests
/// keep coming, and left to lapse when the daemon goes idle, so idle machines hold none of the
/// team's money. The first request after idling waits for one lease round trip (at most
/// [`FIRST_LEASE_WAIT`]); every request while a lease is live is decided in memory.
#[derive(Debug, Default)]
pub struct Leases {
    held: Mutex<HashMap<String, Held>>,
    /// When a request last needed each budget (ms).
    demand: Mutex<HashMap<String, i64>>,
    /// Wakes the task: a lease is missing or runs low.
    wake: Notify,
    /// Counts the task's rounds, so a request can wait for the next one.
    rounds: watch::Sender<u64>,
    /// The last failure reaching the server, for messages and `tollgate status`.
    last_error: Mutex<Option<String>>,
}

/// The longest a request waits for a lease it lacks.
pub const FIRST_LEASE_WAIT: Duration = Duration::from_secs(3);

impl Leases {
    pub fn get(&self, budget: &str) -> Option<Held> {
        self.held.lock().expect("leases").get(budget).copied()
    }

    pub fn set(&self, budget: &str, held: Held) {
        self.held.lock().expect("leases").insert(budget.to_string(), held);
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("leases").clone()
    }

    pub(crate) fn set_last_error(&self, e: Option<String>) {
        *self.last_error.lock().expect("leases") = e;
    }

    /// Waits until a request wakes the task, or `tick` passes.
    pub(crate) async fn wait(&self, tick: Duration) {
        tokio::select! {
            () = self.wake.notified() => {}
            () = tokio::time::sleep(tick) => {}
        }
    }

    /// A request needs `budget` now.
    pub fn touch(&self, budget: &str, now: i64) {
        // On every request under a shared budget: no allocation once the budget is known.
        let mut demand = self.demand.lock().expect("leases");
        match demand.get_mut(budget) {
            Some(t) => *t = now,
            None => {
                demand.insert(budget.to_string(), now);
            }
        }
    }

    /// Whether a request needed `budget` since `since`.
    pub fn demanded_since(&self, budget: &str, since: i64) -> bool {
        self.demand.lock().expect("leases").get(budget).is_some_and(|t| *t >= since)
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Wakes the task and waits (at most `wait`) for the lease `covered` says is missing: until a
    /// round after now has brought it or failed. While the server is known to be unreachable it
    /// does not wait: the daemon spends what it holds and applies the budget's action.
    pub async fn next_round(&self, wait: Duration, covered: impl Fn() -> bool) {
        if self.last_error().is_some() {
            self.wake();
            return;
        }
        let mut rx = self.rounds.subscribe();
        let seen = *rx.borrow_and_update();
        self.wake();
        // A round already running may have missed the demand; the one after it does not.
        let done = |r: &u64| *r >= seen + 2 || (*r > seen && (covered() || self.last_error().is_some()));
        let _ = tokio::time::timeout(wait, rx.wait_for(done)).await;
    }

    pub(crate) fn round_done(&self) {
        self.rounds.send_modify(|r| *r += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_is_https_or_loopback_http() {
        for ok in [
            "https://team.example.com",
            "https://10.0.0.5:8789",
            "http://127.0.0.1:8789",
            "http://[::1]:1",
            "http://localhost:8789",
        ] {
            assert!(check_server_url(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("http://team.example.com", "in clear"),
            ("http://10.0.0.5:8789", "in clear"),
            ("ftp://team.example.com", "not http"),
            ("team.example.com", "relative URL"),
        ] {
            let e = check_server_url(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let mut c = TeamConfig { server: Some("https://t".into()), ..Default::default() };
        assert!(c.validate().is_ok());
        c.lease_max_percent = 0;
        assert!(c.validate().unwrap_err().contains("percentages"));
        c.lease_max_percent = 5;
        c.lease_ttl_secs = 1;
        assert!(c.validate().is_err());
    }
}

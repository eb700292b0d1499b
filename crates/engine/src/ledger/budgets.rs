//! Budgets: limits per day, week or month, in money and in tokens, for the user, per project and
//! per model. Enforced with reservations: before a call, its estimated cost (prompt tokens counted
//! with a tokenizer, plus the most it may write) is reserved against every budget it falls under;
//! after the call the reservation settles to the real cost. Concurrent requests therefore cannot
//! all slip under a nearly spent limit: the overspend is bounded by how far one request's real cost
//! exceeds its estimate.
//!
//! The counters live in memory, loaded from the ledger at start (the daemon is the only writer).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::prices::{Decimal, Micros, format_usd};
use crate::team::lease::Leases;
use crate::utc::{self, Period};

pub use tollgate_protocol::{Action, BudgetReport, BudgetScope, BudgetsReply, LeaseReport};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub name: String,
    pub scope: BudgetScope,
    /// For project and model scopes: which projects or models (a glob) the budget covers.
    #[serde(default = "star", rename = "match")]
    pub matches: String,
    pub period: Period,
    #[serde(default)]
    pub limit_usd: Option<Decimal>,
    #[serde(default)]
    pub limit_tokens: Option<u64>,
    /// A warning once this share of a limit is spent (or reserved).
    #[serde(default = "eighty")]
    pub soft_percent: u8,
    pub action: Action,
    /// The route alias a `downgrade` budget sends requests to.
    #[serde(default)]
    pub downgrade_to: Option<String>,
}

fn star() -> String {
    "*".into()
}
fn eighty() -> u8 {
    80
}

impl BudgetConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.limit_usd.is_none() && self.limit_tokens.is_none() {
            return Err("needs limit_usd or limit_tokens".into());
        }
        if self.action == Action::Downgrade && self.downgrade_to.is_none() {
            return Err("action = \"downgrade\" needs downgrade_to (a route alias)".into());
        }
        if self.soft_percent > 100 {
            return Err("soft_percent is a percentage (0 to 100)".into());
        }
        globset::Glob::new(&self.matches).map_err(|e| format!("bad match glob: {e}"))?;
        Ok(())
    }
}

/// What a request is, for the budgets it falls under.
pub struct Facts<'a> {
    pub project: Option<&'a str>,
    /// `provider/model`
    pub target: &'a str,
    pub tokens: u64,
    /// `None`: the model's price is unknown; money limits cannot count it.
    pub micros: Option<Micros>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    period_start: i64,
    spent_micros: Micros,
    spent_tokens: u64,
    reserved_micros: Micros,
    reserved_tokens: u64,
}

type Key = (usize, String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub budget: String,
    pub spent: String,
    pub limit: String,
    pub resets_at: i64,
    pub action: Action,
    pub downgrade_to: Option<String>,
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "budget {:?} is spent ({} of {}); it resets at {}",
            self.budget,
            self.spent,
            self.limit,
            utc::iso(self.resets_at)
        )
    }
}

/// A reservation against some budgets; released on drop unless settled.
pub struct Reservation {
    budgets: Arc<Budgets>,
    held: Vec<(Key, Micros, u64)>,
    /// Budgets past their soft limit (or exceeded with `warn`), for a response header.
    pub warnings: Vec<String>,
}

impl Reservation {
    /// Replaces the estimate with what the call really cost.
    pub fn settle(mut self, micros: Option<Micros>, tokens: u64) {
        let held = std::mem::take(&mut self.held);
        self.budgets.apply(&held, |b, est_m, est_t| {
            b.reserved_micros -= est_m;
            b.reserved_tokens -= est_t;
            b.spent_micros += micros.unwrap_or(0);
            b.spent_tokens += tokens;
        });
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.budgets.apply(&held, |b, est_m, est_t| {
            b.reserved_micros -= est_m;
            b.reserved_tokens -= est_t;
        });
    }
}

pub struct Budgets {
    defs: Vec<(BudgetConfig, globset::GlobMatcher)>,
    state: Mutex<HashMap<Key, Bucket>>,
    /// With a team server: the leases on shared budgets (team and group scopes), whose grants
    /// stand in for their limits.
    leases: arc_swap::ArcSwapOption<Leases>,
}

/// A shared budget's lease to ask for or renew: this daemon's own spend in the period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseWant {
    pub budget: String,
    pub period_start: i64,
    pub used_micros: Micros,
    pub used_tokens: u64,
    /// Less than half of the last slice is left.
    pub low: bool,
}

/// Spend already in the ledger for the current period: `(budget index, scope value) -> (micros, tokens)`.
pub type Spent = HashMap<Key, (Micros, u64)>;

impl Budgets {
    /// The budgets that apply to `identity`: user budgets whose glob matches the user's name,
    /// group budgets whose glob matches one of the user's groups, and every other budget. With
    /// `leases` (a team server is set), team and group budgets are spent within their leases.
    pub fn new(defs: &[BudgetConfig], identity: &crate::identity::Identity, leases: Option<Arc<Leases>>) -> Self {
        let applies = |d: &&BudgetConfig| {
            let Ok(glob) = globset::Glob::new(&d.matches) else { return false };
            let m = glob.compile_matcher();
            match d.scope {
                BudgetScope::User => m.is_match(&identity.username),
                BudgetScope::Group => identity.groups.iter().any(|g| m.is_match(g)),
                BudgetScope::Team | BudgetScope::Project | BudgetScope::Model => true,
            }
        };
        let defs = defs
            .iter()
            .filter(applies)
            .map(|d| {
                (
                    d.clone(),
                    globset::Glob::new(&d.matches)
                        .map(|g| g.compile_matcher())
                        .unwrap_or_else(|_| globset::Glob::new("*").unwrap().compile_matcher()),
                )
            })
            .collect();
        Self { defs, state: Mutex::default(), leases: arc_swap::ArcSwapOption::new(leases) }
    }

    fn shared(&self, def: &BudgetConfig) -> Option<Arc<Leases>> {
        self.leases.load_full().filter(|_| matches!(def.scope, BudgetScope::Team | BudgetScope::Group))
    }

    /// The leases, when a team server is set.
    pub fn leases(&self) -> Option<Arc<Leases>> {
        self.leases.load_full()
    }

    /// Keeps the leases `old` held (a reload builds new budgets; the grants stay good).
    pub fn adopt_leases(&self, old: &Budgets) {
        if self.leases.load().is_some()
            && let Some(held) = old.leases.load_full()
        {
            self.leases.store(Some(held));
        }
    }

    /// Whether a shared budget this request falls under has no live lease; marks each such budget
    /// as needed, for the task to ask for.
    pub fn lacks_lease(&self, now: i64) -> bool {
        let mut lacking = false;
        for (def, _) in &self.defs {
            if let Some(leases) = self.shared(def) {
                let start = def.period.start(now);
                if !leases.get(&def.name).is_some_and(|h| h.live(start, now)) {
                    leases.touch(&def.name, now);
                    lacking = true;
                }
            }
        }
        lacking
    }

    /// The leases to ask for or renew: each shared budget a request needed within `recent_ms`, with
    /// this daemon's spend in its current period.
    pub fn lease_wants(&self, now: i64, recent_ms: i64) -> Vec<LeaseWant> {
        let state = self.state.lock().expect("budget lock");
        self.defs
            .iter()
            .enumerate()
            .filter_map(|(i, (def, _))| {
                let leases = self.shared(def)?;
                if !leases.demanded_since(&def.name, now - recent_ms) {
                    return None;
                }
                let start = def.period.start(now);
                let b = state.get(&(i, String::new())).copied().filter(|b| b.period_start == start).unwrap_or_default();
                let low = leases.get(&def.name).is_some_and(|h| {
                    h.runs_low(b.spent_micros + b.reserved_micros, b.spent_tokens + b.reserved_tokens)
                });
                Some(LeaseWant {
                    budget: def.name.clone(),
                    period_start: start,
                    used_micros: b.spent_micros,
                    used_tokens: b.spent_tokens,
                    low,
                })
            })
            .collect()
    }

    /// The shared budgets a request at `ts_ms` counted against (for its usage row).
    pub fn shared_names(&self, ts_ms: i64) -> Vec<String> {
        self.defs
            .iter()
            .filter(|(def, _)| {
                self.shared(def).is_some_and(|l| {
                    def.action != Action::Warn
                        || l.get(&def.name).is_some_and(|h| h.period_start == def.period.start(ts_ms))
                })
            })
            .map(|(def, _)| def.name.clone())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    pub fn configs(&self) -> impl Iterator<Item = (usize, &BudgetConfig)> {
        self.defs.iter().map(|(c, _)| c).enumerate()
    }

    /// Seeds the counters with what the ledger says was spent in each current period.
    pub fn load(&self, spent: Spent, now: i64) {
        let mut state = self.state.lock().expect("budget lock");
        for ((i, key), (micros, tokens)) in spent {
            let Some((def, _)) = self.defs.get(i) else { continue };
            let b = state.entry((i, key)).or_default();
            b.period_start = def.period.start(now);
            b.spent_micros = micros;
            b.spent_tokens = tokens;
        }
    }

    /// The scope value a request has for budget `def`, or `None` when the budget does not cover it.
    fn key_for(def: &BudgetConfig, matcher: &globset::GlobMatcher, facts: &Facts<'_>) -> Option<String> {
        match def.scope {
            BudgetScope::User | BudgetScope::Group | BudgetScope::Team => Some(String::new()),
            BudgetScope::Project => facts.project.filter(|p| matcher.is_match(p)).map(str::to_string),
            BudgetScope::Model => matcher.is_match(facts.target).then(|| facts.target.to_string()),
        }
    }

    /// Reserves the estimate against every budget the request falls under, or says which budget
    /// stops it. A `warn` budget never stops a request.
    pub fn reserve(self: &Arc<Self>, facts: &Facts<'_>, now: i64) -> Result<Reservation, Exceeded> {
        let mut state = self.state.lock().expect("budget lock");
        let mut held = Vec::new();
        let mut warnings = Vec::new();
        for (i, (def, matcher)) in self.defs.iter().enumerate() {
            let Some(key) = Self::key_for(def, matcher, facts) else { continue };
            let start = def.period.start(now);
            let b = state.entry((i, key.clone())).or_default();
            if b.period_start != start {
                // A new period: spend starts again (reservations in flight carry over).
                *b = Bucket {
                    period_start: start,
                    reserved_micros: b.reserved_micros,
                    reserved_tokens: b.reserved_tokens,
                    ..Default::default()
                };
            }
            let est_m = facts.micros.unwrap_or(0);
            let after_m = b.spent_micros + b.reserved_micros + est_m;
            let after_t = b.spent_tokens + b.reserved_tokens + facts.tokens;
            // A shared budget is spent within this daemon's lease: none without a live one.
            let shared = self.shared(def);
            let lease = shared.as_ref().and_then(|leases| {
                leases.touch(&def.name, now);
                leases.get(&def.name).filter(|h| h.live(start, now))
            });
            let (limit_m, limit_t, leased) = match &shared {
                Some(_) => (
                    def.limit_usd.map(|_| lease.and_then(|h| h.granted_micros).unwrap_or(0)),
                    def.limit_tokens.map(|_| lease.and_then(|h| h.granted_tokens).unwrap_or(0)),
                    Some(lease.is_some()),
                ),
                None => (def.limit_usd.map(|l| l.0), def.limit_tokens, None),
            };
            let over_money = limit_m.is_some_and(|l| after_m > l);
            let over_tokens = limit_t.is_some_and(|l| after_t > l);
            if over_money || over_tokens {
                let whose = match leased {
                    None => "",
                    Some(true) => " (this machine's lease of the team budget)",
                    Some(false) => " (no lease of the team budget: the team server has not granted one)",
                };
                let (spent, limit) = if over_money {
                    (
                        format!("${}", format_usd(b.spent_micros + b.reserved_micros)),
                        format!("${}{whose}", format_usd(limit_m.unwrap_or(0))),
                    )
                } else {
                    (
                        format!("{} tokens", b.spent_tokens + b.reserved_tokens),
                        format!("{} tokens{whose}", limit_t.unwrap_or(0)),
                    )
                };
                if let Some(leases) = &shared {
                    leases.wake();
                }
                let exceeded = Exceeded {
                    budget: def.name.clone(),
                    spent,
                    limit,
                    resets_at: def.period.next(now),
                    action: def.action,
                    downgrade_to: def.downgrade_to.clone(),
                };
                if def.action != Action::Warn {
                    drop(state);
                    // Undo what this call reserved so far.
                    drop(Reservation { budgets: Arc::clone(self), held, warnings: Vec::new() });
                    return Err(exceeded);
                }
                warnings.push(format!("{} exceeded", def.name));
            } else {
                if let (Some(leases), Some(h)) = (&shared, lease)
                    && h.runs_low(after_m, after_t)
                {
                    leases.wake();
                }
                let soft = |limit: i128, after: i128| after * 100 >= limit * def.soft_percent as i128;
                if def.limit_usd.is_some_and(|l| soft(l.0 as i128, after_m as i128))
                    || def.limit_tokens.is_some_and(|l| soft(l as i128, after_t as i128))
                {
                    warnings.push(format!("{} at {}%", def.name, def.soft_percent));
                }
            }
            b.reserved_micros += est_m;
            b.reserved_tokens += facts.tokens;
            held.push(((i, key), est_m, facts.tokens));
        }
        Ok(Reservation { budgets: Arc::clone(self), held, warnings })
    }

    fn apply(&self, held: &[(Key, Micros, u64)], f: impl Fn(&mut Bucket, Micros, u64)) {
        if held.is_empty() {
            return;
        }
        let mut state = self.state.lock().expect("budget lock");
        for (key, m, t) in held {
            if let Some(b) = state.get_mut(key) {
                f(b, *m, *t);
            }
        }
    }

    /// Every budget with a counter (the user budgets always), for `tollgate budget` and metrics.
    pub fn report(&self, now: i64) -> Vec<BudgetReport> {
        let state = self.state.lock().expect("budget lock");
        let mut out = Vec::new();
        for (i, (def, _)) in self.defs.iter().enumerate() {
            let mut keys: Vec<&String> = state.keys().filter(|(j, _)| *j == i).map(|(_, k)| k).collect();
            let empty = String::new();
            if matches!(def.scope, BudgetScope::User | BudgetScope::Group | BudgetScope::Team) && keys.is_empty() {
                keys.push(&empty);
            }
            keys.sort();
            for key in keys {
                let b = state.get(&(i, key.clone())).copied().unwrap_or_default();
                let current = b.period_start == def.period.start(now);
                let (m, t) = if current { (b.spent_micros, b.spent_tokens) } else { (0, 0) };
                out.push(BudgetReport {
                    name: def.name.clone(),
                    scope: def.scope,
                    key: key.clone(),
                    period: def.period,
                    spent_usd: format_usd(m),
                    limit_usd: def.limit_usd.map(|l| format_usd(l.0)),
                    spent_tokens: t,
                    limit_tokens: def.limit_tokens,
                    reserved_usd: format_usd(b.reserved_micros),
                    remaining_micros: def.limit_usd.map(|l| (l.0 - m - b.reserved_micros).max(0)),
                    remaining_tokens: def.limit_tokens.map(|l| l.saturating_sub(t + b.reserved_tokens)),
                    resets_at: utc::iso(def.period.next(now)),
                    action: def.action,
                    lease: self.shared(def).map(|leases| {
                        let start = def.period.start(now);
                        let held = leases.get(&def.name).filter(|h| h.period_start == start);
                        let live = held.filter(|h| h.live(start, now));
                        LeaseReport {
                            granted_usd: live.and_then(|h| h.granted_micros).map(format_usd),
                            granted_tokens: live.and_then(|h| h.granted_tokens),
                            until: live.map(|h| utc::iso(h.until_ms)),
                            team_left_usd: held.and_then(|h| h.team_left_micros).map(format_usd),
                            team_left_tokens: held.and_then(|h| h.team_left_tokens),
                            error: leases.last_error(),
                        }
                    }),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(action: Action, limit_usd: Option<Micros>, limit_tokens: Option<u64>) -> BudgetConfig {
        BudgetConfig {
            name: "b".into(),
            scope: BudgetScope::User,
            matches: "*".into(),
            period: Period::Day,
            limit_usd: limit_usd.map(Decimal),
            limit_tokens,
            soft_percent: 80,
            action,
            downgrade_to: Some("local".into()),
        }
    }

    fn me() -> crate::identity::Identity {
        crate::identity::Identity {
            username: "alice".into(),
            groups: vec!["acme/platform".into(), "acme/platform/infra".into()],
            source: "test".into(),
        }
    }

    #[test]
    fn user_and_group_budgets_apply_to_whom_they_match() {
        let with = |scope, matches: &str| BudgetConfig {
            scope,
            matches: matches.into(),
            ..budget(Action::Block, Some(1), None)
        };
        let applies = |b: BudgetConfig| !Budgets::new(&[b], &me(), None).is_empty();
        assert!(applies(with(BudgetScope::User, "*")));
        assert!(applies(with(BudgetScope::User, "alice")));
        assert!(!applies(with(BudgetScope::User, "bob")));
        assert!(applies(with(BudgetScope::Group, "acme/platform")));
        assert!(applies(with(BudgetScope::Group, "acme/*/infra")));
        assert!(!applies(with(BudgetScope::Group, "acme/ml")));
        // A group budget counts everything the member spends.
        let b = Arc::new(Budgets::new(&[with(BudgetScope::Group, "acme/platform")], &me(), None));
        assert!(b.reserve(&facts(2, 10), 0).is_err());
    }

    fn facts(micros: Micros, tokens: u64) -> Facts<'static> {
        Facts { project: Some("acme/web"), target: "openai/gpt-4.1", tokens, micros: Some(micros) }
    }

    #[test]
    fn reservations_count_until_settled_or_dropped() {
        let b = Arc::new(Budgets::new(&[budget(Action::Block, Some(100), None)], &me(), None));
        let r1 = b.reserve(&facts(60, 1), 0).unwrap();
        assert!(b.reserve(&facts(60, 1), 0).is_err(), "60 reserved + 60 > 100");
        drop(r1);
        let r2 = b.reserve(&facts(60, 1), 0).unwrap();
        r2.settle(Some(30), 10);
        let r3 = b.reserve(&facts(60, 1), 0).unwrap();
        assert!(r3.warnings.iter().any(|w| w.contains("80%")), "30 + 60 >= 80: {:?}", r3.warnings);
        let report = &b.report(0)[0];
        assert_eq!(report.spent_usd, "0.000030");
        assert_eq!(report.remaining_micros, Some(10));
    }

    #[test]
    fn the_error_names_the_budget_spend_limit_and_reset() {
        let b = Arc::new(Budgets::new(&[budget(Action::Block, None, Some(1000))], &me(), None));
        b.load(HashMap::from([((0, String::new()), (0, 990))]), 0);
        let e = b.reserve(&facts(0, 20), 5).err().unwrap();
        assert_eq!(
            e.to_string(),
            "budget \"b\" is spent (990 tokens of 1000 tokens); it resets at 1970-01-02T00:00:00Z"
        );
    }

    #[test]
    fn warn_budgets_never_stop_a_request_and_a_new_period_starts_from_zero() {
        let b = Arc::new(Budgets::new(&[budget(Action::Warn, Some(10), None)], &me(), None));
        let r = b.reserve(&facts(50, 1), 0).unwrap();
        assert!(r.warnings.iter().any(|w| w.contains("exceeded")));
        r.settle(Some(50), 1);
        assert!(b.reserve(&facts(5, 1), utc::DAY_MS + 1).unwrap().warnings.is_empty());
    }

    #[test]
    fn project_and_model_budgets_count_each_key_apart() {
        let mut p = budget(Action::Block, Some(100), None);
        p.scope = BudgetScope::Project;
        p.matches = "acme/*".into();
        let b = Arc::new(Budgets::new(&[p], &me(), None));
        b.reserve(&facts(90, 1), 0).unwrap().settle(Some(90), 1);
        assert!(b.reserve(&facts(20, 1), 0).is_err());
        let other = Facts { project: Some("acme/api"), target: "openai/gpt-4.1", tokens: 1, micros: Some(20) };
        assert!(b.reserve(&other, 0).is_ok());
        let outside = Facts { project: Some("oss/tool"), target: "openai/gpt-4.1", tokens: 1, micros: Some(500) };
        assert!(b.reserve(&outside, 0).is_ok());
    }

    #[test]
    fn a_shared_budget_is_spent_within_its_lease_and_only_wanted_while_requests_need_it() {
        use crate::team::lease::{Held, Leases};
        let mut team = budget(Action::Block, Some(1_000_000), None);
        team.scope = BudgetScope::Team;
        let leases = Arc::new(Leases::default());
        let b = Arc::new(Budgets::new(&[team], &me(), Some(Arc::clone(&leases))));
        let now = 1_000;
        // No lease: nothing that costs money passes, and the budget is marked as needed.
        assert!(b.lease_wants(now, 60_000).is_empty(), "not wanted before a request needs it");
        let e = b.reserve(&facts(10, 1), now).err().unwrap();
        assert!(e.limit.contains("no lease"), "{e}");
        assert!(b.lacks_lease(now));
        let want = &b.lease_wants(now, 60_000)[0];
        assert_eq!((want.budget.as_str(), want.used_micros, want.low), ("b", 0, false));
        // A lease of 100: the lease is the limit, not the budget's 1,000,000.
        let held = Held {
            period_start: 0,
            granted_micros: Some(100),
            granted_tokens: None,
            until_ms: 5_000,
            slice_micros: 100,
            slice_tokens: 0,
            team_left_micros: Some(900),
            team_left_tokens: None,
        };
        leases.set("b", held);
        assert!(!b.lacks_lease(now));
        b.reserve(&facts(60, 1), now).unwrap().settle(Some(60), 1);
        assert!(b.lease_wants(now, 60_000)[0].low, "40 of a 100 slice left is low");
        assert_eq!(b.lease_wants(now, 60_000)[0].used_micros, 60);
        let e = b.reserve(&facts(60, 1), now).err().unwrap();
        assert!(e.limit.contains("lease"), "{e}");
        let lease = b.report(now)[0].lease.clone().unwrap();
        assert_eq!(
            (lease.granted_usd.as_deref(), lease.team_left_usd.as_deref(), lease.until.is_some()),
            (Some("0.000100"), Some("0.000900"), true)
        );
        // After its end, none of it is spent.
        assert!(b.reserve(&facts(1, 1), 5_000).is_err());
        assert_eq!(b.report(5_000)[0].lease.as_ref().unwrap().granted_usd, None, "no live lease");
        // Idle past the window: no longer wanted, so the lease lapses.
        assert!(b.lease_wants(now + 120_000, 60_000).is_empty());
        // A user budget is never shared.
        let user = Arc::new(Budgets::new(&[budget(Action::Block, Some(100), None)], &me(), Some(leases)));
        assert!(!user.lacks_lease(now));
        assert!(user.reserve(&facts(60, 1), now).is_ok());
    }
}

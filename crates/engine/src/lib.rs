//! tollgate's engine: everything the gateway decides and keeps, without its doors. The HTTP API,
//! the local socket, the CLI and the daemon's process live in the `tollgate` crate, which calls in
//! here; nothing here serves HTTP or knows a command line (the crate has no server dependency).
//!
//! In the order a request meets it:
//!
//! - [`pipeline`]: the one path every request takes ([`pipeline::Gateway::handle`]): admit, route,
//!   mask, cache, try targets, call with retries, settle.
//! - [`route`]: aliases, fallback order, circuit breakers, local-only; [`ratelimit`]: per-caller,
//!   per-project and per-model limits.
//! - [`cache`], [`ledger`] (usage rows, [`ledger::prices`], [`ledger::budgets`]), [`stored`]
//!   (stored responses), [`callers`] (named tokens): the pipeline's records; [`store`] is the
//!   SQLite thread under them and [`seal`] encrypts what they keep of prompts and answers.
//! - [`keychain`]: provider credentials in the OS keychain, env fallback for CI.
//! - [`config`], [`paths`]: layered configuration with sources; where files live.
//! - [`policy`]: the team policy from GitLab, a git remote or a directory; [`runtime`]: what the
//!   config and policy decide, built whole and swapped whole; [`identity`], [`prompts`].
//! - [`tasks`], [`complete`], [`review`]: prompt tasks, inline completion and review over the
//!   pipeline ([`tasks::PromptRunner`]).
//! - [`telemetry`]: OpenTelemetry export (OTLP/HTTP) of spans and GenAI metrics, off by default.
//! - [`team`]: leases on budgets shared through a team server, and usage sent to it.
//! - [`git`], [`diff`]: the one git runner and the one unified-diff reader; [`metrics`]:
//!   Prometheus counters.

pub use tollgate_model as model;
pub use tollgate_model::utc;
pub use tollgate_protocol as protocol;
pub use tollgate_providers as providers;
pub use tollgate_providers::tokens;
pub use tollgate_redact as redact;
pub use tollgate_syntax as syntax;

pub mod cache;
pub mod callers;
pub mod complete;
pub mod config;
pub mod diff;
pub mod experiments;
pub mod git;
pub mod identity;
pub mod keychain;
pub mod ledger;
pub mod metrics;
pub mod paths;
pub mod pipeline;
pub mod policy;
pub mod prompts;
pub mod ratelimit;
pub mod review;
pub mod route;
pub mod runtime;
pub mod seal;
pub mod store;
pub mod stored;
pub mod tasks;
pub mod team;
pub mod telemetry;

//! tollgate: a local AI gateway. One daemon per user stands between every AI caller on the
//! machine (editors through LSP, git hooks, scripts, CI jobs) and every model, local or cloud.
//!
//! A tour of the crate, in the order a request meets it:
//!
//! - [`daemon`]: process start and shutdown, the single-instance lock, both listeners.
//! - [`ipc`]: the local socket (listener, and the client the CLI uses).
//! - [`api`]: the HTTP API (OpenAI- and Anthropic-compatible, native endpoints) and [`api::auth`].
//!   Entry points only translate wire formats into [`model`] and back.
//! - [`pipeline`]: the one function every request goes through ([`pipeline::Gateway::handle`]).
//! - [`route`]: aliases, fallback order, circuit breakers, local-only.
//! - [`providers`]: one file per provider wire format; shared HTTP, error classification, framing.
//! - [`ratelimit`], [`cache`], [`ledger`] (usage rows, [`ledger::prices`], [`ledger::budgets`]):
//!   the pipeline's steps around the provider call; [`store`] is the SQLite thread under them.
//! - [`tokens`]: token counts for estimates; [`metrics`]: Prometheus counters.
//! - [`keychain`]: provider credentials in the OS keychain, env fallback for CI.
//! - [`config`], [`paths`]: layered configuration with sources; where files live.
//! - [`policy`]: the team policy from GitLab, a git remote or a directory; [`runtime`]: what the
//!   config and policy decide, swapped whole on reload by [`reload`]; [`identity`], [`prompts`].
//! - [`seal`]: encryption at rest of what the store keeps of prompts and answers.
//! - [`git`], [`diff`]: the one git runner and the one unified-diff reader.
//! - [`cli`]: the `tollgate` command, a thin front door; [`commands`]: the bodies it dispatches to.

pub use tollgate_model as model;
pub use tollgate_model::utc;
pub use tollgate_protocol as protocol;
pub use tollgate_providers as providers;
pub use tollgate_providers::tokens;
pub use tollgate_redact as redact;

pub mod api;
pub mod cache;
pub mod callers;
pub mod cli;
pub mod commands;
pub mod complete;
pub mod config;
pub mod daemon;
pub mod diff;
pub mod doctor;
pub mod git;
pub mod hooks;
pub mod identity;
pub mod ipc;
pub mod keychain;
pub mod ledger;
pub mod lsp_bridge;
pub mod metrics;
pub mod paths;
pub mod pipeline;
pub mod policy;
pub mod prompts;
pub mod ratelimit;
pub mod reload;
pub mod reports;
pub mod review;
pub mod route;
pub mod runtime;
pub mod seal;
pub mod service;
pub mod store;
pub mod stored;
pub mod tasks;

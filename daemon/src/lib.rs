//! tollgate: a local AI gateway. One daemon per user stands between every AI caller on the
//! machine (editors through LSP, git hooks, scripts, CI jobs) and every model, local or cloud.
//!
//! This crate is the doors and the process; what the gateway decides and keeps is the engine
//! (crate `tollgate-engine`, its modules re-exported here by name):
//!
//! - [`daemon`]: process start and shutdown, the single-instance lock, both listeners;
//!   [`reload`]: config and policy changes applied to the running daemon.
//! - [`ipc`]: the local socket's listener and the CLI's one async runtime; the client is
//!   [`protocol::client::DaemonClient`].
//! - [`api`]: the HTTP API (OpenAI- and Anthropic-compatible, native endpoints) and [`api::auth`].
//!   Entry points only translate wire formats into [`model`] and back; status codes live here.
//! - [`cli`]: the `tollgate` command, a thin front door; [`commands`]: the bodies it dispatches to;
//!   [`reports`], [`doctor`], [`service`], [`hooks`]; [`lsp_bridge`]: the language server's
//!   assistant over the socket.

pub use tollgate_engine::{
    cache, callers, complete, config, diff, git, identity, keychain, ledger, metrics, model, paths, pipeline, policy,
    prompts, protocol, providers, ratelimit, redact, review, route, runtime, seal, store, stored, syntax, tasks, team,
    tokens, utc,
};

pub mod api;
pub mod cli;
pub mod commands;
pub mod daemon;
pub mod doctor;
pub mod hooks;
pub mod ipc;
pub mod lsp_bridge;
pub mod reload;
pub mod reports;
pub mod service;

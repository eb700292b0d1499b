//! `tollgate token [new NAME | list | revoke NAME]`: the main token, and named tokens, one per
//! tool, so that usage and budgets can tell the tools apart. A running daemon is asked over its
//! socket (it learns a new or revoked token at once); with none running, the database is changed
//! directly and the next daemon reads it at start.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use crate::callers::{self, TokenInfo};
use crate::paths::Paths;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token for one tool (claude-code, codex, aider, ...); it is printed this once.
    New {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// The named tokens in force, with when each was made and last used (never the tokens).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a named token: callers presenting it are refused from now on.
    Revoke { name: String },
}

/// Asks the running daemon over its socket (it learns a change at once); with none running, does
/// the same on the database directly.
fn ask<T: Send + 'static>(
    paths: &Paths,
    (method, path, body): (http::Method, String, Option<serde_json::Value>),
    from_reply: impl FnOnce(serde_json::Value) -> anyhow::Result<T>,
    on_db: impl FnOnce(&rusqlite::Connection) -> Result<T, callers::CallerError> + Send + 'static,
) -> anyhow::Result<T> {
    match crate::ipc::block_on(crate::ipc::daemon(paths).request(method, &path, body)) {
        Ok(reply) => from_reply(reply.decode()?),
        Err(crate::ipc::ClientError::NotRunning(_)) => {
            let store = crate::store::Store::open(&paths.database()).context("cannot open the database")?;
            Ok(crate::ipc::block_on(store.call_durable(on_db))??)
        }
        Err(e) => Err(e).context("cannot reach the daemon"),
    }
}

/// Makes a token named `name`; returns it (the only time it is seen).
pub fn make(paths: &Paths, name: &str) -> anyhow::Result<String> {
    let owned = name.to_string();
    ask(
        paths,
        (http::Method::POST, "/v1/admin/tokens".into(), Some(json!({"name": name}))),
        |v| Ok(v["token"].as_str().context("no token in the answer")?.to_string()),
        move |c| callers::create(c, &owned, crate::utc::now_ms()),
    )
}

/// The named tokens in force.
pub fn list(paths: &Paths) -> anyhow::Result<Vec<TokenInfo>> {
    ask(
        paths,
        (http::Method::GET, "/v1/admin/tokens".into(), None),
        |v| Ok(serde_json::from_value(v["tokens"].clone())?),
        callers::list,
    )
}

pub fn revoke(paths: &Paths, name: &str) -> anyhow::Result<()> {
    let owned = name.to_string();
    ask(
        paths,
        (http::Method::DELETE, format!("/v1/admin/tokens/{name}"), None),
        |_| Ok(()),
        move |c| callers::revoke(c, &owned, crate::utc::now_ms()),
    )
}

/// Revokes the token named `name` if there is one; whether there was.
pub fn revoke_if_present(paths: &Paths, name: &str) -> anyhow::Result<bool> {
    if !list(paths)?.iter().any(|t| t.name == name) {
        return Ok(false);
    }
    revoke(paths, name)?;
    Ok(true)
}

pub fn run(paths: &Paths, command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::New { name, json } => {
            let token = make(paths, &name)?;
            if json {
                println!("{}", json!({"name": name, "token": token}));
            } else {
                println!("{token}");
                eprintln!(
                    "token {name:?} made: give it to that tool alone (it is not shown again); `tollgate usage --by caller` shows its spend"
                );
            }
        }
        TokenCommand::List { json } => {
            let tokens = list(paths)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&json!({"tokens": tokens}))?);
            } else if tokens.is_empty() {
                println!("no named tokens (make one with `tollgate token new NAME`)");
            } else {
                println!("{:<24} {:<20} last used", "name", "made");
                for t in tokens {
                    let used = t.last_used_ms.map_or_else(|| "never".to_string(), crate::utc::iso);
                    println!("{:<24} {:<20} {used}", t.name, crate::utc::iso(t.created_ms));
                }
            }
        }
        TokenCommand::Revoke { name } => {
            revoke(paths, &name)?;
            println!("revoked {name:?}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

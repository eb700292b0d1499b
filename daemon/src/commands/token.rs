//! `tollgate token [new NAME | list | revoke NAME]`: the main token, and named tokens, one per
//! tool, so that usage and budgets can tell the tools apart. A running daemon is asked over its
//! socket (it learns a new or revoked token at once); with none running, the database is changed
//! directly and the next daemon reads it at start.

use std::process::ExitCode;

use anyhow::{Context, bail};
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

/// What a token command did, whichever way it was done.
enum Done {
    Made(String),
    Listed(Vec<TokenInfo>),
    Revoked,
}

/// Makes a named token (through the daemon when one runs); returns it.
pub fn make(paths: &Paths, name: &str) -> anyhow::Result<String> {
    match apply(paths, &TokenCommand::New { name: name.into(), json: false })? {
        Done::Made(token) => Ok(token),
        _ => unreachable!("a new token makes a token"),
    }
}

fn apply(paths: &Paths, command: &TokenCommand) -> anyhow::Result<Done> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (method, path, body) = match command {
        TokenCommand::New { name, .. } => {
            (http::Method::POST, "/v1/admin/tokens".to_string(), Some(json!({"name": name})))
        }
        TokenCommand::List { .. } => (http::Method::GET, "/v1/admin/tokens".to_string(), None),
        TokenCommand::Revoke { name } => (http::Method::DELETE, format!("/v1/admin/tokens/{name}"), None),
    };
    match rt.block_on(crate::ipc::request(&paths.socket, method, &path, body)) {
        Ok(reply) => {
            let v = reply.json();
            if !reply.status.is_success() {
                bail!("{}", v["error"]["message"].as_str().unwrap_or("the daemon refused"));
            }
            Ok(match command {
                TokenCommand::New { .. } => {
                    Done::Made(v["token"].as_str().context("no token in the answer")?.to_string())
                }
                TokenCommand::List { .. } => Done::Listed(serde_json::from_value(v["tokens"].clone())?),
                TokenCommand::Revoke { .. } => Done::Revoked,
            })
        }
        Err(crate::ipc::ClientError::NotRunning(_)) => {
            let store = crate::store::Store::open(&paths.database()).context("cannot open the database")?;
            let now = crate::utc::now_ms();
            let done = match command {
                TokenCommand::New { name, .. } => {
                    let name = name.clone();
                    rt.block_on(store.call_durable(move |c| callers::create(c, &name, now)))?.map(Done::Made)
                }
                TokenCommand::List { .. } => rt.block_on(store.read(callers::list))?.map(Done::Listed),
                TokenCommand::Revoke { name } => {
                    let name = name.clone();
                    rt.block_on(store.call_durable(move |c| callers::revoke(c, &name, now)))?.map(|()| Done::Revoked)
                }
            };
            Ok(done?)
        }
        Err(e) => Err(e).context("cannot reach the daemon"),
    }
}

pub fn run(paths: &Paths, command: TokenCommand) -> anyhow::Result<ExitCode> {
    let json = matches!(command, TokenCommand::New { json: true, .. } | TokenCommand::List { json: true });
    match (apply(paths, &command)?, &command) {
        (Done::Made(token), TokenCommand::New { name, .. }) => {
            if json {
                println!("{}", json!({"name": name, "token": token}));
            } else {
                println!("{token}");
                eprintln!(
                    "token {name:?} made: give it to that tool alone (it is not shown again); `tollgate usage --by caller` shows its spend"
                );
            }
        }
        (Done::Listed(tokens), _) => {
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
        (Done::Revoked, TokenCommand::Revoke { name }) => println!("revoked {name:?}"),
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Revokes the token named `name` if there is one; whether there was.
pub fn revoke_if_present(paths: &Paths, name: &str) -> anyhow::Result<bool> {
    let Done::Listed(tokens) = apply(paths, &TokenCommand::List { json: true })? else { unreachable!("a list lists") };
    if !tokens.iter().any(|t| t.name == name) {
        return Ok(false);
    }
    apply(paths, &TokenCommand::Revoke { name: name.into() })?;
    Ok(true)
}

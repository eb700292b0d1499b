//! `tollgate policy check|sync|status|schema`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use super::load_with_policy;
use crate::config::Overrides;
use crate::paths::Paths;
use crate::reload::PolicyStatus;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy checkout (policy.toml, rules/, prompts/); exit status 1 on any problem.
    /// This is what the policy repository's own CI runs.
    Check {
        /// The repository's root
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Ask the daemon to check the policy source now, and apply a new commit.
    Sync {
        #[arg(long)]
        json: bool,
    },
    /// Source, commit, age, the last error, and the local settings ignored under the policy.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of policy.toml (for editors: taplo, Even Better TOML).
    Schema,
}

pub fn run(command: PolicyCommand, config: Option<&PathBuf>, paths: &Paths) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Check { dir, json } => {
            let snap = crate::policy::read_dir(&dir, &dir.display().to_string())
                .with_context(|| format!("cannot read the policy in {}", dir.display()))?;
            let result = crate::policy::Policy::parse(&snap);
            let problems = result.as_ref().err().cloned().unwrap_or_default();
            if json {
                let out = serde_json::json!({"ok": problems.is_empty(), "files": snap.files.keys().collect::<Vec<_>>(), "problems": problems});
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else if problems.is_empty() {
                println!(
                    "{}: policy OK ({} files: {})",
                    dir.display(),
                    snap.files.len(),
                    snap.files.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            } else {
                for p in &problems {
                    println!(
                        "{}",
                        crate::policy::Problem { file: dir.join(&p.file).display().to_string(), ..p.clone() }
                    );
                }
                eprintln!(
                    "{} problem(s); the daemons keep their last good policy until they are fixed.",
                    problems.len()
                );
            }
            Ok(if problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        PolicyCommand::Schema => {
            println!("{}", crate::policy::schema());
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Sync { json } => {
            let reply = crate::ipc::block_on(crate::ipc::daemon(paths).sync_policy()).map_err(|e| match e {
                crate::ipc::ClientError::NotRunning(_) => anyhow::anyhow!(
                    "the daemon is not running (start it with `tollgate daemon`); it syncs the policy at start"
                ),
                e => e.into(),
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reply)?);
            } else if let Some(e) = &reply.error {
                println!("sync failed: {e}");
            } else {
                let commit = reply.status.commit.as_deref().unwrap_or("none");
                println!(
                    "{} {}",
                    if reply.changed { "applied" } else { "up to date:" },
                    &commit[..commit.len().min(12)]
                );
            }
            Ok(if reply.error.is_none() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        PolicyCommand::Status { json } => {
            let (status, daemon) = match crate::ipc::block_on(crate::ipc::daemon(paths).policy()) {
                Ok(status) => (status, None),
                Err(e) => {
                    // What a daemon started now would begin with: the saved policy.
                    let loaded = load_with_policy(config, paths, &Overrides::default())?;
                    let snap = crate::reload::saved_snapshot(paths, &loaded.config.policy.source);
                    let status = PolicyStatus {
                        source: loaded.config.policy.source.clone(),
                        commit: snap.as_ref().map(|s| s.commit.clone()),
                        fetched_at: snap.as_ref().map(|s| crate::utc::iso(s.fetched_ms)),
                        age_s: snap.as_ref().map(|s| (crate::utc::now_ms() - s.fetched_ms) / 1000),
                        ..Default::default()
                    };
                    (status, Some(format!("not running: {e}")))
                }
            };
            if json {
                let mut body = serde_json::to_value(&status)?;
                if let Some(d) = &daemon {
                    body["daemon"] = d.as_str().into();
                }
                println!("{}", serde_json::to_string_pretty(&body)?);
                return Ok(ExitCode::SUCCESS);
            }
            print!("{}", status_text(&status, daemon.as_deref()));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `tollgate policy status` as lines.
pub fn status_text(s: &PolicyStatus, daemon: Option<&str>) -> String {
    let mut out = String::new();
    if s.source.is_empty() {
        out.push_str("policy:   none (set policy.source in the config)\n");
        return out;
    }
    let commit = s.commit.as_deref().map_or("none yet".to_string(), |c| c[..c.len().min(12)].to_string());
    let age = s.age_s.map_or(String::new(), |a| format!(", synced {} ago", human_age(a)));
    out.push_str(&format!("policy:   {} @ {commit}{age}\n", s.source));
    if let Some(d) = daemon {
        out.push_str(&format!("daemon:   {d}\n"));
    }
    if let Some(e) = &s.last_error {
        out.push_str(&format!("error:    {e}\n"));
    }
    for p in &s.problems {
        out.push_str(&format!("  {p}\n"));
    }
    if let Some(e) = &s.config_error {
        out.push_str(&format!("config:   invalid, previous config in force: {e}\n"));
    }
    for i in &s.ignored {
        out.push_str(&format!(
            "ignored:  {}: local {} would loosen the policy's {} ({})\n",
            i.key, i.local, i.policy, i.reason
        ));
    }
    if let Some(n) = &s.next_check {
        out.push_str(&format!("next:     {n}\n"));
    }
    if let Some(id) = &s.identity {
        out.push_str(&format!("identity: {} ({}, {} groups)\n", id.username, id.source, id.groups.len()));
    }
    out
}

fn human_age(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

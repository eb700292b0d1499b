//! `tollgate status`: the daemon, its credentials, providers and policy, or what one started
//! from here would have.

use std::path::PathBuf;
use std::process::ExitCode;

use tollgate_protocol::status::ProviderStatus;

use super::load_with_policy;
use crate::config::{Loaded, Overrides};
use crate::keychain::{self, Keychain};
use crate::paths::Paths;

pub fn run(config: Option<&PathBuf>, paths: &Paths, json: bool) -> anyhow::Result<ExitCode> {
    // A broken config file must not hide what the daemon (still on its previous config) says.
    let (loaded, config_error) = match load_with_policy(config, paths, &Overrides::default()) {
        Ok(l) => (l, None),
        Err(e) => (Loaded::load(None, false, &Overrides::default())?, Some(format!("{e:#}"))),
    };
    let keychain = Keychain::open(loaded.config.keychain.backend);
    let daemon = crate::ipc::block_on(crate::ipc::daemon(paths).status());
    // The credentials that count are the running daemon's (its environment, its keychain), not
    // this shell's; without a daemon, what one started from here would have.
    let providers: Vec<ProviderStatus> = match &daemon {
        Ok(status) => status.providers.clone(),
        Err(_) => loaded
            .config
            .providers
            .iter()
            .map(|(name, p)| ProviderStatus {
                // What a daemon started here would report, less the address it alone shows.
                base_url: None,
                ..keychain::provider_status(name, p, keychain::key_origin(keychain.as_ref().ok(), name))
            })
            .collect(),
    };
    let port = std::fs::read_to_string(paths.port_file()).ok().and_then(|p| p.trim().parse::<u16>().ok());
    if json {
        let daemon = match &daemon {
            Ok(status) => serde_json::to_value(status)?,
            Err(e) => serde_json::json!({"running": false, "error": e.to_string()}),
        };
        let out = serde_json::json!({
            "config_file": loaded.file,
            "config_error": config_error,
            "keychain": keychain.as_ref().map(|k| k.backend_name()).map_err(|e| e.to_string()),
            "providers": providers,
            "daemon": daemon,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    match &daemon {
        Ok(d) => println!(
            "daemon:   running (pid {}, version {}, http://127.0.0.1:{}, up {}s)",
            d.pid,
            d.version,
            port.unwrap_or(d.port),
            d.uptime_s
        ),
        Err(e) => println!("daemon:   {e}"),
    }
    match &config_error {
        Some(e) => println!("config:   {e}"),
        None => println!(
            "config:   {}",
            loaded.file.as_ref().map_or_else(|| "embedded defaults".to_string(), |f| f.display().to_string())
        ),
    }
    match &keychain {
        Ok(k) => println!("keychain: {}", k.backend_name()),
        Err(e) => println!("keychain: unavailable: {e}"),
    }
    if let Ok(d) = &daemon {
        print!("{}", super::policy::status_text(&d.policy, None));
        if let Some(problem) = &d.database.problem {
            println!("database: does not keep writes, calls are refused: {problem}");
        }
    }
    println!(
        "providers:{}",
        if daemon.is_ok() { "" } else { " (as a daemon started from this shell would have them)" }
    );
    for p in &providers {
        println!("  {:<12} {:<10} {}", p.name, p.kind, p.credentials.as_str());
    }
    if let Some(d) = daemon.as_ref().ok().filter(|d| !d.health.is_empty()) {
        println!("targets:");
        for h in &d.health {
            println!("  {:<40} {:<13} ok {} / failed {}", h.target, h.state.as_str(), h.successes, h.failures);
        }
    }
    Ok(ExitCode::SUCCESS)
}

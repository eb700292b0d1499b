//! `tollgate status`: the daemon, its credentials, providers and policy, or what one started
//! from here would have.

use std::path::PathBuf;
use std::process::ExitCode;

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
    let mut providers = Vec::new();
    for (name, p) in &loaded.config.providers {
        let origin = keychain::key_origin(keychain.as_ref().ok(), name);
        let credentials = match origin {
            Some(o) => serde_json::to_value(o)?,
            None if p.is_local() => "not-needed".into(),
            None => "missing".into(),
        };
        providers
            .push(serde_json::json!({"name": name, "kind": p.kind, "local": p.is_local(), "credentials": credentials}));
    }
    let daemon = crate::ipc::block_on(crate::ipc::request(&paths.socket, http::Method::GET, "/v1/status", None));
    let daemon_json = match &daemon {
        Ok(reply) => reply.json(),
        Err(e) => serde_json::json!({"running": false, "error": e.to_string()}),
    };
    // The credentials that count are the running daemon's (its environment, its keychain), not
    // this shell's; without a daemon, what one started from here would have.
    if let Some(from_daemon) = daemon_json["providers"].as_array().filter(|_| daemon.is_ok()) {
        providers = from_daemon.clone();
    }
    let port = std::fs::read_to_string(paths.port_file()).ok().and_then(|p| p.trim().parse::<u16>().ok());
    if json {
        let out = serde_json::json!({
            "config_file": loaded.file,
            "config_error": config_error,
            "keychain": keychain.as_ref().map(|k| k.backend_name()).map_err(|e| e.to_string()),
            "providers": providers,
            "daemon": daemon_json,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    match &daemon {
        Ok(_) => println!(
            "daemon:   running (pid {}, version {}, http://127.0.0.1:{}, up {}s)",
            daemon_json["pid"],
            daemon_json["version"].as_str().unwrap_or("?"),
            port.map_or_else(|| daemon_json["port"].to_string(), |p| p.to_string()),
            daemon_json["uptime_s"]
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
    if daemon.is_ok() {
        let policy: crate::reload::Status = serde_json::from_value(daemon_json["policy"].clone()).unwrap_or_default();
        print!("{}", super::policy::status_text(&policy, None));
        if let Some(problem) = daemon_json["database"]["problem"].as_str() {
            println!("database: does not keep writes, calls are refused: {problem}");
        }
    }
    println!(
        "providers:{}",
        if daemon.is_ok() { "" } else { " (as a daemon started from this shell would have them)" }
    );
    for p in &providers {
        println!(
            "  {:<12} {:<10} {}",
            p["name"].as_str().unwrap_or(""),
            p["kind"].as_str().unwrap_or(""),
            p["credentials"].as_str().unwrap_or("")
        );
    }
    if let Some(health) = daemon_json["health"].as_array().filter(|h| !h.is_empty()) {
        println!("targets:");
        for h in health {
            println!(
                "  {:<40} {:<13} ok {} / failed {}",
                h["target"].as_str().unwrap_or(""),
                h["state"].as_str().unwrap_or(""),
                h["successes"],
                h["failures"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

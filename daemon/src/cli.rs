//! The `tollgate` command line: a thin front door. `daemon` runs the gateway; the other commands
//! are small clients of the keychain, the config, or the daemon over its local socket.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Loaded, Overrides};
use crate::keychain::{self, Keychain, Secret};
use crate::paths::{self, Paths};

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "A local AI gateway: one daemon between every AI caller on this machine and every model"
)]
pub struct Cli {
    /// Config file merged over the embedded defaults [default: config.toml in the config dir]
    #[arg(long, global = true, env = "TOLLGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway in the foreground (local socket, and HTTP on 127.0.0.1).
    Daemon {
        /// TCP port on 127.0.0.1 [default: 8788, or server.port]
        #[arg(long, env = "TOLLGATE_PORT")]
        port: Option<u16>,
    },
    /// Store a provider's API key in the OS keychain (prompted without echo, or read from stdin).
    Login {
        /// A provider name from the config (openai, anthropic, gemini, mistral, ...)
        provider: String,
        /// Read the key from standard input (implied when stdin is not a terminal)
        #[arg(long)]
        stdin: bool,
    },
    /// Remove a provider's API key from the OS keychain.
    Logout { provider: String },
    /// Which providers have credentials, and whether the daemon runs.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Print the bearer token that local HTTP callers present.
    Token,
    /// Print OPENAI_/ANTHROPIC_ base URL and key lines to eval in a shell.
    Env,
    /// Tokens and money spent: today, this week, this month, and a breakdown.
    Usage {
        /// today, week, month, a date (2026-11-01), a timestamp, or an age (7d, 12h)
        #[arg(long)]
        since: Option<String>,
        /// Group by model, project, task or provider
        #[arg(long, value_enum, default_value = "model")]
        by: GroupArg,
        #[arg(long)]
        json: bool,
    },
    /// Each budget: spent, limit, what is left and when it resets.
    Budget {
        #[arg(long)]
        json: bool,
    },
    /// Recent calls, or one call in full (with its prompt and answer if the audit log is on).
    Log {
        /// A request id (or its first characters)
        id: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Find secrets and personal data in files, stdin (-), or the lines a commit adds (--staged).
    /// Offline: no daemon, no network. Exit status 1 when anything is found.
    Scan {
        /// Files or directories; `-` reads standard input
        paths: Vec<PathBuf>,
        /// Scan only the lines added in the git index
        #[arg(long)]
        staged: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: ScanFormat,
    },
    /// Install or remove git hooks that call tollgate.
    Hooks {
        #[command(subcommand)]
        command: HooksCommand,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScanFormat {
    Text,
    Json,
    Sarif,
    Gitlab,
}

#[derive(Debug, Subcommand)]
pub enum HooksCommand {
    /// Install hooks in the repository of the current directory.
    Install {
        /// A pre-commit hook that runs `tollgate scan --staged`
        #[arg(long)]
        pre_commit: bool,
    },
    /// Remove tollgate's hooks (a hook they chained is put back).
    Uninstall {
        #[arg(long)]
        pre_commit: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum GroupArg {
    Model,
    Project,
    Task,
    Provider,
}

impl GroupArg {
    fn name(self) -> &'static str {
        match self {
            GroupArg::Model => "model",
            GroupArg::Project => "project",
            GroupArg::Task => "task",
            GroupArg::Provider => "provider",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective config and where each value came from.
    Show {
        #[arg(long)]
        json: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG").unwrap_or_else(|_| "tollgate=info,warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

fn load(cli_config: Option<&PathBuf>, paths: &Paths, overrides: &Overrides) -> anyhow::Result<Loaded> {
    let (file, required) = match cli_config {
        Some(f) => (f.clone(), true),
        None => (paths.config_file.clone(), false),
    };
    Ok(Loaded::load(Some(&file), required, overrides)?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let paths = Paths::resolve()?;
    match cli.command {
        Command::Daemon { port } => {
            let loaded = load(cli.config.as_ref(), &paths, &Overrides { port })?;
            runtime()?.block_on(crate::daemon::run(loaded, paths))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Login { provider, stdin } => {
            let loaded = load(cli.config.as_ref(), &paths, &Overrides::default())?;
            known_provider(&loaded, &provider)?;
            let key = read_key(&provider, stdin)?;
            let keychain = Keychain::open(loaded.config.keychain.backend)?;
            keychain.set(&provider, &key)?;
            println!("Stored the {provider} key in the {} keychain.", keychain.backend_name());
            notify_daemon(&paths);
            Ok(ExitCode::SUCCESS)
        }
        Command::Logout { provider } => {
            let loaded = load(cli.config.as_ref(), &paths, &Overrides::default())?;
            let keychain = Keychain::open(loaded.config.keychain.backend)?;
            if keychain.delete(&provider)? {
                println!("Removed the {provider} key from the {} keychain.", keychain.backend_name());
            } else {
                println!("The {} keychain had no key for {provider}.", keychain.backend_name());
            }
            notify_daemon(&paths);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => status(cli.config.as_ref(), &paths, json),
        Command::Token => {
            println!("{}", paths::load_or_create_token(&paths).context("cannot read or create the token file")?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Env => {
            let loaded = load(cli.config.as_ref(), &paths, &Overrides::default())?;
            let token = paths::load_or_create_token(&paths)?;
            let port = std::fs::read_to_string(paths.port_file())
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(loaded.config.server.port);
            let host = loaded.config.server.host;
            let base = if host.is_ipv6() { format!("http://[{host}]:{port}") } else { format!("http://{host}:{port}") };
            println!("export OPENAI_BASE_URL={base}/v1");
            println!("export OPENAI_API_KEY={token}");
            println!("export ANTHROPIC_BASE_URL={base}");
            println!("export ANTHROPIC_API_KEY={token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Usage { since, by, json } => {
            let loaded = load(cli.config.as_ref(), &paths, &Overrides::default())?;
            crate::reports::usage(&paths, &loaded, since.as_deref(), by.name(), json)
        }
        Command::Budget { json } => {
            let loaded = load(cli.config.as_ref(), &paths, &Overrides::default())?;
            crate::reports::budget(&paths, &loaded, json)
        }
        Command::Log { id, limit, json } => {
            let loaded = load(cli.config.as_ref(), &paths, &Overrides::default())?;
            crate::reports::log(&paths, &loaded, id.as_deref(), limit, json)
        }
        Command::Scan { paths, staged, format } => {
            let loaded = load(cli.config.as_ref(), &paths_of(&paths), &Overrides::default())?;
            scan(&loaded, &paths, staged, format)
        }
        Command::Hooks { command } => {
            let cwd = std::env::current_dir()?;
            let (install, pre_commit) = match command {
                HooksCommand::Install { pre_commit } => (true, pre_commit),
                HooksCommand::Uninstall { pre_commit } => (false, pre_commit),
            };
            anyhow::ensure!(pre_commit, "say which hook: --pre-commit");
            let hook = crate::hooks::Hook::PreCommit;
            let msg = if install { crate::hooks::install(&cwd, hook)? } else { crate::hooks::uninstall(&cwd, hook)? };
            println!("{msg}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Config { command: ConfigCommand::Show { json } } => {
            let loaded = load(cli.config.as_ref(), &paths, &Overrides::default())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&loaded.show_json())?);
            } else {
                print!("{}", loaded.show());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The paths scan uses for config: the usual ones (the scanned paths do not matter).
fn paths_of(_: &[PathBuf]) -> Paths {
    Paths::resolve().unwrap_or_else(|_| Paths::under(std::path::Path::new(".")))
}

fn scan(loaded: &Loaded, paths: &[PathBuf], staged: bool, format: ScanFormat) -> anyhow::Result<ExitCode> {
    use crate::redact::report;
    let started = crate::utc::now_ms();
    let scanner = crate::redact::load_scanner(&loaded.config.redaction)?;
    let mut findings = Vec::new();
    let mut skipped = Vec::new();
    if staged {
        let repo = std::env::current_dir()?;
        for (path, content, lines) in report::staged(&repo)? {
            findings.extend(report::scan_text(&scanner, &path, &content, &|l| lines.contains(&l)));
        }
    } else {
        let (stdin, files): (Vec<&PathBuf>, Vec<&PathBuf>) = paths.iter().partition(|p| p.as_os_str() == "-");
        if !stdin.is_empty() {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).context("cannot read standard input")?;
            findings.extend(report::scan_text(&scanner, "-", &buf, &|_| true));
        }
        let files: Vec<PathBuf> = files.into_iter().cloned().collect();
        let roots = if files.is_empty() && stdin.is_empty() { vec![PathBuf::from(".")] } else { files };
        let mut all = Vec::new();
        report::collect_files(&roots, &mut all)?;
        let (found, skip) = report::scan_files(&scanner, &all);
        findings.extend(found);
        skipped = skip;
    }
    for s in &skipped {
        eprintln!("skipped {s}");
    }
    match format {
        ScanFormat::Text => {
            print!("{}", report::text(&findings));
            if !findings.is_empty() {
                eprintln!(
                    "{} finding(s). Remove them, move them to the keychain or an environment variable, or mark a line that is not \
                     a secret with `tollgate:allow`.",
                    findings.len()
                );
            }
        }
        ScanFormat::Json => println!("{}", serde_json::to_string_pretty(&findings)?),
        ScanFormat::Sarif => println!("{}", serde_json::to_string_pretty(&report::sarif(&findings, &scanner))?),
        ScanFormat::Gitlab => {
            let (s, e) = (report::report_time(started), report::report_time(crate::utc::now_ms()));
            println!("{}", serde_json::to_string_pretty(&report::gitlab(&findings, &s, &e))?)
        }
    }
    Ok(if findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn known_provider(loaded: &Loaded, provider: &str) -> anyhow::Result<()> {
    if loaded.config.providers.contains_key(provider) {
        return Ok(());
    }
    let known: Vec<&str> = loaded.config.providers.keys().map(String::as_str).collect();
    anyhow::bail!("unknown provider {provider:?}; configured providers: {}", known.join(", "))
}

fn read_key(provider: &str, from_stdin: bool) -> anyhow::Result<Secret> {
    let key = if from_stdin || !std::io::stdin().is_terminal() {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("cannot read the key from stdin")?;
        s
    } else {
        rpassword::prompt_password(format!("API key for {provider} (input hidden): ")).context("cannot read the key")?
    };
    let key = key.trim().to_string();
    if key.is_empty() {
        anyhow::bail!("no key given; nothing was stored");
    }
    if key.chars().any(char::is_whitespace) {
        anyhow::bail!("the key contains whitespace; check what was pasted (nothing was stored)");
    }
    Ok(Secret::new(key))
}

/// Tells a running daemon to re-read credentials; no daemon is fine.
fn notify_daemon(paths: &Paths) {
    if let Ok(rt) = runtime() {
        let _ =
            rt.block_on(crate::ipc::request(&paths.socket, http::Method::POST, "/v1/admin/credentials/reload", None));
    }
}

fn status(config: Option<&PathBuf>, paths: &Paths, json: bool) -> anyhow::Result<ExitCode> {
    let loaded = load(config, paths, &Overrides::default())?;
    let keychain = Keychain::open(loaded.config.keychain.backend);
    let mut providers = Vec::new();
    for (name, p) in &loaded.config.providers {
        let origin = match &keychain {
            Ok(k) => k.get(name).ok().flatten().map(|(_, o)| o),
            Err(_) => std::env::var(keychain::env_var(name)).ok().map(|_| keychain::KeyOrigin::Environment),
        };
        let credentials = match origin {
            Some(o) => serde_json::to_value(o)?,
            None if p.is_local() => "not-needed".into(),
            None => "missing".into(),
        };
        providers
            .push(serde_json::json!({"name": name, "kind": p.kind, "local": p.is_local(), "credentials": credentials}));
    }
    let daemon = runtime()?.block_on(crate::ipc::request(&paths.socket, http::Method::GET, "/v1/status", None));
    let daemon_json = match &daemon {
        Ok(reply) => reply.json(),
        Err(e) => serde_json::json!({"running": false, "error": e.to_string()}),
    };
    if json {
        let out = serde_json::json!({
            "config_file": loaded.file,
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
            daemon_json["port"],
            daemon_json["uptime_s"]
        ),
        Err(e) => println!("daemon:   {e}"),
    }
    println!(
        "config:   {}",
        loaded.file.as_ref().map_or_else(|| "embedded defaults".to_string(), |f| f.display().to_string())
    );
    match &keychain {
        Ok(k) => println!("keychain: {}", k.backend_name()),
        Err(e) => println!("keychain: unavailable: {e}"),
    }
    println!("providers:");
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

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
    /// Print the bearer token that local HTTP callers present; or make, list and revoke named
    /// tokens, one per tool, so that usage and budgets can tell the tools apart.
    Token {
        #[command(subcommand)]
        command: Option<crate::commands::token::TokenCommand>,
    },
    /// Point a coding tool at tollgate in its own config file, with a token of its own
    /// (claude-code, codex, aider, opencode, continue, llm, goose, zed, copilot, cline, roo).
    Setup {
        #[arg(value_enum)]
        tool: crate::commands::setup::Tool,
        /// Show what would be written; change nothing
        #[arg(long)]
        print: bool,
        /// Remove what setup wrote and revoke the tool's token
        #[arg(long)]
        undo: bool,
    },
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
    /// The team policy: check a checkout, sync now, show what is in force.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Review a change with the model: findings on the changed lines, like compiler diagnostics.
    /// Exit status 1 when a finding reaches the blocking severity, 2 when the review failed.
    Review {
        /// A range: A..B, A...B (from their merge base), or A (A..HEAD) [default: the staged changes]
        range: Option<String>,
        /// The staged changes
        #[arg(long, conflicts_with_all = ["range", "mr"])]
        staged: bool,
        /// In a GitLab merge request pipeline: the merge request's change, with the gateway in
        /// this process (credentials from CI variables)
        #[arg(long, conflicts_with = "range")]
        mr: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: crate::commands::review::Format,
        /// Write the report to this file (the findings are still printed as text)
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Chunks reviewed at once
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Exit 1 at this severity or above [default: review.block_severity]
        #[arg(long, value_enum)]
        fail_on: Option<SeverityArg>,
        /// Run the gateway in this process even when a daemon runs
        #[arg(long)]
        in_process: bool,
        /// Post one merge request discussion per finding (updated, not duplicated, on a re-run;
        /// resolved when its finding is gone). Needs TOLLGATE_GITLAB_API_KEY with api scope.
        #[arg(long, requires = "mr")]
        post_discussions: bool,
    },
    /// Explain a file or some of its lines (FILE or FILE:10-40).
    Explain {
        target: String,
        #[arg(long)]
        json: bool,
    },
    /// Write unit tests for a file or some of its lines (FILE or FILE:10-40).
    Tests {
        target: String,
        #[arg(long)]
        json: bool,
    },
    /// Write documentation comments for a file or some of its lines (FILE or FILE:10-40).
    Docs {
        target: String,
        #[arg(long)]
        json: bool,
    },
    /// A commit message for the staged change.
    CommitMessage {
        #[arg(long)]
        json: bool,
    },
    /// The language server editors start (stdio): inline completion, explain, review. Starts the
    /// daemon when none runs.
    Lsp {
        /// Accepted for editors that pass it; stdio is the only transport
        #[arg(long, hide = true)]
        stdio: bool,
    },
    /// Run the daemon as a per-user service that starts at login (systemd, launchd, or a logon task).
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// Check what tollgate needs (daemon, keychain, keys, policy, local models, editors, hooks) and
    /// say how to fix what is wrong. Exit status 1 when a check fails.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
    /// Run by the pre-push hook: git's remote name and URL as arguments, the pushed refs on stdin.
    #[command(hide = true)]
    HookPrePush { remote: String, url: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write the unit for this user and enable it.
    Install {
        /// Write the unit only; print the commands that enable it
        #[arg(long)]
        no_start: bool,
    },
    /// Stop and remove the unit.
    Uninstall,
    /// Whether the unit is installed, and what the service manager says.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Print the unit for a platform, for packagers.
    Show {
        #[arg(long, value_enum)]
        platform: Option<crate::service::Platform>,
        /// The binary's path to put in the unit [default: this binary]
        #[arg(long)]
        exec: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SeverityArg {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl From<SeverityArg> for crate::config::Severity {
    fn from(s: SeverityArg) -> Self {
        use crate::config::Severity as S;
        match s {
            SeverityArg::Info => S::Info,
            SeverityArg::Low => S::Low,
            SeverityArg::Medium => S::Medium,
            SeverityArg::High => S::High,
            SeverityArg::Critical => S::Critical,
        }
    }
}

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
        /// A pre-push hook that reviews the pushed commits and blocks on serious findings
        #[arg(long)]
        pre_push: bool,
    },
    /// Remove tollgate's hooks (a hook they chained is put back).
    Uninstall {
        #[arg(long)]
        pre_commit: bool,
        #[arg(long)]
        pre_push: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum GroupArg {
    Model,
    Project,
    Task,
    Provider,
    Caller,
}

impl GroupArg {
    fn name(self) -> &'static str {
        match self {
            GroupArg::Model => "model",
            GroupArg::Project => "project",
            GroupArg::Task => "task",
            GroupArg::Provider => "provider",
            GroupArg::Caller => "caller",
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
    // A command whose reader goes away (`tollgate log --json | head`) ends quietly, as `cat` does,
    // instead of panicking on its next line of output. The daemon and the language server keep
    // SIGPIPE ignored: a peer that hangs up is an error they handle, not a reason to die.
    #[cfg(unix)]
    if !matches!(cli.command, Command::Daemon { .. } | Command::Lsp { .. }) {
        // SAFETY: restoring the default disposition of one signal, before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
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

/// The config file to read, and whether it must exist (it was named).
fn config_file(cli_config: Option<&PathBuf>, paths: &Paths) -> (PathBuf, bool) {
    match cli_config {
        Some(f) => (f.clone(), true),
        None => (paths.config_file.clone(), false),
    }
}

/// The config as a daemon would run it: under the last policy synced for its source, if any.
fn load_with_policy(cli_config: Option<&PathBuf>, paths: &Paths, overrides: &Overrides) -> anyhow::Result<Loaded> {
    let (file, required) = config_file(cli_config, paths);
    let mut loaded = Loaded::load_unchecked(Some(&file), required, overrides)?;
    match saved_policy(paths, &loaded) {
        Some(policy) => {
            for i in crate::policy::overlay::apply(&mut loaded, &policy)? {
                eprintln!("ignored: {i}");
            }
        }
        None => loaded.check()?,
    }
    Ok(loaded)
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let paths = Paths::resolve()?;
    // The effective config, as every command but the daemon reads it.
    let loaded = || load_with_policy(cli.config.as_ref(), &paths, &Overrides::default());
    match cli.command {
        Command::Daemon { port } => {
            let overrides = Overrides { port };
            let (file, required) = config_file(cli.config.as_ref(), &paths);
            // Checked under the policy when the daemon starts.
            let loaded = Loaded::load_unchecked(Some(&file), required, &overrides)?;
            let origin = crate::daemon::ConfigOrigin { file, required, overrides };
            crate::ipc::block_on(crate::daemon::run(loaded, paths, origin))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Login { provider, stdin } => {
            let loaded = loaded()?;
            known_provider(&loaded, &provider)?;
            let key = read_key(&provider, stdin)?;
            let keychain = Keychain::open(loaded.config.keychain.backend)?;
            keychain.set(&provider, &key)?;
            println!("Stored the {provider} key in the {} keychain.", keychain.backend_name());
            notify_daemon(&paths);
            Ok(ExitCode::SUCCESS)
        }
        Command::Logout { provider } => {
            let loaded = loaded()?;
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
        Command::Token { command: None } => {
            println!("{}", paths::load_or_create_token(&paths).context("cannot read or create the token file")?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { command: Some(command) } => crate::commands::token::run(&paths, command),
        Command::Setup { tool, print, undo } => {
            let loaded = loaded()?;
            crate::commands::setup::run(&paths, tool, print, undo, loaded.config.server.port)
        }
        Command::Env => {
            let loaded = loaded()?;
            // The address of the daemon that runs now, asked over its socket (in a directory of the
            // user's own): with none running, whatever holds the configured port (another user's
            // program, on a shared machine) would get the token and every prompt.
            let alive = crate::ipc::block_on(crate::ipc::request(&paths.socket, http::Method::GET, "/healthz", None))
                .is_ok_and(|r| r.status.is_success());
            let port = std::fs::read_to_string(paths.port_file()).ok().and_then(|p| p.trim().parse::<u16>().ok());
            let Some(port) = port.filter(|_| alive) else {
                eprintln!(
                    "error: no tollgate daemon is running, so there is no address to give: start it (`tollgate daemon`, \
                     or `tollgate service install` to keep it running), then run `tollgate env` again"
                );
                return Ok(ExitCode::from(1));
            };
            let token = paths::load_or_create_token(&paths)?;
            let host = loaded.config.server.host;
            let base = if host.is_ipv6() { format!("http://[{host}]:{port}") } else { format!("http://{host}:{port}") };
            println!("export OPENAI_BASE_URL={base}/v1");
            println!("export OPENAI_API_KEY={token}");
            println!("export ANTHROPIC_BASE_URL={base}");
            println!("export ANTHROPIC_API_KEY={token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Usage { since, by, json } => {
            let loaded = loaded()?;
            crate::reports::usage(&paths, &loaded, since.as_deref(), by.name(), json)
        }
        Command::Budget { json } => {
            let loaded = loaded()?;
            crate::reports::budget(&paths, &loaded, json)
        }
        Command::Log { id, limit, json } => {
            let loaded = loaded()?;
            crate::reports::log(&paths, &loaded, id.as_deref(), limit, json)
        }
        Command::Scan { paths: files, staged, format } => {
            // The policy's rules and allowlist apply to scans too.
            let loaded = loaded()?;
            let rules = saved_policy(&paths, &loaded).map(|p| p.rules).unwrap_or_default();
            scan(&loaded, &rules, &files, staged, format)
        }
        Command::Policy { command } => policy(command, cli.config.as_ref(), &paths),
        Command::Review { range, staged, mr, format, output, concurrency, fail_on, in_process, post_discussions } => {
            use crate::commands::review as command;
            use crate::review::Target;
            let target = match (range, staged, mr) {
                (_, _, true) => {
                    let base = std::env::var("CI_MERGE_REQUEST_DIFF_BASE_SHA").ok().filter(|v| !v.is_empty()).context(
                        "--mr reviews a merge request in its pipeline: CI_MERGE_REQUEST_DIFF_BASE_SHA is not set here (give a range instead)",
                    )?;
                    Target::Range(format!("{base}..HEAD"))
                }
                (Some(r), _, _) => Target::Range(r),
                (None, _, _) => Target::Staged,
            };
            let loaded = loaded()?;
            let args = command::ReviewArgs {
                target,
                format,
                output,
                concurrency,
                fail_on: fail_on.map(Into::into),
                in_process: in_process || mr,
                post_discussions,
            };
            crate::ipc::block_on(command::review(&paths, loaded, args))
        }
        Command::Explain { target, json } => {
            prompt_command(cli.config.as_ref(), &paths, "explain", Some(&target), json)
        }
        Command::Tests { target, json } => prompt_command(cli.config.as_ref(), &paths, "tests", Some(&target), json),
        Command::Docs { target, json } => prompt_command(cli.config.as_ref(), &paths, "docs", Some(&target), json),
        Command::CommitMessage { json } => prompt_command(cli.config.as_ref(), &paths, "commit-message", None, json),
        Command::Lsp { stdio: _ } => {
            let gateway = crate::lsp_gateway::SocketGateway::new(paths);
            crate::ipc::block_on(tollgate_lsp::server::serve_stdio(gateway));
            Ok(ExitCode::SUCCESS)
        }
        Command::Service { command } => match command {
            ServiceCommand::Install { no_start } => {
                println!("{}", crate::service::install(no_start)?);
                Ok(ExitCode::SUCCESS)
            }
            ServiceCommand::Uninstall => {
                println!("{}", crate::service::uninstall()?);
                Ok(ExitCode::SUCCESS)
            }
            ServiceCommand::Status { json } => {
                let st = crate::service::status();
                if json {
                    println!("{}", serde_json::to_string_pretty(&st)?);
                } else {
                    println!(
                        "service: {} ({}), {}",
                        if st.installed { "installed" } else { "not installed" },
                        st.unit.display(),
                        st.state.as_deref().unwrap_or("state unknown")
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            ServiceCommand::Show { platform, exec } => {
                let exe = match exec {
                    Some(e) => e,
                    None => std::env::current_exe()?,
                };
                print!("{}", crate::service::render(platform.unwrap_or_else(crate::service::Platform::current), &exe));
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Doctor { json } => {
            let loaded = loaded()?;
            let repo = std::env::current_dir()?;
            let checks = crate::ipc::block_on(crate::doctor::run(&paths, &loaded, &repo));
            if json {
                println!("{}", serde_json::to_string_pretty(&checks)?);
            } else {
                print!("{}", crate::doctor::text(&checks));
            }
            let failed = checks.iter().any(|c| c.outcome == crate::doctor::Outcome::Fail);
            Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "tollgate", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::HookPrePush { remote, url: _ } => {
            let loaded = loaded()?;
            crate::ipc::block_on(crate::commands::review::pre_push(&paths, loaded, &remote))
        }
        Command::Hooks { command } => {
            let cwd = std::env::current_dir()?;
            let (install, pre_commit, pre_push) = match command {
                HooksCommand::Install { pre_commit, pre_push } => (true, pre_commit, pre_push),
                HooksCommand::Uninstall { pre_commit, pre_push } => (false, pre_commit, pre_push),
            };
            anyhow::ensure!(pre_commit || pre_push, "say which hook: --pre-commit, --pre-push, or both");
            let hooks = [(pre_commit, crate::hooks::Hook::PreCommit), (pre_push, crate::hooks::Hook::PrePush)];
            for (_, hook) in hooks.into_iter().filter(|(on, _)| *on) {
                let msg =
                    if install { crate::hooks::install(&cwd, hook)? } else { crate::hooks::uninstall(&cwd, hook)? };
                println!("{msg}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config { command: ConfigCommand::Show { json } } => {
            let loaded = loaded()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&loaded.show_json())?);
            } else {
                print!("{}", loaded.show());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn prompt_command(
    config: Option<&PathBuf>,
    paths: &Paths,
    name: &str,
    target: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let loaded = load_with_policy(config, paths, &Overrides::default())?;
    crate::ipc::block_on(crate::commands::review::prompt(paths, loaded, name, target, json))
}

/// The last good policy synced for this config's source, if any.
fn saved_policy(paths: &Paths, loaded: &Loaded) -> Option<crate::policy::Policy> {
    crate::reload::saved_policy(paths, &loaded.config.policy.source)
}

fn policy(command: PolicyCommand, config: Option<&PathBuf>, paths: &Paths) -> anyhow::Result<ExitCode> {
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
            let reply = crate::ipc::block_on(crate::ipc::request(
                &paths.socket,
                http::Method::POST,
                "/v1/admin/policy/sync",
                None,
            ))
            .context("the daemon is not running (start it with `tollgate daemon`); it syncs the policy at start")?;
            let body = reply.json();
            if json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else if let Some(e) = body["error"].as_str() {
                println!("sync failed: {e}");
            } else {
                let commit = body["status"]["commit"].as_str().unwrap_or("none");
                let changed = body["changed"].as_bool().unwrap_or(false);
                println!("{} {}", if changed { "applied" } else { "up to date:" }, &commit[..commit.len().min(12)]);
            }
            Ok(if body["error"].is_null() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        PolicyCommand::Status { json } => {
            let daemon =
                crate::ipc::block_on(crate::ipc::request(&paths.socket, http::Method::GET, "/v1/policy", None));
            let body = match daemon {
                Ok(reply) => reply.json(),
                Err(e) => {
                    let loaded = load_with_policy(config, paths, &Overrides::default())?;
                    let snap = crate::reload::saved_snapshot(paths, &loaded.config.policy.source);
                    serde_json::json!({
                        "daemon": format!("not running: {e}"),
                        "source": loaded.config.policy.source,
                        "commit": snap.as_ref().map(|s| s.commit.clone()),
                        "fetched_at": snap.as_ref().map(|s| crate::utc::iso(s.fetched_ms)),
                        "age_s": snap.as_ref().map(|s| (crate::utc::now_ms() - s.fetched_ms) / 1000),
                    })
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&body)?);
                return Ok(ExitCode::SUCCESS);
            }
            print!("{}", policy_status_text(&body));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `tollgate policy status` as lines.
fn policy_status_text(s: &serde_json::Value) -> String {
    let mut out = String::new();
    let source = s["source"].as_str().unwrap_or("");
    if source.is_empty() {
        out.push_str("policy:   none (set policy.source in the config)\n");
        return out;
    }
    let commit = s["commit"].as_str().map_or("none yet".to_string(), |c| c[..c.len().min(12)].to_string());
    let age = s["age_s"].as_i64().map_or(String::new(), |a| format!(", synced {} ago", human_age(a)));
    out.push_str(&format!("policy:   {source} @ {commit}{age}\n"));
    if let Some(d) = s["daemon"].as_str() {
        out.push_str(&format!("daemon:   {d}\n"));
    }
    if let Some(e) = s["last_error"].as_str() {
        out.push_str(&format!("error:    {e}\n"));
    }
    for p in s["problems"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {}:{}:{}: {}\n",
            p["file"].as_str().unwrap_or(""),
            p["line"],
            p["column"],
            p["message"].as_str().unwrap_or("")
        ));
    }
    if let Some(e) = s["config_error"].as_str() {
        out.push_str(&format!("config:   invalid, previous config in force: {e}\n"));
    }
    for i in s["ignored"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "ignored:  {}: local {} would loosen the policy's {} ({})\n",
            i["key"].as_str().unwrap_or(""),
            i["local"].as_str().unwrap_or(""),
            i["policy"].as_str().unwrap_or(""),
            i["reason"].as_str().unwrap_or("")
        ));
    }
    if let Some(n) = s["next_check"].as_str() {
        out.push_str(&format!("next:     {n}\n"));
    }
    if let Some(id) = s["identity"].as_object() {
        let groups = id.get("groups").and_then(|g| g.as_array()).map_or(0, Vec::len);
        out.push_str(&format!(
            "identity: {} ({}, {groups} groups)\n",
            id.get("username").and_then(|u| u.as_str()).unwrap_or("?"),
            id.get("source").and_then(|u| u.as_str()).unwrap_or("?")
        ));
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

fn scan(
    loaded: &Loaded,
    rules: &[(String, String)],
    paths: &[PathBuf],
    staged: bool,
    format: ScanFormat,
) -> anyhow::Result<ExitCode> {
    use crate::redact::report;
    let started = crate::utc::now_ms();
    let scanner = crate::redact::load_scanner(&loaded.config.redaction, rules)?;
    let mut findings = Vec::new();
    let mut skipped = Vec::new();
    if staged {
        let repo = std::env::current_dir()?;
        for (path, content, lines) in crate::git::staged(&repo)? {
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
    // `gitlab` is the token that reads the policy and the user's identity from GitLab.
    if provider == "gitlab" || loaded.config.providers.contains_key(provider) {
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
    let _ = crate::ipc::block_on(crate::ipc::request(
        &paths.socket,
        http::Method::POST,
        "/v1/admin/credentials/reload",
        None,
    ));
}

fn status(config: Option<&PathBuf>, paths: &Paths, json: bool) -> anyhow::Result<ExitCode> {
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
        print!("{}", policy_status_text(&daemon_json["policy"]));
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

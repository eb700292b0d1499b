//! The `tollgate` command line: a thin front door. `daemon` runs the gateway; the other commands
//! are small clients of the keychain, the config, or the daemon over its local socket.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::commands::{config_file, load_with_policy, saved_policy};
use crate::config::{Loaded, Overrides};
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
    /// Run the team server: budget leases shared by every member's daemon, and the team's usage,
    /// stored in PostgreSQL. Daemons join with `[team] server = "https://..."` in the policy.
    TeamServer {
        /// PostgreSQL: postgres://USER@HOST:PORT/DATABASE (the password from PGPASSWORD or the URL)
        #[arg(long, env = "TOLLGATE_TEAM_DATABASE")]
        database: String,
        /// Address to listen on; plain HTTP only on a loopback address, TLS elsewhere
        #[arg(long, default_value = "127.0.0.1:8789")]
        listen: std::net::SocketAddr,
        /// A checkout of the team's policy repository (its budgets and [team] section; re-read
        /// every minute)
        #[arg(long)]
        policy: PathBuf,
        /// The GitLab instance whose tokens identify the daemons (https://gitlab.example.com)
        #[arg(long, env = "TOLLGATE_TEAM_GITLAB")]
        gitlab: String,
        /// PEM certificate chain for TLS
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key for TLS
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
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
        /// Group by model, project, task, provider, caller or arm (an experiment's); with --team by
        /// user, group, project, model, task, tool or arm [default: model, user with --team]
        #[arg(long, value_enum)]
        by: Option<GroupArg>,
        /// The whole team's usage from the team server (for the policy's team admins)
        #[arg(long)]
        team: bool,
        #[arg(long)]
        json: bool,
    },
    /// Open the dashboard in the browser: spend, tokens, cache, redactions, latency, budgets,
    /// policy, experiments and recent calls, through a one-time login link.
    Dashboard {
        /// Print the link instead of opening a browser (scripts, SSH sessions)
        #[arg(long)]
        print_url: bool,
        /// Seconds the link may wait to be opened (at most 600)
        #[arg(long, default_value_t = 60)]
        valid_for: u64,
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
        /// Look for secrets only, not personal data (for pre-commit hooks, where authors' emails and
        /// test fixtures would be noise)
        #[arg(long)]
        secrets_only: bool,
        /// Leave out values whose vendor checksum fails (GitHub, npm): made up, as in test fixtures
        #[arg(long)]
        skip_fakes: bool,
        /// List the kinds the rules find (with their category) and exit
        #[arg(long, conflicts_with_all = ["paths", "staged"])]
        kinds: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: crate::commands::scan::ScanFormat,
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
        command: crate::commands::policy::PolicyCommand,
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
pub enum HooksCommand {
    /// Install hooks in the repository of the current directory.
    Install {
        /// A pre-commit hook that runs `tollgate scan --staged --secrets-only`
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
    /// The experiment and its arm, to compare arms
    Arm,
    /// With --team
    User,
    /// With --team
    Group,
    /// With --team: the calling tool
    Tool,
}

impl GroupArg {
    fn name(self) -> &'static str {
        match self {
            GroupArg::Model => "model",
            GroupArg::Project => "project",
            GroupArg::Task => "task",
            GroupArg::Provider => "provider",
            GroupArg::Caller => "caller",
            GroupArg::Arm => "arm",
            GroupArg::User => "user",
            GroupArg::Group => "group",
            GroupArg::Tool => "tool",
        }
    }

    fn team(self) -> anyhow::Result<crate::protocol::team::TeamGroupBy> {
        use crate::protocol::team::TeamGroupBy as T;
        Ok(match self {
            GroupArg::User => T::User,
            GroupArg::Group => T::Group,
            GroupArg::Project => T::Project,
            GroupArg::Model => T::Model,
            GroupArg::Task => T::Task,
            GroupArg::Tool | GroupArg::Caller => T::Tool,
            GroupArg::Arm => T::Arm,
            GroupArg::Provider => anyhow::bail!("--team --by: user, group, project, model, task, tool or arm"),
        })
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
    if !matches!(cli.command, Command::Daemon { .. } | Command::Lsp { .. } | Command::TeamServer { .. }) {
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
        Command::TeamServer { database, listen, policy, gitlab, tls_cert, tls_key } => {
            let opts = tollgate_team::Options { database, listen, policy, gitlab, tls: tls_cert.zip(tls_key) };
            crate::ipc::block_on(tollgate_team::serve(opts, crate::daemon::shutdown_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Login { provider, stdin } => crate::commands::keys::login(&paths, &loaded()?, &provider, stdin),
        Command::Logout { provider } => crate::commands::keys::logout(&paths, &loaded()?, &provider),
        Command::Status { json } => crate::commands::status::run(cli.config.as_ref(), &paths, json),
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
            let alive = crate::ipc::block_on(crate::ipc::daemon(&paths).healthy());
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
        Command::Usage { since, by, team: true, json } => {
            let by = by.unwrap_or(GroupArg::User).team()?;
            crate::reports::team_usage(&paths, since.as_deref(), by, json)
        }
        Command::Usage { since, by, team: false, json } => {
            let by = by.unwrap_or(GroupArg::Model);
            if matches!(by, GroupArg::User | GroupArg::Group | GroupArg::Tool) {
                anyhow::bail!("--by {} is for the team's usage: add --team", by.name());
            }
            let loaded = loaded()?;
            crate::reports::usage(&paths, &loaded, since.as_deref(), by.name(), json)
        }
        Command::Dashboard { print_url, valid_for } => crate::reports::dashboard(&paths, print_url, valid_for),
        Command::Budget { json } => {
            let loaded = loaded()?;
            crate::reports::budget(&paths, &loaded, json)
        }
        Command::Log { id, limit, json } => {
            let loaded = loaded()?;
            crate::reports::log(&paths, &loaded, id.as_deref(), limit, json)
        }
        Command::Scan { paths: files, staged, secrets_only, skip_fakes, kinds, format } => {
            // The policy's rules and allowlist apply to scans too.
            let loaded = loaded()?;
            let rules = saved_policy(&paths, &loaded).map(|p| p.rules).unwrap_or_default();
            let what = crate::commands::scan::Scan { paths: &files, staged, secrets_only, skip_fakes, format };
            if kinds {
                return crate::commands::scan::kinds(&loaded, &rules, format);
            }
            crate::commands::scan::run(&loaded, &rules, &what)
        }
        Command::Policy { command } => crate::commands::policy::run(command, cli.config.as_ref(), &paths),
        Command::Review { range, staged, mr, format, output, concurrency, fail_on, in_process, post_discussions } => {
            use crate::commands::review as command;
            use crate::review::Changes;
            let changes = match (range, staged, mr) {
                (_, _, true) => {
                    let base = std::env::var("CI_MERGE_REQUEST_DIFF_BASE_SHA").ok().filter(|v| !v.is_empty()).context(
                        "--mr reviews a merge request in its pipeline: CI_MERGE_REQUEST_DIFF_BASE_SHA is not set here (give a range instead)",
                    )?;
                    Changes::Range(format!("{base}..HEAD"))
                }
                (Some(r), _, _) => Changes::Range(r),
                (None, _, _) => Changes::Staged,
            };
            let loaded = loaded()?;
            let args = command::ReviewArgs {
                changes,
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
            let gateway = crate::lsp_bridge::SocketAssistant::new(paths);
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

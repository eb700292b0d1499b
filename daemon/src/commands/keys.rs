//! `tollgate login|logout`: a provider's key into the OS keychain and out of it; a running
//! daemon is told to read its keys again.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::Context;

use crate::config::Loaded;
use crate::keychain::{Keychain, Secret};
use crate::paths::Paths;

/// Stores `provider`'s key, read from stdin or prompted for without echo.
pub fn login(paths: &Paths, loaded: &Loaded, provider: &str, stdin: bool) -> anyhow::Result<ExitCode> {
    known_provider(loaded, provider)?;
    let key = read_key(provider, stdin)?;
    let keychain = Keychain::open(loaded.config.keychain.backend)?;
    keychain.set(provider, &key)?;
    println!("Stored the {provider} key in the {} keychain.", keychain.backend_name());
    notify_daemon(paths);
    Ok(ExitCode::SUCCESS)
}

/// Removes `provider`'s key.
pub fn logout(paths: &Paths, loaded: &Loaded, provider: &str) -> anyhow::Result<ExitCode> {
    let keychain = Keychain::open(loaded.config.keychain.backend)?;
    if keychain.delete(provider)? {
        println!("Removed the {provider} key from the {} keychain.", keychain.backend_name());
    } else {
        println!("The {} keychain had no key for {provider}.", keychain.backend_name());
    }
    notify_daemon(paths);
    Ok(ExitCode::SUCCESS)
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
    let _ = crate::ipc::block_on(crate::ipc::daemon(paths).reload_credentials());
}

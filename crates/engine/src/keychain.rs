//! Provider credentials in the OS keychain (the `keyring` family of crates: Secret Service or the
//! kernel keyring on Linux, Keychain on macOS, Credential Manager on Windows), with one environment
//! variable per provider as the documented fallback for headless CI.
//!
//! Keys live in memory only as [`Secret`], whose Debug and Display never show the value.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keyring_core::{CredentialStore, Entry};

use serde::{Deserialize, Serialize};

/// `[keychain]`: which store keeps provider keys and the storage key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeychainConfig {
    pub backend: KeychainBackend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeychainBackend {
    Auto,
    SecretService,
    Keyutils,
    Env,
}

/// The keychain service name under which every provider key is stored (the account is the
/// provider's name).
pub const SERVICE: &str = "tollgate";

pub use crate::model::Secret;

#[derive(Debug, thiserror::Error)]
pub enum KeychainError {
    #[error("the {backend} keychain is not usable: {reason}. {hint}")]
    Unavailable { backend: &'static str, reason: String, hint: &'static str },
    #[error("the {backend} keychain failed to {action} the key for {provider}: {reason}")]
    Failed { backend: &'static str, action: &'static str, provider: String, reason: String },
    #[error("no keychain is in use (keychain.backend = \"env\"); set {var} instead")]
    EnvOnly { var: String },
}

/// Where a provider's key was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyOrigin {
    Keychain,
    Environment,
}

/// Where `provider`'s key would come from: the keychain (when it opened), else its environment
/// variable. For status reports; the key itself is not returned.
pub fn key_origin(keychain: Option<&Keychain>, provider: &str) -> Option<KeyOrigin> {
    match keychain {
        Some(k) => k.get(provider).ok().flatten().map(|(_, o)| o),
        None => std::env::var(env_var(provider)).ok().filter(|v| !v.is_empty()).map(|_| KeyOrigin::Environment),
    }
}

/// What a status report says of provider `name`: its kind, address (secrets in it masked), whether
/// it is local, and where its key was found (`origin`).
pub fn provider_status(
    name: &str,
    p: &crate::providers::ProviderConfig,
    origin: Option<KeyOrigin>,
) -> tollgate_protocol::status::ProviderStatus {
    use tollgate_protocol::Credentials;
    tollgate_protocol::status::ProviderStatus {
        name: name.to_string(),
        kind: p.kind.as_str().to_string(),
        base_url: Some(p.shown_base_url()),
        local: p.is_local(),
        enabled: p.enabled,
        credentials: match origin {
            Some(KeyOrigin::Keychain) => Credentials::Keychain,
            Some(KeyOrigin::Environment) => Credentials::Environment,
            None if p.is_local() => Credentials::NotNeeded,
            None => Credentials::Missing,
        },
    }
}

/// The environment variable that supplies `provider`'s key when the keychain has none.
pub fn env_var(provider: &str) -> String {
    let name: String =
        provider.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("TOLLGATE_{name}_API_KEY")
}

pub struct Keychain {
    name: &'static str,
    store: Option<Arc<CredentialStore>>,
}

impl std::fmt::Debug for Keychain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keychain").field("backend", &self.name).finish()
    }
}

impl Keychain {
    /// Opens the configured backend. Blocking: it may talk to D-Bus.
    pub fn open(backend: KeychainBackend) -> Result<Self, KeychainError> {
        match backend {
            KeychainBackend::Env => Ok(Self { name: "env", store: None }),
            KeychainBackend::Auto => platform::auto(),
            KeychainBackend::SecretService => platform::secret_service(),
            KeychainBackend::Keyutils => platform::keyutils(),
        }
    }

    pub fn backend_name(&self) -> &'static str {
        self.name
    }

    /// Whether a keychain is in use (every backend but `env`).
    pub fn holds_keys(&self) -> bool {
        self.store.is_some()
    }

    fn entry(&self, service: &str, account: &str) -> Result<Option<Entry>, KeychainError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        Entry::new_in_store(store, service, account).map(Some).map_err(|e| self.failed("open", account, e))
    }

    fn failed(&self, action: &'static str, account: &str, e: keyring_core::Error) -> KeychainError {
        KeychainError::Failed { backend: self.name, action, provider: account.to_string(), reason: e.to_string() }
    }

    /// Stores `secret` under `service`/`account`, replacing any previous one. A store that fails
    /// leaves nothing behind (a keychain may keep a key and then fail a later step).
    pub fn set_entry(&self, service: &str, account: &str, secret: &Secret) -> Result<(), KeychainError> {
        let Some(entry) = self.entry(service, account)? else {
            return Err(KeychainError::EnvOnly { var: env_var(account) });
        };
        entry.set_password(secret.expose()).map_err(|e| {
            let _ = entry.delete_credential();
            self.failed("store", account, e)
        })
    }

    /// Removes `service`/`account`; true when there was one.
    pub fn delete_entry(&self, service: &str, account: &str) -> Result<bool, KeychainError> {
        let Some(entry) = self.entry(service, account)? else {
            return Err(KeychainError::EnvOnly { var: env_var(account) });
        };
        match entry.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring_core::Error::NoEntry) => Ok(false),
            Err(e) => Err(self.failed("delete", account, e)),
        }
    }

    /// The value of `service`/`account` in the keychain, if there is one.
    pub fn get_entry(&self, service: &str, account: &str) -> Result<Option<Secret>, KeychainError> {
        let Some(entry) = self.entry(service, account)? else {
            return Ok(None);
        };
        match entry.get_password() {
            Ok(value) if !value.is_empty() => Ok(Some(Secret::new(value))),
            Ok(_) | Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(self.failed("read", account, e)),
        }
    }

    /// Stores `secret` for `provider`, replacing any previous one.
    pub fn set(&self, provider: &str, secret: &Secret) -> Result<(), KeychainError> {
        self.set_entry(SERVICE, provider, secret)
    }

    /// Removes `provider`'s key; true when there was one.
    pub fn delete(&self, provider: &str) -> Result<bool, KeychainError> {
        self.delete_entry(SERVICE, provider)
    }

    /// The key for `provider` from the keychain, or else from its environment variable.
    pub fn get(&self, provider: &str) -> Result<Option<(Secret, KeyOrigin)>, KeychainError> {
        if let Some(secret) = self.get_entry(SERVICE, provider)? {
            return Ok(Some((secret, KeyOrigin::Keychain)));
        }
        Ok(std::env::var(env_var(provider))
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| (Secret::new(v), KeyOrigin::Environment)))
    }

    /// Stores, reads back and removes a probe entry: whether this keychain can keep a key here,
    /// which opening it does not tell (the kernel keyring opens, then refuses keys in a session
    /// without a keyring of its own).
    pub fn probe(&self) -> Result<(), KeychainError> {
        if self.store.is_none() {
            return Ok(());
        }
        const ACCOUNT: &str = "doctor-probe";
        let value = Secret::new(crate::model::new_id("probe-"));
        self.set_entry(SERVICE_PROBE, ACCOUNT, &value)?;
        let read = self.get_entry(SERVICE_PROBE, ACCOUNT);
        self.delete_entry(SERVICE_PROBE, ACCOUNT)?;
        match read? {
            Some(v) if v == value => Ok(()),
            _ => Err(KeychainError::Failed {
                backend: self.name,
                action: "read back",
                provider: ACCOUNT.into(),
                reason: "the key stored a moment ago is not there".into(),
            }),
        }
    }
}

/// The service of [`Keychain::probe`]'s entry.
const SERVICE_PROBE: &str = "tollgate-probe";

#[cfg(target_os = "linux")]
mod platform {
    use super::*;

    const KEYUTILS_HINT: &str = "Run tollgate (login and daemon) inside one `keyctl session` (a login with pam_keyinit \
        makes one), or use keychain.backend = \"secret-service\", or \"env\" with TOLLGATE_<PROVIDER>_API_KEY";

    /// The description of this process's session keyring (`_ses` under a login that made one,
    /// `_uid_ses.<uid>` when the process has none and the kernel lends the user's default).
    fn session_keyring() -> Option<String> {
        const KEYCTL_DESCRIBE: libc::c_long = 6;
        const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
        let mut text = vec![0u8; 512];
        // SAFETY: keyctl(2) writes at most `text.len()` bytes into `text`.
        let len = unsafe {
            libc::syscall(libc::SYS_keyctl, KEYCTL_DESCRIBE, KEY_SPEC_SESSION_KEYRING, text.as_mut_ptr(), text.len())
        };
        if len <= 0 {
            return None;
        }
        // "type;uid;gid;perm;description\0"
        let text = String::from_utf8_lossy(&text[..(len as usize - 1).min(text.len())]).into_owned();
        text.splitn(5, ';').nth(4).map(str::to_string)
    }

    const SS_HINT: &str =
        "Start a Secret Service (gnome-keyring, KeePassXC) in this session, or set keychain.backend = \"keyutils\"";

    pub fn auto() -> Result<Keychain, KeychainError> {
        if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
            && let Ok(k) = secret_service()
        {
            return Ok(k);
        }
        keyutils()
    }

    pub fn secret_service() -> Result<Keychain, KeychainError> {
        let store = zbus_secret_service_keyring_store::Store::new().map_err(|e| KeychainError::Unavailable {
            backend: "secret-service",
            reason: e.to_string(),
            hint: SS_HINT,
        })?;
        Ok(Keychain { name: "secret-service", store: Some(store) })
    }

    pub fn keyutils() -> Result<Keychain, KeychainError> {
        // In the user's default session keyring the kernel keyring store adds a key, is refused
        // linking it to the persistent keyring, and cannot find it again to remove it: refused
        // here, before any key is written.
        if let Some(name) = session_keyring().filter(|n| n.starts_with("_uid_ses.")) {
            return Err(KeychainError::Unavailable {
                backend: "keyutils",
                reason: format!("this process has no session keyring of its own (only the user's default, {name})"),
                hint: KEYUTILS_HINT,
            });
        }
        let store = linux_keyutils_keyring_store::Store::new().map_err(|e| KeychainError::Unavailable {
            backend: "keyutils",
            reason: e.to_string(),
            hint: "Use keychain.backend = \"env\" and the TOLLGATE_<PROVIDER>_API_KEY variables",
        })?;
        Ok(Keychain { name: "keyutils", store: Some(store) })
    }
}

#[cfg(target_os = "macos")]
mod platform {
    use super::*;
    pub fn auto() -> Result<Keychain, KeychainError> {
        let store = apple_native_keyring_store::keychain::Store::new().map_err(|e| KeychainError::Unavailable {
            backend: "keychain",
            reason: e.to_string(),
            hint: "Unlock the login keychain",
        })?;
        Ok(Keychain { name: "keychain", store: Some(store) })
    }
    pub fn secret_service() -> Result<Keychain, KeychainError> {
        Err(KeychainError::Unavailable {
            backend: "secret-service",
            reason: "not on macOS".into(),
            hint: "Use keychain.backend = \"auto\"",
        })
    }
    pub fn keyutils() -> Result<Keychain, KeychainError> {
        Err(KeychainError::Unavailable {
            backend: "keyutils",
            reason: "not on macOS".into(),
            hint: "Use keychain.backend = \"auto\"",
        })
    }
}

#[cfg(windows)]
mod platform {
    use super::*;
    pub fn auto() -> Result<Keychain, KeychainError> {
        let store = windows_native_keyring_store::Store::new().map_err(|e| KeychainError::Unavailable {
            backend: "credential-manager",
            reason: e.to_string(),
            hint: "Check that the Credential Manager service runs",
        })?;
        Ok(Keychain { name: "credential-manager", store: Some(store) })
    }
    pub fn secret_service() -> Result<Keychain, KeychainError> {
        Err(KeychainError::Unavailable {
            backend: "secret-service",
            reason: "not on Windows".into(),
            hint: "Use keychain.backend = \"auto\"",
        })
    }
    pub fn keyutils() -> Result<Keychain, KeychainError> {
        Err(KeychainError::Unavailable {
            backend: "keyutils",
            reason: "not on Windows".into(),
            hint: "Use keychain.backend = \"auto\"",
        })
    }
}

/// The daemon's view of credentials: the keychain behind a cache, so that a request costs no
/// D-Bus round trip. `tollgate login`/`logout` tell the daemon to forget the cache.
pub struct Credentials {
    keychain: Result<Arc<Keychain>, String>,
    cache: Mutex<HashMap<String, Option<(Secret, KeyOrigin)>>>,
}

impl Credentials {
    pub fn new(keychain: Result<Keychain, KeychainError>) -> Self {
        Self { keychain: keychain.map(Arc::new).map_err(|e| e.to_string()), cache: Mutex::default() }
    }

    pub fn backend_name(&self) -> &'static str {
        self.keychain.as_ref().map_or("none", |k| k.backend_name())
    }

    pub fn backend_error(&self) -> Option<&str> {
        self.keychain.as_ref().err().map(String::as_str)
    }

    /// The key for `provider`, read on a blocking thread the first time.
    pub async fn get(&self, provider: &str) -> Option<(Secret, KeyOrigin)> {
        if let Some(hit) = self.cache.lock().expect("credential cache lock").get(provider) {
            return hit.clone();
        }
        let found = match &self.keychain {
            Ok(k) => {
                let k = Arc::clone(k);
                let p = provider.to_string();
                match tokio::task::spawn_blocking(move || k.get(&p)).await {
                    Ok(Ok(found)) => found,
                    // Not cached: the next request asks the keychain again (it may be locked now).
                    Ok(Err(e)) => {
                        tracing::warn!(provider, error = %e, "keychain read failed");
                        return None;
                    }
                    Err(_) => return None,
                }
            }
            Err(_) => std::env::var(env_var(provider))
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| (Secret::new(v), KeyOrigin::Environment)),
        };
        self.cache.lock().expect("credential cache lock").insert(provider.to_string(), found.clone());
        found
    }

    pub fn forget(&self) {
        self.cache.lock().expect("credential cache lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_their_value() {
        let s = Secret::new("sk-test-abcdefghijklmnop".into());
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
    }

    #[test]
    fn env_var_names_are_shell_safe() {
        assert_eq!(env_var("openai"), "TOLLGATE_OPENAI_API_KEY");
        assert_eq!(env_var("azure-east.1"), "TOLLGATE_AZURE_EAST_1_API_KEY");
    }
}

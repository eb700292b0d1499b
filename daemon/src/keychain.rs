//! Provider credentials in the OS keychain (the `keyring` family of crates: Secret Service or the
//! kernel keyring on Linux, Keychain on macOS, Credential Manager on Windows), with one environment
//! variable per provider as the documented fallback for headless CI.
//!
//! Keys live in memory only as [`Secret`], whose Debug and Display never show the value.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keyring_core::{CredentialStore, Entry};

use crate::config::KeychainBackend;

/// The keychain service name under which every provider key is stored (the account is the
/// provider's name).
pub const SERVICE: &str = "tollgate";

/// A credential. Its value is shown by nothing but [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

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

    fn entry(&self, provider: &str) -> Result<Option<Entry>, KeychainError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        Entry::new_in_store(store, SERVICE, provider).map(Some).map_err(|e| self.failed("open", provider, e))
    }

    fn failed(&self, action: &'static str, provider: &str, e: keyring_core::Error) -> KeychainError {
        KeychainError::Failed { backend: self.name, action, provider: provider.to_string(), reason: e.to_string() }
    }

    /// Stores `secret` for `provider`, replacing any previous one.
    pub fn set(&self, provider: &str, secret: &Secret) -> Result<(), KeychainError> {
        match self.entry(provider)? {
            Some(entry) => entry.set_password(secret.expose()).map_err(|e| self.failed("store", provider, e)),
            None => Err(KeychainError::EnvOnly { var: env_var(provider) }),
        }
    }

    /// Removes `provider`'s key; true when there was one.
    pub fn delete(&self, provider: &str) -> Result<bool, KeychainError> {
        match self.entry(provider)? {
            Some(entry) => match entry.delete_credential() {
                Ok(()) => Ok(true),
                Err(keyring_core::Error::NoEntry) => Ok(false),
                Err(e) => Err(self.failed("delete", provider, e)),
            },
            None => Err(KeychainError::EnvOnly { var: env_var(provider) }),
        }
    }

    /// The key for `provider` from the keychain, or else from its environment variable.
    pub fn get(&self, provider: &str) -> Result<Option<(Secret, KeyOrigin)>, KeychainError> {
        if let Some(entry) = self.entry(provider)? {
            match entry.get_password() {
                Ok(value) if !value.is_empty() => {
                    return Ok(Some((Secret(value), KeyOrigin::Keychain)));
                }
                Ok(_) | Err(keyring_core::Error::NoEntry) => {}
                Err(e) => return Err(self.failed("read", provider, e)),
            }
        }
        Ok(std::env::var(env_var(provider)).ok().filter(|v| !v.is_empty()).map(|v| (Secret(v), KeyOrigin::Environment)))
    }
}

#[cfg(target_os = "linux")]
mod platform {
    use super::*;

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
                .map(|v| (Secret(v), KeyOrigin::Environment)),
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

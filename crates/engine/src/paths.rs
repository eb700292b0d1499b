//! Where tollgate keeps its files. `TOLLGATE_HOME` puts everything under one directory (tests,
//! isolated daemons); otherwise the platform's conventions from the `directories` crate.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Paths {
    /// The config file looked for when none is named.
    pub config_file: PathBuf,
    /// Database, token, lock file, logs.
    pub data_dir: PathBuf,
    /// The daemon's local socket (a path on Unix; a pipe name on Windows).
    pub socket: PathBuf,
}

impl Paths {
    pub fn resolve() -> anyhow::Result<Self> {
        if let Some(home) = std::env::var_os("TOLLGATE_HOME").filter(|h| !h.is_empty()) {
            return Ok(Self::under(Path::new(&home)));
        }
        let dirs = directories::ProjectDirs::from("dev", "tollgate", "tollgate").ok_or_else(|| {
            anyhow::anyhow!("cannot find the home directory; set TOLLGATE_HOME to a directory for tollgate's state")
        })?;
        let data_dir = dirs.data_dir().to_path_buf();
        let socket = match dirs.runtime_dir() {
            Some(run) => run.join("tollgate.sock"),
            None => data_dir.join("tollgate.sock"),
        };
        Ok(Self { config_file: dirs.config_dir().join("config.toml"), data_dir, socket })
    }

    pub fn under(home: &Path) -> Self {
        Self { config_file: home.join("config.toml"), data_dir: home.to_path_buf(), socket: home.join("tollgate.sock") }
    }

    pub fn token_file(&self) -> PathBuf {
        self.data_dir.join("token")
    }

    /// The SQLite database: ledger, cache, audit log.
    pub fn database(&self) -> PathBuf {
        self.data_dir.join("tollgate.db")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.data_dir.join("daemon.lock")
    }

    /// The TCP port a running daemon listens on, written at start so that clients find it.
    pub fn port_file(&self) -> PathBuf {
        self.data_dir.join("daemon.port")
    }

    /// The last good policy snapshot, the identity read from GitLab, the git fetch cache.
    pub fn policy_dir(&self) -> PathBuf {
        self.data_dir.join("policy")
    }

    /// Creates the data dir (and the socket's dir) readable by the user alone.
    pub fn ensure_dirs(&self) -> std::io::Result<()> {
        create_private_dir(&self.data_dir)?;
        if let Some(parent) = self.socket.parent() {
            create_private_dir(parent)?;
        }
        Ok(())
    }
}

/// Creates `dir` and its parents; the leaf gets mode 0700 on Unix.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

/// Writes `contents` to a new file that only the user can read (0600 on Unix), replacing any
/// file of that name atomically.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = fs::remove_file(&tmp);
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

/// The local bearer token that TCP callers present. Generated on first use, kept in a file
/// readable by the user alone.
pub fn load_or_create_token(paths: &Paths) -> std::io::Result<String> {
    let path = paths.token_file();
    match fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 32 => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    paths.ensure_dirs()?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let token: String = std::iter::once("tg-".to_string()).chain(bytes.iter().map(|b| format!("{b:02x}"))).collect();
    write_private_file(&path, token.as_bytes())?;
    Ok(token)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_token_is_created_once_and_readable_by_the_user_alone() {
        let home = std::env::temp_dir().join(crate::model::new_id("tollgate-paths-"));
        let paths = Paths::under(&home);
        let t1 = load_or_create_token(&paths).unwrap();
        let t2 = load_or_create_token(&paths).unwrap();
        assert_eq!(t1, t2);
        assert!(t1.starts_with("tg-") && t1.len() == 67);
        let mode = fs::metadata(paths.token_file()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(&home).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        fs::remove_dir_all(home).unwrap();
    }
}

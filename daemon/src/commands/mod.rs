//! Command bodies, one file per command: `cli` parses and dispatches, these do the work.

pub mod keys;
pub mod policy;
pub mod review;
pub mod scan;
pub mod setup;
pub mod status;
pub mod token;

use std::path::PathBuf;

use crate::config::{Loaded, Overrides};
use crate::paths::Paths;

/// The config file to read, and whether it must exist (it was named).
pub fn config_file(cli_config: Option<&PathBuf>, paths: &Paths) -> (PathBuf, bool) {
    match cli_config {
        Some(f) => (f.clone(), true),
        None => (paths.config_file.clone(), false),
    }
}

/// The config as a daemon would run it: under the last policy synced for its source, if any.
pub fn load_with_policy(cli_config: Option<&PathBuf>, paths: &Paths, overrides: &Overrides) -> anyhow::Result<Loaded> {
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

/// The last good policy synced for this config's source, if any.
pub fn saved_policy(paths: &Paths, loaded: &Loaded) -> Option<crate::policy::Policy> {
    crate::reload::saved_policy(paths, &loaded.config.policy.source)
}

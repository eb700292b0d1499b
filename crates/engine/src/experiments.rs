//! Experiments' arms: which arm of an experiment (a route's `split`, a prompt's versions) each
//! user is given, and keeping it.
//!
//! A user new to an experiment is drawn by weight from a hash of the experiment and the user
//! ([`crate::route::pick_arm`]), among the arms not already past their share of the users this
//! daemon has given arms to. On a personal daemon (one user) that is the hash alone, the same on
//! every machine; on a daemon that serves many users (named by `x-tollgate-user`, a CI runner's
//! daemon) the arms stay within one user of their weights. The arm is kept (by a SHA-256 of the
//! user, never the name) so a user keeps it across restarts and weight changes; changing the
//! weights only steers users new to the experiment.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use rusqlite::params;
use sha2::Digest;

use crate::store::Store;

type UserKey = [u8; 32];

/// Users' arms held at most (memory and rows): beyond it, a new user is drawn by hash alone and
/// not kept (still the same arm each time while the weights stay), so names a caller makes up
/// cannot grow the daemon.
const MAX_KEPT: usize = 100_000;

#[derive(Default)]
struct Given {
    /// (experiment, user) -> arm.
    arms: HashMap<(String, UserKey), String>,
    /// (experiment, arm) -> users given it.
    users: HashMap<(String, String), u64>,
}

impl Given {
    /// Gives `user` `arm`, in place of an arm given before (one taken out of the split).
    fn add(&mut self, experiment: &str, user: UserKey, arm: &str) {
        if let Some(old) = self.arms.insert((experiment.to_string(), user), arm.to_string())
            && let Some(n) = self.users.get_mut(&(experiment.to_string(), old))
        {
            *n = n.saturating_sub(1);
        }
        *self.users.entry((experiment.to_string(), arm.to_string())).or_default() += 1;
    }
}

pub struct Experiments {
    store: Store,
    given: Mutex<Given>,
    cap: usize,
}

impl Experiments {
    /// The arms given so far, from the database.
    pub async fn load(store: &Store) -> Self {
        let rows = store
            .run(|c| -> rusqlite::Result<Vec<(String, Vec<u8>, String)>> {
                let mut stmt = c.prepare("SELECT experiment, user_hash, arm FROM experiment_arms")?;
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect()
            })
            .await;
        let mut given = Given::default();
        match rows.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
            Ok(rows) => {
                for (experiment, user, arm) in rows {
                    if let Ok(user) = UserKey::try_from(user.as_slice()) {
                        given.add(&experiment, user, &arm);
                    }
                }
            }
            Err(e) => tracing::warn!("experiments' arms could not be read; users are drawn anew: {e}"),
        }
        Self { store: store.clone(), given: Mutex::new(given), cap: MAX_KEPT }
    }

    /// The index in `arms` (names and weights, none 0, at least one) of the arm `user` is given in
    /// `experiment`: the one given before if it is still an arm, else a new draw, kept.
    pub fn pick(&self, experiment: &str, user: &str, arms: &[(String, u64)]) -> usize {
        let key: UserKey = sha2::Sha256::digest(user.as_bytes()).into();
        let mut given = self.given.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(arm) = given.arms.get(&(experiment.to_string(), key))
            && let Some(i) = arms.iter().position(|(name, _)| name == arm)
        {
            return i;
        }
        let weighted: Vec<(usize, u64)> = arms.iter().enumerate().map(|(i, (_, w))| (i, *w)).collect();
        if given.arms.len() >= self.cap {
            return crate::route::pick_arm(experiment, user, &weighted).copied().unwrap_or(0);
        }
        let users =
            |i: usize| given.users.get(&(experiment.to_string(), arms[i].0.clone())).copied().unwrap_or_default();
        let total_users: u64 = (0..arms.len()).map(users).sum();
        let total_weight: u64 = arms.iter().map(|(_, w)| w).sum();
        // An arm may take the user while it holds fewer than its share of one more user, rounded
        // up: there is always one, and with none given yet, every arm is open.
        let open: Vec<(usize, u64)> =
            weighted.into_iter().filter(|(i, w)| users(*i) < (w * (total_users + 1)).div_ceil(total_weight)).collect();
        let i = crate::route::pick_arm(experiment, user, &open).copied().unwrap_or(0);
        let arm = arms[i].0.clone();
        given.add(experiment, key, &arm);
        drop(given);
        let experiment = experiment.to_string();
        let now = crate::utc::now_ms();
        self.store.write(move |c| {
            if let Err(e) = c.execute(
                "INSERT OR REPLACE INTO experiment_arms (experiment, user_hash, arm, ts_ms) VALUES (?1, ?2, ?3, ?4)",
                params![experiment, key.as_slice(), arm, now],
            ) {
                tracing::warn!("an experiment's arm was not kept: {e}");
            }
        });
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arms(w: &[(&str, u64)]) -> Vec<(String, u64)> {
        w.iter().map(|(n, w)| (n.to_string(), *w)).collect()
    }

    #[tokio::test]
    async fn users_keep_their_arm_and_a_shared_daemon_keeps_the_arms_to_their_weights() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let e = Experiments::load(&store).await;
        let split = arms(&[("a", 3), ("b", 1)]);
        let mut given = HashMap::new();
        for u in 0..40 {
            given.insert(u, e.pick("x", &format!("dev{u}"), &split));
        }
        let on_a = given.values().filter(|i| **i == 0).count();
        assert_eq!(on_a, 30, "three quarters of 40 users, to the user");
        for (u, i) in &given {
            assert_eq!(e.pick("x", &format!("dev{u}"), &split), *i, "dev{u} kept their arm");
        }
        // New weights steer new users only; an arm dropped from the split draws its users anew.
        let even = arms(&[("a", 1), ("b", 1)]);
        assert_eq!(e.pick("x", "dev0", &even), given[&0]);
        let only_c = arms(&[("c", 1)]);
        assert_eq!(e.pick("x", "dev0", &only_c), 0);

        // Kept across restarts, by hash: no user name in the database.
        store.flush().await.unwrap();
        let e = Experiments::load(&store).await;
        for (u, i) in given.iter().filter(|(u, _)| **u != 0) {
            assert_eq!(e.pick("x", &format!("dev{u}"), &split), *i);
        }
        let names: Vec<Vec<u8>> = store
            .run(|c| {
                let mut s = c.prepare("SELECT user_hash FROM experiment_arms").unwrap();
                s.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
            })
            .await
            .unwrap();
        assert!(names.iter().all(|n| n.len() == 32 && !n.windows(3).any(|w| w == b"dev")));
    }

    #[tokio::test]
    async fn beyond_its_cap_a_user_is_drawn_by_hash_and_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let e = Experiments { cap: 3, ..Experiments::load(&store).await };
        let split = arms(&[("a", 1), ("b", 1)]);
        for u in 0..10 {
            let user = format!("dev{u}");
            let i = e.pick("x", &user, &split);
            assert_eq!(e.pick("x", &user, &split), i, "still the same arm");
        }
        assert_eq!(e.given.lock().unwrap().arms.len(), 3);
    }

    #[tokio::test]
    async fn a_daemon_with_one_user_draws_by_hash_alone() {
        // Each personal daemon sees one user: its draw must be the hash's, or every first user
        // would land on the same arm.
        let dir = tempfile::tempdir().unwrap();
        let split = arms(&[("a", 1), ("b", 3)]);
        let mut on_b = 0;
        for u in 0..200 {
            let store = Store::open(&dir.path().join(format!("{u}.db"))).unwrap();
            let e = Experiments::load(&store).await;
            let user = format!("dev{u}");
            let i = e.pick("x", &user, &split);
            let refs: Vec<(&str, u64)> = split.iter().map(|(n, w)| (n.as_str(), *w)).collect();
            assert_eq!(split[i].0, *crate::route::pick_arm("x", &user, &refs).unwrap());
            on_b += usize::from(i == 1);
        }
        assert!((120..=180).contains(&on_b), "{on_b} of 200 on the arm of weight 3/4");
    }
}

//! The daemon's side of a team server: leases on shared budgets and usage rows sent in batches.
//!
//! A budget with `scope = "team"` or `"group"` is shared when a team server is set: the daemon
//! spends it only within a lease the server granted (an absolute allowance for the period, held in
//! memory by [`Leases`] and checked by the budgets on the request path with no network hop). A
//! background task ([`run`]) asks for leases requests need, renews them when they run low or near
//! their end while requests keep coming, and sends the
//! ledger's settled rows after a cursor kept in the database, so a restart or an unreachable
//! server loses nothing and a retried batch is counted once (rows are keyed by request id).
//! Offline, the daemon spends what its lease holds until the lease's end, then applies the
//! budget's action.
//!
//! [`lease`] holds the state the budgets read on the request path (no network, no database);
//! [`sync`] is the background task and the server's client.

pub mod lease;
pub mod sync;

pub use lease::{FIRST_LEASE_WAIT, Held, Leases, TeamConfig, check_server_url};
pub use sync::{CallError, TeamClient, daemon_id, run};

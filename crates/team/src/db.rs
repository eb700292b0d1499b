//! The team server's PostgreSQL database: migrations, leases and usage rows.
//!
//! Every write a daemon can retry is idempotent: a lease is one row per (budget, period, daemon)
//! updated in place with absolute figures; a usage row is keyed by (daemon, request id) and a second
//! copy is ignored. Grants for one budget and period are serialized by locking the pool's row, so
//! concurrent daemons never lease the same money twice.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::grant::{self, Held, Terms};
use tollgate_protocol::team::{TeamGroupBy, TeamUsageLine, UsageRow};

/// Schema changes, applied in order once each; a server refuses a database newer than it knows.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE daemons (
    daemon_id     TEXT PRIMARY KEY,
    username      TEXT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms  BIGINT NOT NULL
);
CREATE TABLE pools (
    budget       TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    PRIMARY KEY (budget, period_start)
);
CREATE TABLE leases (
    budget         TEXT NOT NULL,
    period_start   BIGINT NOT NULL,
    daemon_id      TEXT NOT NULL REFERENCES daemons (daemon_id),
    username       TEXT NOT NULL,
    granted_micros BIGINT NOT NULL,
    granted_tokens BIGINT NOT NULL,
    used_micros    BIGINT NOT NULL,
    used_tokens    BIGINT NOT NULL,
    expires_ms     BIGINT NOT NULL,
    grants         BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (budget, period_start, daemon_id),
    FOREIGN KEY (budget, period_start) REFERENCES pools (budget, period_start)
);
CREATE TABLE usage (
    daemon_id     TEXT NOT NULL REFERENCES daemons (daemon_id),
    request_id    TEXT NOT NULL,
    ts_ms         BIGINT NOT NULL,
    username      TEXT NOT NULL,
    groups        TEXT[] NOT NULL,
    project       TEXT,
    task          TEXT NOT NULL,
    model         TEXT NOT NULL,
    caller        TEXT,
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_micros   BIGINT,
    outcome       TEXT NOT NULL,
    budgets       TEXT[] NOT NULL,
    received_ms   BIGINT NOT NULL,
    PRIMARY KEY (daemon_id, request_id)
);
CREATE INDEX usage_ts ON usage (ts_ms);
"#,
    r#"
ALTER TABLE usage ADD COLUMN arm TEXT;
"#,
];

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("the database connection pool: {0}")]
    Pool(String),
    #[error("{0}")]
    Refused(String),
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DbError::Pool(e.to_string())
    }
}

#[derive(Clone)]
pub struct Db {
    pool: Pool,
}

/// A budget as the server enforces it: its limits in both dimensions.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub micros: Option<i64>,
    pub tokens: Option<i64>,
}

/// What a lease request comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    pub micros: Option<grant::Grant>,
    pub tokens: Option<grant::Grant>,
}

impl Db {
    /// Connects (`postgres://user@host:port/db`) and brings the schema up to date.
    pub async fn connect(url: &str, size: usize) -> Result<Self, DbError> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| DbError::Refused(format!("--database {e}")))?;
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(size)
            .wait_timeout(Some(std::time::Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| DbError::Pool(e.to_string()))?;
        let db = Self { pool };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> Result<(), DbError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // One server migrates at a time; the others wait here and find the work done.
        tx.execute("SELECT pg_advisory_xact_lock(7011)", &[]).await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INT NOT NULL)").await?;
        let version: i32 =
            tx.query_opt("SELECT version FROM schema_version", &[]).await?.map(|r| r.get(0)).unwrap_or(0);
        if version as usize > MIGRATIONS.len() {
            return Err(DbError::Refused(format!(
                "the database is at schema version {version}, newer than this tollgate knows ({}); upgrade tollgate",
                MIGRATIONS.len()
            )));
        }
        for sql in &MIGRATIONS[version as usize..] {
            tx.batch_execute(sql).await?;
        }
        tx.execute("DELETE FROM schema_version", &[]).await?;
        tx.execute("INSERT INTO schema_version VALUES ($1)", &[&(MIGRATIONS.len() as i32)]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records that `username` runs `daemon`; a daemon id first seen for someone else is refused.
    pub async fn claim_daemon(&self, daemon: &str, username: &str, now: i64) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "INSERT INTO daemons (daemon_id, username, first_seen_ms, last_seen_ms) VALUES ($1, $2, $3, $3) \
                 ON CONFLICT (daemon_id) DO UPDATE SET last_seen_ms = EXCLUDED.last_seen_ms \
                 RETURNING username",
                &[&daemon, &username, &now],
            )
            .await?;
        let owner: String = row.get(0);
        if owner != username {
            return Err(DbError::Refused(format!("daemon {daemon} belongs to another user")));
        }
        Ok(())
    }

    /// Grants or renews `daemon`'s lease on a budget for a period, given its own spend so far.
    #[allow(clippy::too_many_arguments)]
    pub async fn lease(
        &self,
        budget: &str,
        period_start: i64,
        daemon: &str,
        username: &str,
        limits: Limits,
        used: (i64, i64),
        terms: (Terms, Terms),
        ttl_ms: i64,
        grace_ms: i64,
        now: i64,
    ) -> Result<Granted, DbError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO pools (budget, period_start) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&budget, &period_start],
        )
        .await?;
        // Grants on one pool are made one at a time.
        tx.execute("SELECT 1 FROM pools WHERE budget = $1 AND period_start = $2 FOR UPDATE", &[&budget, &period_start])
            .await?;
        let rows = tx
            .query(
                "SELECT daemon_id, granted_micros, granted_tokens, used_micros, used_tokens, expires_ms \
                 FROM leases WHERE budget = $1 AND period_start = $2",
                &[&budget, &period_start],
            )
            .await?;
        let mut others = (Vec::new(), Vec::new());
        let mut mine = None;
        for r in &rows {
            let live = r.get::<_, i64>(5).saturating_add(grace_ms) > now;
            let m = Held { granted: r.get(1), used: r.get(3), live };
            let t = Held { granted: r.get(2), used: r.get(4), live };
            if r.get::<_, &str>(0) == daemon {
                // Its own lease is live for the daemon only until its end (no grace: it spends none
                // after), but what it holds stays set aside while the grace runs.
                mine = Some((m, t));
            } else {
                others.0.push(m);
                others.1.push(t);
            }
        }
        let micros = limits.micros.map(|l| grant::grant(l, others.0, mine.map(|m| m.0), used.0, terms.0));
        let tokens = limits.tokens.map(|l| grant::grant(l, others.1, mine.map(|m| m.1), used.1, terms.1));
        let (used_m, used_t) = match mine {
            Some((m, t)) => (m.used.max(used.0), t.used.max(used.1)),
            None => used,
        };
        tx.execute(
            "INSERT INTO leases (budget, period_start, daemon_id, username, granted_micros, granted_tokens, \
             used_micros, used_tokens, expires_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (budget, period_start, daemon_id) DO UPDATE SET granted_micros = EXCLUDED.granted_micros, \
             granted_tokens = EXCLUDED.granted_tokens, used_micros = EXCLUDED.used_micros, \
             used_tokens = EXCLUDED.used_tokens, expires_ms = EXCLUDED.expires_ms, grants = leases.grants + 1",
            &[
                &budget,
                &period_start,
                &daemon,
                &username,
                &micros.map_or(used_m, |g| g.granted),
                &tokens.map_or(used_t, |g| g.granted),
                &used_m,
                &used_t,
                &(now + ttl_ms),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(Granted { micros, tokens })
    }

    /// Whether `daemon` holds (or held) a lease on `budget` in the period containing `ts_ms`.
    pub async fn has_lease(&self, daemon: &str, budget: &str, period_start: i64) -> Result<bool, DbError> {
        let client = self.pool.get().await?;
        Ok(client
            .query_opt(
                "SELECT 1 FROM leases WHERE daemon_id = $1 AND budget = $2 AND period_start = $3",
                &[&daemon, &budget, &period_start],
            )
            .await?
            .is_some())
    }

    /// Stores rows; those already there (by daemon and request id) are counted as duplicates.
    pub async fn store_usage(
        &self,
        daemon: &str,
        groups: &[String],
        rows: &[UsageRow],
        now: i64,
    ) -> Result<(usize, usize), DbError> {
        // One statement for the whole batch: the rows as arrays, unnested (a budget list travels
        // as one string joined by the unit separator, which no policy name contains).
        const SEP: char = '\u{1f}';
        let tokens = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let col = |f: &dyn Fn(&UsageRow) -> String| rows.iter().map(f).collect::<Vec<String>>();
        let opt = |f: &dyn Fn(&UsageRow) -> Option<String>| rows.iter().map(f).collect::<Vec<Option<String>>>();
        let (ids, users, tasks, models, outcomes) = (
            col(&|r| r.request_id.clone()),
            col(&|r| r.user.clone()),
            col(&|r| r.task.clone()),
            col(&|r| r.model.clone()),
            col(&|r| r.outcome.clone()),
        );
        let budgets = col(&|r| r.budgets.join(&SEP.to_string()));
        let (projects, callers) = (opt(&|r| r.project.clone()), opt(&|r| r.caller.clone()));
        let arms = opt(&|r| r.arm.clone());
        let ts: Vec<i64> = rows.iter().map(|r| r.ts_ms).collect();
        let input: Vec<i64> = rows.iter().map(|r| tokens(r.input_tokens)).collect();
        let output: Vec<i64> = rows.iter().map(|r| tokens(r.output_tokens)).collect();
        let cost: Vec<Option<i64>> = rows.iter().map(|r| r.cost_micros).collect();
        let client = self.pool.get().await?;
        let stored = client
            .execute(
                "INSERT INTO usage (daemon_id, request_id, ts_ms, username, groups, project, task, model, caller, \
                 input_tokens, output_tokens, cost_micros, outcome, budgets, received_ms, arm) \
                 SELECT $1, r.request_id, r.ts_ms, r.username, $2, r.project, r.task, r.model, r.caller, \
                 r.input_tokens, r.output_tokens, r.cost_micros, r.outcome, \
                 CASE WHEN r.budgets = '' THEN ARRAY[]::text[] ELSE string_to_array(r.budgets, chr(31)) END, $3, r.arm \
                 FROM unnest($4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], \
                 $11::bigint[], $12::bigint[], $13::bigint[], $14::text[], $15::text[], $16::text[]) \
                 AS r(request_id, ts_ms, username, project, task, model, caller, input_tokens, output_tokens, \
                 cost_micros, outcome, budgets, arm) \
                 ON CONFLICT DO NOTHING",
                &[
                    &daemon, &groups, &now, &ids, &ts, &users, &projects, &tasks, &models, &callers, &input, &output,
                    &cost, &outcomes, &budgets, &arms,
                ],
            )
            .await? as usize;
        Ok((stored, rows.len() - stored))
    }

    /// The team's usage since `since_ms`, grouped.
    pub async fn team_usage(&self, by: TeamGroupBy, since_ms: i64) -> Result<Vec<TeamUsageLine>, DbError> {
        let key = match by {
            TeamGroupBy::User => "username",
            TeamGroupBy::Group => "unnest(CASE WHEN cardinality(groups) = 0 THEN ARRAY['(none)'] ELSE groups END)",
            TeamGroupBy::Project => "COALESCE(project, '(none)')",
            TeamGroupBy::Model => "model",
            TeamGroupBy::Task => "task",
            TeamGroupBy::Tool => "COALESCE(caller, '(unknown)')",
            TeamGroupBy::Arm => "COALESCE(arm, '(none)')",
        };
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT key, count(*), sum(input_tokens)::BIGINT, sum(output_tokens)::BIGINT, \
                     COALESCE(sum(cost_micros), 0)::BIGINT FROM (SELECT {key} AS key, input_tokens, output_tokens, \
                     cost_micros FROM usage WHERE ts_ms >= $1) u GROUP BY key ORDER BY 5 DESC, 1"
                ),
                &[&since_ms],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| TeamUsageLine {
                key: r.get(0),
                requests: r.get::<_, i64>(1) as u64,
                input_tokens: r.get::<_, i64>(2).max(0) as u64,
                output_tokens: r.get::<_, i64>(3).max(0) as u64,
                cost_micros: r.get(4),
            })
            .collect())
    }
}

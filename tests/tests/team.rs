//! Team scale end to end: a real PostgreSQL server, `tollgate team-server`, three daemons with
//! their own homes and GitLab identities (the fake GitLab serving the policy), sharing budgets
//! through leases; the server killed and restarted, the network to it cut; forged reports refused.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_tests::fake::FakeProvider;
use tollgate_tests::gitlab::FakeGitlab;
use tollgate_tests::postgres::Postgres;
use tollgate_tests::{Daemon, PolicyRepo, free_port, init, tollgate_bin};

const CORP_KEY: (&str, &str) = ("TOLLGATE_CORP_API_KEY", "sk-test-corp-000000000000000000");
const OFFICE_KEY: (&str, &str) = ("TOLLGATE_OFFICE_API_KEY", "sk-test-office-00000000000000000");
const TOKENS: [(&str, &str); 3] = [
    ("alice", "glpat-ALICEfake000000000000"),
    ("bob", "glpat-BOBfake00000000000000"),
    ("carol", "glpat-CAROLfake000000000000"),
];

/// `tollgate team-server` as a child process, stopped on drop.
struct TeamServer {
    child: Option<Child>,
    args: Vec<String>,
    log: std::path::PathBuf,
    port: u16,
}

impl TeamServer {
    fn start(pg: &Postgres, policy: &Path, gitlab: &str, port: u16, tls: Option<&Tls>) -> Self {
        let log = pg.dir().join(format!("team-server-{port}.log"));
        let mut args = vec![
            "team-server".to_string(),
            "--database".into(),
            pg.url(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--policy".into(),
            policy.display().to_string(),
            "--gitlab".into(),
            gitlab.to_string(),
        ];
        if let Some(tls) = tls {
            args.extend(["--tls-cert".into(), tls.cert(), "--tls-key".into(), tls.key()]);
        }
        let mut s = Self { child: None, args, log, port };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(tollgate_bin())
            .args(&self.args)
            .env("TOLLGATE_LOG", "tollgate=debug,tollgate_team=debug,warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the team server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the team server exited ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "the team server did not start:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for TeamServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A test CA and a certificate for localhost it signed, made with openssl for this run.
struct Tls {
    dir: tempfile::TempDir,
}

impl Tls {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(dir.path()).output().expect("openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=tollgate test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign",
                ],
            ]
            .concat(),
        );
        openssl(
            &[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]].concat(),
        );
        std::fs::write(
            dir.path().join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        Self { dir }
    }

    fn cert(&self) -> String {
        self.dir.path().join("server.pem").display().to_string()
    }

    fn key(&self) -> String {
        self.dir.path().join("server.key").display().to_string()
    }

    fn ca(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }
}

/// A TCP relay the daemons reach the server through: `cut` makes it drop every connection (open
/// ones included), as a network that lost its route would.
struct Relay {
    port: u16,
    cut: Arc<AtomicBool>,
    generation: Arc<AtomicUsize>,
}

impl Relay {
    async fn start(to: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicUsize::new(0));
        let (c, g) = (Arc::clone(&cut), Arc::clone(&generation));
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let (c, g) = (Arc::clone(&c), Arc::clone(&g));
                let born = g.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else { return };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    tokio::pin!(copy);
                    loop {
                        tokio::select! {
                            _ = &mut copy => return,
                            () = tokio::time::sleep(Duration::from_millis(50)) => {
                                if c.load(Ordering::SeqCst) || g.load(Ordering::SeqCst) != born {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Self { port, cut, generation }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The policy: provider `corp` (the cloud fake, $1000 per million tokens so that a token costs
/// exactly 1,000 micro-dollars), route `team`, a `local` route on the local fake, and `budgets`.
fn policy(cloud: &FakeProvider, local: &FakeProvider, team_server: &str, budgets: &str) -> String {
    format!(
        r#"version = 1

[providers.corp]
kind = "openai"
base_url = "{}/v1"
local = false

[providers.office]
kind = "openai"
base_url = "{}/v1"
local = true

[prices."corp/model-a"]
input = 1000
output = 1000

[routes.team]
targets = ["corp/model-a"]

[routes.local]
targets = ["office/qwen"]

[routes.ab]
split = {{ "corp/model-a" = 1, "office/qwen" = 1 }}
experiment = "team-ab"

[team]
server = "{team_server}"
admins = ["acme/leads"]
lease_share_percent = 20
lease_max_percent = 10
lease_ttl_secs = 60

{budgets}
"#,
        cloud.url(),
        local.url()
    )
}

fn config(source: &str) -> String {
    format!("[keychain]\nbackend = \"env\"\n[policy]\nsource = \"{source}\"\nsync_interval_s = 3600\n")
}

/// A short chat request to `model`.
async fn send_chat(d: &Daemon, model: &str) -> reqwest::Response {
    d.client()
        .post(d.url("/v1/chat/completions"))
        .json(
            &json!({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "say something short"}]}),
        )
        .send()
        .await
        .unwrap()
}

/// One chat request to the `team` route: (status, provider that answered).
async fn chat(d: &Daemon) -> (u16, String) {
    let resp = send_chat(d, "team").await;
    let provider = resp.headers().get("x-tollgate-provider").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (resp.status().as_u16(), provider)
}

/// Rows and the cost the server holds, per user.
fn server_usage(pg: &Postgres) -> Vec<(String, i64, i64)> {
    pg.psql("SELECT username, count(*), COALESCE(sum(cost_micros), 0) FROM usage GROUP BY username ORDER BY username")
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (f[0].to_string(), f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect()
}

/// Settled rows in a daemon's own ledger: (count, cost).
fn ledger(d: &Daemon) -> (i64, i64) {
    let c = rusqlite::Connection::open(d.home.path().join("tollgate.db")).unwrap();
    c.query_row("SELECT count(*), COALESCE(sum(cost_micros), 0) FROM ledger WHERE outcome != 'pending'", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .unwrap()
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}:\n{}", context());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Team {
    pg: Postgres,
    _gitlab: FakeGitlab,
    repo: PolicyRepo,
    server: TeamServer,
    daemons: Vec<Daemon>,
    cloud: FakeProvider,
    _local: FakeProvider,
}

/// PostgreSQL, the fake GitLab serving the policy to alice, bob and carol (all in acme/platform;
/// alice also leads), the team server, and one daemon per user reaching it at `via(server port)`.
async fn team(budgets: &str, relay: Option<&Relay>, server_port: u16) -> Team {
    team_with(budgets, relay, server_port, None).await
}

async fn team_with(budgets: &str, relay: Option<&Relay>, server_port: u16, tls: Option<&Tls>) -> Team {
    let pg = Postgres::start();
    let (cloud, local) = (FakeProvider::start().await, FakeProvider::start().await);
    let repo = PolicyRepo::new();
    let team_url = match (relay, tls) {
        (Some(r), _) => r.url(),
        (None, Some(_)) => format!("https://localhost:{server_port}"),
        (None, None) => format!("http://127.0.0.1:{server_port}"),
    };
    repo.push(&[("policy.toml", &policy(&cloud, &local, &team_url, budgets))], "team policy");
    let gitlab = FakeGitlab::start(
        repo.bare(),
        "acme/ai-policy",
        TOKENS[0].1,
        "alice",
        &["acme", "acme/leads", "acme/platform"],
    )
    .await;
    gitlab.add_user(TOKENS[1].1, "bob", &["acme", "acme/platform"]);
    gitlab.add_user(TOKENS[2].1, "carol", &["acme", "acme/platform"]);
    let server = TeamServer::start(&pg, &repo.dir.path().join("work"), &gitlab.url(), server_port, tls);
    let source = format!("gitlab+http://{}/acme/ai-policy?ref=main", gitlab.addr);
    // The daemons trust the test CA the way they trust a team's own: through the system's store.
    let ca = tls.map(Tls::ca).unwrap_or_default();
    let daemons: Vec<Daemon> = TOKENS
        .iter()
        .map(|(_, token)| {
            let mut env = vec![CORP_KEY, OFFICE_KEY, ("TOLLGATE_GITLAB_API_KEY", *token)];
            if tls.is_some() {
                env.push(("SSL_CERT_FILE", &ca));
            }
            Daemon::start_with_env(&config(&source), &env)
        })
        .collect();
    for (d, (user, _)) in daemons.iter().zip(TOKENS) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = d.get_json("/v1/policy").await;
            if s["identity"]["username"] == user && s["commit"].is_string() {
                break;
            }
            assert!(Instant::now() < deadline, "no policy or identity: {s:#}\n{}", d.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The policy's budgets started the tokenizer: the lease arithmetic below counts on exact
        // estimates (a refusal under the length bound could turn into an answer once it loads).
        d.wait_for_exact_estimates();
    }
    Team { pg, _gitlab: gitlab, repo, server, daemons, cloud, _local: local }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_daemons_share_a_group_budget_through_leases_and_downgrade_together_when_it_is_spent() {
    init();
    // $3 for the group in all: 3,000 tokens of corp/model-a. Each daemon alone would spend all of it.
    let budgets = r#"
[[budgets]]
name = "platform-day"
scope = "group"
match = "acme/platform"
period = "day"
limit_usd = 3
action = "downgrade"
downgrade_to = "local"
"#;
    let t = team(budgets, None, free_port()).await;
    let limit_micros = 3_000_000i64;

    // Concurrent load from all three until each is sent to the local model five times in a row.
    let mut tasks = Vec::new();
    for d in &t.daemons {
        let (client, url) = (d.client(), d.url("/v1/chat/completions"));
        tasks.push(tokio::spawn(async move {
            let (mut cloud, mut local_streak, mut statuses) = (0u32, 0u32, Vec::new());
            for _ in 0..3000 {
                let resp = client
                    .post(&url)
                    .json(&json!({"model": "team", "max_tokens": 8, "messages": [{"role": "user", "content": "say something short"}]}))
                    .send()
                    .await
                    .unwrap();
                let provider = resp.headers().get("x-tollgate-provider").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let downgraded = resp.headers().contains_key("x-tollgate-downgraded");
                statuses.push(resp.status().as_u16());
                match (provider.as_str(), downgraded) {
                    ("corp", false) => {
                        cloud += 1;
                        local_streak = 0;
                    }
                    ("office", true) => local_streak += 1,
                    other => panic!("unexpected answer: {other:?} {} {}", resp.status(), resp.text().await.unwrap_or_default()),
                }
                if local_streak >= 5 {
                    break;
                }
            }
            (cloud, local_streak, statuses)
        }));
    }
    let mut cloud_calls = 0;
    for (task, d) in tasks.into_iter().zip(&t.daemons) {
        let (cloud, streak, statuses) = task.await.unwrap();
        assert_eq!(streak, 5, "never downgraded:\n{}", d.log());
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        assert!(cloud > 0, "a daemon got no share of the budget:\n{}", d.log());
        cloud_calls += cloud;
    }

    // Every row reaches the server, once; the team's spend is within the limit (the documented
    // overshoot is what requests cost beyond their estimates: none here, max_tokens bounds them).
    wait_until(
        "usage to reconcile",
        Duration::from_secs(30),
        || {
            let rows: i64 = server_usage(&t.pg).iter().map(|r| r.1).sum();
            rows == t.daemons.iter().map(|d| ledger(d).0).sum::<i64>()
        },
        || format!("{:?}\n{}", server_usage(&t.pg), t.server.log()),
    )
    .await;
    let usage = server_usage(&t.pg);
    assert_eq!(usage.iter().map(|u| u.0.as_str()).collect::<Vec<_>>(), ["alice", "bob", "carol"]);
    for (d, u) in t.daemons.iter().zip(&usage) {
        assert_eq!(ledger(d), (u.1, u.2), "{}'s rows on the server and in the ledger", u.0);
    }
    let spent: i64 = usage.iter().map(|u| u.2).sum();
    assert!(spent <= limit_micros, "the team spent {spent} micro-dollars of a {limit_micros} limit");
    assert!(spent >= limit_micros * 8 / 10, "only {spent} of {limit_micros} was spent: leases stranded the rest");
    assert_eq!(t.cloud.requests().len() as u32, cloud_calls, "the cloud fake saw exactly the calls counted");
    let renewals: i64 = t.pg.psql("SELECT sum(grants) FROM leases").parse().unwrap();
    eprintln!("{cloud_calls} cloud calls, {spent} micro-dollars spent, {renewals} lease grants");

    // `tollgate budget` says the budget is shared, and what the team had left at this daemon's
    // last grant (less than the limit: the others had spent some by then).
    let out = t.daemons[1].command().args(["budget", "--json"]).output().unwrap();
    let budgets: Value = serde_json::from_slice(&out.stdout).unwrap();
    let lease = &budgets["budgets"][0]["lease"];
    assert!(lease["team_left_usd"].as_str().is_some_and(|l| l.parse::<f64>().unwrap() < 3.0), "{budgets:#}");
    let text = String::from_utf8(t.daemons[1].command().arg("budget").output().unwrap().stdout).unwrap();
    assert!(text.contains("shared through the team server"), "{text}");

    // The team's usage, by user, for a team admin; not for anyone else.
    let admin = reqwest::Client::new();
    let by_user: Value = admin
        .get(format!("{}/v1/team/usage?by=user", t.server.url()))
        .bearer_auth(TOKENS[0].1)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lines = by_user["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3, "{by_user:#}");
    assert_eq!(lines.iter().map(|l| l["cost_micros"].as_i64().unwrap()).sum::<i64>(), spent);
    let refused =
        admin.get(format!("{}/v1/team/usage?by=user", t.server.url())).bearer_auth(TOKENS[1].1).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    // And through a daemon's CLI.
    let out = t.daemons[0].command().args(["usage", "--team", "--by", "user", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let via_cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(via_cli["lines"], by_user["lines"]);

    // An experiment the policy declares, compared across the team: each user's calls on the
    // split route reach the server under the arm that user was given.
    let mut given = std::collections::BTreeMap::new();
    for d in &t.daemons {
        for _ in 0..2 {
            let resp = send_chat(d, "ab").await;
            assert_eq!(resp.status(), 200);
            let arm = resp.headers()["x-tollgate-experiment"].to_str().unwrap().replacen('=', ": ", 1);
            *given.entry(arm).or_insert(0u64) += 1;
        }
    }
    wait_until(
        "the arms to reach the server",
        Duration::from_secs(30),
        || t.pg.psql("SELECT count(*) FROM usage WHERE arm IS NOT NULL").trim() == "6",
        || t.server.log(),
    )
    .await;
    let out = t.daemons[0].command().args(["usage", "--team", "--by", "arm", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let by_arm: Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines: std::collections::BTreeMap<String, u64> = by_arm["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["key"] != "(none)")
        .map(|l| (l["key"].as_str().unwrap().to_string(), l["requests"].as_u64().unwrap()))
        .collect();
    assert_eq!(lines, given, "{by_arm:#}");
    drop(t.repo);
}

/// A team server from before experiments: its usage rows know no `arm` and refuse unknown fields.
#[tokio::test(flavor = "multi_thread")]
async fn usage_reaches_a_team_server_older_than_experiments_without_its_arms() {
    init();
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct OldRow {
        request_id: String,
        ts_ms: i64,
        user: String,
        project: Option<String>,
        task: String,
        model: String,
        caller: Option<String>,
        input_tokens: u64,
        output_tokens: u64,
        cost_micros: Option<i64>,
        outcome: String,
        #[serde(default)]
        budgets: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct OldBatch {
        daemon: String,
        rows: Vec<OldRow>,
    }
    let stored = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let kept = std::sync::Arc::clone(&stored);
    let app = axum::Router::new().route(
        "/v1/team/usage",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = std::sync::Arc::clone(&kept);
            async move {
                // As the server's own `parse` answers a body it cannot read.
                match serde_json::from_slice::<OldBatch>(&body) {
                    Ok(b) => {
                        let n = b.rows.len();
                        kept.lock().unwrap().extend(b.rows.into_iter().map(|r| r.request_id));
                        (http::StatusCode::OK, axum::Json(json!({"stored": n, "duplicates": 0})))
                    }
                    Err(e) => (
                        http::StatusCode::BAD_REQUEST,
                        axum::Json(json!({"error": {"message": format!("the usage batch: {e}")}})),
                    ),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let fake = FakeProvider::start().await;
    let extra = format!("[routes.ab]\nsplit = {{ \"oa/gpt-a\" = 1, \"ob/gpt-b\" = 1 }}\n[team]\nserver = \"{url}\"\n");
    let d = Daemon::start_with_env(&tollgate_tests::standard_config(&fake, &fake, &extra), tollgate_tests::ENV_KEYS);
    let mut ids = Vec::new();
    for model in ["ab", "ab", "oa/gpt-a"] {
        let resp = send_chat(&d, model).await;
        assert_eq!(resp.status(), 200);
        ids.push(resp.headers()["x-tollgate-request-id"].to_str().unwrap().to_string());
    }
    wait_until("usage at the old server", Duration::from_secs(30), || stored.lock().unwrap().len() == 3, || d.log())
        .await;
    let mut got = stored.lock().unwrap().clone();
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "every row, once, the arms left out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_carry_a_daemon_through_a_killed_server_and_a_cut_network_and_usage_reconciles_once() {
    init();
    // $2 for the team; one grant holds at most 10% of it ($0.20: about a dozen requests).
    let budgets = r#"
[[budgets]]
name = "team-day"
scope = "team"
period = "day"
limit_usd = 2
action = "block"
"#;
    let server_port = free_port();
    let relay = Relay::start(server_port).await;
    let mut t = team(budgets, Some(&relay), server_port).await;
    let d = &t.daemons[0];
    for _ in 0..3 {
        assert_eq!(chat(d).await, (200, "corp".into()), "{}", d.log());
    }
    // The server is killed (SIGKILL): requests go on within the lease, then the budget's action.
    t.server.kill();
    let mut offline = 0;
    let refusal = loop {
        let resp = d
            .client()
            .post(d.url("/v1/chat/completions"))
            .json(&json!({"model": "team", "max_tokens": 8, "messages": [{"role": "user", "content": "say something short"}]}))
            .send()
            .await
            .unwrap();
        if resp.status() != 200 {
            assert_eq!(resp.status(), 402, "{}", d.log());
            break resp.json::<Value>().await.unwrap();
        }
        offline += 1;
        assert!(offline < 100, "more than a lease's worth served offline");
    };
    assert!(offline > 0, "nothing served within the lease while the server was down");
    let message = refusal["error"]["message"].as_str().unwrap();
    assert!(message.contains("team-day") && message.contains("lease"), "{message}");
    // The network to it is cut (connections accepted and dropped) while it comes back: still the
    // budget's action, at once (no request waits on an unreachable server).
    relay.set_cut(true);
    t.server.spawn();
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(chat(d).await.0, 402, "{}", d.log());
    }
    assert!(started.elapsed() < Duration::from_secs(3), "blocked requests waited on the network");
    let (before, _) = ledger(d);
    assert!(server_usage(&t.pg).iter().map(|u| u.1).sum::<i64>() < before, "rows went through a cut network?");
    // The network is back: a new lease, and every row arrives once.
    relay.set_cut(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while chat(d).await != (200, "corp".into()) {
        assert!(Instant::now() < deadline, "no new lease after the network came back:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_until(
        "usage to reconcile",
        Duration::from_secs(30),
        || server_usage(&t.pg).first().is_some_and(|u| (u.1, u.2) == ledger(d)),
        || format!("{:?} vs {:?}\n{}\n{}", server_usage(&t.pg), ledger(d), t.server.log(), d.log()),
    )
    .await;
    assert!(ledger(d).1 <= 2_000_000, "the team spent {} of $2", ledger(d).1);
    let dupes: i64 = t.pg.psql("SELECT count(*) - count(DISTINCT (daemon_id, request_id)) FROM usage").parse().unwrap();
    assert_eq!(dupes, 0);
    // A daemon restarted (SIGKILL) sends nothing twice and keeps its lease.
    let mut d = t.daemons.remove(0);
    d.restart();
    for _ in 0..3 {
        assert_eq!(chat(&d).await, (200, "corp".into()), "{}", d.log());
    }
    wait_until(
        "the restarted daemon's rows",
        Duration::from_secs(30),
        || server_usage(&t.pg).first().is_some_and(|u| (u.1, u.2) == ledger(&d)),
        || format!("{:?} vs {:?}\n{}", server_usage(&t.pg), ledger(&d), d.log()),
    )
    .await;
    // It kept its id (no second daemon registered) and its one lease, renewed in place; the idle
    // daemons hold none of the budget.
    assert_eq!(t.pg.psql("SELECT count(*) FROM daemons"), "1");
    assert_eq!(t.pg.psql("SELECT count(*) FROM leases"), "1");
    assert!(t.pg.psql("SELECT grants FROM leases").parse::<i64>().unwrap() > 1, "renewed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_identities_and_reports_without_a_lease_are_refused() {
    init();
    let budgets = r#"
[[budgets]]
name = "team-day"
scope = "team"
period = "day"
limit_usd = 100
action = "block"

[[budgets]]
name = "leads-day"
scope = "group"
match = "acme/leads"
period = "day"
limit_usd = 10
action = "block"
"#;
    let t = team(budgets, None, free_port()).await;
    let http = reqwest::Client::new();
    let post = |path: &str, token: &str, body: Value| {
        http.post(format!("{}{path}", t.server.url())).bearer_auth(token).json(&body).send()
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let day = now - now % 86_400_000;
    let lease = |daemon: &str, budget: &str| json!({"daemon": daemon, "budget": budget, "period_start": day, "used_micros": 0, "used_tokens": 0});
    let row = |user: &str, id: &str, budgets: Value| {
        json!({"request_id": id, "ts_ms": now, "user": user, "project": null, "task": "chat", "model": "corp/model-a",
               "caller": null, "input_tokens": 5, "output_tokens": 5, "cost_micros": 10000, "outcome": "ok", "budgets": budgets})
    };

    // No token, or one GitLab does not know: 401.
    let r = http.post(format!("{}/v1/team/lease", t.server.url())).json(&lease("b1", "team-day")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        post("/v1/team/lease", "glpat-NOBODYfake0000000000", lease("b1", "team-day")).await.unwrap().status(),
        401
    );
    // Bob leases the team budget with his own daemon id.
    let r = post("/v1/team/lease", TOKENS[1].1, lease("bobs-laptop", "team-day")).await.unwrap();
    assert_eq!(r.status(), 200);
    let granted: Value = r.json().await.unwrap();
    assert_eq!(granted["granted_micros"], 10_000_000, "10% of $100: {granted:#}");
    // A CI job of carol's, with its job token: her identity, from GitLab's /job.
    let r = http
        .post(format!("{}/v1/team/lease", t.server.url()))
        .header("job-token", TOKENS[2].1)
        .json(&lease("ci-runner-7001", "team-day"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(t.pg.psql("SELECT username FROM daemons WHERE daemon_id = 'ci-runner-7001'"), "carol");
    // A group budget of a group he is not in: refused.
    let r = post("/v1/team/lease", TOKENS[1].1, lease("bobs-laptop", "leads-day")).await.unwrap();
    assert_eq!(r.status(), 403);
    // A row claiming to be alice's: refused, and nothing stored.
    let r =
        post("/v1/team/usage", TOKENS[1].1, json!({"daemon": "bobs-laptop", "rows": [row("alice", "r1", json!([]))]}))
            .await
            .unwrap();
    assert_eq!(r.status(), 403);
    let refusal: Value = r.json().await.unwrap();
    let message = refusal["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"alice\"") && message.contains("\"bob\"'s"), "{message}");
    // A row counted against a budget he holds no lease on: refused.
    let r = post(
        "/v1/team/usage",
        TOKENS[1].1,
        json!({"daemon": "bobs-laptop", "rows": [row("bob", "r2", json!(["leads-day"]))]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    // Alice using bob's daemon id: refused.
    let r = post("/v1/team/lease", TOKENS[0].1, lease("bobs-laptop", "team-day")).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(t.pg.psql("SELECT count(*) FROM usage"), "0");
    // His own row on the budget he leased: stored once, however often it is sent.
    for expect in [(1, 0), (0, 1)] {
        let r = post(
            "/v1/team/usage",
            TOKENS[1].1,
            json!({"daemon": "bobs-laptop", "rows": [row("bob", "r3", json!(["team-day"]))]}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        let ack: Value = r.json().await.unwrap();
        assert_eq!((ack["stored"].as_i64().unwrap(), ack["duplicates"].as_i64().unwrap()), expect);
    }
    assert_eq!(t.pg.psql("SELECT count(*) FROM usage"), "1");
    assert_eq!(t.pg.psql("SELECT budgets FROM usage"), "{team-day}");
    assert_eq!(t.pg.psql("SELECT groups FROM usage"), "{acme,acme/platform}", "bob's groups, as GitLab says");
    // Malformed bodies: a clear 400, not a crash.
    let r = http
        .post(format!("{}/v1/team/usage", t.server.url()))
        .bearer_auth(TOKENS[1].1)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("usage batch"));
    // A row alice's daemon recorded under another identity (before she joined with her GitLab
    // token) stays on her machine, and does not hold up the rows after it.
    let alice = &t.daemons[0];
    let db = rusqlite::Connection::open(alice.home.path().join("tollgate.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute(
        "INSERT INTO ledger (request_id, ts_ms, identity, task, entry, latency_ms, added_ms, outcome, input_tokens, \
         output_tokens, cost_micros) VALUES ('before-login', ?1, 'os-user', 'chat', 'openai', 1.0, 0.1, 'ok', 5, 5, 10)",
        [now],
    )
    .unwrap();
    assert_eq!(chat(alice).await, (200, "corp".into()), "{}", alice.log());
    wait_until(
        "alice's row",
        Duration::from_secs(30),
        || t.pg.psql("SELECT count(*) FROM usage WHERE username = 'alice'") == "1",
        || alice.log(),
    )
    .await;
    assert_eq!(t.pg.psql("SELECT count(*) FROM usage WHERE request_id = 'before-login'"), "0");
    // The tokens never reach the server's log.
    let log = t.server.log();
    assert!(TOKENS.iter().all(|(_, tok)| !log.contains(tok)), "a token in the server's log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_team_server_speaks_tls_and_refuses_plain_http_off_loopback() {
    init();
    let budgets =
        "[[budgets]]\nname = \"team-day\"\nscope = \"team\"\nperiod = \"day\"\nlimit_usd = 5\naction = \"block\"\n";
    let tls = Tls::new();
    let t = team_with(budgets, None, free_port(), Some(&tls)).await;
    let d = &t.daemons[1];
    for _ in 0..3 {
        assert_eq!(chat(d).await, (200, "corp".into()), "{}\n{}", d.log(), t.server.log());
    }
    wait_until(
        "bob's rows over TLS",
        Duration::from_secs(30),
        || server_usage(&t.pg).first().is_some_and(|u| u.0 == "bob" && (u.1, u.2) == ledger(d)),
        || format!("{:?}\n{}", server_usage(&t.pg), d.log()),
    )
    .await;
    // Plain HTTP to the TLS port gets nowhere.
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{}/healthz", t.server.port)).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // Off loopback, the server will not start without TLS.
    let out = Command::new(tollgate_bin())
        .args(["team-server", "--database", &t.pg.url(), "--listen", "0.0.0.0:0", "--policy"])
        .arg(t.repo.dir.path().join("work"))
        .args(["--gitlab", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a loopback address") && stderr.contains("--tls-cert"), "{stderr}");
}

//! Gateway overhead benchmark. Starts the fake provider (answers at once) and a `tollgate daemon`,
//! then sends non-streamed chat completions at fixed rates (open loop: requests leave on schedule
//! whatever the latency) once straight to the fake and once through tollgate, and prints:
//!
//! - end-to-end latency percentiles for both, and their difference (what the gateway adds);
//! - the gateway's own added time as it reports it (`x-tollgate-added-ms`);
//! - the daemon's resident memory at idle, before and after the load.
//!
//! `--scenario cache` measures answers served from the response cache instead (`cache-miss`:
//! cacheable requests that all miss, each one different); `--scenario
//! db-size` writes 100,000 ledger rows through the ledger code and reports the database's size;
//! `--scenario review` times `tollgate review` of a 2,000-line diff (20 files of 100 lines) with a
//! provider that takes `--provider-delay-ms` (default 500) per call, at several concurrency limits;
//! `--scenario lsp` measures the language server's context building in a 5,000-line file after a
//! one-character edit, and the gateway's own time for one completion (`/v1/complete` against the
//! fake's `/v1/completions` called directly, same prompt size).
//!
//! `--scenario first-event` measures the time to the first streamed event, straight to the fake and
//! through tollgate, on each door with the same Claude Code-sized request in its own shape (a
//! 3.6 kB system text, 12 tools): Chat Completions (the baseline), an Anthropic pass-through (cache
//! marks, thinking, betas), the Responses API passed through and translated to Anthropic.
//!
//! `--scenario gen-corpus --path DIR` writes a labelled corpus of fresh positives and placeholder
//! negatives for every rule with a sample (`TOLLGATE_SEED` chooses the draw), in
//! `shared/corpus/secrets`' layout, for `tests/bench/compare-scanners.sh`.
//!
//! `--scenario team` runs a real PostgreSQL, `tollgate team-server`, the fake GitLab and two
//! daemons with the same team budget, one spending it within leases from the server and one
//! counting it alone: it prints both latencies at `--rates` (what leasing adds on the request path),
//! the lease grants per 1,000 requests, and the server's throughput for usage rows (batches of
//! 5,000 posted back to back).
//!
//! `--scenario upstream --port P` serves an OpenAI-shaped upstream until killed, for
//! `tests/bench/compare-gateways.sh`: a fixed answer after `--provider-delay-ms`; a streamed
//! answer sends its first chunk at once (after the delay) and the rest `--chunk-gap-ms` apart, so
//! that what a gateway holds back shows in the time to the first byte.
//!
//! `--scenario start` starts `tollgate daemon` ten times in a fresh home (the fake as its
//! provider, a daily budget) and prints the time to the first `/healthz` answer and to the first
//! proxied answer, and the resident memory at idle before and after that first request.
//!
//! `--scenario dashboard` writes a ledger of one million rows (a year of a busy user: six models,
//! five tasks, four tools, masked values, an experiment, failures and cache hits), starts the daemon
//! on it, logs in as `tollgate dashboard` does, and times `/dashboard/api/data` (every query a page
//! draws from) for each period and grouping; it prints p50 / p99 and the database's size.
//!
//! Run: `cargo build --release -p tollgate -p tollgate-tests && target/release/tollgate-bench`

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use tollgate_tests::fake::FakeProvider;
use tollgate_tests::{Daemon, init};

#[derive(Parser)]
struct Args {
    /// Request rates to measure, per second
    #[arg(long, value_delimiter = ',', default_value = "200,1000")]
    rates: Vec<u32>,
    /// Seconds of load per rate and target
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// overhead, cache, cache-miss, first-event, db-size, scan, gen-corpus, redact, review, lsp,
    /// team, start, or upstream
    #[arg(long, default_value = "overhead")]
    scenario: String,
    /// scan: the directory to scan [default: the crate sources under ~/.cargo/registry/src];
    /// dashboard: the home to write the database in and keep
    #[arg(long)]
    path: Option<std::path::PathBuf>,
    /// team: the model's price, USD per million input and output tokens (the fake's answers are
    /// about ten tokens: 1000 makes a request cost about a cent)
    #[arg(long, default_value_t = 3)]
    price_per_million: u32,
    /// Latency of the fake provider, in milliseconds (0: it answers at once)
    #[arg(long, default_value_t = 0)]
    provider_delay_ms: u64,
    /// upstream: the port to listen on (loopback)
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// upstream: milliseconds between the chunks of a streamed answer after the first
    #[arg(long, default_value_t = 10)]
    chunk_gap_ms: u64,
}

/// `tollgate daemon` in `home` on `port`, its output dropped, the fake's key in its environment.
fn spawn_daemon(home: &std::path::Path, port: u16) -> std::process::Child {
    std::process::Command::new(tollgate_tests::tollgate_bin())
        .env("TOLLGATE_HOME", home)
        .env_remove("TOLLGATE_CONFIG")
        .env("TOLLGATE_OA_API_KEY", "sk-bench-00000000000000000000")
        .env("TOLLGATE_LOG", "warn")
        .args(["daemon", "--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// The dashboard's queries on a ledger of one million rows.
async fn dashboard(keep: Option<std::path::PathBuf>) {
    const ROWS: i64 = 1_000_000;
    const YEAR_MS: i64 = 365 * 86_400_000;
    let tmp = tempfile::tempdir().unwrap();
    let home = keep.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&home).unwrap();
    let path = home.join("tollgate.db");
    let _ = std::fs::remove_file(&path);
    drop(tollgate::store::Store::open(&path).unwrap());
    // The year ends where this month does: each period's query reads a whole period's rows (the
    // month's ~82,000), as on the last day of a month; rows ahead of now are counted like the rest.
    let end = tollgate::utc::Period::Month.next(tollgate::utc::now_ms());
    let started = Instant::now();
    {
        let mut c = rusqlite::Connection::open(&path).unwrap();
        let tx = c.transaction().unwrap();
        let models = [
            ("anthropic", "claude-sonnet-4-5"),
            ("anthropic", "claude-haiku-4-5"),
            ("openai", "gpt-5"),
            ("openai", "gpt-4.1-mini"),
            ("gemini", "gemini-2.5-flash"),
            ("ollama", "qwen2.5-coder"),
        ];
        for i in 0..ROWS {
            let (provider, model) = models[(i % 6) as usize];
            let hit = i % 20 == 0;
            let failed = i % 50 == 7;
            let row = tollgate::ledger::Row {
                request_id: format!("req_{i:024x}"),
                ts_ms: end - 1 - i * (YEAR_MS / ROWS),
                identity: "developer".into(),
                project: Some(format!("acme/service-{}", i % 12)),
                task: ["completion", "chat", "review", "explain", "api"][(i % 5) as usize].into(),
                entry: "openai".into(),
                caller: ["claude-code", "codex", "aider", "default"][(i % 4) as usize].into(),
                provider: Some(provider.into()),
                model: Some(model.into()),
                input_tokens: 1200 + (i as u64 % 3000),
                output_tokens: 40 + (i as u64 % 500),
                cached_tokens: i as u64 % 800,
                cost_micros: Some(if hit { 0 } else { 5_000 + i % 20_000 }),
                latency_ms: 350.0 + (i % 900) as f64,
                added_ms: 0.08,
                cache_hit: hit,
                redactions: u32::from(i % 40 == 0) * 3,
                redacted: (i % 40 == 0).then(|| "aws-access-key=1,email=2".to_string()),
                experiment: (i % 10 == 0).then(|| "review-models".to_string()),
                arm: (i % 10 == 0)
                    .then(|| ["anthropic/claude-sonnet-4-5", "openai/gpt-5"][(i / 10 % 2) as usize].into()),
                outcome: if failed { tollgate::ledger::Outcome::Failed } else { tollgate::ledger::Outcome::Ok },
                ..Default::default()
            };
            tollgate::ledger::insert(&tx, &row).unwrap();
        }
        tx.commit().unwrap();
        c.execute_batch("VACUUM").unwrap();
    }
    print_db_size(&path, &format!("{ROWS} rows over 365 days written"), ROWS as u64, "row", started);

    let fake = FakeProvider::start().await;
    let config = format!(
        "[keychain]\nbackend = \"env\"\n[providers.oa]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nlocal = false\n\
         [[budgets]]\nname = \"weekly\"\nscope = \"user\"\nperiod = \"week\"\nlimit_usd = \"500\"\naction = \"warn\"\n",
        fake.url()
    );
    std::fs::write(home.join("config.toml"), config).unwrap();
    let port = tollgate_tests::free_port();
    let mut child = spawn_daemon(&home, port);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "the daemon did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token = std::fs::read_to_string(home.join("token")).unwrap();
    let link: serde_json::Value = client
        .post(format!("{base}/v1/dashboard/link"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let login = client.get(link["url"].as_str().unwrap()).send().await.unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();

    println!("GET /dashboard/api/data, 20 times per period and grouping (after one unmeasured):");
    println!("{:<7} {:>10} {:>10} {:>14} {:>10}", "period", "p50 ms", "p99 ms", "rows in period", "body kB");
    let mut all = Vec::new();
    for period in ["day", "week", "month"] {
        let mut times = Vec::new();
        let mut body_len = 0;
        let mut rows = 0;
        for by in ["model", "provider", "project", "task", "caller"] {
            let url = format!("{base}/dashboard/api/data?period={period}&by={by}");
            for i in 0..21 {
                let t = Instant::now();
                let r = client.get(&url).header("cookie", &cookie).send().await.unwrap();
                assert!(r.status().is_success(), "{url}: {}", r.status());
                let body = r.bytes().await.unwrap();
                if i > 0 {
                    times.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                body_len = body.len();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                rows = v["usage"]["total"]["requests"].as_u64().unwrap();
            }
        }
        all.extend_from_slice(&times);
        times.sort_by(f64::total_cmp);
        let (p50, p99) = (pct(&times, 50.0), pct(&times, 99.0));
        println!("{period:<7} {p50:>10.1} {p99:>10.1} {rows:>14} {:>10.1}", body_len as f64 / 1024.0);
    }
    all.sort_by(f64::total_cmp);
    println!("all     {:>10.1} {:>10.1}", pct(&all, 50.0), pct(&all, 99.0));
    let _ = child.kill();
    let _ = child.wait();
}

/// Cold start: `tollgate daemon` to its first `/healthz` answer and its first proxied answer.
async fn start() {
    let fake = FakeProvider::start().await;
    let client = reqwest::Client::builder().tcp_nodelay(true).build().unwrap();
    let (mut health, mut first, mut idle, mut after) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..10 {
        let home = tempfile::tempdir().unwrap();
        // A budget, as a team's policy would set: token estimates (the tokenizer) are on.
        let config = format!(
            "[keychain]\nbackend = \"env\"\n[providers.oa]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nlocal = false\n\
             [[budgets]]\nname = \"daily\"\nscope = \"user\"\nperiod = \"day\"\nlimit_usd = \"50\"\naction = \"block\"\n",
            fake.url()
        );
        std::fs::write(home.path().join("config.toml"), config).unwrap();
        let port = tollgate_tests::free_port();
        let started = Instant::now();
        let mut child = spawn_daemon(home.path(), port);
        let base = format!("http://127.0.0.1:{port}");
        loop {
            if client.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "the daemon did not start");
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        health.push(started.elapsed().as_secs_f64() * 1000.0);
        let token = std::fs::read_to_string(home.path().join("token")).unwrap();
        let r = client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(token.trim())
            .json(&json!({"model": "oa/gpt-4.1", "messages": [{"role": "user", "content": "first"}]}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let _ = r.bytes().await;
        first.push(started.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_secs(1)).await;
        after.push(rss_kib(child.id()).unwrap_or(0) as f64 / 1024.0);
        let _ = child.kill();
        let _ = child.wait();
    }
    // Idle without any request: a daemon left alone for a second after it answers /healthz.
    for _ in 0..3 {
        let home = tempfile::tempdir().unwrap();
        let mut child = spawn_daemon(home.path(), tollgate_tests::free_port());
        tokio::time::sleep(Duration::from_secs(2)).await;
        idle.push(rss_kib(child.id()).unwrap_or(0) as f64 / 1024.0);
        let _ = child.kill();
        let _ = child.wait();
    }
    for v in [&mut health, &mut first, &mut idle, &mut after] {
        v.sort_by(f64::total_cmp);
    }
    println!("tollgate: {}", tollgate_tests::tollgate_bin().display());
    println!(
        "start to first /healthz answer: median {:.1} ms, slowest {:.1} ms (10 starts)",
        pct(&health, 50.0),
        pct(&health, 100.0)
    );
    println!(
        "start to first proxied answer:  median {:.1} ms, slowest {:.1} ms",
        pct(&first, 50.0),
        pct(&first, 100.0)
    );
    println!("idle RSS, no request yet: median {:.1} MiB (3 starts)", pct(&idle, 50.0));
    println!("idle RSS, after the first request (budget on: tokenizer loaded): median {:.1} MiB", pct(&after, 50.0));
}

/// The fixed answer of `--scenario upstream` (the same bytes nginx serves in the comparison).
const UPSTREAM_ANSWER: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1764460800,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"The function returns the sum of the two arguments."},"finish_reason":"stop"}],"usage":{"prompt_tokens":220,"completion_tokens":11,"total_tokens":231}}"#;

/// An OpenAI-shaped upstream on `port` that answers every chat completion the same way.
async fn upstream(port: u16, delay: Duration, gap: Duration) {
    use axum::response::IntoResponse;
    async fn chat(
        axum::extract::State((delay, gap)): axum::extract::State<(Duration, Duration)>,
        body: bytes::Bytes,
    ) -> axum::response::Response {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let streamed = serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v["stream"] == true);
        if !streamed {
            return ([("content-type", "application/json")], UPSTREAM_ANSWER).into_response();
        }
        let chunk = |delta: serde_json::Value, finish: Option<&str>| {
            let c = json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1764460800,
                "model": "bench", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            format!("data: {c}\n\n")
        };
        let mut parts = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
        parts.extend(
            ["The function ", "returns the sum ", "of the two ", "arguments."]
                .map(|t| chunk(json!({"content": t}), None)),
        );
        parts.push(chunk(json!({}), Some("stop")));
        let usage = json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1764460800,
            "model": "bench", "choices": [], "usage": {"prompt_tokens": 220, "completion_tokens": 11, "total_tokens": 231}});
        parts.push(format!("data: {usage}\n\n"));
        parts.push("data: [DONE]\n\n".into());
        let events = futures_util::stream::unfold(parts.into_iter().enumerate(), move |mut it| async move {
            let (i, part) = it.next()?;
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            Some((Ok::<_, std::convert::Infallible>(bytes::Bytes::from(part)), it))
        });
        ([("content-type", "text/event-stream")], axum::body::Body::from_stream(events)).into_response()
    }
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat)).with_state((delay, gap));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the upstream's port");
    println!("upstream on {}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.unwrap();
}

#[derive(Default)]
struct Samples {
    e2e: Vec<f64>,
    added: Vec<f64>,
    errors: usize,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i]
}

async fn load(client: &reqwest::Client, url: &str, auth: Option<&str>, rate: u32, seconds: u64) -> Samples {
    load_body(
        client,
        url,
        auth,
        rate,
        seconds,
        json!({"model": "oa/gpt-4.1", "messages": [{"role": "user", "content": "ping"}]}),
    )
    .await
}

async fn load_body(
    client: &reqwest::Client,
    url: &str,
    auth: Option<&str>,
    rate: u32,
    seconds: u64,
    body: serde_json::Value,
) -> Samples {
    // A body containing `{n}` is sent with the request's number there: every request different
    // (cacheable requests that all miss).
    let unique = body.to_string().contains("{n}");
    let body = Arc::new(body.to_string());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let total = rate as u64 * seconds;
    let start = Instant::now();
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let (client, url, tx) = (client.clone(), url.to_string(), tx.clone());
        let body = if unique { Arc::new(body.replace("{n}", &i.to_string())) } else { Arc::clone(&body) };
        let auth = auth.map(str::to_string);
        tokio::spawn(async move {
            let t = Instant::now();
            let mut req = client.post(&url).header("content-type", "application/json").body((*body).clone());
            if let Some(a) = auth {
                req = req.header("authorization", format!("Bearer {a}"));
            }
            let result = match req.send().await {
                Ok(r) if r.status().is_success() => {
                    let added = r
                        .headers()
                        .get("x-tollgate-added-ms")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<f64>().ok());
                    let _ = r.bytes().await;
                    Ok((t.elapsed().as_secs_f64() * 1000.0, added))
                }
                _ => Err(()),
            };
            let _ = tx.send(result);
        });
    }
    drop(tx);
    let mut s = Samples::default();
    while let Some(r) = rx.recv().await {
        match r {
            Ok((e2e, added)) => {
                s.e2e.push(e2e);
                if let Some(a) = added {
                    s.added.push(a);
                }
            }
            Err(()) => s.errors += 1,
        }
    }
    s.e2e.sort_by(f64::total_cmp);
    s.added.sort_by(f64::total_cmp);
    s
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Writes 100,000 ledger rows as the daemon would (pending, then settled) and reports the size.
async fn db_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.db");
    let (ledger, _) = tollgate::ledger::Ledger::open(tollgate::store::Store::open(&path).unwrap()).await.unwrap();
    let n = 100_000;
    let started = std::time::Instant::now();
    for i in 0..n {
        let row = tollgate::ledger::Row {
            request_id: format!("req_{i:024x}"),
            ts_ms: tollgate::utc::now_ms() + i,
            identity: "developer".into(),
            project: Some(format!("acme/service-{}", i % 20)),
            task: ["completion", "chat", "review", "explain", "api"][i as usize % 5].into(),
            entry: "openai".into(),
            provider: Some("anthropic".into()),
            model: Some("claude-sonnet-4-5".into()),
            input_tokens: 1200 + (i as u64 % 3000),
            output_tokens: 40 + (i as u64 % 500),
            cached_tokens: i as u64 % 800,
            cost_micros: Some(5_000 + i % 20_000),
            latency_ms: 350.0 + (i % 900) as f64,
            added_ms: 0.08,
            outcome: tollgate::ledger::Outcome::Pending,
            ..Default::default()
        };
        let settled = tollgate::ledger::Row { outcome: tollgate::ledger::Outcome::Ok, ..row.clone() };
        let _ = ledger.write(row);
        let _ = ledger.write(settled);
    }
    ledger.store().flush().await.unwrap();
    print_db_size(&path, &format!("{n} requests (pending + settled writes)"), n as u64, "request", started);
}

/// The database's size once its write-ahead log is folded in: `what` took this long, and each of
/// the `n` `unit`s comes to so many bytes.
fn print_db_size(path: &std::path::Path, what: &str, n: u64, unit: &str, started: Instant) {
    tollgate::store::checkpoint_truncate(path).unwrap();
    let size = std::fs::metadata(path).unwrap().len();
    println!(
        "ledger: {what} in {:.1} s; database {:.1} MiB ({} bytes per {unit})",
        started.elapsed().as_secs_f64(),
        size as f64 / 1048576.0,
        size / n.max(1)
    );
}

/// Scan throughput of the full rule set on one core, over real source code.
fn scan(path: Option<std::path::PathBuf>) {
    let root = path.unwrap_or_else(|| {
        std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo/registry/src")
    });
    let mut files = Vec::new();
    tollgate::redact::report::collect_files(std::slice::from_ref(&root), &mut files).unwrap();
    let texts: Vec<Vec<u8>> = files.iter().filter_map(|f| std::fs::read(f).ok()).filter(|b| !b.contains(&0)).collect();
    let bytes: usize = texts.iter().map(Vec::len).sum();
    let before = rss_kib(std::process::id()).unwrap_or(0);
    let scanner = tollgate::redact::Scanner::new(tollgate::redact::rules::built_in());
    // The compiled rules before any scan has grown a regex's lazy cache.
    let compiled = rss_kib(std::process::id()).unwrap_or(0).saturating_sub(before);
    let mut best = f64::MAX;
    let mut found = 0;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        found = texts.iter().map(|t| scanner.scan(t).len()).sum::<usize>();
        best = best.min(t.elapsed().as_secs_f64());
    }
    let after = rss_kib(std::process::id()).unwrap_or(0).saturating_sub(before);
    println!(
        "scan: {} files, {:.1} MB from {} in {best:.2}s (best of 3, one core): {:.0} MB/s, {found} findings, {} rules; \
         compiled rules {:.1} MB, {:.1} MB after scanning",
        texts.len(),
        bytes as f64 / 1e6,
        root.display(),
        bytes as f64 / 1e6 / best,
        scanner.rules().len(),
        compiled as f64 / 1024.0,
        after as f64 / 1024.0
    );
}

/// A labelled corpus drawn from the secret rules' samples, written to `dir` (files and labels.jsonl).
fn gen_corpus(dir: Option<std::path::PathBuf>) {
    let dir = dir.expect("--path DIR: where to write the corpus");
    std::fs::create_dir_all(&dir).unwrap();
    let seed = std::env::var("TOLLGATE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x7011_6A7E);
    // Secrets only: the scanners compared look for nothing else.
    let mut rules = tollgate::redact::rules::built_in();
    rules.retain(|r| r.category == tollgate::redact::rules::Category::Secret);
    let cases = tollgate::redact::samples::corpus(&rules, seed, 2);
    let mut labels = String::new();
    for case in &cases {
        std::fs::write(dir.join(&case.file), &case.text).unwrap();
        let secrets: Vec<_> = case.labels.iter().map(|(kind, value)| json!({"kind": kind, "value": value})).collect();
        labels.push_str(&json!({"file": case.file, "secrets": secrets}).to_string());
        labels.push('\n');
    }
    std::fs::write(dir.join("labels.jsonl"), labels).unwrap();
    println!("gen-corpus: {} files (seed {seed}) in {}", cases.len(), dir.display());
}

/// Time to mask a prompt (scan and replace) and restore its answer, p50 and p99.
fn redact() {
    let redactor =
        tollgate::redact::Redactor::new(Arc::new(tollgate::redact::Scanner::new(tollgate::redact::rules::built_in())));
    let src = include_str!("../../../crates/engine/src/pipeline.rs");
    for size in [16 * 1024, 256 * 1024] {
        // Real source code, with a few secrets and personal data in it.
        let mut text = String::new();
        while text.len() < size {
            text.push_str(&src[..src.len().min(size - text.len())]);
            text.push_str("\nlet token = \"glpat-riGp_58WAm-dX3a5IDnO\"; // mail raj.patel54@acme.io\n");
        }
        let req = tollgate::model::ChatRequest {
            model: "m".into(),
            messages: vec![tollgate::model::Message::text(tollgate::model::Role::User, text)],
            ..Default::default()
        };
        let mut samples = Vec::new();
        for _ in 0..300 {
            let mut r = req.clone();
            let t = std::time::Instant::now();
            let vault = redactor.mask(&mut r);
            let restored = tollgate::redact::restore(&vault, &r.messages[0].joined_text(), false);
            samples.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(restored.len(), req.messages[0].joined_text().len());
        }
        samples.sort_by(f64::total_cmp);
        println!(
            "redact {:>3} KB prompt: p50 {:.3} ms, p99 {:.3} ms (mask and restore, n=300)",
            size / 1024,
            pct(&samples, 50.0),
            pct(&samples, 99.0)
        );
    }
}

/// A daemon whose provider `oa` is the fake, with `extra` config.
fn bench_daemon(fake: &FakeProvider, extra: &str) -> Daemon {
    let config = format!(
        "[keychain]\nbackend = \"env\"\n[providers.oa]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nlocal = false\n{extra}",
        fake.url()
    );
    Daemon::start_with_env(
        &config,
        &[("TOLLGATE_OA_API_KEY", "sk-bench-00000000000000000000"), ("TOLLGATE_LOG", "warn")],
    )
}

/// Milliseconds until the first chunk of a streamed answer (closed loop, one at a time), and the
/// gateway's reported added time.
async fn first_chunk(client: &reqwest::Client, leg: &Leg, n: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut first, mut added) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let body = leg.body.to_string();
    for _ in 0..n {
        let t = Instant::now();
        let mut req = client.post(&leg.url).header("content-type", "application/json").body(body.clone());
        for (k, v) in &leg.headers {
            req = req.header(*k, v);
        }
        let mut r = req.send().await.expect("the request is answered");
        assert!(r.status().is_success(), "{}: {}", leg.url, r.status());
        if let Some(a) =
            r.headers().get("x-tollgate-added-ms").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
        {
            added.push(a);
        }
        let _ = r.chunk().await;
        first.push(t.elapsed().as_secs_f64() * 1000.0);
        while let Ok(Some(_)) = r.chunk().await {}
    }
    (first, added)
}

async fn first_event(seconds: u64) {
    let fake = FakeProvider::start().await;
    let extra = format!(
        "[providers.an]\nkind = \"anthropic\"\nbase_url = \"{a}\"\nlocal = false\n\
         [providers.or]\nkind = \"openai\"\nbase_url = \"{a}/v1\"\nlocal = false\nresponses_api = true\n",
        a = fake.url()
    );
    let config = format!(
        "[keychain]\nbackend = \"env\"\n[providers.oa]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nlocal = false\n{extra}",
        fake.url()
    );
    let daemon = Daemon::start_with_env(
        &config,
        &[
            ("TOLLGATE_OA_API_KEY", "sk-bench-00000000000000000000"),
            ("TOLLGATE_AN_API_KEY", "sk-ant-bench-0000000000000000"),
            ("TOLLGATE_OR_API_KEY", "sk-bench-or-000000000000000000"),
            ("TOLLGATE_LOG", "warn"),
        ],
    );
    let client = reqwest::Client::builder().tcp_nodelay(true).build().unwrap();
    let key = "sk-bench-00000000000000000000";
    let tool = |i: usize| {
        json!({"name": format!("tool_{i}"), "description": "Runs a command in the project. ".repeat(20),
        "input_schema": {"type": "object", "properties": {"command": {"type": "string", "description": "the command"}}}, "cache_control": {"type": "ephemeral"}})
    };
    let anthropic = json!({"model": "claude-x", "max_tokens": 1024, "stream": true,
        "system": [{"type": "text", "text": "You are an agent. ".repeat(200), "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "say hi"}]}],
        "tools": (0..12).map(tool).collect::<Vec<_>>(), "thinking": {"type": "adaptive"}, "metadata": {"user_id": "u"}});
    let mut plain_anthropic = anthropic.clone();
    plain_anthropic.as_object_mut().unwrap().shift_remove("thinking");
    let mut gated_anthropic = anthropic.clone();
    gated_anthropic["model"] = json!("an/claude-x");
    // The same system text and tools in each door's own shape: the doors compared at one size.
    let system = "You are an agent. ".repeat(200);
    let function = |i: usize| {
        json!({"name": format!("tool_{i}"), "description": "Runs a command in the project. ".repeat(20),
        "parameters": {"type": "object", "properties": {"command": {"type": "string", "description": "the command"}}}})
    };
    let chat = json!({"model": "gpt-x", "stream": true, "messages": [{"role": "system", "content": system}, {"role": "user", "content": "say hi"}],
        "tools": (0..12).map(|i| json!({"type": "function", "function": function(i)})).collect::<Vec<_>>()});
    let mut gated_chat = chat.clone();
    gated_chat["model"] = json!("oa/gpt-x");
    let responses = json!({"model": "gpt-x", "stream": true, "instructions": system, "input": "say hi", "store": false,
        "tools": (0..12).map(|i| { let mut f = function(i); f["type"] = json!("function"); f }).collect::<Vec<_>>()});
    let mut gated_responses = responses.clone();
    gated_responses["model"] = json!("or/gpt-x");
    let mut translated = responses.clone();
    translated["model"] = json!("an/claude-x");
    let betas = [
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "claude-code-20250219,interleaved-thinking-2025-05-14"),
    ];
    let n = (seconds as usize * 50).max(50);
    // A model streams over time: 2 ms between events, as a fast provider sends them. With every
    // event at once, the first chunk a caller reads would also carry the work on all the others.
    fake.script(
        (0..(n + 20) * 2 * 4).map(|_| tollgate_tests::fake::Behaviour { chunk_delay_ms: 2, ..Default::default() }),
    );
    println!(
        "first streamed event, {n} requests each, one at a time, the cases in turn, 2 ms between the provider's events"
    );
    println!(
        "{:<34}  {:>20}  {:>20}  {:>16}  {:>22}",
        "door -> target", "direct p50 / p99 ms", "tollgate p50 / p99", "added p50 / p99", "reported added p50/p99"
    );
    let direct = |path: &str, headers: Vec<(&'static str, String)>, body: &serde_json::Value| Leg {
        url: format!("{}{path}", fake.url()),
        headers,
        body: body.clone(),
    };
    let gated = |path: &str, headers: Vec<(&'static str, String)>, body: &serde_json::Value| Leg {
        url: daemon.url(path),
        headers,
        body: body.clone(),
    };
    let bearer = |t: &str| vec![("authorization", format!("Bearer {t}"))];
    let with_betas = |mut h: Vec<(&'static str, String)>| {
        h.extend(betas.iter().map(|(k, v)| (*k, v.to_string())));
        h
    };
    let cases = [
        (
            "chat -> openai (baseline)",
            direct("/v1/chat/completions", bearer(key), &chat),
            gated("/v1/chat/completions", bearer(&daemon.token), &gated_chat),
        ),
        (
            "messages -> anthropic (pass-through)",
            direct("/v1/messages?beta=true", with_betas(vec![("x-api-key", key.to_string())]), &anthropic),
            gated("/v1/messages?beta=true", with_betas(bearer(&daemon.token)), &gated_anthropic),
        ),
        (
            "responses -> openai (pass-through)",
            direct("/v1/responses", bearer(key), &responses),
            gated("/v1/responses", bearer(&daemon.token), &gated_responses),
        ),
        (
            // Against the Anthropic endpoint it ends up at, with the same content.
            "responses -> anthropic (translated)",
            direct("/v1/messages", with_betas(vec![("x-api-key", key.to_string())]), &plain_anthropic),
            gated("/v1/responses", bearer(&daemon.token), &translated),
        ),
    ];
    // Every leg warmed, then one request of each in turn: the cases see the same machine, so a
    // busy moment (another process, a timer) weighs on all of them alike rather than on one case.
    let legs: Vec<&Leg> = cases.iter().flat_map(|(_, d, g)| [d, g]).collect();
    for leg in &legs {
        first_chunk(&client, leg, 20).await;
    }
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); legs.len()];
    for _ in 0..n {
        for (leg, (first, added)) in legs.iter().zip(samples.iter_mut()) {
            let (f, a) = first_chunk(&client, leg, 1).await;
            first.extend(f);
            added.extend(a);
        }
    }
    let mut samples = samples.into_iter();
    for (name, _, _) in &cases {
        let (d, _) = samples.next().unwrap();
        let (g, added) = samples.next().unwrap();
        let (d50, d99) = millis(d);
        let (g50, g99) = millis(g);
        let (a50, a99) = millis(added);
        println!(
            "{name:<34}  {d50:>9.3} / {d99:>8.3}  {g50:>9.3} / {g99:>8.3}  {:>7.3} / {:>6.3}  {a50:>10.3} / {a99:>9.3}",
            g50 - d50,
            g99 - d99
        );
    }
}

/// One side of a first-event measurement: where, with which headers, what.
struct Leg {
    url: String,
    headers: Vec<(&'static str, String)>,
    body: serde_json::Value,
}

fn millis(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (pct(&v, 50.0), pct(&v, 99.0))
}

/// Context building after a one-character edit in a 5,000-line file; the gateway's own time
/// for a completion.
async fn lsp() {
    use tollgate_lsp::context::{self, Budget};
    use tollgate_lsp::documents::{Document, Encoding};
    use tower_lsp_server::lsp_types::{Position, Range, TextDocumentContentChangeEvent};
    let mut text = String::from("use std::collections::HashMap;\n\n");
    let mut i = 0;
    while text.lines().count() < 5000 {
        text.push_str(&format!(
            "/// Item {i}.\npub fn item_{i}(map: &mut HashMap<u32, u32>, x: u32) -> u32 {{\n    let v = map.entry(x).or_insert({i});\n    *v += x;\n    if *v > 100 {{\n        return *v - 100;\n    }}\n    *v\n}}\n\n"
        ));
        i += 1;
    }
    let mut doc = Document::new(text, 1, "big.rs");
    let line = 2503u32;
    let (mut edit_ms, mut build_ms, mut total_ms) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..2000 {
        // Type a character, or delete it again, on a line in the middle of the file.
        let at = Position { line, character: 4 };
        let change = if n % 2 == 0 {
            TextDocumentContentChangeEvent {
                range: Some(Range { start: at, end: at }),
                range_length: None,
                text: "x".into(),
            }
        } else {
            let end = Position { line, character: 5 };
            TextDocumentContentChangeEvent {
                range: Some(Range { start: at, end }),
                range_length: None,
                text: String::new(),
            }
        };
        let t0 = Instant::now();
        doc.apply(&change, Encoding::Utf16);
        let t1 = Instant::now();
        let offset = doc.offset(Position { line, character: 4 }, Encoding::Utf16);
        let ctx = context::build(&doc, offset, &[], Budget::default());
        let t2 = Instant::now();
        std::hint::black_box(ctx);
        edit_ms.push((t1 - t0).as_secs_f64() * 1000.0);
        build_ms.push((t2 - t1).as_secs_f64() * 1000.0);
        total_ms.push((t2 - t0).as_secs_f64() * 1000.0);
    }
    println!("context after a one-character edit, {}-line file, 2,000 edits", doc.line_count());
    for (name, v) in [("apply edit + incremental parse", edit_ms), ("build context", build_ms), ("both", total_ms)] {
        let (p50, p99) = millis(v);
        println!("  {name:<32} p50 {p50:.3} ms   p99 {p99:.3} ms");
    }

    // The gateway's own time for a completion: /v1/complete vs the fake's /v1/completions.
    let fake = FakeProvider::start().await;
    let daemon = bench_daemon(&fake, "[routes.local]\ntargets = [\"oa/qwen2.5-coder-1.5b\"]\n");
    let offset = doc.offset(Position { line, character: 4 }, Encoding::Utf16);
    let ctx = context::build(&doc, offset, &[], Budget::default()).unwrap();
    let req = json!({"path": "big.rs", "language": "rust", "prefix": ctx.prefix, "suffix": ctx.suffix, "snippets": ctx.snippets, "intent": "complete"});
    let direct = json!({"model": "qwen2.5-coder-1.5b", "prompt": format!("<|fim_prefix|>{}<|fim_suffix|>{}<|fim_middle|>", ctx.prefix, ctx.suffix), "max_tokens": 128});
    let client = reqwest::Client::new();
    let (mut via, mut straight) = (Vec::new(), Vec::new());
    for n in 0..1100 {
        let t = Instant::now();
        let r = client
            .post(format!("{}/v1/completions", fake.url()))
            .bearer_auth("sk-bench-00000000000000000000")
            .json(&direct)
            .send()
            .await
            .unwrap();
        r.bytes().await.unwrap();
        let d = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        let r = client.post(daemon.url("/v1/complete")).bearer_auth(&daemon.token).json(&req).send().await.unwrap();
        assert!(r.status().is_success());
        r.bytes().await.unwrap();
        let g = t.elapsed().as_secs_f64() * 1000.0;
        if n >= 100 {
            straight.push(d);
            via.push(g);
        }
    }
    let (d50, d99) = millis(straight);
    let (g50, g99) = millis(via);
    println!(
        "completion ({} KB prompt), 1,000 sequential requests, fake model answering at once",
        req.to_string().len() / 1024
    );
    println!("  fake direct        p50 {d50:.3} ms   p99 {d99:.3} ms");
    println!("  through tollgate   p50 {g50:.3} ms   p99 {g99:.3} ms");
    println!("  gateway's own time p50 {:.3} ms   p99 {:.3} ms", g50 - d50, g99 - d99);
}

/// Wall time of `tollgate review` over a 2,000-line diff at concurrency 1..16.
async fn review(delay_ms: u64) {
    let fake = FakeProvider::start().await;
    fake.script((0..10_000).map(|_| tollgate_tests::fake::Behaviour {
        delay_ms,
        text: Some("{\"findings\": []}".into()),
        ..Default::default()
    }));
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "[keychain]\nbackend = \"env\"\n[cache]\nenabled = false\n[providers.oa]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nlocal = false\n[routes.review]\ntargets = [\"oa/gpt-a\"]\n",
            fake.url()
        ),
    )
    .unwrap();
    let repo = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .arg("-C")
            .arg(repo.path())
            .args(args)
            .env("GIT_AUTHOR_NAME", "b")
            .env("GIT_AUTHOR_EMAIL", "b@example.com")
            .env("GIT_COMMITTER_NAME", "b")
            .env("GIT_COMMITTER_EMAIL", "b@example.com")
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "--quiet"]);
    std::fs::write(repo.path().join("README.md"), "bench\n").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "--quiet", "-m", "base"]);
    for f in 0..20 {
        let mut text = String::new();
        for i in 0..10 {
            text.push_str(&format!("pub fn f{f}_{i}(x: u64) -> u64 {{\n"));
            for j in 0..8 {
                text.push_str(&format!("    let x = x.wrapping_mul({j}) ^ {i};\n"));
            }
            text.push_str("}\n");
        }
        std::fs::write(repo.path().join(format!("m{f}.rs")), text).unwrap();
    }
    git(&["add", "-A"]);
    git(&["commit", "--quiet", "-m", "2000 lines"]);
    println!("review of a 2,000-line diff (20 files), provider {delay_ms} ms per call, gateway in process");
    println!("{:>11}  {:>6}  {:>8}  {:>14}", "concurrency", "chunks", "wall s", "ideal s");
    for c in [1, 2, 4, 8, 16] {
        let start = Instant::now();
        let out = std::process::Command::new(tollgate_tests::tollgate_bin())
            .current_dir(repo.path())
            .env("TOLLGATE_HOME", home.path())
            .env("TOLLGATE_OA_API_KEY", "sk-bench-00000000000000000000")
            .env("TOLLGATE_LOG", "warn")
            .args(["review", "HEAD~1..HEAD", "--in-process", "--format", "json", "--concurrency", &c.to_string()])
            .output()
            .unwrap();
        let wall = start.elapsed().as_secs_f64();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let chunks = report["chunks"].as_u64().unwrap_or(0);
        assert!(report["errors"].as_array().is_some_and(Vec::is_empty), "{report}");
        let ideal = chunks.div_ceil(c) as f64 * delay_ms as f64 / 1000.0;
        println!("{c:>11}  {chunks:>6}  {wall:>8.2}  {ideal:>14.2}");
    }
}

/// Leasing's cost on the request path, lease grants per 1,000 requests, and the team server's
/// throughput for usage rows.
async fn team(rates: &[u32], seconds: u64, price: u32) {
    use tollgate_tests::gitlab::FakeGitlab;
    use tollgate_tests::postgres::Postgres;
    let token = "glpat-BENCHfake00000000000";
    let pg = Postgres::start();
    let fake = FakeProvider::start().await;
    let server_port = tollgate_tests::free_port();
    // A team budget of $1,000 a day on the default lease terms.
    let budget =
        "[[budgets]]\nname = \"team-day\"\nscope = \"team\"\nperiod = \"day\"\nlimit_usd = 1000\naction = \"block\"\n";
    let prices = format!("[prices.\"oa/gpt-4.1\"]\ninput = {price}\noutput = {price}\n");
    let policy = format!(
        "version = 1\n[providers.oa]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nlocal = false\n{prices}\
         [team]\nserver = \"http://127.0.0.1:{server_port}\"\n{budget}",
        fake.url()
    );
    let repo = tollgate_tests::PolicyRepo::new();
    repo.push(&[("policy.toml", &policy)], "bench policy");
    let gitlab = FakeGitlab::start(repo.bare(), "acme/ai-policy", token, "bench", &["acme"]).await;
    let log = std::fs::File::create(pg.dir().join("team-server.log")).unwrap();
    let mut server = std::process::Command::new(tollgate_tests::tollgate_bin())
        .args(["team-server", "--database", &pg.url(), "--listen", &format!("127.0.0.1:{server_port}"), "--policy"])
        .arg(repo.dir.path().join("work"))
        .args(["--gitlab", &gitlab.url()])
        .env("TOLLGATE_LOG", "warn")
        .stderr(log)
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", server_port)).is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let source = format!("gitlab+http://{}/acme/ai-policy?ref=main", gitlab.addr);
    let leased = Daemon::start_with_env(
        &format!("[keychain]\nbackend = \"env\"\n[policy]\nsource = \"{source}\"\nsync_interval_s = 3600\n"),
        &[
            ("TOLLGATE_OA_API_KEY", "sk-bench-00000000000000000000"),
            ("TOLLGATE_GITLAB_API_KEY", token),
            ("TOLLGATE_LOG", "warn"),
        ],
    );
    let alone = bench_daemon(&fake, &format!("{prices}{}", budget.replace("\"team\"", "\"user\"")));
    let deadline = Instant::now() + Duration::from_secs(20);
    while leased.get_json("/v1/policy").await["commit"].is_null() {
        assert!(Instant::now() < deadline, "no policy:\n{}", leased.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).tcp_nodelay(true).build().unwrap();
    let (to_leased, to_alone) = (leased.url("/v1/chat/completions"), alone.url("/v1/chat/completions"));
    let warm = load(&client, &to_leased, Some(&leased.token), 100, 1).await;
    load(&client, &to_alone, Some(&alone.token), 100, 1).await;
    let mut sent = warm.e2e.len() + warm.errors;
    println!();
    println!(
        "{:>6}  {:>26}  {:>26}  {:>28}",
        "rate/s", "budget alone p50 / p99 ms", "team lease p50 / p99 ms", "reported added alone / lease p99"
    );
    for &rate in rates {
        let a = load(&client, &to_alone, Some(&alone.token), rate, seconds).await;
        let l = load(&client, &to_leased, Some(&leased.token), rate, seconds).await;
        sent += l.e2e.len() + l.errors;
        println!(
            "{:>6}  {:>12.3} / {:>9.3}  {:>12.3} / {:>9.3}  {:>13.3} / {:>10.3}   (n={}+{}, errors {}+{})",
            rate,
            pct(&a.e2e, 50.0),
            pct(&a.e2e, 99.0),
            pct(&l.e2e, 50.0),
            pct(&l.e2e, 99.0),
            pct(&a.added, 99.0),
            pct(&l.added, 99.0),
            a.e2e.len(),
            l.e2e.len(),
            a.errors,
            l.errors
        );
    }
    let grants: i64 = pg.psql("SELECT COALESCE(sum(grants), 0) FROM leases").parse().unwrap();
    let spent = leased.get_json("/v1/usage?since=today").await["total"]["cost_usd"].clone();
    println!(
        "\nlease grants (the first included): {grants} for {sent} requests ({:.2} per 1,000; ${} spent; one grant \
         adds at most $50)",
        grants as f64 * 1000.0 / sent.max(1) as f64,
        spent.as_str().unwrap_or("?")
    );
    // The server's throughput for usage rows: batches of 5,000 posted back to back.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let batches = 20;
    let started = Instant::now();
    for b in 0..batches {
        let rows: Vec<serde_json::Value> = (0..5000)
            .map(|i| {
                json!({"request_id": format!("bench-{b}-{i}"), "ts_ms": now, "user": "bench", "project": "acme/web",
                       "task": "chat", "model": "oa/gpt-4.1", "caller": "claude-code", "input_tokens": 1200,
                       "output_tokens": 300, "cost_micros": 8100, "outcome": "ok", "budgets": []})
            })
            .collect();
        let r = client
            .post(format!("http://127.0.0.1:{server_port}/v1/team/usage"))
            .bearer_auth(token)
            .json(&json!({"daemon": "bench-usage", "rows": rows}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "usage rows: {} in {secs:.2}s = {:.0} rows/s (batches of 5,000, one connection)",
        batches * 5000,
        f64::from(batches * 5000) / secs
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// Loads the daemon with `body` at each rate and prints its latency and reported added time.
async fn gated_table(client: &reqwest::Client, daemon: &Daemon, args: &Args, body: serde_json::Value, label: &str) {
    let url = daemon.url("/v1/chat/completions");
    println!();
    println!("{:>6}  {label:>26}  {:>24}", "rate/s", "reported added p50 / p99");
    for &rate in &args.rates {
        let g = load_body(client, &url, Some(&daemon.token), rate, args.seconds, body.clone()).await;
        println!(
            "{:>6}  {:>12.3} / {:>9.3}  {:>11.3} / {:>10.3}   (n={}, errors {})",
            rate,
            pct(&g.e2e, 50.0),
            pct(&g.e2e, 99.0),
            pct(&g.added, 50.0),
            pct(&g.added, 99.0),
            g.e2e.len(),
            g.errors
        );
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    init();
    match args.scenario.as_str() {
        "db-size" => return db_size().await,
        "scan" => return scan(args.path),
        "gen-corpus" => return gen_corpus(args.path),
        "redact" => return redact(),
        "review" => return review(if args.provider_delay_ms == 0 { 500 } else { args.provider_delay_ms }).await,
        "lsp" => return lsp().await,
        "first-event" => return first_event(args.seconds).await,
        "team" => return team(&args.rates, args.seconds, args.price_per_million).await,
        "start" => return start().await,
        "dashboard" => return dashboard(args.path).await,
        "upstream" => {
            let delay = Duration::from_millis(args.provider_delay_ms);
            return upstream(args.port, delay, Duration::from_millis(args.chunk_gap_ms)).await;
        }
        _ => {}
    }
    let fake = FakeProvider::start().await;
    if args.provider_delay_ms > 0 {
        let total: u64 = args.rates.iter().map(|r| u64::from(*r) * (args.seconds + 1) * 2).sum::<u64>() + 1000;
        fake.script(
            (0..total)
                .map(|_| tollgate_tests::fake::Behaviour { delay_ms: args.provider_delay_ms, ..Default::default() }),
        );
    }
    let daemon = bench_daemon(&fake, "");
    println!("tollgate: {}", tollgate_tests::tollgate_bin().display());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_before = rss_kib(daemon.pid());

    let client = reqwest::Client::builder().pool_max_idle_per_host(256).tcp_nodelay(true).build().unwrap();
    let direct = format!("{}/v1/chat/completions", fake.url());
    let gated = daemon.url("/v1/chat/completions");
    // Warm both paths (connections, allocator, first-call costs).
    load(&client, &direct, Some("sk-bench-00000000000000000000"), 200, 1).await;
    load(&client, &gated, Some(&daemon.token), 200, 1).await;

    if args.scenario == "cache-miss" {
        let body =
            json!({"model": "oa/gpt-4.1", "temperature": 0, "messages": [{"role": "user", "content": "miss {n}"}]});
        gated_table(&client, &daemon, &args, body, "cache miss p50 / p99 ms").await;
        return;
    }
    if args.scenario == "cache" {
        let body =
            json!({"model": "oa/gpt-4.1", "temperature": 0, "messages": [{"role": "user", "content": "cached ping"}]});
        load_body(&client, &gated, Some(&daemon.token), 10, 1, body.clone()).await;
        let calls = fake.request_count();
        gated_table(&client, &daemon, &args, body, "cache hit p50 / p99 ms").await;
        assert_eq!(fake.request_count(), calls, "every measured answer came from the cache");
        return;
    }
    println!();
    println!(
        "{:>6}  {:>22}  {:>22}  {:>18}  {:>24}",
        "rate/s", "direct p50 / p99 ms", "tollgate p50 / p99 ms", "added p50 / p99", "reported added p50 / p99"
    );
    for &rate in &args.rates {
        let d = load(&client, &direct, Some("sk-bench-00000000000000000000"), rate, args.seconds).await;
        let g = load(&client, &gated, Some(&daemon.token), rate, args.seconds).await;
        println!(
            "{:>6}  {:>10.3} / {:>9.3}  {:>10.3} / {:>9.3}  {:>7.3} / {:>8.3}  {:>11.3} / {:>10.3}   (n={}, errors {}+{})",
            rate,
            pct(&d.e2e, 50.0),
            pct(&d.e2e, 99.0),
            pct(&g.e2e, 50.0),
            pct(&g.e2e, 99.0),
            pct(&g.e2e, 50.0) - pct(&d.e2e, 50.0),
            pct(&g.e2e, 99.0) - pct(&d.e2e, 99.0),
            pct(&g.added, 50.0),
            pct(&g.added, 99.0),
            g.e2e.len(),
            d.errors,
            g.errors
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_after = rss_kib(daemon.pid());
    println!();
    println!(
        "daemon idle RSS: {} KiB at start, {} KiB after the load",
        idle_before.map_or("?".into(), |v| v.to_string()),
        idle_after.map_or("?".into(), |v| v.to_string())
    );
}

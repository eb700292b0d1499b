//! End to end: the response cache, the usage ledger (and its survival of SIGKILL), prices,
//! budgets with reservations, rate limits, the audit log, the usage CLI, /metrics and the Grafana
//! dashboard over it.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_tests::fake::{Behaviour, FakeProvider};
use tollgate_tests::{Daemon, ENV_KEYS, init, sse_events, standard_config};

async fn setup(extra: &str) -> (FakeProvider, FakeProvider, Daemon) {
    init();
    let a = FakeProvider::start().await;
    let b = FakeProvider::start().await;
    let d = Daemon::start_with_env(&standard_config(&a, &b, extra), ENV_KEYS);
    (a, b, d)
}

fn chat(model: &str, text: &str, temperature: f64, stream: bool) -> Value {
    json!({"model": model, "temperature": temperature, "stream": stream, "max_tokens": 20,
        "messages": [{"role": "user", "content": text}]})
}

async fn send(d: &Daemon, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut r = d.client().post(d.url("/v1/chat/completions")).json(body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

fn h(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

fn cli_json(d: &Daemon, args: &[&str]) -> Value {
    let out = d.command().args(args).arg("--json").output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn deterministic_answers_are_cached_per_scope_and_replayed_as_streams() {
    let (a, _b, d) = setup("").await;
    let q = chat("oa/gpt-4.1", "cache me", 0.0, false);
    let r1 = send(&d, &q, &[]).await;
    assert_eq!(h(&r1, "x-tollgate-cache"), "miss");
    let t1: Value = r1.json().await.unwrap();
    let r2 = send(&d, &q, &[]).await;
    assert_eq!(h(&r2, "x-tollgate-cache"), "hit");
    assert_eq!(h(&r2, "x-tollgate-provider"), "oa");
    let t2: Value = r2.json().await.unwrap();
    assert_eq!(t1["choices"][0]["message"]["content"], t2["choices"][0]["message"]["content"]);
    assert_eq!(t2["usage"], t1["usage"]);
    assert_eq!(a.request_count(), 1, "the second answer came from the cache");

    // The same request streamed is replayed from the cache as a stream.
    let r = send(&d, &chat("oa/gpt-4.1", "cache me", 0.0, true), &[]).await;
    assert_eq!(h(&r, "x-tollgate-cache"), "hit");
    let body = r.text().await.unwrap();
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    let text: String = sse_events(&body)
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, t1["choices"][0]["message"]["content"].as_str().unwrap());
    // A streamed answer is stored as its events, and a whole answer is folded from them.
    let s = chat("oa/gpt-4.1", "stream first", 0.0, true);
    let _ = send(&d, &s, &[]).await.text().await.unwrap();
    let r = send(&d, &chat("oa/gpt-4.1", "stream first", 0.0, false), &[]).await;
    assert_eq!(h(&r, "x-tollgate-cache"), "hit");
    assert!(
        r.json::<Value>().await.unwrap()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .ends_with("stream first")
    );
    assert_eq!(a.request_count(), 2);

    // Scopes: another project never sees this answer.
    let r = send(&d, &q, &[("x-tollgate-project", "acme/other")]).await;
    assert_eq!(h(&r, "x-tollgate-cache"), "miss");
    // Cache-Control: no-cache skips the lookup; no-store skips the write.
    assert_eq!(h(&send(&d, &q, &[("cache-control", "no-cache")]).await, "x-tollgate-cache"), "miss");
    let fresh = chat("oa/gpt-4.1", "do not keep", 0.0, false);
    send(&d, &fresh, &[("cache-control", "no-store")]).await;
    assert_eq!(h(&send(&d, &fresh, &[]).await, "x-tollgate-cache"), "miss");
    // Not deterministic: not cached, unless the task is one the config caches.
    let warm = chat("oa/gpt-4.1", "creative", 0.8, false);
    send(&d, &warm, &[]).await;
    assert_eq!(h(&send(&d, &warm, &[]).await, "x-tollgate-cache"), "miss");
    send(&d, &warm, &[("x-tollgate-task", "completion")]).await;
    assert_eq!(h(&send(&d, &warm, &[("x-tollgate-task", "completion")]).await, "x-tollgate-cache"), "hit");

    // A hit costs nothing and says so in the ledger.
    let log = cli_json(&d, &["log", "--limit", "1"]);
    let last = &log["calls"][0];
    assert_eq!((last["cache_hit"].as_bool(), last["cost_micros"].as_i64()), (Some(true), Some(0)), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_answers_expire_and_the_size_cap_evicts_the_least_recently_used() {
    let (a, _b, d) = setup("[cache]\nttl_s = 1\nmax_bytes = 1000").await;
    let q = |t: &str| chat("oa/gpt-4.1", t, 0.0, false);
    send(&d, &q("one"), &[]).await;
    assert_eq!(h(&send(&d, &q("one"), &[]).await, "x-tollgate-cache"), "hit");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(h(&send(&d, &q("one"), &[]).await, "x-tollgate-cache"), "miss", "expired after ttl_s");

    // Each stored answer is about 200 bytes; 1000 bytes hold some, not all.
    for i in 0..12 {
        send(&d, &q(&format!("fill {i}")), &[]).await;
    }
    let calls = a.request_count();
    send(&d, &q("fill 11"), &[]).await;
    assert_eq!(a.request_count(), calls, "the most recent answer is still cached");
    send(&d, &q("fill 0"), &[]).await;
    assert_eq!(a.request_count(), calls + 1, "the least recently used answer was evicted");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ledger_records_every_request_with_tokens_cost_and_outcome() {
    let (_a, _b, d) = setup("[prices.\"oa/priced\"]\ninput = \"2.00\"\noutput = \"8.00\"\n").await;
    let r = send(&d, &chat("oa/priced", "one two three", 0.5, false), &[("x-tollgate-project", "acme/web")]).await;
    let id = h(&r, "x-tollgate-request-id");
    let v: Value = r.json().await.unwrap();
    let (inp, out) = (v["usage"]["prompt_tokens"].as_u64().unwrap(), v["usage"]["completion_tokens"].as_u64().unwrap());
    send(&d, &chat("oa/mystery-model", "x", 0.5, false), &[]).await;
    send(&d, &chat("ol/qwen", "x", 0.5, true), &[]).await.text().await.unwrap();
    assert_eq!(send(&d, &chat("nope", "x", 0.5, false), &[]).await.status(), 404);

    let call = cli_json(&d, &["log", &id]);
    assert_eq!(call["project"], "acme/web");
    assert_eq!(call["entry"], "openai");
    assert_eq!(call["task"], "api");
    assert_eq!(call["outcome"], "ok");
    assert_eq!((call["input_tokens"].as_u64().unwrap(), call["output_tokens"].as_u64().unwrap()), (inp, out));
    // $2/M in, $8/M out, in integer micro-dollars.
    assert_eq!(call["cost_micros"].as_i64().unwrap(), ((inp * 2 + out * 8) as i64));
    assert!(call["latency_ms"].as_f64().unwrap() >= call["added_ms"].as_f64().unwrap());

    let log = cli_json(&d, &["log"]);
    let calls = log["calls"].as_array().unwrap();
    let by_model = |m: &str| calls.iter().find(|c| c["model"] == m).cloned().unwrap_or(Value::Null);
    assert_eq!(by_model("mystery-model")["cost_micros"], Value::Null, "an unknown price is unknown, not zero");
    assert_eq!(by_model("qwen")["cost_micros"], 0, "a local model costs nothing");
    assert!(calls.iter().any(|c| c["outcome"] == "unknown_model"), "failures are recorded too: {log}");

    let usage = cli_json(&d, &["usage", "--since", "today", "--by", "model"]);
    assert_eq!(usage["total"]["requests"], 4);
    assert_eq!(usage["total"]["unknown_cost_requests"], 1);
    assert_eq!(usage["total"]["errors"], 1);
    let usage = cli_json(&d, &["usage", "--by", "project"]);
    let month = &usage["month"]["lines"];
    assert!(month.as_array().unwrap().iter().any(|l| l["key"] == "acme/web" && l["requests"] == 1), "{usage}");
    // Text output names the periods and the unknown cost.
    let out = d.command().args(["usage"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("today") && text.contains("this month") && text.contains("1 of unknown cost"), "{text}");

    // With the daemon stopped, the CLI reads the database itself.
    let mut d = d;
    d.kill();
    let usage = cli_json(&d, &["usage", "--since", "7d"]);
    assert_eq!(usage["total"]["requests"], 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkill_under_load_loses_no_row_of_a_completed_request() {
    let (a, _b, mut d) = setup("").await;
    a.script((0..400).map(|_| Behaviour { delay_ms: 5, ..Default::default() }));
    // Another connection holds the database's write lock for the whole run: nothing the daemon
    // writes can be committed before it is killed, so every row of a completed request must be
    // durable by some other way (the journal), every time, not only when the kill happens to
    // land between an answer and its commit.
    let lock = rusqlite::Connection::open(d.home.path().join("tollgate.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let client = d.client();
    let url = d.url("/v1/chat/completions");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..300 {
        let (client, url, tx) = (client.clone(), url.clone(), tx.clone());
        let stream = i % 2 == 0;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i as u64)).await;
            let body = chat("oa/gpt-4.1", &format!("load {i}"), 0.7, stream);
            let Ok(r) = client.post(&url).json(&body).send().await else { return };
            let id =
                r.headers().get("x-tollgate-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            let complete = match r.text().await {
                Ok(t) if stream => t.ends_with("data: [DONE]\n\n"),
                Ok(t) => {
                    serde_json::from_str::<Value>(&t).is_ok_and(|v| v["choices"][0]["message"]["content"].is_string())
                }
                Err(_) => false,
            };
            if complete {
                let _ = tx.send(id);
            }
        });
    }
    drop(tx);
    // Kill once 40 requests have completed, with the rest still arriving and in flight.
    let mut completed = HashSet::new();
    while completed.len() < 40 {
        let id = tokio::time::timeout(Duration::from_secs(4), rx.recv())
            .await
            .expect("requests are answered while the database is locked: none waits for a commit")
            .expect("requests complete");
        completed.insert(id);
    }
    let pid = d.pid();
    assert!(std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    while let Some(id) = rx.recv().await {
        completed.insert(id);
    }
    assert!(completed.len() < 300, "the kill happened under load");
    let committed: i64 = lock.query_row("SELECT COUNT(*) FROM ledger", [], |r| r.get(0)).unwrap();
    assert_eq!(committed, 0, "the lock held every row out of the database until the kill");
    drop(lock);
    d.restart();
    let log = cli_json(&d, &["log", "--limit", "1000"]);
    let recorded: HashSet<String> =
        log["calls"].as_array().unwrap().iter().map(|c| c["request_id"].as_str().unwrap().to_string()).collect();
    let missing: Vec<&String> = completed.iter().filter(|id| !recorded.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} completed requests have no ledger row: {missing:?}",
        missing.len(),
        completed.len()
    );
    let calls = log["calls"].as_array().unwrap();
    assert!(
        calls.iter().all(|c| c["outcome"] != "pending"),
        "rows left pending by the kill are marked interrupted at start"
    );
    // A completed request's row was settled before its answer ended: its real figures, not the
    // estimate, survive.
    let unsettled: Vec<&Value> = calls
        .iter()
        .filter(|c| completed.contains(c["request_id"].as_str().unwrap()) && c["outcome"] != "ok")
        .collect();
    assert!(unsettled.is_empty(), "completed requests whose settled row was lost: {unsettled:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn budgets_block_downgrade_or_warn_in_the_callers_format() {
    let extra = r#"
[[budgets]]
name = "tiny-tokens"
scope = "model"
match = "oa/gpt-a"
period = "day"
limit_tokens = 30
action = "block"

[[budgets]]
name = "ob-downgrade"
scope = "model"
match = "ob/*"
period = "month"
limit_tokens = 1
action = "downgrade"
downgrade_to = "mixed-local"

[[budgets]]
name = "project-warn"
scope = "project"
match = "acme/*"
period = "week"
limit_tokens = 1
action = "warn"

[routes.mixed-local]
targets = ["ol/qwen-local"]
"#;
    let (_a, _b, d) = setup(extra).await;
    // 4 framing + 1 word, with margin, and max_tokens 20: 26 tokens reserved. The first fits in 30;
    // it really costs about 8, and 8 + 26 does not.
    let q = chat("oa/gpt-a", "hello", 0.7, false);
    assert_eq!(send(&d, &q, &[]).await.status(), 200);
    let r = send(&d, &q, &[]).await;
    assert_eq!(r.status(), 402);
    assert!(h(&r, "retry-after").parse::<u64>().unwrap() > 0);
    let v: Value = r.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("tiny-tokens") && msg.contains("of 30 tokens") && msg.contains("resets at"), "{msg}");
    assert_eq!(v["error"]["type"], "insufficient_quota");
    let r = d
        .client()
        .post(d.url("/v1/messages"))
        .json(&json!({"model": "oa/gpt-a", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "billing_error");

    let r = send(&d, &chat("ob/gpt-b", "hello", 0.7, false), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "x-tollgate-provider"), "ol");
    assert_eq!(h(&r, "x-tollgate-downgraded"), "ob-downgrade -> mixed-local");

    let r = send(&d, &chat("ol/qwen", "hello", 0.7, false), &[("x-tollgate-project", "acme/web")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "x-tollgate-budget-warning"), "project-warn exceeded");

    let budgets = cli_json(&d, &["budget"]);
    let tiny = budgets["budgets"].as_array().unwrap().iter().find(|b| b["name"] == "tiny-tokens").unwrap().clone();
    assert_eq!(tiny["limit_tokens"], 30);
    assert!(tiny["spent_tokens"].as_u64().unwrap() > 0);
    let blocked =
        cli_json(&d, &["log"])["calls"].as_array().unwrap().iter().filter(|c| c["outcome"] == "blocked").count();
    assert_eq!(blocked, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_requests_overspend_a_nearly_spent_budget_by_at_most_one_estimate() {
    // $1000 per million tokens: every token costs 1,000 micro-dollars, so spend is exact.
    let extra = r#"
[prices."oa/metered"]
input = "1000"
output = "1000"

[[budgets]]
name = "daily-money"
scope = "user"
period = "day"
limit_usd = "0.40"
action = "block"
"#;
    let (a, _b, d) = setup(extra).await;
    a.script((0..60).map(|_| Behaviour { delay_ms: 30, ..Default::default() }));
    let q = chat("oa/metered", "spend", 0.7, false);
    let client = d.client();
    let url = d.url("/v1/chat/completions");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (client, url, q) = (client.clone(), url.clone(), q.clone());
            tokio::spawn(async move { client.post(&url).json(&q).send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let blocked = statuses.iter().filter(|s| **s == 402).count();
    assert_eq!(ok + blocked, 50, "{statuses:?}");
    assert!(ok > 0 && blocked > 0, "ok {ok}, blocked {blocked}");

    let report = cli_json(&d, &["budget"]);
    let b = &report["budgets"][0];
    let spent = tollgate::ledger::prices::parse_usd(b["spent_usd"].as_str().unwrap()).unwrap();
    // One request's estimate: (4 + 1) tokens * 1.25, rounded down, plus 20 output = 26 tokens.
    let one_estimate = 26 * 1000;
    assert!(spent <= 400_000 + one_estimate, "spent {spent} micro-dollars of a 400000 limit");
    // Without reservations all 50 would have passed (each costs about 15 tokens).
    assert!(ok < 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_answer_429_with_retry_after_in_the_callers_format() {
    let extra = r#"
[[rate_limits]]
scope = "caller"
match = "anthropic"
requests_per_minute = 2

[[rate_limits]]
scope = "model"
match = "oa/*"
requests_per_minute = 1
"#;
    let (_a, _b, d) = setup(extra).await;
    let body = json!({"model": "ol/qwen", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..2 {
        assert_eq!(d.client().post(d.url("/v1/messages")).json(&body).send().await.unwrap().status(), 200);
    }
    let r = d.client().post(d.url("/v1/messages")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(h(&r, "retry-after").parse::<u64>().unwrap() >= 1);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("requests per minute"), "{v}");
    // Other callers have their own bucket.
    assert_eq!(send(&d, &chat("ol/qwen", "hi", 0.7, false), &[]).await.status(), 200);
    // A model over its limit falls back to the next target; alone, it is a 429.
    assert_eq!(send(&d, &chat("mixed", "hi", 0.7, false), &[]).await.status(), 200);
    let r = send(&d, &chat("mixed", "hi", 0.7, false), &[]).await;
    assert_eq!(h(&r, "x-tollgate-provider"), "ol");
    let r = send(&d, &chat("oa/gpt-a", "hi", 0.7, false), &[]).await;
    assert_eq!(r.status(), 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_log_keeps_prompts_only_when_enabled_and_only_for_its_retention() {
    let (_a, _b, mut d) = setup("[audit]\nenabled = true\nretention_days = 7").await;
    let r = send(&d, &chat("oa/gpt-4.1", "what did we send", 0.5, true), &[]).await;
    let id = h(&r, "x-tollgate-request-id");
    r.text().await.unwrap();
    let call = cli_json(&d, &["log", &id[..12]]);
    assert_eq!(call["request"]["messages"][0]["content"][0]["text"], "what did we send");
    assert!(call["response"]["content"][0]["text"].as_str().unwrap().ends_with("what did we send"));

    // Retention 0: everything older than now goes at the next start.
    std::fs::write(
        d.home.path().join("config.toml"),
        std::fs::read_to_string(d.home.path().join("config.toml"))
            .unwrap()
            .replace("retention_days = 7", "retention_days = 0"),
    )
    .unwrap();
    d.restart();
    let call = cli_json(&d, &["log", &id]);
    assert_eq!(call["request"], Value::Null, "{call}");
    assert_eq!(call["outcome"], "ok", "the ledger row itself stays");

    let (_a2, _b2, off) = setup("").await;
    let r = send(&off, &chat("oa/gpt-4.1", "private", 0.5, false), &[]).await;
    let id = h(&r, "x-tollgate-request-id");
    assert_eq!(cli_json(&off, &["log", &id])["request"], Value::Null, "off by default");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_served_in_prometheus_text_format() {
    let (_a, _b, d) = setup(
        "[[budgets]]\nname = \"m\"\nscope = \"user\"\nperiod = \"month\"\nlimit_usd = \"5\"\naction = \"warn\"\n",
    )
    .await;
    let q = chat("oa/gpt-4.1", "metric", 0.0, false);
    send(&d, &q, &[]).await;
    send(&d, &q, &[]).await;
    let r = d.client().get(d.url("/metrics")).send().await.unwrap();
    assert!(h(&r, "content-type").starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    assert!(text.contains("# TYPE tollgate_requests_total counter"));
    assert!(
        text.contains("tollgate_requests_total{entry=\"openai\",provider=\"oa\",model=\"gpt-4.1\",outcome=\"ok\"} 2"),
        "{text}"
    );
    assert!(text.contains("tollgate_cache_hits_total 1"));
    assert!(text.contains("tollgate_cache_misses_total 1"));
    assert!(text.contains("tollgate_added_seconds_count 2"));
    assert!(text.contains("tollgate_budget_remaining_usd{budget=\"m\",key=\"\"}"));
    // Without the token: refused like every other endpoint.
    assert_eq!(reqwest::get(d.url("/metrics")).await.unwrap().status(), 401);
}

/// The Grafana dashboard shipped in packaging/ reads only what the daemon exports: a real
/// Prometheus scrapes a daemon with its token while requests arrive, and every panel's query
/// (Grafana's variables filled in) returns series with numbers, not an empty answer or an error.
#[tokio::test(flavor = "multi_thread")]
async fn every_query_of_the_grafana_dashboard_answers_from_a_scraped_daemon() {
    let (_a, _b, d) = setup(
        "[[budgets]]\nname = \"money\"\nscope = \"user\"\nperiod = \"month\"\nlimit_usd = \"50\"\naction = \"warn\"\n\
         [[budgets]]\nname = \"tokens\"\nscope = \"user\"\nperiod = \"day\"\nlimit_tokens = 1000000\naction = \"warn\"\n",
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let port = tollgate_tests::free_port();
    let config = work.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tollgate\n    authorization:\n      \
             credentials_file: {}\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            d.home.path().join("token").display(),
            d.port
        ),
    )
    .unwrap();
    let mut prometheus = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", work.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(work.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus runs (tests/setup.sh installs Debian's prometheus)");
    let log = || std::fs::read_to_string(work.path().join("prometheus.log")).unwrap_or_default();
    let query = |q: String| {
        let url = format!("http://127.0.0.1:{port}/api/v1/query");
        async move {
            let url = reqwest::Url::parse_with_params(&url, &[("query", q.as_str())]).ok()?;
            let r = reqwest::Client::new().get(url).send().await.ok()?;
            r.json::<Value>().await.ok()
        }
    };
    // Scraped, with the token, before the requests come.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while query("up{job=\"tollgate\"} == 1".into()).await.and_then(|v| v["data"]["result"].as_array().map(Vec::len))
        != Some(1)
    {
        assert!(std::time::Instant::now() < deadline, "prometheus never scraped the daemon:\n{}", log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Requests over a few scrapes, read to their end (none fails: a share of failures must then
    // read zero, not nothing): cacheable ones (a miss, then hits) and others.
    for i in 0..12 {
        let temperature = if i % 2 == 0 { 0.0 } else { 0.5 };
        let r = send(&d, &chat("oa/gpt-4.1", "grafana", temperature, i % 3 == 0), &[]).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let scraped = || query("sum(tollgate_requests_total)".into());
    while scraped().await.and_then(|v| v["data"]["result"][0]["value"][1].as_str().map(str::to_string))
        != Some("12".into())
    {
        assert!(std::time::Instant::now() < deadline, "the requests never reached prometheus:\n{}", log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/grafana/tollgate.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(dashboard["__inputs"][0]["pluginId"], "prometheus");
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", panel["title"]);
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            // What Grafana fills in: a range of a few minutes, a rate window of several scrapes.
            let q = expr.replace("$__range", "5m").replace("$__rate_interval", "10s").replace("$instance", ".+");
            let answer = query(q.clone()).await.unwrap_or_default();
            assert_eq!(answer["status"], "success", "{}: {q}: {answer}", panel["title"]);
            let series = answer["data"]["result"].as_array().cloned().unwrap_or_default();
            assert!(!series.is_empty(), "{}: no series for {q}", panel["title"]);
            assert!(
                series
                    .iter()
                    .any(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).is_some_and(f64::is_finite)),
                "{}: no number in {q}: {answer}",
                panel["title"]
            );
            // The labels a `by` keeps are on every series (a `by` over a label the metric lacks
            // still answers, with one unlabelled series).
            let kept = expr.split("by (").skip(1).filter_map(|l| l.split_once(')')).flat_map(|(l, _)| l.split(','));
            for label in kept.map(str::trim).filter(|l| *l != "le") {
                assert!(
                    series.iter().all(|s| s["metric"][label].is_string()),
                    "{}: no label {label} on the series of {q}: {answer}",
                    panel["title"]
                );
            }
            queries += 1;
        }
    }
    assert_eq!(queries, 14, "every panel's queries were checked");
    let _ = prometheus.kill();
    let _ = prometheus.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_split_route_gives_each_user_one_arm_by_weight_and_usage_compares_the_arms() {
    use futures_util::StreamExt;
    let (a, b, d) = setup(
        "[routes.review-ab]\nsplit = { \"oa/gpt-4.1\" = 50, \"ob/gpt-4.1-mini\" = 50 }\nexperiment = \"review-models\"\n",
    )
    .await;
    // 1,000 requests from 50 users, 20 each, 16 at a time.
    let calls: Vec<(String, usize)> = (0..1000).map(|i| (format!("dev{:02}@example.test", i % 50), i)).collect();
    let answers: Vec<(String, String, String)> = futures_util::stream::iter(calls)
        .map(|(user, i)| {
            let d = &d;
            async move {
                let body = chat("review-ab", &format!("review chunk {i}"), 0.7, i % 2 == 0);
                let r = send(d, &body, &[("x-tollgate-user", &user)]).await;
                assert_eq!(r.status(), 200, "request {i}");
                let served = format!("{}/{}", h(&r, "x-tollgate-provider"), h(&r, "x-tollgate-model"));
                let experiment = h(&r, "x-tollgate-experiment");
                let _ = r.text().await.unwrap();
                (user, served, experiment)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;

    let mut arm_of: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    let mut per_arm: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for (user, served, experiment) in &answers {
        assert_eq!(experiment, &format!("review-models={served}"), "the arm is named to the caller");
        let first = *arm_of.entry(user).or_insert(served);
        assert_eq!(first, served, "{user} saw two arms");
        *per_arm.entry(served).or_default() += 1;
    }
    assert_eq!(arm_of.len(), 50);
    assert_eq!(per_arm.len(), 2, "{per_arm:?}");
    for (arm, n) in &per_arm {
        assert!((425..=575).contains(n), "{arm} got {n} of 1000 requests: {per_arm:?}");
    }
    assert_eq!(a.request_count() as u64 + b.request_count() as u64, 1000);

    // The per-arm report is the ledger's figures, arm by arm.
    let report = cli_json(&d, &["usage", "--since", "1h", "--by", "arm"]);
    let db = rusqlite::Connection::open(d.home.path().join("tollgate.db")).unwrap();
    let mut stmt = db
        .prepare(
            "SELECT experiment || ': ' || arm, COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cost_micros), \
             SUM(outcome != 'ok'), SUM(cache_hit) FROM ledger GROUP BY 1 ORDER BY 1",
        )
        .unwrap();
    let ledger: Vec<(String, i64, i64, i64, i64, i64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ledger.len(), 2, "{ledger:?}");
    let lines = report["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "{report:#}");
    for (key, requests, input, output, micros, errors, hits) in &ledger {
        let line = lines.iter().find(|l| l["key"] == key.as_str()).unwrap_or_else(|| panic!("{key} in {report:#}"));
        let served = key.strip_prefix("review-models: ").unwrap();
        assert_eq!(*requests as u64, per_arm[served], "{key}");
        assert_eq!(line["requests"], *requests, "{key}");
        assert_eq!(line["input_tokens"], *input, "{key}");
        assert_eq!(line["output_tokens"], *output, "{key}");
        assert!(*micros > 0, "both arms are priced");
        assert_eq!(line["cost_usd"].as_str().unwrap(), format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000));
        assert_eq!((line["errors"].as_i64().unwrap(), line["cache_hits"].as_i64().unwrap()), (*errors, *hits));
        let (p50, p95) = (line["latency_ms_p50"].as_f64().unwrap(), line["latency_ms_p95"].as_f64().unwrap());
        assert!(p50 > 0.0 && p95 >= p50, "{line}");
    }
    // The text report compares the arms too.
    let out = d.command().args(["usage", "--since", "1h", "--by", "arm"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("p95 ms") && text.contains("review-models: ob/gpt-4.1-mini"), "{text}");
}

//! The fault suite: upstreams and callers that misbehave. Each test asserts that the daemon keeps
//! serving, says what happened, and that no secret leaves for where it must not go.

use serde_json::{Value, json};
use tollgate_tests::fake::{Behaviour, FakeProvider};
use tollgate_tests::{Daemon, ENV_KEYS, init, standard_config};

async fn setup() -> (FakeProvider, FakeProvider, Daemon) {
    init();
    let a = FakeProvider::start().await;
    let b = FakeProvider::start().await;
    // Priced, so that a cost is worked out from whatever usage the provider reports.
    let extra = "[prices.\"oa/gpt-a\"]\ninput = \"75\"\noutput = \"150\"\n";
    let d = Daemon::start_with_env(&standard_config(&a, &b, extra), ENV_KEYS);
    (a, b, d)
}

/// A chat request saying `content` to `model`, streamed or not.
async fn ask(d: &Daemon, model: &str, stream: bool, content: &str) -> reqwest::Response {
    d.client()
        .post(d.url("/v1/chat/completions"))
        .json(&json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": content}]}))
        .send()
        .await
        .unwrap()
}

async fn chat(d: &Daemon, model: &str) -> (u16, Value) {
    let r = ask(d, model, false, "hi").await;
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A provider answering 307 to another address would receive the key there (only `Authorization`
/// was stripped by the HTTP client): no redirect is followed, for any provider kind's key header,
/// and the caller learns where it pointed and why it was not followed.
#[tokio::test(flavor = "multi_thread")]
async fn keys_never_follow_a_redirect_to_another_address() {
    let (a, b, d) = setup().await;
    for model in ["oa/gpt-a", "an/claude-a", "ge/gemini-a"] {
        // One redirect each: it is not tried again (it would point away again).
        a.script([Behaviour { redirect_to: Some(b.url()), ..Default::default() }]);
        let (status, body) = chat(&d, model).await;
        assert_eq!(status, 502, "{model}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("redirect") && message.contains("not followed"), "{model}: {message}");
        assert!(message.contains(&b.url()), "{model}: names where it pointed: {message}");
        assert!(b.requests().is_empty(), "{model}: the other address received {:?}", b.requests());
    }
    // The daemon still serves.
    a.script([Behaviour::default()]);
    assert_eq!(chat(&d, "oa/gpt-a").await.0, 200);
}

/// A provider reporting 2^64-1 output tokens once panicked in metrics (debug), poisoned its lock
/// and took every later request down; in release a cost wrapped negative. Figures are bounded,
/// noted in the ledger, and the daemon keeps serving and counting.
#[tokio::test(flavor = "multi_thread")]
async fn absurd_usage_figures_are_bounded_and_noted_and_the_daemon_keeps_serving() {
    let (a, _b, d) = setup().await;
    for stream in [false, true] {
        a.script([Behaviour { output_tokens: Some(u64::MAX), ..Default::default() }]);
        let r = ask(&d, "oa/gpt-a", stream, "hi").await;
        assert_eq!(r.status(), 200);
        let _ = r.text().await.unwrap();
    }
    // Later requests and the metrics still answer; the ledger holds bounded figures and says why.
    assert_eq!(chat(&d, "oa/gpt-a").await.0, 200);
    let metrics = d.client().get(d.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let log = d.get_json("/v1/log?limit=3").await;
    let calls = log["calls"].as_array().unwrap();
    let absurd: Vec<&Value> = calls.iter().filter(|c| c["output_tokens"] == 100_000_000).collect();
    assert_eq!(absurd.len(), 2, "{log}");
    for c in absurd {
        assert!(c["note"].as_str().unwrap_or_default().contains("reported output 18446744073709551615"), "{c}");
        // 100M output tokens at $150 per million: $15,000, not a wrapped or negative figure.
        let cost = c["cost_micros"].as_i64().unwrap();
        assert!((15_000_000_000..15_001_000_000).contains(&cost), "{c}");
    }
}

/// A route whose redaction is "off" (its targets are local) sends text as it is; but when a budget
/// downgrades it to a cloud target, or "off" is the global mode, text that goes to a cloud target
/// is masked all the same, and the caller still gets its own text back.
#[tokio::test(flavor = "multi_thread")]
async fn unmasked_text_never_reaches_a_cloud_target_whatever_the_route_says() {
    init();
    let a = FakeProvider::start().await;
    let b = FakeProvider::start().await;
    let extra = r#"
[routes.private]
targets = ["ol/qwen-local"]
redaction = "off"
[redaction]
mode = "off"
[[budgets]]
name = "local-spent"
scope = "model"
match = "ol/*"
period = "month"
limit_tokens = 1
action = "downgrade"
downgrade_to = "cloud-a"
[routes.cloud-a]
targets = ["oa/gpt-a"]
"#;
    let d = Daemon::start_with_env(&standard_config(&a, &b, extra), ENV_KEYS);
    const PAT: &str = "glpat-riGp_58WAm-dX3a5IDnO";
    for route in ["private", "oa/gpt-a"] {
        let r = ask(&d, route, false, &format!("deploy with {PAT}")).await;
        assert_eq!(r.status(), 200, "{route}");
        assert_eq!(r.headers()["x-tollgate-provider"], "oa", "{route}");
        let answer: Value = r.json().await.unwrap();
        assert!(answer.to_string().contains(PAT), "{route}: the caller gets its text back: {answer}");
        let sent = a.requests().into_iter().rev().find(|r| r.path == "/v1/chat/completions").unwrap();
        assert!(!sent.body.to_string().contains(PAT), "{route}: the cloud target got the secret: {}", sent.body);
        assert!(sent.body.to_string().contains("TOLLGATE_"), "{route}: {}", sent.body);
    }
}

/// A key in a provider's base URL (user part or query) or in its configured `query`, or a token
/// pasted into a model name, is echoed nowhere: not in the caller's error, the ledger note,
/// `/v1/status` or the daemon's log.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_in_addresses_and_model_names_are_echoed_nowhere() {
    init();
    let a = FakeProvider::start().await;
    let b = FakeProvider::start().await;
    const PASS: &str = "hunter2-userinfo-pass";
    const QUERY_KEY: &str = "AIzaSyQueryKey0000000000000000000000";
    const PAT: &str = "glpat-riGp_58WAm-dX3a5IDnO";
    // Port 1 refuses connections: the error names the address it could not reach.
    let extra = format!(
        "[providers.leaky]\nkind = \"openai\"\nbase_url = \"http://user:{PASS}@127.0.0.1:1/v1?sig={QUERY_KEY}\"\n\
         local = false\nquery = {{ key = \"{QUERY_KEY}\" }}\n"
    );
    let d = Daemon::start_with_env(
        &standard_config(&a, &b, &extra),
        &[ENV_KEYS, &[("TOLLGATE_LEAKY_API_KEY", "sk-test-leaky-000000000000")]].concat(),
    );
    let (status, body) = chat(&d, "leaky/gpt-x").await;
    assert_eq!(status, 502, "{body}");
    let (status, pasted) = chat(&d, &format!("oa/{PAT}")).await;
    assert_eq!(status, 400, "{pasted}");
    assert!(pasted["error"]["message"].as_str().unwrap().contains("gitlab"), "names the kind: {pasted}");
    let status_page = d.client().get(d.url("/v1/status")).send().await.unwrap().text().await.unwrap();
    assert!(status_page.contains("127.0.0.1:1"), "{status_page}");
    let log = d.get_json("/v1/log?limit=5").await;
    let daemon_log = d.log();
    for secret in [PASS, QUERY_KEY, PAT] {
        for (what, text) in [
            ("the error", body.to_string()),
            ("the model-name error", pasted.to_string()),
            ("/v1/status", status_page.clone()),
            ("the ledger", log.to_string()),
            ("the daemon log", daemon_log.clone()),
        ] {
            assert!(!text.contains(secret), "{what} holds {secret}: {text}");
        }
    }
}

/// A provider that sends more than `limits.max_response_bytes` (600 MB once took 2.4 GB of
/// memory) is cut off there, whole or streamed, and the caller is told why.
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_beyond_the_size_limit_is_cut_and_the_caller_told() {
    init();
    let a = FakeProvider::start().await;
    let b = FakeProvider::start().await;
    // standard_config has a [limits] table already: the setting is added to it.
    let config = standard_config(&a, &b, "").replacen("[limits]\n", "[limits]\nmax_response_bytes = 65536\n", 1);
    let d = Daemon::start_with_env(&config, ENV_KEYS);
    let long = "word ".repeat(40_000);
    a.script((0..2).map(|_| Behaviour { text: Some(long.clone()), ..Default::default() }));
    let (status, body) = chat(&d, "oa/gpt-a").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.to_string().contains("max_response_bytes"), "{body}");
    a.script([Behaviour { text: Some(long.clone()), ..Default::default() }]);
    let r = ask(&d, "oa/gpt-a", true, "hi").await;
    assert_eq!(r.status(), 200);
    let streamed = r.text().await.unwrap();
    assert!(streamed.len() < 100_000, "cut near the limit: {} bytes", streamed.len());
    assert!(streamed.contains("max_response_bytes"), "{}", &streamed[streamed.len().saturating_sub(400)..]);
    // And the daemon still serves (another target: three failures opened oa's circuit).
    assert_eq!(chat(&d, "ob/gpt-b").await.0, 200);
}

/// A server that reports no usage, and a stream the caller leaves before the figures come, were
/// booked as 0 tokens (free, whatever the budget): the missing figures are estimated from the text
/// and the row says so.
#[tokio::test(flavor = "multi_thread")]
async fn calls_without_usage_figures_are_estimated_not_free() {
    let (a, _b, d) = setup().await;
    let log = || async {
        let v = d.get_json("/v1/log?limit=1").await;
        v["calls"][0].clone()
    };
    let weather = "please say something about the weather today";
    for stream in [false, true] {
        a.script([Behaviour { no_usage: true, ..Default::default() }]);
        let r = ask(&d, "oa/gpt-a", stream, weather).await;
        assert_eq!(r.status(), 200);
        let _ = r.text().await.unwrap();
        let row = log().await;
        assert!(row["input_tokens"].as_u64().unwrap() > 0 && row["output_tokens"].as_u64().unwrap() > 0, "{row}");
        assert!(row["note"].as_str().unwrap_or_default().contains("estimated"), "{row}");
        assert!(row["cost_micros"].as_i64().unwrap() > 0, "{row}");
    }
    // The caller leaves after the first chunk of a slow stream.
    a.script([Behaviour { chunk_delay_ms: 200, ..Default::default() }]);
    let mut r = ask(&d, "oa/gpt-a", true, weather).await;
    assert!(r.chunk().await.unwrap().is_some());
    drop(r);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let row = loop {
        let row = log().await;
        if row["outcome"] == "cancelled" || std::time::Instant::now() > deadline {
            break row;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(row["outcome"], "cancelled", "{row}");
    assert!(row["input_tokens"].as_u64().unwrap() > 0, "{row}");
}

/// On a full disk the daemon once served 300 requests and kept 2 ledger rows: commits failed and
/// were acknowledged all the same. Now a write is acknowledged only once committed; while the
/// database cannot keep writes, `/healthz` says so and requests are refused rather than spent
/// unrecorded; once space is back the daemon records and serves again. Needs root (a tmpfs).
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_stops_spending_and_says_so_and_recovers() {
    init();
    let home = tempfile::Builder::new().prefix("tg-full-").tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(home.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    let unmount = home.path().to_path_buf();
    let a = FakeProvider::start().await;
    let b = FakeProvider::start().await;
    let d = Daemon::start_in(home, &standard_config(&a, &b, ""), ENV_KEYS, &[]);
    assert_eq!(chat(&d, "oa/gpt-a").await.0, 200);
    // Fill the disk.
    let filler = d.home.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.flush();
    }
    let (mut served, mut refused) = (1usize, None);
    for _ in 0..200 {
        let r = ask(&d, "oa/gpt-a", false, &"x ".repeat(4000)).await;
        match r.status().as_u16() {
            200 => served += 1,
            status => {
                refused = Some((status, r.text().await.unwrap()));
                break;
            }
        }
    }
    let (status, body) = refused.expect("a full disk is noticed");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cannot record calls"), "{body}");
    let health = d.client().get(d.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 503);
    assert!(health.text().await.unwrap().contains("degraded"));
    // Space back: the daemon notices by itself, records and serves again.
    std::fs::remove_file(&filler).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while d.client().get(d.url("/healthz")).send().await.unwrap().status() != 200 {
        assert!(std::time::Instant::now() < deadline, "the failure never cleared");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(chat(&d, "oa/gpt-a").await.0, 200);
    served += 1;
    // Every answered request has its settled row, the one in flight when the disk filled too
    // (its settlement waited for the disk).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = d.get_json("/v1/log?limit=1000").await;
        let rows = log["calls"].as_array().unwrap().iter().filter(|c| c["outcome"] == "ok").count();
        if rows >= served {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{rows} settled rows kept for {served} answers: {log}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    drop(d);
    let _ = std::process::Command::new("umount").arg(&unmount).status();
    let _ = std::fs::remove_dir(&unmount);
}

/// 1,100 idle connections under a 1,024-descriptor limit made the accept loop spin, log tens of
/// megabytes a second and take the socket down with it. Now TCP connections are capped below the
/// limit (the rest wait in the backlog), accept failures back off and are logged sparingly, and
/// the socket keeps answering.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_idle_connections_leaves_the_socket_working_and_the_log_quiet() {
    init();
    let a = FakeProvider::start().await;
    let b = FakeProvider::start().await;
    let d = Daemon::start_wrapped(
        &standard_config(&a, &b, ""),
        ENV_KEYS,
        &["sh", "-c", "ulimit -n 256 && exec \"$0\" \"$@\""],
    );
    // As many connections as the daemon and the kernel's backlog take (beyond them a connect
    // times out: the backlog is full).
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], d.port));
    let idle: Vec<std::net::TcpStream> = (0..400)
        .filter_map(|_| std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(50)).ok())
        .collect();
    assert!(idle.len() >= 256, "more connections than the daemon has descriptors: {}", idle.len());
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let status = d.command().arg("status").output().unwrap();
    assert!(
        status.status.success(),
        "the socket answers beside the flood: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let log_size = std::fs::metadata(d.home.path().join("daemon.log")).map_or(0, |m| m.len());
    assert!(log_size < 200_000, "the log grew to {log_size} bytes");
    drop(idle);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(chat(&d, "oa/gpt-a").await.0, 200, "TCP serves again once the flood is gone");
}

/// Whether `needle` is anywhere in the database files of `d` (the database and its WAL).
fn on_disk(d: &Daemon, needle: &str) -> bool {
    ["tollgate.db", "tollgate.db-wal"].iter().any(|f| {
        std::fs::read(d.home.path().join(f))
            .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
    })
}

fn ledger_rows(d: &Daemon) -> usize {
    let out = d.command().args(["log", "--limit", "1000", "--json"]).output().unwrap();
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["calls"].as_array().unwrap().len()
}

/// What tollgate keeps of prompts and answers (cached answers, the audit log, stored responses)
/// is sealed with a key of the user's: a copied database shows none of it, and tollgate still
/// serves hits, audit entries and stored responses from it. Losing the key loses those, never a
/// ledger row. Values an earlier version kept in plain text are sealed at start, and the file is
/// rewritten so that no old page keeps them.
#[tokio::test(flavor = "multi_thread")]
async fn what_is_kept_of_prompts_is_sealed_and_losing_the_key_loses_only_the_cache() {
    init();
    let (a, b) = (FakeProvider::start().await, FakeProvider::start().await);
    let mut d =
        Daemon::start_with_env(&standard_config(&a, &b, "[audit]\nenabled = true\nretention_days = 7\n"), ENV_KEYS);
    const PROMPT: &str = "summarise the zebra quokka plan 5521";
    let body = json!({"model": "oa/gpt-a", "temperature": 0, "messages": [{"role": "user", "content": PROMPT}]});
    let send = |d: &Daemon| d.client().post(d.url("/v1/chat/completions")).json(&body).send();
    let r = send(&d).await.unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-tollgate-request-id"].to_str().unwrap().to_string();
    let r = send(&d).await.unwrap();
    assert_eq!(r.headers()["x-tollgate-cache"], "hit");
    assert!(r.text().await.unwrap().contains(PROMPT), "the hit is served from the sealed entry");
    // A stored response (a target that keeps none itself).
    let v = d
        .post_json("/v1/responses", &json!({"model": "an/claude-a", "input": "remember the okapi 7730", "store": true}))
        .await;
    let response_id = v["id"].as_str().unwrap().to_string();
    assert_eq!(d.client().get(d.url(&format!("/v1/responses/{response_id}"))).send().await.unwrap().status(), 200);
    let call = d.get_json(&format!("/v1/log/{id}")).await;
    assert!(call["request"].to_string().contains(PROMPT), "the audit entry opens: {call}");

    // The copied files: no prompt, no answer, no stored turn. Made by an earlier version, every
    // one of these was in plain text here.
    let rows = ledger_rows(&d);
    assert!(rows >= 3, "{rows}");
    d.kill();
    for marker in ["zebra quokka", "okapi 7730", "You said"] {
        assert!(!on_disk(&d, marker), "{marker:?} is readable in the database files");
    }

    // The key is lost: the cache, the audit text and stored responses go; the ledger stays.
    std::fs::remove_file(d.home.path().join("storage.key")).unwrap();
    d.restart();
    assert!(d.log().contains("a new storage key was made"), "{}", d.log());
    let before = a.requests().len();
    let r = send(&d).await.unwrap();
    assert_eq!(r.headers()["x-tollgate-cache"], "miss");
    assert_eq!(a.requests().len(), before + 1, "answered by the provider again");
    assert_eq!(d.client().get(d.url(&format!("/v1/responses/{response_id}"))).send().await.unwrap().status(), 404);
    let call = d.get_json(&format!("/v1/log/{id}")).await;
    assert_eq!(call["request_id"], id.as_str(), "the ledger row is kept: {call}");
    assert!(call["request"].is_null() && call["input_tokens"].as_u64() > Some(0), "{call}");
    assert_eq!(ledger_rows(&d), rows + 1);

    // A database an earlier version kept in plain text: sealed at start, still readable.
    d.kill();
    {
        let c = rusqlite::Connection::open(d.home.path().join("tollgate.db")).unwrap();
        c.execute_batch(
            "INSERT INTO ledger (request_id, ts_ms, identity, task, entry, latency_ms, added_ms, outcome) \
             VALUES ('req_plain1', 1, 'me', 'api', 'openai', 1.0, 0.1, 'ok'); \
             INSERT INTO audit (request_id, ts_ms, request, response) \
             VALUES ('req_plain1', CAST(strftime('%s','now') AS INTEGER) * 1000, '{\"walrus\": \"the walrus plan 8812\"}', '{\"a\": \"walrus answer\"}'); \
             INSERT INTO cache (key, scope, provider, model, events, size, created_ms, last_used_ms, expires_ms) \
             VALUES (x'00', 'me', 'oa', 'gpt-a', '[\"walrus cached 8812\"]', 20, 1, 1, 9999999999999);",
        )
        .unwrap();
    }
    assert!(on_disk(&d, "walrus plan 8812"));
    d.restart();
    let call = d.get_json("/v1/log/req_plain1").await;
    assert_eq!(call["request"]["walrus"], "the walrus plan 8812", "{call}");
    d.kill();
    for marker in ["walrus plan", "walrus answer", "walrus cached"] {
        assert!(!on_disk(&d, marker), "{marker:?} is still readable in the database files");
    }
    // With no daemon running, `tollgate log` opens the database and the entry with the user's key.
    let out = d.command().args(["log", "req_plain1", "--json"]).output().unwrap();
    let call: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(call["request"]["walrus"], "the walrus plan 8812", "{call}");
}

/// A caller that opens a stream and stops reading it once held its connection, its request slot
/// and the provider's stream for as long as it liked: hyper has no write time-out. Writes that
/// wait longer than `limits.client_stall_timeout_ms` now end the connection, and the slot goes
/// to the next caller.
#[tokio::test(flavor = "multi_thread")]
async fn a_caller_that_stops_reading_loses_its_connection_and_frees_its_slot() {
    use tokio::io::AsyncWriteExt;
    init();
    let (a, b) = (FakeProvider::start().await, FakeProvider::start().await);
    let config = standard_config(&a, &b, "")
        .replace("[limits]\n", "[limits]\nclient_stall_timeout_ms = 1000\nmax_concurrent_requests = 1\n");
    let d = Daemon::start_with_env(&config, ENV_KEYS);
    // An answer far larger than the sockets' buffers, streamed.
    a.script([Behaviour { text: Some("word ".repeat(6_000_000)), chunk_chars: Some(1 << 16), ..Default::default() }]);
    let body =
        json!({"model": "oa/gpt-a", "stream": true, "messages": [{"role": "user", "content": "talk"}]}).to_string();
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", d.port)).await.unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        d.token,
        body.len()
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    // Never read. The next caller gets the one slot once the stalled one is let go.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let next = tokio::time::timeout(std::time::Duration::from_secs(20), chat(&d, "oa/gpt-a")).await;
    let (status, v) = next.expect("the stalled caller kept the only request slot");
    assert_eq!(status, 200, "{v}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    // The stalled call is settled in the ledger, not left pending.
    let log = d.get_json("/v1/log?limit=10").await;
    let outcomes: Vec<&str> = log["calls"].as_array().unwrap().iter().map(|c| c["outcome"].as_str().unwrap()).collect();
    assert!(!outcomes.contains(&"pending"), "{outcomes:?}");
    drop(stalled);
}

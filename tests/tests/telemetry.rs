//! OpenTelemetry export end to end: the daemon sends OTLP/HTTP protobuf to a receiver that decodes
//! it with the official `opentelemetry-proto` Python package; the spans and metrics carry the GenAI
//! semantic conventions' attributes, and nothing of a planted secret.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_tests::fake::FakeProvider;
use tollgate_tests::{Daemon, ENV_KEYS, init, standard_config};

/// A fake GitHub token, shaped like a real one.
const PLANTED: &str = "ghp_Zx8Qw2Er4Ty6Ui8Op0As2Df4Gh6Jk8Lz0Xcv";

/// The Python the test setup installed the OTLP messages into.
fn python() -> PathBuf {
    if let Ok(p) = std::env::var("TOLLGATE_PYTHON") {
        return p.into();
    }
    let cache = std::env::var("TOLLGATE_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tollgate-tests"));
    let p = cache.join("venv/bin/python");
    assert!(p.exists(), "{} is missing: run tests/setup.sh (it installs opentelemetry-proto)", p.display());
    p
}

struct Receiver {
    child: Child,
    port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (port_file, out) = (dir.path().join("port"), dir.path().join("received.jsonl"));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/otlp/receiver.py");
        let child = Command::new(python())
            .args([script, port_file.to_str().unwrap(), out.to_str().unwrap()])
            .stdin(Stdio::null())
            .spawn()
            .expect("start the OTLP receiver");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&port_file).ok().and_then(|p| p.trim().parse().ok()) {
                break p;
            }
            assert!(Instant::now() < deadline, "the OTLP receiver did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        Self { child, port, out, _dir: dir }
    }

    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn spans(&self) -> Vec<Value> {
        self.records()
            .iter()
            .filter(|r| r["path"] == "/v1/traces")
            .flat_map(|r| r["body"]["resourceSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|rs| rs["scopeSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|ss| ss["spans"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The newest export of each metric, by name.
    fn metrics(&self) -> serde_json::Map<String, Value> {
        let mut out = serde_json::Map::new();
        for r in self.records().iter().filter(|r| r["path"] == "/v1/metrics") {
            for rm in r["body"]["resourceMetrics"].as_array().cloned().unwrap_or_default() {
                for sm in rm["scopeMetrics"].as_array().cloned().unwrap_or_default() {
                    for m in sm["metrics"].as_array().cloned().unwrap_or_default() {
                        out.insert(m["name"].as_str().unwrap().to_string(), m);
                    }
                }
            }
        }
        out
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A span's attributes as a map of key to its JSON value (`{"stringValue": ...}` and the like).
fn attrs(v: &Value) -> serde_json::Map<String, Value> {
    v["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|kv| (kv["key"].as_str().unwrap().to_string(), kv["value"].clone()))
        .collect()
}

fn string(v: &Value) -> &str {
    v["stringValue"].as_str().unwrap_or_default()
}

/// OTLP/JSON writes 64-bit integers as strings.
fn int(v: &Value) -> i64 {
    v["intValue"].as_str().and_then(|s| s.parse().ok()).or_else(|| v["intValue"].as_i64()).unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_and_metrics_reach_a_real_otlp_receiver_with_the_genai_conventions_and_no_secret() {
    init();
    let receiver = Receiver::start();
    let (a, b) = (FakeProvider::start().await, FakeProvider::start().await);
    let extra = format!(
        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:{}\"\ncontent = true\ninterval_ms = 200\n\
         [prices.\"oa/gpt-a\"]\ninput = 1000\noutput = 1000\n",
        receiver.port
    );
    let d = Daemon::start_with_env(&standard_config(&a, &b, &extra), ENV_KEYS);
    let ask = |body: Value, path: &'static str| {
        let (client, url) = (d.client(), d.url(path));
        // The whole answer is read: a caller that leaves early makes a `cancelled` row.
        async move {
            let resp = client.post(url).json(&body).send().await.unwrap();
            let status = resp.status().as_u16();
            resp.text().await.unwrap();
            status
        }
    };
    let planted =
        json!({"model": "oa/gpt-a", "messages": [{"role": "user", "content": format!("deploy with {PLANTED} now")}]});
    assert_eq!(ask(planted, "/v1/chat/completions").await, 200);
    let plain = json!({"model": "oa/gpt-a", "messages": [{"role": "user", "content": "ping one two"}]});
    assert_eq!(ask(plain, "/v1/chat/completions").await, 200);
    let messages = json!({"model": "an/claude-x", "max_tokens": 20, "stream": true,
        "messages": [{"role": "user", "content": "hello there"}]});
    assert_eq!(ask(messages, "/v1/messages").await, 200);

    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.spans().len() < 3
        || !receiver.metrics().get("tollgate.requests").is_some_and(|m| {
            m["sum"]["dataPoints"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["asInt"].as_str().unwrap().parse::<i64>().unwrap())
                .sum::<i64>()
                >= 3
        })
    {
        assert!(Instant::now() < deadline, "not received: {:#?}\n{}", receiver.records(), d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every export was protobuf and decoded.
    for r in receiver.records() {
        assert_eq!(r["content_type"], "application/x-protobuf");
        assert!(r.get("error").is_none(), "{r:#}");
    }
    // The resource says who sent it.
    let first = &receiver.records()[0]["body"];
    let resource = first["resourceSpans"].get(0).or(first["resourceMetrics"].get(0)).unwrap();
    assert_eq!(string(&attrs(&resource["resource"])["service.name"]), "tollgate");

    let spans = receiver.spans();
    for s in &spans {
        let a = attrs(s);
        assert_eq!(s["kind"], "SPAN_KIND_CLIENT", "{s:#}");
        assert_eq!(string(&a["gen_ai.operation.name"]), "chat");
        assert!(int(&a["gen_ai.usage.input_tokens"]) > 0, "{s:#}");
        assert!(int(&a["gen_ai.usage.output_tokens"]) > 0, "{s:#}");
        assert!(!string(&a["tollgate.request_id"]).is_empty());
        assert_eq!(s["status"]["code"], "STATUS_CODE_OK");
        assert_eq!(s["name"], format!("chat {}", string(&a["gen_ai.request.model"])));
    }
    let by_model = |m: &'static str| spans.iter().filter(move |s| string(&attrs(s)["gen_ai.request.model"]) == m);
    assert_eq!(by_model("gpt-a").count(), 2);
    assert!(by_model("gpt-a").all(|s| string(&attrs(s)["gen_ai.provider.name"]) == "openai"));
    let claude = by_model("claude-x").next().expect("the Anthropic span");
    assert_eq!(string(&attrs(claude)["gen_ai.provider.name"]), "anthropic");
    // The planted secret's request: redacted content, a redaction counted, its cost.
    let redacted = by_model("gpt-a")
        .find(|s| int(&attrs(s)["tollgate.redactions"]) > 0)
        .unwrap_or_else(|| panic!("no redacted span: {spans:#?}"));
    let content = string(&attrs(redacted)["gen_ai.input.messages"]).to_string();
    assert!(content.contains("deploy with") && !content.contains(PLANTED), "{content}");
    assert!(attrs(redacted)["tollgate.cost_usd"]["doubleValue"].as_f64().unwrap() > 0.0);

    // Metrics: the conventions' histograms, by token type, and tollgate's counters.
    let metrics = receiver.metrics();
    let usage = &metrics["gen_ai.client.token.usage"];
    assert_eq!(usage["unit"], "{token}");
    let types: Vec<String> = usage["histogram"]["dataPoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| string(&attrs(p)["gen_ai.token.type"]).to_string())
        .collect();
    assert!(types.contains(&"input".to_string()) && types.contains(&"output".to_string()), "{types:?}");
    assert_eq!(usage["histogram"]["aggregationTemporality"], "AGGREGATION_TEMPORALITY_CUMULATIVE");
    assert_eq!(metrics["gen_ai.client.operation.duration"]["unit"], "s");
    for name in ["tollgate.cost", "tollgate.redactions", "tollgate.telemetry.dropped"] {
        assert!(metrics.contains_key(name), "{name} missing: {:?}", metrics.keys().collect::<Vec<_>>());
    }
    // Nothing of the planted secret anywhere in what the collector received.
    let all = std::fs::read_to_string(&receiver.out).unwrap();
    assert!(!all.contains(PLANTED) && !all.contains(&PLANTED[4..20]), "the secret reached the collector");
}

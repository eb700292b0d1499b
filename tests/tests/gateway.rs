//! End to end: the real `tollgate` binary, driven over HTTP, in front of the fake providers.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_tests::fake::{Behaviour, FakeProvider};
use tollgate_tests::{Daemon, ENV_KEYS, init, sse_events, standard_config as config};

async fn setup(extra: &str) -> (FakeProvider, FakeProvider, Daemon) {
    init();
    let a = FakeProvider::start().await;
    let b = FakeProvider::start().await;
    let d = Daemon::start_with_env(&config(&a, &b, extra), ENV_KEYS);
    (a, b, d)
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "stream_options": {"include_usage": true},
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ping one two"}]})
}

async fn post(d: &Daemon, path: &str, body: &Value) -> reqwest::Response {
    d.client().post(d.url(path)).json(body).send().await.unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// Text and usage from an OpenAI SSE body; panics unless it ends with `[DONE]`.
fn openai_stream(body: &str) -> (String, Value) {
    let events = sse_events(body);
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("[DONE]"), "{body}");
    let mut text = String::new();
    let mut usage = Value::Null;
    for (_, data) in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
        if v["usage"].is_object() {
            usage = v["usage"].clone();
        }
    }
    (text, usage)
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_format_reaches_every_provider_kind_streamed_and_not() {
    let (a, _b, d) = setup("").await;
    for (model, provider) in
        [("oa/gpt-4.1", "oa"), ("an/claude-x", "an"), ("ge/gemini-2.5-flash", "ge"), ("ol/qwen", "ol")]
    {
        let r = post(&d, "/v1/chat/completions", &chat(model, false)).await;
        assert_eq!(r.status(), 200, "{model}");
        assert_eq!(header(&r, "x-tollgate-provider"), provider);
        let added: f64 = header(&r, "x-tollgate-added-ms").parse().unwrap();
        assert!(added >= 0.0);
        let v: Value = r.json().await.unwrap();
        let text = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(text.starts_with("Hello from fake") && text.ends_with("You said: ping one two"), "{model}: {v}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() >= 3, "{model}: {v}");
        assert_eq!(v["usage"]["completion_tokens"].as_u64().unwrap(), 9, "{model}: {v}");

        let r = post(&d, "/v1/chat/completions", &chat(model, true)).await;
        assert_eq!(r.status(), 200);
        assert!(header(&r, "content-type").starts_with("text/event-stream"));
        let (text, usage) = openai_stream(&r.text().await.unwrap());
        assert!(text.ends_with("You said: ping one two"), "{model}: {text}");
        assert_eq!(usage["completion_tokens"], 9, "{model}");
        assert_eq!(usage["total_tokens"], usage["prompt_tokens"].as_u64().unwrap() + 9);
    }
    // What reached the providers was each one's own wire format, with its own key header.
    let reqs = a.requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert!(paths.contains(&"/v1/chat/completions"));
    assert!(paths.contains(&"/v1/messages"));
    assert!(paths.contains(&"/v1beta/models/gemini-2.5-flash:generateContent"));
    assert!(paths.contains(&"/v1beta/models/gemini-2.5-flash:streamGenerateContent"));
    assert!(paths.contains(&"/api/chat"));
    let anthropic = reqs.iter().find(|r| r.path == "/v1/messages").unwrap();
    assert_eq!(anthropic.key.as_deref(), Some("sk-ant-test-an-000000000000"));
    assert_eq!(anthropic.anthropic_version.as_deref(), Some("2023-06-01"));
    assert_eq!(anthropic.body["system"], "be brief");
    let gemini = reqs.iter().find(|r| r.path.contains("gemini")).unwrap();
    assert_eq!(gemini.body["systemInstruction"]["parts"][0]["text"], "be brief");
    assert_eq!(gemini.key.as_deref(), Some("AIzaTestGe000000000000000000"));
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_format_reaches_every_provider_kind_with_its_event_sequence() {
    let (_a, _b, d) = setup("").await;
    for model in ["oa/gpt-4.1", "an/claude-x", "ge/gemini-2.5-flash", "ol/qwen"] {
        let body = json!({"model": model, "max_tokens": 64, "system": "be brief", "messages": [{"role": "user", "content": "ping one two"}]});
        let r = d
            .client()
            .post(d.url("/v1/messages"))
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["stop_reason"], "end_turn");
        assert!(v["content"][0]["text"].as_str().unwrap().ends_with("You said: ping one two"), "{model}: {v}");
        assert_eq!(v["usage"]["output_tokens"], 9);

        let mut body = body;
        body["stream"] = json!(true);
        let r = post(&d, "/v1/messages", &body).await;
        let events = sse_events(&r.text().await.unwrap());
        let names: Vec<&str> = events.iter().map(|e| e.0.as_deref().unwrap()).collect();
        assert_eq!(names.first(), Some(&"message_start"), "{model}");
        assert_eq!(names[1], "content_block_start");
        assert_eq!(&names[names.len() - 3..], &["content_block_stop", "message_delta", "message_stop"], "{model}");
        let mut text = String::new();
        for (name, data) in &events {
            let v: Value = serde_json::from_str(data).unwrap();
            assert_eq!(v["type"], name.as_deref().unwrap());
            if name.as_deref() == Some("content_block_delta") {
                text.push_str(v["delta"]["text"].as_str().unwrap());
            }
            if name.as_deref() == Some("message_delta") {
                assert_eq!(v["usage"]["output_tokens"], 9, "{model}");
                assert_eq!(v["delta"]["stop_reason"], "end_turn");
            }
        }
        assert!(text.ends_with("You said: ping one two"), "{model}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_calls_and_response_format_pass_through_in_both_directions() {
    let (a, _b, d) = setup("").await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    for model in ["an/claude-x", "oa/gpt-4.1", "ge/gemini-2.5-flash", "ol/qwen"] {
        for stream in [false, true] {
            a.script([Behaviour {
                tool_call: Some(("get_weather".into(), json!({"city": "Oslo"}))),
                ..Default::default()
            }]);
            let body = json!({"model": model, "stream": stream, "tools": tools, "tool_choice": "auto",
                "messages": [{"role": "user", "content": "weather in Oslo?"}]});
            let r = post(&d, "/v1/chat/completions", &body).await;
            assert_eq!(r.status(), 200);
            let (name, args, finish) = if stream {
                let mut name = String::new();
                let mut args = String::new();
                let mut finish = String::new();
                for (_, data) in sse_events(&r.text().await.unwrap()) {
                    let Ok(v) = serde_json::from_str::<Value>(&data) else { continue };
                    let delta = &v["choices"][0]["delta"];
                    if let Some(n) = delta["tool_calls"][0]["function"]["name"].as_str() {
                        name = n.into();
                    }
                    if let Some(a) = delta["tool_calls"][0]["function"]["arguments"].as_str() {
                        args.push_str(a);
                    }
                    if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
                        finish = f.into();
                    }
                }
                (name, args, finish)
            } else {
                let v: Value = r.json().await.unwrap();
                let call = &v["choices"][0]["message"]["tool_calls"][0];
                (
                    call["function"]["name"].as_str().unwrap().into(),
                    call["function"]["arguments"].as_str().unwrap().into(),
                    v["choices"][0]["finish_reason"].as_str().unwrap().into(),
                )
            };
            assert_eq!(name, "get_weather", "{model} stream={stream}");
            assert_eq!(
                serde_json::from_str::<Value>(&args).unwrap(),
                json!({"city": "Oslo"}),
                "{model} stream={stream}"
            );
            assert_eq!(finish, "tool_calls", "{model} stream={stream}");
        }
    }
    // The tool definitions arrived in each provider's own shape.
    let reqs = a.requests();
    let by = |p: &str| reqs.iter().find(|r| r.path.starts_with(p)).unwrap().body.clone();
    assert_eq!(by("/v1/messages")["tools"][0]["input_schema"]["required"], json!(["city"]));
    assert_eq!(by("/v1/chat/completions")["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(by("/v1beta")["tools"][0]["functionDeclarations"][0]["name"], "get_weather");
    assert_eq!(by("/api/chat")["tools"][0]["function"]["name"], "get_weather");

    // The tool result goes back, and response_format reaches the providers that support it.
    let body = json!({"model": "oa/gpt-4.1", "response_format": {"type": "json_object"}, "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"sky\":\"clear\"}"}]});
    assert_eq!(post(&d, "/v1/chat/completions", &body).await.status(), 200);
    let mut gemini_body = body.clone();
    gemini_body["model"] = json!("ge/gemini-2.5-flash");
    assert_eq!(post(&d, "/v1/chat/completions", &gemini_body).await.status(), 200);
    let reqs = a.requests();
    let oa = &reqs[reqs.len() - 2].body;
    assert_eq!(oa["response_format"], json!({"type": "json_object"}));
    assert_eq!(oa["messages"][2], json!({"role": "tool", "tool_call_id": "call_1", "content": "{\"sky\":\"clear\"}"}));
    let ge = &reqs[reqs.len() - 1].body;
    assert_eq!(ge["generationConfig"]["responseMimeType"], "application/json");
    assert_eq!(
        ge["contents"][2]["parts"][0]["functionResponse"],
        json!({"name": "get_weather", "response": {"sky": "clear"}})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_fall_back_to_the_next_target_after_bounded_retries() {
    let (a, b, d) = setup("").await;
    a.script([
        Behaviour { status: Some(503), ..Default::default() },
        Behaviour { status: Some(500), ..Default::default() },
    ]);
    let r = post(&d, "/v1/chat/completions", &chat("pair", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-tollgate-provider"), "ob");
    assert_eq!(header(&r, "x-tollgate-model"), "gpt-b");
    assert_eq!(a.request_count(), 2, "attempts_per_target = 2");
    assert_eq!(b.request_count(), 1);

    // A client error is the request's fault: no fallback, the provider's message comes back.
    a.script([Behaviour { status: Some(400), ..Default::default() }]);
    let r = post(&d, "/v1/chat/completions", &chat("pair", false)).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("oa/gpt-a rejected the request"), "{v}");
    assert_eq!(b.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_retry_after_is_waited_for_and_a_long_one_moves_on_and_cools_the_target() {
    let (a, b, d) = setup("").await;
    a.script([Behaviour { status: Some(429), retry_after: Some("1".into()), ..Default::default() }]);
    let t = Instant::now();
    let r = post(&d, "/v1/chat/completions", &chat("pair", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-tollgate-provider"), "oa", "retried the same target");
    assert!(t.elapsed() >= Duration::from_millis(950), "waited for Retry-After: {:?}", t.elapsed());
    // The wait is the provider's, not the gateway's own time.
    let added: f64 = header(&r, "x-tollgate-added-ms").parse().unwrap();
    assert!(added < 900.0, "added {added} ms");
    assert_eq!(a.request_count(), 2);

    a.script([Behaviour { status: Some(429), retry_after: Some("60".into()), ..Default::default() }]);
    let r = post(&d, "/v1/chat/completions", &chat("pair", false)).await;
    assert_eq!(header(&r, "x-tollgate-provider"), "ob");
    assert_eq!(a.request_count(), 3, "no second try within a 60 s Retry-After");
    let r = post(&d, "/v1/chat/completions", &chat("pair", false)).await;
    assert_eq!(header(&r, "x-tollgate-provider"), "ob");
    assert_eq!(a.request_count(), 3, "the cooling target is skipped");

    // A 429 from the last target reaches the caller as a 429 with Retry-After.
    b.script([Behaviour { status: Some(429), retry_after: Some("30".into()), ..Default::default() }]);
    let r = post(&d, "/v1/chat/completions", &chat("ob/gpt-b", false)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after"), "30");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_circuit_opens_after_repeated_failures_and_the_target_is_skipped() {
    let (a, b, d) = setup("").await;
    let fail = || Behaviour { status: Some(502), ..Default::default() };
    a.script([fail(), fail(), fail(), fail()]);
    for _ in 0..2 {
        let r = post(&d, "/v1/chat/completions", &chat("pair", false)).await;
        assert_eq!(header(&r, "x-tollgate-provider"), "ob");
    }
    // Two requests x two tries: the third consecutive failure opened the circuit during the second.
    assert_eq!(a.request_count(), 3);
    let r = post(&d, "/v1/chat/completions", &chat("pair", false)).await;
    assert_eq!(header(&r, "x-tollgate-provider"), "ob");
    assert_eq!(a.request_count(), 3, "an open circuit is not called");
    assert_eq!(b.request_count(), 3);
    let status: Value = d.client().get(d.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    let health = status["health"].as_array().unwrap();
    assert!(health.iter().any(|h| h["target"] == "oa/gpt-a" && h["state"] == "open"), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hangs_and_failures_before_the_first_byte_fall_back() {
    let (a, b, d) = setup("").await;
    // A provider that never answers, then one whose stream is cut before any event.
    a.script([Behaviour { hang: true, ..Default::default() }, Behaviour { hang: true, ..Default::default() }]);
    let r = post(&d, "/v1/chat/completions", &chat("pair", true)).await;
    assert_eq!(header(&r, "x-tollgate-provider"), "ob");
    let (text, _) = openai_stream(&r.text().await.unwrap());
    assert!(text.ends_with("ping one two"));

    a.script([
        Behaviour { cut_after: Some(0), ..Default::default() },
        Behaviour { cut_after: Some(0), ..Default::default() },
    ]);
    let r = post(&d, "/v1/chat/completions", &chat("pair", true)).await;
    assert_eq!(header(&r, "x-tollgate-provider"), "ob");
    assert_eq!(b.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_cut_or_stalled_after_its_first_byte_ends_with_an_error_event_and_no_fallback() {
    let (a, b, d) = setup("").await;
    a.script([Behaviour { cut_after: Some(3), ..Default::default() }]);
    let r = post(&d, "/v1/chat/completions", &chat("pair", true)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-tollgate-provider"), "oa");
    let body = r.text().await.unwrap();
    let events = sse_events(&body);
    let last: Value = serde_json::from_str(&events.last().unwrap().1).unwrap_or_else(|_| panic!("{body}"));
    assert!(last["error"]["message"].as_str().unwrap().contains("mid-stream"), "{body}");
    assert!(!body.contains("[DONE]"), "a cut stream must not look complete: {body}");
    assert!(body.contains("Hello"), "the first events reached the caller: {body}");
    assert_eq!(b.request_count(), 0, "never falls back after the first byte");

    // Anthropic format: an `error` event.
    a.script([Behaviour { stall_after: Some(4), ..Default::default() }]);
    let body = json!({"model": "pair", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "hi there"}]});
    let t = Instant::now();
    let r = post(&d, "/v1/messages", &body).await;
    let events = sse_events(&r.text().await.unwrap());
    assert!(t.elapsed() >= Duration::from_millis(1400), "the idle limit was waited for");
    let (name, data) = events.last().unwrap();
    assert_eq!(name.as_deref(), Some("error"));
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(b.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn local_only_requests_never_reach_a_cloud_target() {
    let (a, _b, d) = setup("").await;
    let r = d
        .client()
        .post(d.url("/v1/chat/completions"))
        .header("x-tollgate-local-only", "true")
        .json(&chat("mixed", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-tollgate-provider"), "ol");
    // By a config rule on the path.
    let r = d
        .client()
        .post(d.url("/v1/chat/completions"))
        .header("x-tollgate-path", "deploy/secrets/prod.env")
        .json(&chat("mixed", true))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-tollgate-provider"), "ol");
    assert!(openai_stream(&r.text().await.unwrap()).0.contains("fake ollama"));
    // A route with no local target refuses rather than leak.
    let r = d
        .client()
        .post(d.url("/v1/chat/completions"))
        .header("x-tollgate-local-only", "1")
        .json(&chat("cloud", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("local-only"), "{v}");
    let cloud_calls = a.requests().iter().filter(|r| r.path != "/api/chat").count();
    assert_eq!(cloud_calls, 0, "a local-only request reached a cloud provider");
    // Without the flag, the cloud target serves.
    let r = post(&d, "/v1/chat/completions", &chat("mixed", false)).await;
    assert_eq!(header(&r, "x-tollgate-provider"), "oa");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_localhost_api_refuses_strangers_and_bad_input_in_the_callers_format() {
    init();
    let (a, b) = (FakeProvider::start().await, FakeProvider::start().await);
    let d = Daemon::start_with_env(
        &config(&a, &b, "").replace("[limits]\n", "[limits]\nmax_body_bytes = 2048\n"),
        ENV_KEYS,
    );
    let plain = reqwest::Client::new();
    let r = plain.post(d.url("/v1/chat/completions")).json(&chat("oa/x", false)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "authentication_error");
    let r = plain.post(d.url("/v1/messages")).header("x-api-key", "tg-wrong").json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["type"].as_str(), v["error"]["type"].as_str()), (Some("error"), Some("authentication_error")));
    // The Anthropic SDK's header works as well as a bearer token.
    let r = plain.get(d.url("/v1/models")).header("x-api-key", &d.token).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // DNS rebinding: a page on evil.example resolving to 127.0.0.1.
    let r = d.client().get(d.url("/v1/models")).header("host", "evil.example:8788").send().await.unwrap();
    assert_eq!(r.status(), 403);
    // Browsers: preflight and cross-origin calls.
    let r = d
        .client()
        .request(reqwest::Method::OPTIONS, d.url("/v1/chat/completions"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = d
        .client()
        .post(d.url("/v1/chat/completions"))
        .header("origin", "http://localhost:3000")
        .json(&chat("oa/x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Oversized, malformed, invalid UTF-8, wrong shape: 4xx in each caller's format.
    let big = json!({"model": "oa/x", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let r = post(&d, "/v1/chat/completions", &big).await;
    assert_eq!(r.status(), 413);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().contains("max_body_bytes"));
    let r = post(&d, "/v1/messages", &big).await;
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "request_too_large");
    let send = |path: &'static str, body: Vec<u8>| {
        let c = d.client();
        let url = d.url(path);
        async move { c.post(url).header("content-type", "application/json").body(body).send().await.unwrap() }
    };
    let r = send("/v1/chat/completions", b"{\"model\": \"oa/x\", ".to_vec()).await;
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().contains("not valid JSON"));
    let r = send("/v1/messages", b"{\"model\": \"\xff\xfe\"}".to_vec()).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("UTF-8"), "{v}");
    let r = send("/v1/messages", br#"{"model": "oa/x", "messages": []}"#.to_vec()).await;
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().contains("max_tokens"));
    let r = post(&d, "/v1/chat/completions", &chat("no-such-model", false)).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    assert!(v["error"]["message"].as_str().unwrap().contains("pair"), "the error lists the aliases: {v}");

    // After all that, the daemon still serves.
    assert_eq!(post(&d, "/v1/chat/completions", &chat("oa/x", false)).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_commands_work_against_the_daemon_over_its_socket() {
    let (_a, _b, d) = setup("").await;
    // A second daemon for the same user refuses, naming the first.
    let out = d.command().args(["daemon", "--port", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running") && err.contains(&d.pid().to_string()), "{err}");

    // status over the local socket (no token on the socket). The credentials are the daemon's,
    // whatever the shell running `status` has.
    let out = d.command().env_remove("TOLLGATE_OA_API_KEY").args(["status", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["daemon"]["pid"], d.pid());
    let oa = v["providers"].as_array().unwrap().iter().find(|p| p["name"] == "oa").unwrap().clone();
    assert_eq!(oa["credentials"], "environment");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("sk-test-oa"), "status must never show a key");

    // token, env.
    let out = d.command().arg("token").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), d.token);
    let out = d.command().arg("env").output().unwrap();
    let env = String::from_utf8_lossy(&out.stdout);
    assert!(env.contains(&format!("OPENAI_BASE_URL=http://127.0.0.1:{}/v1", d.port)), "{env}");
    assert!(env.contains(&format!("ANTHROPIC_API_KEY={}", d.token)));
    // A reader that goes away (`tollgate log --json | head`) ends the command quietly: no panic.
    let mut child = d
        .command()
        .args(["log", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(101), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{}", String::from_utf8_lossy(&out.stderr));
    // With no daemon running there is no address to give, and no token is printed.
    let stopped = tempfile::tempdir().unwrap();
    let out = d.command().env("TOLLGATE_HOME", stopped.path()).arg("env").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tollgate daemon is running"));

    // config show: values and where they came from.
    let out = d.command().args(["config", "show"]).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    let cfg = d.home.path().join("config.toml");
    assert!(shown.contains(&format!("limits.first_byte_timeout_ms = 1500  # {}", cfg.display())), "{shown}");
    assert!(shown.contains("limits.max_body_bytes = 4194304  # default"), "{shown}");

    // Files holding anything sensitive are the user's alone.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["token", "tollgate.sock", "daemon.port"] {
            let mode = std::fs::metadata(d.home.path().join(f)).unwrap().permissions().mode() & 0o077;
            assert_eq!(mode, 0, "{f} is readable by others");
        }
    }
    // No key appears in the daemon's log, even at debug level.
    assert!(!d.log().contains("sk-test-oa"), "a key reached the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_config_file_is_refused_with_the_file_and_key() {
    init();
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("config.toml");
    std::fs::write(&cfg, "[routes.r]\ntargets = [\"nowhere/m\"]\n").unwrap();
    let out = std::process::Command::new(tollgate_tests::tollgate_bin())
        .env("TOLLGATE_HOME", home.path())
        .args(["daemon", "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&cfg.display().to_string()) && err.contains("routes.r.targets") && err.contains("nowhere"),
        "{err}"
    );
}

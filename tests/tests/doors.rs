//! End to end: every door passes a caller of the target's own format through (unknown fields,
//! betas, version headers and cache marks kept; only masked strings and the routed model changed)
//! and translates across formats only what it can, refusing the rest by name. The fakes record
//! what reached the provider.

use serde_json::{Value, json};
use tollgate_tests::fake::{Behaviour, FakeProvider};
use tollgate_tests::{Daemon, ENV_KEYS, init, sse_events, standard_config};

// Fake values shaped like real ones.
const PAT: &str = "glpat-riGp_58WAm-dX3a5IDnO";
const MAIL: &str = "raj.patel54@acme.io";

/// A Responses-capable OpenAI provider (`or`) beside the standard ones.
const EXTRA: &str = r#"
[providers.or]
kind = "openai"
base_url = "URL/v1"
local = false
responses_api = true
"#;

async fn setup() -> (FakeProvider, Daemon) {
    init();
    let a = FakeProvider::start().await;
    let b = FakeProvider::start().await;
    let extra = EXTRA.replace("URL", &a.url());
    let mut keys = ENV_KEYS.to_vec();
    keys.push(("TOLLGATE_OR_API_KEY", "sk-test-or-0000000000000000"));
    let d = Daemon::start_with_env(&standard_config(&a, &b, &extra), &keys);
    (a, d)
}

fn contains(haystack: &Value, needle: &str) -> bool {
    haystack.to_string().contains(needle)
}

/// A request shaped like the one Claude Code 2.1 sends: system blocks with cache marks, a
/// system-role message, adaptive thinking, context management, output config, metadata, tools with
/// cache marks, and a secret in a tool description and in the user's text.
fn claude_code_like(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "max_tokens": 32000,
        "stream": stream,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.0;"},
            {"type": "text", "text": "You are an agent.", "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": format!("deploy with {PAT} and tell {MAIL}")}]},
            {"role": "system", "content": [{"type": "text", "text": "# Environment", "cache_control": {"type": "ephemeral"}}]}
        ],
        "tools": [{
            "name": "Bash",
            "description": format!("Runs a command. The deploy token is {PAT}."),
            "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
            "cache_control": {"type": "ephemeral"}
        }],
        "metadata": {"user_id": "device-1"},
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "medium"},
        "temperature": 0.3
    })
}

const BETAS: &str = "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27";

#[tokio::test(flavor = "multi_thread")]
async fn an_anthropic_caller_passes_through_with_betas_cache_marks_and_unknown_fields() {
    let (a, d) = setup().await;
    let r = d
        .client()
        .post(d.url("/v1/messages?beta=true"))
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", BETAS)
        .json(&claude_code_like("an/claude-x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    // The provider's own answer (its id), placeholders restored.
    assert_eq!(v["id"], "msg_fake", "{v}");
    // Thinking was asked for: the signed thinking block comes back as it was sent.
    assert_eq!(v["content"][0]["type"], "thinking", "{v}");
    assert_eq!(v["content"][0]["signature"], tollgate_tests::fake::FAKE_SIGNATURE);
    assert!(v["content"][1]["text"].as_str().unwrap().contains(&format!("deploy with {PAT} and tell {MAIL}")), "{v}");

    let sent = a.requests().pop().unwrap();
    assert_eq!(sent.query.as_deref(), Some("beta=true"));
    assert_eq!(sent.headers.get("anthropic-beta").map(String::as_str), Some(BETAS));
    assert_eq!(sent.headers.get("anthropic-version").map(String::as_str), Some("2023-06-01"));
    let body = &sent.body;
    assert_eq!(body["model"], "claude-x");
    assert_eq!(body["system"][1]["cache_control"], json!({"type": "ephemeral"}));
    assert_eq!(body["tools"][0]["cache_control"], json!({"type": "ephemeral"}));
    assert_eq!(body["messages"][1]["role"], "system");
    assert_eq!(body["thinking"], json!({"type": "adaptive", "display": "omitted"}));
    assert_eq!(body["context_management"]["edits"][0]["type"], "clear_thinking_20251015");
    assert_eq!(body["output_config"], json!({"effort": "medium"}));
    assert_eq!(body["metadata"], json!({"user_id": "device-1"}));
    // Floats keep their decimal value; the order of fields is the caller's.
    assert!(body.to_string().contains("\"temperature\":0.3"), "{body}");
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys[..3], ["model", "max_tokens", "stream"]);
    // Every string a provider reads is masked: the message and the tool description.
    assert_eq!(
        body["messages"][0]["content"][0]["text"],
        "deploy with TOLLGATE_GITLAB_PAT_1 and tell TOLLGATE_EMAIL_1"
    );
    assert_eq!(body["tools"][0]["description"], "Runs a command. The deploy token is TOLLGATE_GITLAB_PAT_1.");
    assert!(!contains(body, PAT) && !contains(body, MAIL), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_anthropic_stream_comes_back_frame_for_frame_with_placeholders_restored_across_frames() {
    let (a, d) = setup().await;
    // Three characters a frame: every placeholder is cut across frames.
    a.script([Behaviour { chunk_chars: Some(3), cache_write_tokens: 40, cached_tokens: 8, ..Default::default() }]);
    let r = d
        .client()
        .post(d.url("/v1/messages?beta=true"))
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", BETAS)
        .json(&claude_code_like("an/claude-x", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-tollgate-request-id"].to_str().unwrap().to_string();
    let body = r.text().await.unwrap();
    let events = sse_events(&body);
    let names: Vec<&str> = events.iter().filter_map(|(e, _)| e.as_deref()).collect();
    // The fake's own sequence, thinking and its signature and `ping` included: nothing re-rendered.
    assert_eq!(names[..2], ["message_start", "content_block_start"], "{names:?}");
    assert!(names.contains(&"ping"), "{names:?}");
    assert!(body.contains("\"signature_delta\"") && body.contains(tollgate_tests::fake::FAKE_SIGNATURE));
    assert_eq!(names[names.len() - 3..], ["content_block_stop", "message_delta", "message_stop"]);
    let start: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(start["message"]["id"], "msg_fake");
    assert_eq!(start["message"]["usage"]["cache_creation_input_tokens"], 40);
    let text: String = events
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_string))
        .collect();
    assert!(text.contains(&format!("deploy with {PAT} and tell {MAIL}")), "{text}");

    // The ledger has the provider's figures, cache writes and reads included.
    let log: Value =
        d.client().get(d.url(&format!("/v1/log/{request_id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(log["cached_tokens"], 8, "{log}");
    assert_eq!(log["cache_write_tokens"], 40, "{log}");
    assert_eq!(log["entry"], "anthropic");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_cannot_be_translated_is_refused_by_name_and_what_can_is_translated() {
    let (a, d) = setup().await;
    // Claude Code's request for an OpenAI target: adaptive thinking and its effort become a
    // reasoning effort; clearing old thinking is what a translation does anyway.
    let r = d
        .client()
        .post(d.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&claude_code_like("oa/gpt-a", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message", "rendered in the caller's format: {v}");
    let sent = a.requests().pop().unwrap().body;
    assert_eq!(sent["reasoning_effort"], "medium", "{sent}");
    assert_eq!(sent["tools"][0]["function"]["name"], "Bash");
    assert!(sent.get("thinking").is_none() && sent.get("context_management").is_none());

    // A server tool of Anthropic's own has no counterpart: refused by name, nothing sent.
    let mut with_server_tool = claude_code_like("oa/gpt-a", false);
    with_server_tool["tools"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "web_search_20250305", "name": "web_search"}));
    with_server_tool["context_management"] = json!({"edits": [{"type": "clear_tool_uses_20250919"}]});
    let count = a.request_count();
    let r = d.client().post(d.url("/v1/messages")).json(&with_server_tool).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("tools.1 (web_search_20250305 tool \"web_search\")") && message.contains("context_management"),
        "{message}"
    );
    assert!(!message.contains("metadata"), "metadata changes no answer: {message}");
    assert_eq!(a.request_count(), count, "nothing was sent");

    // The same door with what maps: translated for an OpenAI target, system-role message included.
    let r = d
        .client()
        .post(d.url("/v1/messages"))
        .json(&json!({"model": "oa/gpt-a", "max_tokens": 50, "temperature": 0.3, "metadata": {"user_id": "u"}, "messages": [
            {"role": "user", "content": "hi"}, {"role": "system", "content": "be brief"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let sent = a.requests().pop().unwrap().body;
    assert_eq!(sent["messages"][1], json!({"role": "system", "content": "be brief"}));
    assert!(sent.to_string().contains("\"temperature\":0.3"), "{sent}");

    // Audio for a Gemini target: named, with where it is.
    let r = d
        .client()
        .post(d.url("/v1/chat/completions"))
        .json(&json!({"model": "ge/gemini-x", "seed": 7, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"}, {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("seed") && message.contains("messages[0].content[1] (input_audio part)"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_openai_caller_passes_through_with_its_parameters_and_usage_is_booked() {
    let (a, d) = setup().await;
    let body = json!({"model": "oa/gpt-a", "temperature": 0.3, "seed": 7, "logprobs": true, "top_logprobs": 2,
        "frequency_penalty": 0.1, "logit_bias": {"50256": -100}, "reasoning_effort": "low", "user": "u1",
        "parallel_tool_calls": false, "stream": true,
        "messages": [{"role": "user", "content": format!("mail {MAIL}")}]});
    let r = d.client().post(d.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-tollgate-request-id"].to_str().unwrap().to_string();
    let text = r.text().await.unwrap();
    // The caller did not ask for usage: no usage chunk, though tollgate asked upstream for it.
    let chunks: Vec<Value> = sse_events(&text).iter().filter_map(|(_, d)| serde_json::from_str(d).ok()).collect();
    assert!(chunks.iter().all(|c| !c["choices"].as_array().unwrap().is_empty()), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"));
    let streamed: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(streamed.ends_with(&format!("mail {MAIL}")), "{streamed}");

    let sent = a.requests().pop().unwrap().body;
    for (k, v) in [
        ("seed", json!(7)),
        ("logprobs", json!(true)),
        ("top_logprobs", json!(2)),
        ("reasoning_effort", json!("low")),
        ("parallel_tool_calls", json!(false)),
        ("logit_bias", json!({"50256": -100})),
        ("user", json!("u1")),
    ] {
        assert_eq!(sent[k], v, "{k}: {sent}");
    }
    assert!(sent.to_string().contains("\"temperature\":0.3") && sent.to_string().contains("\"frequency_penalty\":0.1"));
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
    assert_eq!(sent["messages"][0]["content"], "mail TOLLGATE_EMAIL_1");

    let log: Value =
        d.client().get(d.url(&format!("/v1/log/{request_id}"))).send().await.unwrap().json().await.unwrap();
    assert!(log["output_tokens"].as_u64().unwrap() > 0, "{log}");

    // The same parameters across formats are refused, each by name.
    let mut anthropic = body.clone();
    anthropic["model"] = json!("an/claude-x");
    let r = d.client().post(d.url("/v1/chat/completions")).json(&anthropic).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let message = r.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().to_string();
    for field in ["seed", "logprobs", "top_logprobs", "logit_bias", "frequency_penalty", "parallel_tool_calls"] {
        assert!(message.contains(field), "{field}: {message}");
    }
    assert!(!message.contains("user"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_responses_door_passes_through_to_a_responses_target_and_translates_for_others() {
    let (a, d) = setup().await;
    let body = json!({"model": "or/gpt-5-codex", "stream": true, "instructions": "be brief", "store": false,
        "include": ["reasoning.encrypted_content"], "reasoning": {"summary": "auto"},
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": format!("token {PAT}")}]}],
        "tools": [{"type": "function", "name": "exec", "description": format!("uses {PAT}"), "parameters": {"type": "object"}},
                  {"type": "web_search"}]});
    a.script([Behaviour { chunk_chars: Some(4), ..Default::default() }]);
    let r =
        d.client().post(d.url("/v1/responses")).header("openai-beta", "responses=v1").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let request_id = r.headers()["x-tollgate-request-id"].to_str().unwrap().to_string();
    let text = r.text().await.unwrap();
    let events: Vec<Value> = sse_events(&text).iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], i as u64, "{text}");
    }
    let deltas: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert!(deltas.ends_with(&format!("token {PAT}")), "{deltas}");
    let done = events.iter().find(|e| e["type"] == "response.completed").unwrap();
    assert_eq!(done["response"]["id"], "resp_fake1");
    assert!(done["response"]["output"][0]["content"][0]["text"].as_str().unwrap().ends_with(PAT));
    let sent = a.requests().pop().unwrap();
    assert_eq!(sent.path, "/v1/responses");
    assert_eq!(sent.headers.get("openai-beta").map(String::as_str), Some("responses=v1"));
    assert_eq!(sent.body["tools"][1], json!({"type": "web_search"}));
    assert_eq!(sent.body["include"], json!(["reasoning.encrypted_content"]));
    assert_eq!(sent.body["tools"][0]["description"], "uses TOLLGATE_GITLAB_PAT_1");
    assert!(!contains(&sent.body, PAT));
    let log: Value =
        d.client().get(d.url(&format!("/v1/log/{request_id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(log["entry"], "responses");
    assert!(log["input_tokens"].as_u64().unwrap() > 0, "{log}");

    // To an Anthropic target: web_search has no mapping, and is named.
    let mut to_claude = body.clone();
    to_claude["model"] = json!("an/claude-x");
    let r = d.client().post(d.url("/v1/responses")).json(&to_claude).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("tools[1] (web_search tool)"));

    // Without it: translated, and rendered as the Responses event sequence.
    to_claude["tools"] = json!([to_claude["tools"][0]]);
    let r = d.client().post(d.url("/v1/responses")).json(&to_claude).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let events: Vec<Value> = sse_events(&text).iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(events[0]["type"], "response.created");
    assert_eq!(events.last().unwrap()["type"], "response.completed");
    let sent = a.requests().pop().unwrap();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.body["system"], "be brief");
    assert_eq!(sent.body["tools"][0]["description"], "uses TOLLGATE_GITLAB_PAT_1");
    let out = &events.last().unwrap()["response"]["output"][0]["content"][0]["text"];
    assert!(out.as_str().unwrap().ends_with(&format!("token {PAT}")), "{out}");

    // Not streamed, to the Responses target: the provider's own object.
    let mut whole = body.clone();
    whole["stream"] = json!(false);
    let v: Value = d.client().post(d.url("/v1/responses")).json(&whole).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["id"], "resp_fake1");
    assert!(v["output"][0]["content"][0]["text"].as_str().unwrap().ends_with(PAT), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn count_tokens_asks_anthropic_targets_and_estimates_for_others() {
    let (a, d) = setup().await;
    let body = json!({"model": "an/claude-x", "messages": [{"role": "user", "content": format!("count {PAT} words")}],
        "tools": [{"name": "t", "description": "one two", "input_schema": {"type": "object"}}]});
    let r = d
        .client()
        .post(d.url("/v1/messages/count_tokens?beta=true"))
        .header("anthropic-beta", "token-counting-2024-11-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-tollgate-estimate").is_none());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["input_tokens"], 6, "three words in the message, three in the tool (name, description): {v}");
    let sent = a.requests().pop().unwrap();
    assert_eq!(sent.path, "/v1/messages/count_tokens");
    assert_eq!(sent.query.as_deref(), Some("beta=true"));
    assert_eq!(sent.body["model"], "claude-x");
    assert!(sent.body.get("max_tokens").is_none());
    assert_eq!(sent.body["messages"][0]["content"], "count TOLLGATE_GITLAB_PAT_1 words");

    let mut other = body.clone();
    other["model"] = json!("oa/gpt-a");
    let before = a.request_count();
    let r = d.client().post(d.url("/v1/messages/count_tokens")).json(&other).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-tollgate-estimate"], "o200k");
    assert!(r.json::<Value>().await.unwrap()["input_tokens"].as_u64().unwrap() > 3);
    assert_eq!(a.request_count(), before, "an estimate asks no provider");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_endpoint_is_an_unknown_url_not_a_missing_model() {
    let (_a, d) = setup().await;
    let r = d.client().post(d.url("/v1/nothing-here")).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unknown_url");
}

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_reach_every_kind_that_has_them_masked_cached_and_booked() {
    use tollgate_tests::fake::fake_vector;
    let (a, d) = setup().await;
    let input = format!("deploy key {PAT}");
    let masked = "deploy key TOLLGATE_GITLAB_PAT_1";
    // Not OpenAI's own format: Gemini and Ollama answer in theirs, read into OpenAI's list.
    for model in ["ge/text-embedding-004", "ol/nomic-embed-text"] {
        let r = d
            .client()
            .post(d.url("/v1/embeddings"))
            .json(&json!({"model": model, "input": [input, "plain"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{model}: {}", r.text().await.unwrap());
        let v: Value = r.json().await.unwrap();
        let got: Vec<f64> = serde_json::from_value(v["data"][0]["embedding"].clone()).unwrap();
        assert_eq!(got, fake_vector(masked), "{model}: the provider embedded the masked text");
        assert_eq!(v["data"][1]["index"], 1);
        assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    }
    assert!(!a.requests().iter().any(|r| r.body.to_string().contains(PAT)));

    // An OpenAI-format target gets the body as sent (base64 asked, base64 answered), then the cache.
    let body =
        json!({"model": "oa/text-embedding-3-small", "input": input, "encoding_format": "base64", "dimensions": 8});
    let r = d.client().post(d.url("/v1/embeddings")).json(&body).send().await.unwrap();
    assert_eq!(r.headers()["x-tollgate-cache"], "miss");
    let first: Value = r.json().await.unwrap();
    assert!(first["data"][0]["embedding"].is_string(), "{first}");
    let sent = a.requests().pop().unwrap();
    assert_eq!(
        (sent.path.as_str(), &sent.body["dimensions"], &sent.body["input"]),
        ("/v1/embeddings", &json!(8), &json!(masked))
    );
    let count = a.request_count();
    let r = d.client().post(d.url("/v1/embeddings")).json(&body).send().await.unwrap();
    assert_eq!(r.headers()["x-tollgate-cache"], "hit", "embeddings are deterministic");
    assert_eq!(r.json::<Value>().await.unwrap(), first);
    assert_eq!(a.request_count(), count);
    let call: Value = d.client().get(d.url("/v1/log?limit=3")).send().await.unwrap().json().await.unwrap();
    let miss = call["calls"].as_array().unwrap().iter().find(|c| c["cache_hit"] == false).unwrap().clone();
    assert_eq!(
        (miss["model"].as_str(), miss["outcome"].as_str()),
        (Some("text-embedding-3-small"), Some("ok")),
        "{miss}"
    );
    assert!(miss["cost_micros"].is_number(), "priced: {miss}");

    // Base64 asked of a translated answer: encoded by tollgate as OpenAI does.
    let r = d
        .client()
        .post(d.url("/v1/embeddings"))
        .json(&json!({"model": "ol/nomic", "input": "x", "encoding_format": "base64"}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"][0]["embedding"].as_str().unwrap().len(), 44, "8 f32s in base64: {v}");

    // Anthropic has none: said so.
    let r = d
        .client()
        .post(d.url("/v1/embeddings"))
        .json(&json!({"model": "an/claude-x", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("offers no embeddings"));
}

#[tokio::test(flavor = "multi_thread")]
async fn completions_with_a_suffix_go_native_where_served_and_as_fill_in_the_middle_elsewhere() {
    let (a, d) = setup().await;
    let body = |model: &str, stream: bool| {
        json!({"model": model, "prompt": "def add(a, b):\n    ", "suffix": "\n\nprint(add(1, 2))", "max_tokens": 16,
            "temperature": 0.2, "stream": stream})
    };
    // An OpenAI-format server serves /v1/completions itself: the body as sent.
    let v = d.post_json("/v1/completions", &body("oa/qwen-coder", false)).await;
    assert_eq!(v["object"], "text_completion", "{v}");
    assert!(!v["choices"][0]["text"].as_str().unwrap().is_empty());
    let sent = a.requests().pop().unwrap();
    assert_eq!(sent.path, "/v1/completions");
    assert_eq!(sent.body["suffix"], "\n\nprint(add(1, 2))");
    assert_eq!(sent.body["prompt"], "def add(a, b):\n    ");

    // Ollama with a FIM family: its own tokens around prefix and suffix, raw.
    let r = d.client().post(d.url("/v1/completions")).json(&body("ol/qwen2.5-coder:1.5b", true)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let chunks: Vec<Value> = sse_events(&text).iter().filter_map(|(_, d)| serde_json::from_str(d).ok()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"), "{text}");
    let sent = a.requests().pop().unwrap();
    assert_eq!(sent.path, "/api/generate");
    assert_eq!(sent.body["raw"], true);
    assert_eq!(
        sent.body["prompt"],
        "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n\nprint(add(1, 2))<|fim_middle|>"
    );

    // A chat-only model: the chat form, with the cursor between prefix and suffix.
    let r = d.client().post(d.url("/v1/completions")).json(&body("an/claude-x", false)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let sent = a.requests().pop().unwrap();
    assert_eq!(sent.path, "/v1/messages");
    assert!(sent.body.to_string().contains("<CURSOR>"), "{}", sent.body);

    // What a translation cannot carry is named.
    let mut several = body("an/claude-x", false);
    several["n"] = json!(3);
    let r = d.client().post(d.url("/v1/completions")).json(&several).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let message = r.text().await.unwrap();
    assert!(message.contains("n cannot be translated"), "n has no mapping: {message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn images_and_documents_reach_every_provider_in_its_own_form() {
    let (a, d) = setup().await;
    const PNG: &str =
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
    let data_url = format!("data:image/png;base64,{PNG}");
    let openai = |model: &str, url: &str| {
        json!({"model": model, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": url}}]}]})
    };
    // OpenAI door -> Anthropic: a base64 image block.
    let r =
        d.client().post(d.url("/v1/chat/completions")).json(&openai("an/claude-x", &data_url)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let sent = a.requests().pop().unwrap().body;
    assert_eq!(
        sent["messages"][0]["content"][1],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}})
    );
    // ... -> Gemini: inline data; -> Ollama: the message's images.
    d.client().post(d.url("/v1/chat/completions")).json(&openai("ge/gemini-x", &data_url)).send().await.unwrap();
    let sent = a.requests().pop().unwrap().body;
    assert_eq!(sent["contents"][0]["parts"][1], json!({"inline_data": {"mime_type": "image/png", "data": PNG}}));
    d.client().post(d.url("/v1/chat/completions")).json(&openai("ol/llava", &data_url)).send().await.unwrap();
    let sent = a.requests().pop().unwrap().body;
    assert_eq!(sent["messages"][0]["images"], json!([PNG]));
    // Ollama cannot fetch a URL: said so, nothing sent.
    let count = a.request_count();
    let r = d
        .client()
        .post(d.url("/v1/chat/completions"))
        .json(&openai("ol/llava", "https://example.com/cat.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("inline images only"));
    assert_eq!(a.request_count(), count);

    // Anthropic door -> OpenAI: an image_url part; a PDF document -> a file part.
    let r = d
        .client()
        .post(d.url("/v1/messages"))
        .json(&json!({"model": "oa/gpt-a", "max_tokens": 50, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}},
            {"type": "text", "text": "describe both"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let sent = a.requests().pop().unwrap().body;
    let parts = &sent["messages"][0]["content"];
    assert_eq!(parts[0], json!({"type": "image_url", "image_url": {"url": data_url}}));
    assert_eq!(parts[1]["file"]["file_data"], "data:application/pdf;base64,JVBERi0x");
    assert_eq!(parts[2], json!({"type": "text", "text": "describe both"}));

    // The Responses door -> Anthropic: a URL image becomes a URL source.
    let r = d
        .client()
        .post(d.url("/v1/responses"))
        .json(&json!({"model": "an/claude-x", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "what is this?"}, {"type": "input_image", "image_url": "https://example.com/cat.png"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let sent = a.requests().pop().unwrap().body;
    assert_eq!(
        sent["messages"][0]["content"][1],
        json!({"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_cut_after_it_began_ends_in_the_callers_format_and_is_booked_as_cut() {
    let (a, d) = setup().await;
    // Anthropic pass-through: the frames so far, then an `error` event, never `message_stop`.
    a.script([Behaviour { cut_after: Some(3), ..Default::default() }]);
    let r = d
        .client()
        .post(d.url("/v1/messages"))
        .json(&json!({"model": "an/claude-x", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "hello there"}]}))
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-tollgate-request-id"].to_str().unwrap().to_string();
    let body = r.text().await.unwrap();
    let names: Vec<String> = sse_events(&body).into_iter().filter_map(|(e, _)| e).collect();
    assert_eq!(names.first().map(String::as_str), Some("message_start"), "{body}");
    assert_eq!(names.last().map(String::as_str), Some("error"), "{body}");
    assert!(!names.iter().any(|n| n == "message_stop"));
    let log: Value = d.client().get(d.url(&format!("/v1/log/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(log["outcome"], "cut", "{log}");

    // Responses pass-through: `response.failed`, numbered after the frames before it.
    a.script([Behaviour { cut_after: Some(4), ..Default::default() }]);
    let r = d
        .client()
        .post(d.url("/v1/responses"))
        .json(&json!({"model": "or/gpt-x", "stream": true, "input": "hello there"}))
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    let events: Vec<Value> = sse_events(&body).iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.failed", "{body}");
    assert_eq!(last["sequence_number"], events.len() as u64 - 1);
    assert!(!events.iter().any(|e| e["type"] == "response.completed"));
}

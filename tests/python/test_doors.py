"""The official SDKs on the doors coding tools use: the Responses API (created, streamed, tools and
their outputs), legacy completions with a suffix, embeddings, model lookup, Anthropic's token
count, extended thinking and cache marks; in every format-to-provider combination the README
lists. The fake providers answer; what reached them is checked where it matters."""

import json

import anthropic
import openai
import pytest

PROMPT = "tell me about tollgate"
# Passed through (or), translated to chat (oa, an, ge, ol).
RESPONSES_MODELS = ["or/gpt-5-codex", "oa/gpt-4.1", "an/claude-sonnet-4-5", "ge/gemini-2.5-flash", "ol/qwen2.5-coder"]
TOOL = {"type": "function", "name": "get_weather", "description": "the weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def last(fake, path):
    return [r for r in fake.requests() if r["path"] == path][-1]


@pytest.mark.parametrize("model", RESPONSES_MODELS)
def test_responses_create(daemon, model):
    r = daemon.openai().responses.create(model=model, instructions="be brief", input=PROMPT, max_output_tokens=100)
    assert r.status == "completed"
    assert r.output_text.endswith("You said: " + PROMPT)
    assert r.usage.output_tokens > 0 and r.usage.input_tokens > 0


@pytest.mark.parametrize("model", RESPONSES_MODELS)
def test_responses_stream(daemon, model):
    with daemon.openai().responses.stream(model=model, input=PROMPT) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    assert "response.output_text.delta" in kinds
    assert final.output_text.endswith("You said: " + PROMPT)


@pytest.mark.parametrize("model", RESPONSES_MODELS)
def test_responses_tools_and_their_outputs(daemon, fake, model):
    client = daemon.openai()
    fake.script({"tool_call": ["get_weather", {"city": "Oslo"}]})
    first = client.responses.create(model=model, input="weather in Oslo?", tools=[TOOL], tool_choice="required")
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather", first.output
    assert calls[0].arguments.replace(" ", "") == '{"city":"Oslo"}'
    second = client.responses.create(model=model, tools=[TOOL], input=[
        {"role": "user", "content": "weather in Oslo?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"},
    ])
    assert second.status == "completed" and second.output_text


@pytest.mark.parametrize("model", ["or/gpt-5-codex", "an/claude-sonnet-4-5"])
def test_responses_stream_with_a_tool_call(daemon, fake, model):
    fake.script({"tool_call": ["get_weather", {"city": "Oslo"}]})
    with daemon.openai().responses.stream(model=model, input="weather?", tools=[TOOL]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    call = [item for item in final.output if item.type == "function_call"][0]
    assert call.name == "get_weather" and '"Oslo"' in call.arguments


def test_responses_json_schema_output_translated(daemon, fake):
    daemon.openai().responses.create(model="oa/gpt-4.1", input="a city", text={"format": {
        "type": "json_schema", "name": "city", "schema": {"type": "object", "properties": {"name": {"type": "string"}}}}})
    sent = last(fake, "/v1/chat/completions")["body"]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["name"] == "city"


def test_responses_unmappable_tool_is_refused_by_name(daemon):
    with pytest.raises(openai.BadRequestError) as e:
        daemon.openai().responses.create(model="an/claude-sonnet-4-5", input="hi", tools=[{"type": "web_search"}])
    assert "web_search" in str(e.value)


@pytest.mark.parametrize("model,path", [("oa/qwen-coder", "/v1/completions"), ("ol/qwen2.5-coder:1.5b", "/api/generate")])
def test_completions_with_a_suffix(daemon, fake, model, path):
    r = daemon.openai().completions.create(model=model, prompt="def add(a, b):\n    ", suffix="\nprint(add(1, 2))",
                                           max_tokens=16, temperature=0.2)
    assert r.object == "text_completion" and r.choices[0].text
    sent = last(fake, path)["body"]
    assert "print(add(1, 2))" in (sent.get("suffix") or sent["prompt"])


def test_completions_streamed(daemon):
    stream = daemon.openai().completions.create(model="ol/qwen2.5-coder:1.5b", prompt="x = ", suffix="\n", stream=True)
    text = "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
    assert text


@pytest.mark.parametrize("model", ["oa/text-embedding-3-small", "ge/text-embedding-004", "ol/nomic-embed-text"])
def test_embeddings(daemon, model):
    # The SDK asks for base64 and decodes it: every target answers in the form it asked for.
    r = daemon.openai().embeddings.create(model=model, input=["one text", "another"])
    assert len(r.data) == 2 and len(r.data[0].embedding) == 8
    assert r.data[0].embedding != r.data[1].embedding
    again = daemon.openai().embeddings.create(model=model, input=["one text", "another"])
    assert again.data[0].embedding == r.data[0].embedding


def test_models_retrieve(daemon):
    m = daemon.openai().models.retrieve("an/claude-sonnet-4-5")
    assert m.id == "an/claude-sonnet-4-5"
    with pytest.raises(openai.NotFoundError):
        daemon.openai().models.retrieve("nobody/nothing")


def test_anthropic_count_tokens(daemon, fake):
    client = daemon.anthropic()
    counted = client.messages.count_tokens(model="an/claude-sonnet-4-5", messages=[{"role": "user", "content": "three words here"}])
    assert counted.input_tokens == 3
    assert last(fake, "/v1/messages/count_tokens")["body"]["model"] == "claude-sonnet-4-5"
    raw = client.messages.with_raw_response.count_tokens(model="oa/gpt-4.1", messages=[{"role": "user", "content": "three words here"}])
    assert raw.headers["x-tollgate-estimate"] == "o200k" and raw.parse().input_tokens >= 3


def test_anthropic_thinking_and_cache_marks_round_trip(daemon, fake):
    client = daemon.anthropic()
    fake.script({"cache_write_tokens": 30, "cached_tokens": 5})
    system = [{"type": "text", "text": "You are terse. " * 20, "cache_control": {"type": "ephemeral"}}]
    m = client.messages.create(model="an/claude-sonnet-4-5", max_tokens=2048, system=system,
                               thinking={"type": "enabled", "budget_tokens": 1024},
                               messages=[{"role": "user", "content": PROMPT}])
    assert [b.type for b in m.content] == ["thinking", "text"]
    assert m.content[0].signature and m.content[0].thinking == "Let me think."
    assert m.usage.cache_creation_input_tokens == 30 and m.usage.cache_read_input_tokens == 5
    sent = last(fake, "/v1/messages")["body"]
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert sent["system"][0]["cache_control"] == {"type": "ephemeral"}

    # The next turn sends the thinking block back, signature and all, as the SDK keeps it.
    m2 = client.messages.create(model="an/claude-sonnet-4-5", max_tokens=2048, system=system,
                                thinking={"type": "enabled", "budget_tokens": 1024},
                                messages=[{"role": "user", "content": PROMPT},
                                          {"role": "assistant", "content": m.content},
                                          {"role": "user", "content": "and more?"}])
    assert m2.content[-1].text.endswith("and more?")
    sent = last(fake, "/v1/messages")["body"]
    assert sent["messages"][1]["content"][0]["signature"] == m.content[0].signature

    # Streamed: the thinking and signature deltas arrive as Anthropic sends them.
    with client.messages.stream(model="an/claude-sonnet-4-5", max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024},
                                messages=[{"role": "user", "content": PROMPT}]) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].signature


@pytest.mark.parametrize("model,path,field", [
    ("oa/gpt-4.1", "/v1/chat/completions", lambda b: b["reasoning_effort"] == "low"),
    ("ge/gemini-2.5-flash", "/v1beta/models/gemini-2.5-flash:generateContent", lambda b: b["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 1024),
    ("ol/qwen3", "/api/chat", lambda b: b["think"] is True),
])
def test_anthropic_thinking_becomes_each_providers_reasoning(daemon, fake, model, path, field):
    m = daemon.anthropic().messages.create(model=model, max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024},
                                           messages=[{"role": "user", "content": PROMPT}])
    assert m.content[0].text.endswith(PROMPT)
    assert field(last(fake, path)["body"])


def test_responses_reasoning_effort_becomes_anthropic_thinking(daemon, fake):
    daemon.openai().responses.create(model="an/claude-sonnet-4-5", input=PROMPT, max_output_tokens=500, reasoning={"effort": "high"})
    sent = last(fake, "/v1/messages")["body"]
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    assert sent["max_tokens"] == 500 + 16384, "the answer keeps the room it was given"


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@pytest.mark.parametrize("model", ["oa/gpt-4.1", "an/claude-sonnet-4-5", "ge/gemini-2.5-flash", "ol/llava"])
def test_images_through_the_openai_sdk(daemon, model):
    r = daemon.openai().chat.completions.create(model=model, messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}}]}])
    assert r.choices[0].message.content.endswith("what is this?")


@pytest.mark.parametrize("model", ["an/claude-sonnet-4-5", "oa/gpt-4.1", "ge/gemini-2.5-flash"])
def test_images_through_the_anthropic_sdk(daemon, fake, model):
    m = daemon.anthropic().messages.create(model=model, max_tokens=100, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "what is this?"}]}])
    assert m.content[0].text.endswith("what is this?")
    assert PNG in str(fake.requests()[-1]["body"])


@pytest.mark.parametrize("model", ["or/gpt-5-codex", "an/claude-sonnet-4-5"])
def test_images_through_the_responses_api(daemon, fake, model):
    r = daemon.openai().responses.create(model=model, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "image_url": "data:image/png;base64," + PNG}]}])
    assert r.output_text.endswith("what is this?")
    assert PNG in str(fake.requests()[-1]["body"])


def test_responses_kept_continued_retrieved_and_deleted_for_a_translated_target(daemon, fake):
    client = daemon.openai()
    first = client.responses.create(model="an/claude-sonnet-4-5", instructions="be brief", input="my mail is raj.patel54@acme.io")
    second = client.responses.create(model="an/claude-sonnet-4-5", previous_response_id=first.id, input="and again?")
    assert second.output_text.endswith("and again?")
    sent = last(fake, "/v1/messages")["body"]
    turns = [(m["role"], json.dumps(m["content"])) for m in sent["messages"]]
    assert [r for r, _ in turns] == ["user", "assistant", "user"], turns
    assert "TOLLGATE_EMAIL_1" in turns[0][1] and "raj.patel54" not in json.dumps(sent), "the earlier turn as it was kept: masked"
    assert "system" not in sent, "instructions do not carry over to the next response"

    got = client.responses.retrieve(first.id)
    assert got.id == first.id and got.output_text.startswith("Hello from fake anthropic")
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)

    unkept = client.responses.create(model="an/claude-sonnet-4-5", input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unkept.id)


def test_responses_previous_id_of_a_responses_target_is_its_own(daemon, fake):
    client = daemon.openai()
    client.responses.create(model="or/gpt-5-codex", previous_response_id="resp_upstream1", input="go on")
    assert last(fake, "/v1/responses")["body"]["previous_response_id"] == "resp_upstream1"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="an/claude-sonnet-4-5", previous_response_id="resp_upstream1", input="go on")
    assert "is not kept here" in str(e.value)

"""The official OpenAI and Anthropic Python SDKs against tollgate, with only the base URL and the
key changed: every provider kind behind it, streamed and not, tools, errors, a cut stream."""

import json

import anthropic
import openai
import pytest

MODELS = ["oa/gpt-4.1", "an/claude-sonnet-4-5", "ge/gemini-2.5-flash", "ol/qwen2.5-coder"]
PROMPT = "tell me about tollgate"
# "Hello from fake <kind>! You said: tell me about tollgate"
OUTPUT_WORDS = 10


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_non_streamed(daemon, model):
    client = daemon.openai()
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": PROMPT}])
    assert raw.headers["x-tollgate-provider"] == model.split("/")[0]
    r = raw.parse()
    assert r.choices[0].message.content.endswith("You said: " + PROMPT)
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == OUTPUT_WORDS
    assert r.usage.prompt_tokens >= 6
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_streamed_with_usage(daemon, model):
    client = daemon.openai()
    stream = client.chat.completions.create(
        model=model, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": PROMPT}])
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text.endswith("You said: " + PROMPT)
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == OUTPUT_WORDS and usage.prompt_tokens >= 4


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_non_streamed(daemon, model):
    client = daemon.anthropic()
    m = client.messages.create(model=model, max_tokens=100, system="be brief",
                               messages=[{"role": "user", "content": PROMPT}])
    assert m.content[0].type == "text" and m.content[0].text.endswith("You said: " + PROMPT)
    assert m.stop_reason == "end_turn"
    assert m.usage.output_tokens == OUTPUT_WORDS
    assert m.usage.input_tokens >= 4


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_streamed(daemon, model):
    client = daemon.anthropic()
    with client.messages.stream(model=model, max_tokens=100, messages=[{"role": "user", "content": PROMPT}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.endswith("You said: " + PROMPT)
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == OUTPUT_WORDS
    assert final.usage.input_tokens >= 4


TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_tool_calls_from_every_provider(daemon, fake, model):
    client = daemon.openai()
    for stream in (False, True):
        fake.script({"tool_call": ["get_weather", {"city": "Oslo"}]})
        if stream:
            calls = {}
            for chunk in client.chat.completions.create(model=model, stream=True, tools=[TOOL],
                                                        messages=[{"role": "user", "content": "weather in Oslo?"}]):
                for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                    c = calls.setdefault(tc.index, {"name": "", "arguments": ""})
                    c["name"] += (tc.function.name or "") if tc.function else ""
                    c["arguments"] += (tc.function.arguments or "") if tc.function else ""
            call = calls[0]
        else:
            r = client.chat.completions.create(model=model, tools=[TOOL],
                                               messages=[{"role": "user", "content": "weather in Oslo?"}])
            assert r.choices[0].finish_reason == "tool_calls"
            tc = r.choices[0].message.tool_calls[0]
            call = {"name": tc.function.name, "arguments": tc.function.arguments}
        assert call["name"] == "get_weather", (model, stream)
        assert json.loads(call["arguments"]) == {"city": "Oslo"}, (model, stream)


def test_anthropic_sdk_tool_use_from_an_openai_provider(daemon, fake):
    client = daemon.anthropic()
    fake.script({"tool_call": ["get_weather", {"city": "Bergen"}]})
    m = client.messages.create(model="oa/gpt-4.1", max_tokens=100,
                               tools=[{"name": "get_weather", "input_schema": TOOL["function"]["parameters"]}],
                               messages=[{"role": "user", "content": "weather in Bergen?"}])
    assert m.stop_reason == "tool_use"
    block = [b for b in m.content if b.type == "tool_use"][0]
    assert block.name == "get_weather" and block.input == {"city": "Bergen"}


def test_sdk_errors_are_typed(daemon, fake):
    import openai as oa_mod
    bad = oa_mod.OpenAI(base_url=daemon.base + "/v1", api_key="tg-not-the-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="oa/gpt-4.1", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.NotFoundError):
        daemon.anthropic().messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    fake.script({"status": 429, "retry_after": "60"})
    with pytest.raises(openai.RateLimitError):
        daemon.openai().chat.completions.create(model="oa/gpt-4.1", messages=[{"role": "user", "content": "x"}])


def test_a_cut_stream_raises_in_the_sdk_instead_of_ending_quietly(daemon, fake):
    fake.script({"cut_after": 4})
    stream = daemon.openai().chat.completions.create(model="ol/qwen", stream=True,
                                                     messages=[{"role": "user", "content": PROMPT}])
    text = ""
    with pytest.raises(openai.APIError) as e:
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    assert "mid-stream" in str(e.value)
    assert text.startswith("Hello")

    fake.script({"cut_after": 4})
    with pytest.raises(anthropic.APIStatusError):
        with daemon.anthropic().messages.stream(model="ol/qwen", max_tokens=50,
                                                messages=[{"role": "user", "content": PROMPT}]) as s:
            "".join(s.text_stream)


def test_models_list_in_both_formats(daemon):
    ids = [m.id for m in daemon.openai().models.list()]
    assert "oa/gpt-4.1" not in ids  # only what routes name is listed...
    assert "fast" in ids and "local" in ids  # ...the aliases among them
    page = daemon.anthropic().models.list()
    assert "fast" in [m.id for m in page.data]

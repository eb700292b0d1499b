"""A real local model: llama-cpp-python's server with gemma3 270M, behind tollgate, called by the
official SDKs. The answer is the model's own and so are the token counts."""

import json
import urllib.request

from conftest import Daemon


def local_daemon(llama_url):
    return Daemon(f"""
[keychain]
backend = "env"
[providers.llamacpp]
kind = "openai"
base_url = "{llama_url}/v1"
tokenize_path = "/extras/tokenize/count"
[routes.local]
targets = ["llamacpp/gemma3-270m"]
""")


def test_openai_sdk_streams_a_real_local_answer_with_real_token_counts(llama_server):
    d = local_daemon(llama_server)
    try:
        client = d.openai(timeout=120)
        messages = [{"role": "user", "content": "Name three colours."}]
        # Non-streamed: the server's own usage comes through unchanged.
        direct = json.load(urllib.request.urlopen(urllib.request.Request(
            llama_server + "/v1/chat/completions",
            data=json.dumps({"model": "x", "messages": messages, "max_tokens": 12, "temperature": 0}).encode(),
            headers={"content-type": "application/json"}), timeout=120))
        r = client.chat.completions.create(model="local", messages=messages, max_tokens=12, temperature=0)
        assert r.choices[0].message.content == direct["choices"][0]["message"]["content"]
        assert r.usage.prompt_tokens == direct["usage"]["prompt_tokens"] > 0
        assert r.usage.completion_tokens == direct["usage"]["completion_tokens"] > 0

        # Streamed: the same text, token by token; usage counted from the model's tokens.
        raw = client.chat.completions.with_raw_response.create(
            model="local", messages=messages, max_tokens=12, temperature=0, stream=True,
            stream_options={"include_usage": True})
        assert raw.headers["x-tollgate-provider"] == "llamacpp"
        text, usage, chunks = "", None, 0
        for chunk in raw.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
                chunks += 1
            if chunk.usage:
                usage = chunk.usage
        assert text == direct["choices"][0]["message"]["content"]
        assert usage is not None
        assert usage.completion_tokens == direct["usage"]["completion_tokens"]
        # The tokenizer counts the prompt's text; the chat template adds a few framing tokens.
        assert 0 < usage.prompt_tokens <= direct["usage"]["prompt_tokens"]
    finally:
        d.stop()


def test_anthropic_sdk_streams_from_the_local_model(llama_server):
    d = local_daemon(llama_server)
    try:
        with d.anthropic(timeout=120).messages.stream(
                model="local", max_tokens=10, messages=[{"role": "user", "content": "Say hello."}]) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        assert text.strip()
        assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0
    finally:
        d.stop()


def test_per_token_vectors_from_a_real_server_are_refused_with_what_to_do(llama_embedding_server):
    """llama-cpp-python's server answers a vector per token for gemma3 (its CLI has no pooling
    option); tollgate says so instead of handing the caller vectors it cannot use."""
    import openai
    import pytest
    d = local_daemon(llama_embedding_server)
    try:
        with pytest.raises(openai.APIStatusError) as e:
            d.openai(timeout=120).embeddings.create(model="llamacpp/gemma3-270m", input="hello world", encoding_format="float")
        assert e.value.status_code == 502 and "pooling" in str(e.value)
    finally:
        d.stop()

"""Fixtures for end-to-end tests with the official SDKs: the real tollgate binary, the fake cloud
providers (tests/src/fake.rs, run as a binary) and a real local model server (llama-cpp-python).

tests/run sets TOLLGATE_BIN, TOLLGATE_FAKE_BIN and TOLLGATE_MODEL; each falls back to the
default build output and the default model cache.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
TOLLGATE = os.environ.get("TOLLGATE_BIN", str(TARGET / "tollgate"))
FAKE = os.environ.get("TOLLGATE_FAKE_BIN", str(TARGET / "tollgate-fake-provider"))
CACHE = pathlib.Path(os.environ.get("TOLLGATE_TEST_CACHE", pathlib.Path.home() / ".cache" / "tollgate-tests"))
MODEL = os.environ.get("TOLLGATE_MODEL", str(CACHE / "models" / "gemma3-270m-q4_k_m.gguf"))

# Fake keys, shaped like real ones; they only ever reach the fake providers.
KEYS = {
    "TOLLGATE_OA_API_KEY": "sk-test-oa-python-000000000000",
    "TOLLGATE_AN_API_KEY": "sk-ant-test-python-0000000000",
    "TOLLGATE_GE_API_KEY": "AIzaTestPython00000000000000",
    "TOLLGATE_OR_API_KEY": "sk-test-or-python-000000000000",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


class Fake:
    def __init__(self):
        self.proc = subprocess.Popen([FAKE], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), line
        self.url = "http://" + line.split()[-1]

    def script(self, *behaviours):
        req = urllib.request.Request(self.url + "/_fake/script", data=json.dumps(list(behaviours)).encode(),
                                     headers={"content-type": "application/json"})
        urllib.request.urlopen(req).read()

    def requests(self):
        return json.load(urllib.request.urlopen(self.url + "/_fake/requests"))

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(10)


class Daemon:
    def __init__(self, config):
        self.home = tempfile.mkdtemp(prefix="tg-py-")
        pathlib.Path(self.home, "config.toml").write_text(config)
        env = dict(os.environ, TOLLGATE_HOME=self.home, **KEYS)
        env.pop("TOLLGATE_CONFIG", None)
        self.log = open(pathlib.Path(self.home, "daemon.log"), "w")
        self.proc = subprocess.Popen([TOLLGATE, "daemon", "--port", "0"], env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        port_file = pathlib.Path(self.home, "daemon.port")
        deadline = time.time() + 20
        while not port_file.exists() or not port_file.read_text().strip():
            assert self.proc.poll() is None, pathlib.Path(self.home, "daemon.log").read_text()
            assert time.time() < deadline, "the daemon did not start"
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        self.token = pathlib.Path(self.home, "token").read_text().strip()
        self.base = f"http://127.0.0.1:{self.port}"

    def openai(self, **kw):
        import openai
        return openai.OpenAI(base_url=self.base + "/v1", api_key=self.token, max_retries=0, **kw)

    def anthropic(self, **kw):
        import anthropic
        return anthropic.Anthropic(base_url=self.base, api_key=self.token, max_retries=0, **kw)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="session")
def fake():
    f = Fake()
    yield f
    f.stop()


def fake_config(fake_url, extra=""):
    return f"""
[keychain]
backend = "env"
[limits]
first_byte_timeout_ms = 3000
stream_idle_timeout_ms = 3000
[providers.oa]
kind = "openai"
base_url = "{fake_url}/v1"
local = false
[providers.an]
kind = "anthropic"
base_url = "{fake_url}"
local = false
[providers.ge]
kind = "gemini"
base_url = "{fake_url}"
local = false
[providers.ol]
kind = "ollama"
base_url = "{fake_url}"
[providers.or]
kind = "openai"
base_url = "{fake_url}/v1"
local = false
responses_api = true
{extra}
"""


@pytest.fixture(scope="session")
def daemon(fake):
    d = Daemon(fake_config(fake.url))
    yield d
    d.stop()


def start_llama(*extra):
    port = free_port()
    log = open(pathlib.Path(tempfile.gettempdir(), f"llama-server-{port}.log"), "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", MODEL, "--host", "127.0.0.1", "--port", str(port),
         "--n_ctx", "2048", "--n_threads", "2", *extra],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/v1/models", 180, proc)
    return url, proc, log


def serve_llama(*args):
    """Runs the server with `args` for the session; yields its URL, stops it after."""
    assert pathlib.Path(MODEL).is_file(), f"{MODEL} is missing: run tests/setup.sh"
    url, proc, log = start_llama(*args)
    yield url
    proc.terminate()
    proc.wait(20)
    log.close()


@pytest.fixture(scope="session")
def llama_embedding_server():
    """The same server and model with embeddings on."""
    yield from serve_llama("--embedding", "true")


@pytest.fixture(scope="session")
def llama_server():
    """llama-cpp-python's OpenAI-compatible server with the gemma3 270M GGUF."""
    yield from serve_llama("--chat_format", "gemma")

"""Drives tests/bench/compare-gateways.sh: the same load, through each gateway, to the same upstream.

Upstreams: nginx serving a fixed OpenAI answer (instant), and `tollgate-bench --scenario upstream`
(the same answer after 20 ms; streamed answers chunk by chunk). Gateways: none (direct), tollgate
(redaction, budgets, cache and ledger on), LiteLLM proxy (one worker, spend logs off) and Portkey's
gateway. Load: oha at fixed rates (open loop, latency corrected), 32 connections. Everything runs on
this machine, so the load generator shares the cores with what it measures: the numbers are
comparative, and the direct row is the floor.
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

KEY = "sk-bench-0000000000000000000000000000"
# LiteLLM refuses to start without a master key: callers present it.
MASTER = "sk-bench-master-00000000000000000000000000"
# A realistic prompt: code and prose, no secret in it, about 1.2 kB (redaction scans all of it).
PROMPT = (
    "Explain what this function does and whether it handles empty input:\n\n"
    "def total(values):\n    result = 0\n    for v in values:\n        result += v\n    return result\n\n"
    + "The service reads orders from the queue, totals them per customer and writes a report. " * 12
)


def body(model, stream=False):
    b = {"model": model, "temperature": 0.7, "max_tokens": 64, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        b["stream"] = True
        b["stream_options"] = {"include_usage": True}
    return json.dumps(b)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port, path="/", timeout=60, proc=None, headers=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"a process exited at start (port {port}): {proc.args}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path, headers=headers or {})
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing answered on port {port} within {timeout}s")


def rss_mib(pid):
    """Resident memory of a process and its descendants."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{p}/task/{p}/children") as f:
                pids.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return total / 1024


class Upstreams:
    def __init__(self, work, bench):
        self.procs = []
        self.nginx_port = free_port()
        conf = os.path.join(work, "nginx.conf")
        answer = (
            '{"id":"chatcmpl-bench","object":"chat.completion","created":1764460800,"model":"bench",'
            '"choices":[{"index":0,"message":{"role":"assistant","content":"The function returns the sum of '
            'the two arguments."},"finish_reason":"stop"}],"usage":{"prompt_tokens":220,"completion_tokens":11,'
            '"total_tokens":231}}'
        )
        user = "user root;\n" if os.geteuid() == 0 else ""
        with open(conf, "w") as f:
            f.write(
                f"{user}worker_processes 1;\ndaemon off;\npid {work}/nginx.pid;\nerror_log {work}/nginx.err warn;\n"
                "events { worker_connections 4096; }\n"
                f"http {{\n access_log off;\n client_body_temp_path {work}/body;\n proxy_temp_path {work}/proxy;\n"
                f" fastcgi_temp_path {work}/fcgi;\n uwsgi_temp_path {work}/uwsgi;\n scgi_temp_path {work}/scgi;\n"
                " keepalive_requests 1000000;\n client_body_buffer_size 64k;\n"
                f" server {{\n  listen 127.0.0.1:{self.nginx_port};\n"
                f"  location = /v1/chat/completions {{ default_type application/json; return 200 '{answer}'; }}\n"
                "  location / { return 200 'ok'; }\n }\n}\n"
            )
        self.nginx = subprocess.Popen(["nginx", "-c", conf, "-p", work], stderr=subprocess.DEVNULL)
        self.procs.append(self.nginx)
        wait_http(self.nginx_port, proc=self.nginx)
        self.slow_port = free_port()
        self.slow = subprocess.Popen(
            [bench, "--scenario", "upstream", "--port", str(self.slow_port), "--provider-delay-ms", "20"],
            stdout=subprocess.DEVNULL,
        )
        self.stream_port = free_port()
        self.stream = subprocess.Popen(
            [bench, "--scenario", "upstream", "--port", str(self.stream_port), "--chunk-gap-ms", "10"],
            stdout=subprocess.DEVNULL,
        )
        self.procs += [self.slow, self.stream]
        for p in (self.slow_port, self.stream_port):
            wait_http(p)

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait()


class Gateway:
    """One gateway in front of one upstream: how to reach it, and its process."""

    name = ""
    proc = None

    def url(self):
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def headers(self):
        return {}

    def model(self):
        return "bench"

    def memory(self):
        return rss_mib(self.proc.pid) if self.proc else None

    def stop(self):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Direct(Gateway):
    name = "direct"

    def __init__(self, upstream_port):
        self.port = upstream_port

    def headers(self):
        return {"Authorization": f"Bearer {KEY}"}


class Tollgate(Gateway):
    name = "tollgate"

    def __init__(self, binary, upstream_port, work):
        self.home = tempfile.mkdtemp(prefix="tollgate-", dir=work)
        with open(os.path.join(self.home, "config.toml"), "w") as f:
            f.write(
                '[keychain]\nbackend = "env"\n'
                f'[providers.up]\nkind = "openai"\nbase_url = "http://127.0.0.1:{upstream_port}/v1"\nlocal = false\n'
                '[prices."up/bench"]\ninput = "1.00"\noutput = "4.00"\n'
                '[[budgets]]\nname = "bench"\nscope = "user"\nperiod = "day"\nlimit_usd = "100000"\naction = "block"\n'
            )
        env = dict(os.environ, TOLLGATE_HOME=self.home, TOLLGATE_UP_API_KEY=KEY, TOLLGATE_LOG="warn")
        env.pop("TOLLGATE_CONFIG", None)
        self.proc = subprocess.Popen(
            [binary, "daemon", "--port", "0"], env=env, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.home, "daemon.log"), "w"),
        )
        port_file = os.path.join(self.home, "daemon.port")
        deadline = time.time() + 20
        while not os.path.exists(port_file) or not open(port_file).read().strip():
            if self.proc.poll() is not None or time.time() > deadline:
                raise SystemExit("tollgate did not start: " + open(os.path.join(self.home, "daemon.log")).read())
            time.sleep(0.05)
        self.port = int(open(port_file).read().strip())
        self.token = open(os.path.join(self.home, "token")).read().strip()

    def headers(self):
        return {"Authorization": f"Bearer {self.token}"}

    def model(self):
        return "up/bench"

    def own_time(self, since_ms):
        """The gateway's own time per request (ledger `added_ms`), p50 and p99, since a moment."""
        db = sqlite3.connect(f"file:{os.path.join(self.home, 'tollgate.db')}?mode=ro", uri=True)
        values = sorted(r[0] for r in db.execute("SELECT added_ms FROM ledger WHERE ts_ms >= ?", (since_ms,)))
        db.close()
        if not values:
            return None
        return pct(values, 50), pct(values, 99)


class LiteLLM(Gateway):
    name = "litellm"

    def __init__(self, venv, upstream_port, work):
        self.port = free_port()
        cfg = os.path.join(work, f"litellm-{upstream_port}.yaml")
        with open(cfg, "w") as f:
            f.write(
                "model_list:\n  - model_name: bench\n    litellm_params:\n      model: openai/bench\n"
                f"      api_base: http://127.0.0.1:{upstream_port}/v1\n      api_key: {KEY}\n"
                f"general_settings:\n  master_key: {MASTER}\n  disable_spend_logs: true\n  disable_error_logs: true\n"
                "litellm_settings:\n  telemetry: false\n  drop_params: true\n"
            )
        env = dict(os.environ, LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False", LITELLM_MODE="PRODUCTION")
        self.proc = subprocess.Popen(
            [os.path.join(venv, "bin", "litellm"), "--config", cfg, "--port", str(self.port), "--num_workers", "1"],
            env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "litellm.log"), "a"),
        )
        wait_http(self.port, "/health/liveliness", timeout=120, proc=self.proc)

    def headers(self):
        return {"Authorization": f"Bearer {MASTER}"}


class Portkey(Gateway):
    name = "portkey"

    def __init__(self, root, upstream_port, work):
        self.port = free_port()
        self.upstream_port = upstream_port
        script = os.path.join(root, "node_modules", "@portkey-ai", "gateway", "build", "start-server.js")
        self.proc = subprocess.Popen(
            ["node", script, f"--port={self.port}", "--headless"],
            env=dict(os.environ, NODE_ENV="production"), stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(work, "portkey.log"), "a"),
        )
        wait_http(self.port, proc=self.proc)

    def headers(self):
        return {
            "Authorization": f"Bearer {KEY}",
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": f"http://127.0.0.1:{self.upstream_port}/v1",
        }


def pct(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def oha(tool, gw, rate, seconds, connections):
    args = [tool, "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-q", str(rate), "-c", str(connections),
            "--latency-correction", "-w", "-m", "POST", "-T", "application/json", "-d", body(gw.model())]
    for k, v in gw.headers().items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run(args + [gw.url()], capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise SystemExit(f"oha failed: {out.stderr}")
    r = json.loads(out.stdout)
    lat = r.get("latencyPercentiles") or {}
    codes = r.get("statusCodeDistribution") or {}
    ok = sum(n for c, n in codes.items() if str(c).startswith("2"))
    sent = sum(codes.values()) + sum((r.get("errorDistribution") or {}).values())
    ms = lambda k: (lat.get(k) or float("nan")) * 1000  # noqa: E731
    return {
        "p50": ms("p50"), "p99": ms("p99"), "p999": ms("p99.9"),
        "success": ok / sent if sent else 0.0,
        "served_rps": ok / seconds,
        "sent": sent,
    }


def ttfb(gw, n):
    """Milliseconds to the first byte of a streamed answer's body, one request at a time."""
    host, port = "127.0.0.1", gw.port
    conn = http.client.HTTPConnection(host, port, timeout=30)
    out = []
    payload = body(gw.model(), stream=True)
    for i in range(n + 5):
        t = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body=payload,
                     headers=dict(gw.headers(), **{"Content-Type": "application/json"}))
        r = conn.getresponse()
        first = r.read1(1) if hasattr(r, "read1") else r.read(1)
        elapsed = (time.perf_counter() - t) * 1000
        r.read()
        if r.status != 200 or not first:
            raise RuntimeError(f"a streamed request failed with status {r.status}")
        if i >= 5:  # the first few warm connections and caches
            out.append(elapsed)
    conn.close()
    return sorted(out)


def fmt(v, width=7):
    return f"{v:{width}.2f}" if v == v else " " * (width - 1) + "-"


def spread(values):
    values = [v for v in values if v == v]
    if not values:
        return "-"
    return f"{min(values):.2f}-{max(values):.2f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tollgate", required=True)
    ap.add_argument("--bench", required=True)
    ap.add_argument("--oha", required=True)
    ap.add_argument("--litellm-venv", required=True)
    ap.add_argument("--portkey", required=True)
    ap.add_argument("--rates", default="50,500,1000,2000,5000")
    ap.add_argument("--slow-rates", default="50,500")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--only", default="direct,tollgate,litellm,portkey")
    ap.add_argument("--json", help="also write every figure to this file")
    a = ap.parse_args()
    rates = [int(r) for r in a.rates.split(",")]
    slow_rates = [int(r) for r in a.slow_rates.split(",")]
    only = a.only.split(",")
    work = tempfile.mkdtemp(prefix="compare-gateways-")
    up = Upstreams(work, a.bench)
    results = {}  # (upstream, gateway, rate) -> [run dicts]
    memory = {}
    own = {}
    ttfbs = {}
    gateways = []
    try:
        def start(name, port):
            if name == "direct":
                return Direct(port)
            if name == "tollgate":
                return Tollgate(a.tollgate, port, work)
            if name == "litellm":
                return LiteLLM(a.litellm_venv, port, work)
            return Portkey(a.portkey, port, work)

        for upstream, port, rate_list in (("instant", up.nginx_port, rates), ("20 ms", up.slow_port, slow_rates)):
            for name in only:
                gw = start(name, port)
                gateways.append(gw)
                # Warm: connections, caches, JITs.
                oha(a.oha, gw, 20, 2, 4)
                for run in range(a.runs):
                    saturated = False
                    for rate in rate_list:
                        if saturated:
                            results.setdefault((upstream, name, rate), []).append(None)
                            continue
                        since = int(time.time() * 1000)
                        r = oha(a.oha, gw, rate, a.seconds, a.connections)
                        if isinstance(gw, Tollgate):
                            time.sleep(0.3)  # settled rows reach the database
                            r["own"] = gw.own_time(since)
                        results.setdefault((upstream, name, rate), []).append(r)
                        print(f"  {upstream:>7} {name:>8} run {run + 1} {rate:>5}/s: p50 {r['p50']:.2f} "
                              f"p99 {r['p99']:.2f} ms, {r['success'] * 100:.1f}% ok, {r['served_rps']:.0f}/s served",
                              file=sys.stderr, flush=True)
                        # A gateway serving under half the rate is saturated: higher rates say nothing more.
                        saturated = r["served_rps"] < rate * 0.5
                memory[(upstream, name)] = gw.memory()
                gw.stop()
                gateways.remove(gw)
        for name in only:
            port = up.stream_port
            gw = start(name, port)
            gateways.append(gw)
            try:
                ttfbs[name] = ttfb(gw, 200)
            except (RuntimeError, OSError, http.client.HTTPException) as e:
                ttfbs[name] = str(e)
            gw.stop()
            gateways.remove(gw)
    finally:
        for gw in gateways:
            gw.stop()
        up.stop()
        shutil.rmtree(work, ignore_errors=True)

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"\nmachine: {os.cpu_count()} cores ({cpu}), load generator on the same cores; oha, "
          f"{a.connections} connections, {a.seconds} s per point, {a.runs} runs (median shown, p99 range across runs)")
    for upstream, rate_list in (("instant", rates), ("20 ms", slow_rates)):
        print(f"\nupstream answering in {upstream} "
              f"({'nginx, fixed answer' if upstream == 'instant' else 'tollgate-bench upstream'}):")
        print(f"{'gateway':>9} {'rate/s':>6} {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} {'p99 range':>13} "
              f"{'ok %':>6} {'served/s':>8} {'memory MiB':>10}")
        for name in only:
            measured = [r for r in rate_list if any(results.get((upstream, name, r), []))]
            for rate in rate_list:
                runs = [r for r in results.get((upstream, name, rate), []) if r]
                if not runs:
                    print(f"{name:>9} {rate:>6}   saturated at a lower rate")
                    continue
                med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
                mem = memory.get((upstream, name))
                print(f"{name:>9} {rate:>6} {fmt(med('p50'))} {fmt(med('p99'))} {fmt(med('p999'), 8)} "
                      f"{spread([r['p99'] for r in runs]):>13} {med('success') * 100:6.1f} {med('served_rps'):8.0f} "
                      f"{(f'{mem:.1f}' if mem and rate == measured[-1] else ''):>10}")
        if "direct" in only and "tollgate" in only:
            print(f"\ntollgate over direct ({upstream}): added p50 / p99 ms (ratio of p50), "
                  "and its own time from the ledger p50 / p99 ms")
            for rate in rate_list:
                d = [r for r in results.get((upstream, "direct", rate), []) if r]
                t = [r for r in results.get((upstream, "tollgate", rate), []) if r]
                if not d or not t:
                    continue
                m = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
                owns = [r["own"] for r in t if r.get("own")]
                own50 = statistics.median(o[0] for o in owns) if owns else float("nan")
                own99 = statistics.median(o[1] for o in owns) if owns else float("nan")
                print(f"  {rate:>5}/s: added {m(t, 'p50') - m(d, 'p50'):.3f} / {m(t, 'p99') - m(d, 'p99'):.3f} ms "
                      f"(x{m(t, 'p50') / m(d, 'p50'):.2f}); own {own50:.3f} / {own99:.3f} ms; "
                      f"failed: direct {100 - m(d, 'success') * 100:.2f}%, tollgate {100 - m(t, 'success') * 100:.2f}%")
    print("\ntime to the first byte of a streamed answer (first chunk sent at once, the rest 10 ms apart), "
          "200 requests one at a time:")
    for name, v in ttfbs.items():
        if isinstance(v, str):
            print(f"{name:>9}: {v}")
        else:
            print(f"{name:>9}: p50 {pct(v, 50):.2f} ms, p99 {pct(v, 99):.2f} ms")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"results": {"|".join(map(str, k)): v for k, v in results.items()},
                       "memory_mib": {"|".join(k): v for k, v in memory.items()},
                       "ttfb_ms": ttfbs}, f, indent=1)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()

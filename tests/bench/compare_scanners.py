"""Runs four secret scanners on the same inputs and prints recall, precision and speed.

Scoring follows shared/corpus/README.md, at line level so that every tool is judged alike
(detect-secrets reports lines only): a labelled value is found when a finding in its file touches
one of its lines; a finding is true when it touches a line of a labelled value.
"""

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import time


def tollgate(args, target, out):
    # The labelled corpus labels personal data too; elsewhere secrets only, as the others look for.
    only = [] if target.name.startswith("corpus-") else ["--secrets-only"]
    r = subprocess.run([args.tollgate, "scan", *only, str(target), "--format", "json"], capture_output=True, text=True)
    return [(f["path"], f["line"], f["line"]) for f in json.loads(r.stdout or "[]")]


def kingfisher(args, target, out):
    subprocess.run([f"{args.venv}/bin/kingfisher", "scan", str(target), "-f", "json", "-n", "-j", "1", "-o", out],
                   capture_output=True)
    data = json.loads(pathlib.Path(out).read_text() or "{}")
    res = []
    for f in data.get("findings", []):
        fd = f["finding"]
        snippet = fd.get("snippet", "")
        res.append((fd["path"], fd["line"], fd["line"] + snippet.count("\n")))
    return res


def betterleaks(args, target, out):
    subprocess.run([f"{args.venv}/bin/betterleaks", str(target), "-o", out, "--no-banner", "-j", "1", "--exit-code", "0"],
                   capture_output=True)
    data = json.loads(pathlib.Path(out).read_text() or "{}")
    return [(f["location"]["path"], f["location"]["start_line"], f["location"]["end_line"]) for f in data.get("findings", [])]


def detect_secrets(args, target, out):
    r = subprocess.run([f"{args.venv}/bin/detect-secrets", "scan", "--all-files", str(target)], capture_output=True, text=True,
                       cwd=str(target) if pathlib.Path(target).is_dir() else None)
    data = json.loads(r.stdout or "{}")
    res = []
    for path, items in data.get("results", {}).items():
        full = str(pathlib.Path(target) / path) if pathlib.Path(target).is_dir() else path
        res.extend((full, i["line_number"], i["line_number"]) for i in items)
    return res


TOOLS = {"tollgate": tollgate, "kingfisher": kingfisher, "betterleaks": betterleaks, "detect-secrets": detect_secrets}


def labelled(corpus):
    spans = {}
    for line in (corpus / "labels.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        v = json.loads(line)
        text = (corpus / v["file"]).read_text()
        for s in v["secrets"]:
            pos = text.index(s["value"])
            first = text[:pos].count("\n") + 1
            spans.setdefault(v["file"], []).append((first, first + s["value"].count("\n")))
    return spans


def score(findings, spans):
    files = {}
    for path, a, b in findings:
        name = os.path.basename(path)
        if name.endswith(".txt"):
            files.setdefault(name, []).append((a, b))
    total = sum(len(v) for v in spans.values())
    found = sum(1 for f, ss in spans.items() for (a, b) in ss if any(x <= b and y >= a for x, y in files.get(f, [])))
    n = sum(len(v) for v in files.values())
    true = sum(1 for f, fs in files.items() for (x, y) in fs if any(x <= b and y >= a for a, b in spans.get(f, [])))
    return found / total, (true / n if n else 0.0), n


TEST_PATH = re.compile(
    r"(^|/)(tests?|testdata|test_data|fixtures?|examples?|benches|spec)(/|$)|(^|/)tests?\.[a-z]+$|_test\.|test_|\.test\."
)


def outside_tests(findings):
    """Findings in files that are not tests, fixtures or examples: the false alarms a user sees."""
    return [f for f in findings if not TEST_PATH.search(str(f[0]))]


def source_slice(src, limit):
    """A fixed slice of text files (sorted walk) of about `limit` bytes."""
    dest = pathlib.Path(tempfile.mkdtemp(prefix="scan-slice-"))
    size = 0
    for root, dirs, files in sorted(os.walk(src)):
        dirs.sort()
        for f in sorted(files):
            p = pathlib.Path(root) / f
            try:
                data = p.read_bytes()
            except OSError:
                continue
            if b"\0" in data[:8192] or len(data) > 1_000_000:
                continue
            rel = p.relative_to(src)
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(data)
            size += len(data)
            if size >= limit:
                return dest, size
    return dest, size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--venv", required=True)
    ap.add_argument("--tollgate", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--generated", help="a corpus drawn from tollgate's rule samples (tollgate-bench --scenario gen-corpus)")
    ap.add_argument("--source", required=True)
    ap.add_argument("--mb", type=float, default=20)
    args = ap.parse_args()
    corpus = pathlib.Path(args.corpus).resolve()
    spans = labelled(corpus)
    only_txt = pathlib.Path(tempfile.mkdtemp(prefix="corpus-"))
    for p in corpus.glob("*.txt"):
        shutil.copy(p, only_txt / p.name)
    src, size = source_slice(pathlib.Path(args.source), int(args.mb * 1e6))
    out = tempfile.mktemp(suffix=".json")
    print(f"corpus: {sum(len(v) for v in spans.values())} labelled values in {len(list(only_txt.iterdir()))} files; "
          f"source: {size / 1e6:.1f} MB of {args.source}; one thread each, no validation, no network\n")
    print(f"{'scanner':<15} {'recall':>7} {'precision':>10} {'findings':>9} {'corpus s':>9} {'source s':>9} {'MB/s':>8} "
          f"{'source findings':>16} {'outside tests /100 MB':>22}")
    for name, run in TOOLS.items():
        t = time.perf_counter()
        fs = run(args, only_txt, out)
        corpus_s = time.perf_counter() - t
        recall, precision, n = score(fs, spans)
        t = time.perf_counter()
        big = run(args, src, out)
        src_s = time.perf_counter() - t
        per_100 = len(outside_tests(big)) * 100e6 / size
        print(f"{name:<15} {recall:>7.3f} {precision:>10.3f} {n:>9} {corpus_s:>9.2f} {src_s:>9.2f} {size / 1e6 / src_s:>8.1f} "
              f"{len(big):>16} {per_100:>22.1f}")
    if args.generated:
        generated = pathlib.Path(args.generated).resolve()
        gen_spans = labelled(generated)
        print(f"\ngenerated: {sum(len(v) for v in gen_spans.values())} fresh values over "
              f"{len(list(generated.glob('*.txt')))} files (positives and placeholder negatives)\n")
        print(f"{'scanner':<15} {'recall':>7} {'precision':>10} {'findings':>9}")
        for name, run in TOOLS.items():
            recall, precision, n = score(run(args, generated, out), gen_spans)
            print(f"{name:<15} {recall:>7.3f} {precision:>10.3f} {n:>9}")
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(only_txt, ignore_errors=True)


if __name__ == "__main__":
    main()

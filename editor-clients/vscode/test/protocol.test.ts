// Drives `tollgate lsp` the way VS Code does, through vscode-languageserver-protocol's node client:
// the same initialize capabilities (inline completion, showDocument), a document, an inline
// completion, the Explain command and the status notification. The daemon (started by the
// server itself) talks to tollgate's fake provider.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  createProtocolConnection,
  DidOpenTextDocumentNotification,
  ExecuteCommandRequest,
  InitializedNotification,
  InitializeRequest,
  InlineCompletionRequest,
  ShowDocumentRequest,
  StreamMessageReader,
  StreamMessageWriter,
} from "vscode-languageserver-protocol/node";

const repo = path.resolve(__dirname, "../../../..");
const target = process.env.CARGO_TARGET_DIR ?? path.join(repo, "target");
const BIN = process.env.TOLLGATE_BIN ?? path.join(target, "debug/tollgate");
const FAKE = process.env.TOLLGATE_FAKE_BIN ?? path.join(target, "debug/tollgate-fake-provider");

function startFake(): Promise<{ proc: ChildProcess; url: string }> {
  assert.ok(fs.existsSync(FAKE), `${FAKE} is missing: run \`cargo build --workspace\` first`);
  const proc = spawn(FAKE, [], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    proc.stdout!.on("data", (d: Buffer) => {
      const m = /listening on (\S+)/.exec(d.toString());
      if (m) resolve({ proc, url: `http://${m[1]}` });
    });
    proc.on("exit", (c) => reject(new Error(`the fake provider exited (${c})`)));
  });
}

test("tollgate lsp answers an inline completion and an Explain command as VS Code asks them", async (t) => {
  assert.ok(fs.existsSync(BIN), `${BIN} is missing: run \`cargo build --workspace\` first`);
  const fake = await startFake();
  const home = fs.mkdtempSync(path.join(os.tmpdir(), "tg-vscode-"));
  fs.writeFileSync(
    path.join(home, "config.toml"),
    [
      "[server]", "port = 0",
      "[keychain]", 'backend = "env"',
      "[providers.oa]", 'kind = "openai"', `base_url = "${fake.url}/v1"`, "local = false",
      "[routes.local]", 'targets = ["oa/qwen2.5-coder-1.5b"]',
      "[routes.code]", 'targets = ["oa/gpt-a"]',
    ].join("\n"),
  );
  await fetch(`${fake.url}/_fake/script`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify([{ text: "a + b;\n}\n" }, { text: "`add` returns the sum." }]),
  });
  const server = spawn(BIN, ["lsp"], {
    env: { ...process.env, TOLLGATE_HOME: home, TOLLGATE_OA_API_KEY: "sk-test-oa-0000000000000000" },
    stdio: ["pipe", "pipe", "inherit"],
  });
  const conn = createProtocolConnection(new StreamMessageReader(server.stdout!), new StreamMessageWriter(server.stdin!));
  const statuses: { reachable: boolean; route?: string }[] = [];
  conn.onNotification("tollgate/status", (s: { reachable: boolean; route?: string }) => {
    statuses.push(s);
  });
  let shown: string | undefined;
  conn.onRequest(ShowDocumentRequest.type, (p) => {
    shown = fs.readFileSync(new URL(p.uri), "utf8");
    return { success: true };
  });
  conn.listen();
  t.after(() => {
    conn.dispose();
    server.kill();
    fake.proc.kill();
    const pid = Number(fs.readFileSync(path.join(home, "daemon.lock"), "utf8").trim());
    if (pid > 0) {
      try {
        process.kill(pid);
      } catch {
        // already gone
      }
    }
  });

  const init = await conn.sendRequest(InitializeRequest.type, {
    processId: process.pid,
    rootUri: null,
    workspaceFolders: null,
    capabilities: {
      general: { positionEncodings: ["utf-16"] },
      textDocument: { inlineCompletion: { dynamicRegistration: true }, synchronization: { didSave: true } },
      window: { showDocument: { support: true }, workDoneProgress: true },
      workspace: { applyEdit: true, workspaceEdit: { documentChanges: true } },
    },
  });
  assert.equal(init.capabilities.inlineCompletionProvider, true);
  assert.equal(init.capabilities.positionEncoding, "utf-16");
  await conn.sendNotification(InitializedNotification.type, {});

  const uri = `file://${home}/add.ts`;
  await conn.sendNotification(DidOpenTextDocumentNotification.type, {
    textDocument: { uri, languageId: "typescript", version: 1, text: "export function add(a: number, b: number): number {\n  return \n}\n" },
  });
  const items = await conn.sendRequest(InlineCompletionRequest.type, {
    textDocument: { uri },
    position: { line: 1, character: 9 },
    context: { triggerKind: 2 },
  });
  const list = Array.isArray(items) ? items : items?.items ?? [];
  assert.equal(list.length, 1);
  assert.equal(list[0].insertText, "a + b;", "cut at the closing brace the document already has");
  assert.deepEqual(list[0].range, { start: { line: 1, character: 9 }, end: { line: 1, character: 9 } });

  const text = await conn.sendRequest(ExecuteCommandRequest.type, {
    command: "tollgate.explain",
    arguments: [uri, { start: { line: 0, character: 0 }, end: { line: 2, character: 1 } }],
  });
  assert.equal(text, "`add` returns the sum.");
  assert.equal(shown, "`add` returns the sum.", "the explanation opened as a document");
  // The status the server sends once initialized may come after the answers above.
  for (let i = 0; i < 100 && !statuses.some((s) => s.reachable && s.route === "local"); i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(statuses.some((s) => s.reachable && s.route === "local"), JSON.stringify(statuses));
});

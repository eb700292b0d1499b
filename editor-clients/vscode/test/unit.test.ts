// The extension's logic that needs no VS Code window.
import { test } from "node:test";
import assert from "node:assert/strict";

import { binary, commandLine, quote, serverEnv } from "../src/commands";
import { statusView } from "../src/status";

test("the status bar says when the daemon is down, and what the route and budget are", () => {
  assert.match(statusView(undefined).text, /tollgate/);
  const down = statusView({ reachable: false, message: "the tollgate daemon is not reachable" });
  assert.equal(down.warning, true);
  assert.match(down.tooltip, /tollgate doctor/);
  const up = statusView({ reachable: true, route: "local", budget_left: "$3.20 of $5.00 (daily)", redactions: 2, model: "ollama/qwen" });
  assert.equal(up.text, "$(shield) tollgate · local · $3.20 of $5.00");
  assert.equal(up.warning, false);
  assert.match(up.tooltip, /values masked this session: 2/);
  assert.match(up.tooltip, /last answer from: ollama\/qwen/);
  const refused = statusView({ reachable: true, route: "local", message: "budget \"daily\" is spent" });
  assert.equal(refused.warning, true);
});

test("commands are quoted for the shell", () => {
  assert.equal(binary(""), "tollgate");
  assert.equal(binary("  /opt/t/tollgate "), "/opt/t/tollgate");
  assert.equal(quote("review", false), "review");
  assert.equal(quote("/my tools/tollgate", false), "'/my tools/tollgate'");
  assert.equal(quote("it's", false), `'it'\\''s'`);
  assert.equal(quote("C:\\Program Files\\tollgate.exe", true), '"C:\\Program Files\\tollgate.exe"');
  assert.equal(commandLine("/my tools/tollgate", ["login", "openai"], false), "'/my tools/tollgate' login openai");
});

test("the server gets TOLLGATE_HOME only when set", () => {
  assert.equal(serverEnv({ A: "1" }, "").TOLLGATE_HOME, undefined);
  assert.equal(serverEnv({ A: "1" }, " /tmp/h ").TOLLGATE_HOME, "/tmp/h");
  assert.equal(serverEnv({ A: "1" }, "/tmp/h").A, "1");
});

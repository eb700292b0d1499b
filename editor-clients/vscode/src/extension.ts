// tollgate for VS Code: starts `tollgate lsp` (which starts the daemon when none runs) and wires
// inline completion, code actions, a status bar item and commands to it.
import * as vscode from "vscode";
import {
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  TransportKind,
} from "vscode-languageclient/node";

import { binary, commandLine, PROVIDERS, serverEnv } from "./commands";
import { GatewayStatus, statusView } from "./status";

let client: LanguageClient | undefined;
let status: vscode.StatusBarItem;

function config() {
  return vscode.workspace.getConfiguration("tollgate");
}

async function start(context: vscode.ExtensionContext): Promise<void> {
  const cfg = config();
  const bin = binary(cfg.get<string>("path"));
  const serverOptions: ServerOptions = {
    command: bin,
    args: ["lsp"],
    transport: TransportKind.stdio,
    options: { env: serverEnv(process.env, cfg.get<string>("home")) },
  };
  const languages = cfg.get<string[]>("languages") ?? [];
  const clientOptions: LanguageClientOptions = {
    documentSelector: languages.map((language) => ({ scheme: "file", language })),
    outputChannelName: "tollgate",
    middleware: {
      // The inline completion feature is the client's; the setting can switch it off.
      provideInlineCompletionItems: (document, position, ctx, token, next) =>
        config().get<boolean>("inlineCompletion.enable") ? next(document, position, ctx, token) : undefined,
    },
  };
  client = new LanguageClient("tollgate", "tollgate", serverOptions, clientOptions);
  client.registerProposedFeatures();
  client.onNotification("tollgate/status", (s: GatewayStatus) => show(s));
  try {
    await client.start();
  } catch (e) {
    show({ reachable: false, message: `cannot start "${bin} lsp": ${e}` });
    void vscode.window.showErrorMessage(
      `tollgate: cannot start "${bin} lsp". Install tollgate or set "tollgate.path".`,
    );
  }
  context.subscriptions.push({ dispose: () => void client?.stop() });
}

function show(s: GatewayStatus | undefined): void {
  const v = statusView(s);
  status.text = v.text;
  status.tooltip = v.tooltip;
  status.backgroundColor = v.warning ? new vscode.ThemeColor("statusBarItem.warningBackground") : undefined;
  status.show();
}

/** Runs one of the server's commands on the active editor's selection. */
async function onSelection(command: string): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  if (!editor || !client) {
    return;
  }
  const sel = editor.selection;
  const range = {
    start: { line: sel.start.line, character: sel.start.character },
    end: { line: sel.end.line, character: sel.end.character },
  };
  await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Window, title: `tollgate: ${command.replace("tollgate.", "")}` },
    () =>
      client!.sendRequest(ExecuteCommandRequest.type, {
        command,
        arguments: [editor.document.uri.toString(), range],
      }),
  );
}

/** Runs the tollgate CLI in a terminal (it may prompt, as `login` does). */
function inTerminal(args: string[]): void {
  const line = commandLine(binary(config().get<string>("path")), args);
  const term = vscode.window.createTerminal({ name: "tollgate", env: serverEnv({}, config().get<string>("home")) as Record<string, string> });
  term.show();
  term.sendText(line);
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  status = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  status.command = "tollgate.policyStatus";
  context.subscriptions.push(status);
  show(undefined);
  const reg = (id: string, f: () => unknown) => context.subscriptions.push(vscode.commands.registerCommand(id, f));
  reg("tollgate.explainSelection", () => onSelection("tollgate.explain"));
  reg("tollgate.reviewSelection", () => onSelection("tollgate.review"));
  reg("tollgate.reviewStaged", () => inTerminal(["review", "--staged"]));
  reg("tollgate.showUsage", () => inTerminal(["usage"]));
  reg("tollgate.policyStatus", () => inTerminal(["policy", "status"]));
  reg("tollgate.signIn", async () => {
    const provider = await vscode.window.showQuickPick(PROVIDERS, { placeHolder: "Store whose key in the OS keychain?" });
    if (provider) {
      inTerminal(["login", provider]);
    }
  });
  reg("tollgate.restart", async () => {
    await client?.stop();
    await start(context);
  });
  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (e.affectsConfiguration("tollgate.path") || e.affectsConfiguration("tollgate.home") || e.affectsConfiguration("tollgate.languages")) {
        await client?.stop();
        await start(context);
      }
    }),
  );
  await start(context);
}

export async function deactivate(): Promise<void> {
  await client?.stop();
}

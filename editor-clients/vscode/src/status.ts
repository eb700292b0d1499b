// What the status bar shows, from the server's `tollgate/status` notification. No VS Code API
// here, so that it is unit-tested without a window.

export interface GatewayStatus {
  reachable: boolean;
  route?: string | null;
  model?: string | null;
  budget_left?: string | null;
  redactions?: number;
  message?: string | null;
}

export interface StatusView {
  text: string;
  tooltip: string;
  /** The status bar item's background: a warning when the daemon is down or refusing. */
  warning: boolean;
}

export function statusView(s: GatewayStatus | undefined): StatusView {
  if (!s) {
    return { text: "$(loading~spin) tollgate", tooltip: "tollgate: starting", warning: false };
  }
  if (!s.reachable) {
    return {
      text: "$(debug-disconnect) tollgate",
      tooltip: `tollgate: the daemon is not reachable${s.message ? `\n${s.message}` : ""}\nRun "tollgate doctor" in a terminal.`,
      warning: true,
    };
  }
  const parts = ["$(shield) tollgate"];
  if (s.route) {
    parts.push(s.route);
  }
  if (s.budget_left) {
    parts.push(s.budget_left.split(" (")[0]);
  }
  const lines = [
    "tollgate: daemon reachable",
    `route: ${s.route ?? "unknown"}`,
    s.model ? `last answer from: ${s.model}` : undefined,
    s.budget_left ? `budget left: ${s.budget_left}` : undefined,
    `values masked this session: ${s.redactions ?? 0}`,
    s.message ? `last error: ${s.message}` : undefined,
  ].filter((l): l is string => l !== undefined);
  return { text: parts.join(" · "), tooltip: lines.join("\n"), warning: Boolean(s.message) };
}

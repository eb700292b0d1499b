// Pure helpers for the extension's commands (unit-tested without a VS Code window).

/** The tollgate binary: the setting when set, else `tollgate` from PATH. */
export function binary(setting: string | undefined): string {
  const s = (setting ?? "").trim();
  return s.length > 0 ? s : "tollgate";
}

/** Quotes one word for a POSIX shell (or for cmd.exe on Windows). */
export function quote(word: string, windows = process.platform === "win32"): string {
  if (/^[A-Za-z0-9_./:=@%+-]+$/.test(word)) {
    return word;
  }
  if (windows) {
    return `"${word.replace(/"/g, '""')}"`;
  }
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** A command line to run in a terminal. */
export function commandLine(bin: string, args: string[], windows?: boolean): string {
  return [bin, ...args].map((w) => quote(w, windows)).join(" ");
}

/** The providers a user can sign in to, for the quick pick. */
export const PROVIDERS = ["anthropic", "openai", "gemini", "mistral", "gitlab"];

/** Environment for the language server: TOLLGATE_HOME when the setting gives one. */
export function serverEnv(base: NodeJS.ProcessEnv, home: string | undefined): NodeJS.ProcessEnv {
  const env = { ...base };
  if (home && home.trim().length > 0) {
    env.TOLLGATE_HOME = home.trim();
  }
  return env;
}

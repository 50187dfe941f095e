// What the extension makes of its settings: the command that starts the
// server, the initialization options it is given, the files it serves.
// Pure (no `vscode` import), so that it is unit tested with node's runner.

/** The extension's settings (`busbar.*`). */
export interface Settings {
  /** The busbar binary. */
  path: string;
  /** Where event contracts live; empty for busbar's default. */
  contracts: string;
  /** A catalog file (`busbar catalog`); empty for busbar's default. */
  catalog: string;
  /** The integrations directory; empty for the nearest `integrations.d`. */
  directory: string;
  /** The target database whose catalog the server reads live; empty for
   * the catalog file only. */
  databaseUrl: string;
}

/** The variable `busbar lsp` reads `--database-url` from. The URL goes in
 * the server's environment, not its arguments, so that a password in it is
 * not on the command line (`ps`). */
export const DATABASE_URL_VARIABLE = "BUSBAR_LSP_DATABASE_URL";

/** Reads the settings through `get` (VS Code's configuration `get`). */
export function readSettings(get: (key: string) => unknown): Settings {
  const text = (key: string, fallback: string): string => {
    const value = get(key);
    return typeof value === "string" ? value.trim() : fallback;
  };
  return {
    path: text("path", "busbar") || "busbar",
    contracts: text("contracts", ""),
    catalog: text("catalog", ""),
    directory: text("directory", ""),
    databaseUrl: text("databaseUrl", ""),
  };
}

/** How the server is started: `busbar lsp`, speaking on stdio; with a
 * database URL, in `environment` (the extension's own) plus the URL. */
export function serverCommand(
  settings: Settings,
  environment: Record<string, string | undefined> = {},
): { command: string; args: string[]; options?: { env: Record<string, string | undefined> } } {
  const command = { command: settings.path, args: ["lsp"] };
  if (!settings.databaseUrl) return command;
  return {
    ...command,
    options: { env: { ...environment, [DATABASE_URL_VARIABLE]: settings.databaseUrl } },
  };
}

/** The `initializationOptions` busbar lsp reads (only those set). */
export function initializationOptions(settings: Settings): Record<string, string> {
  const options: Record<string, string> = {};
  if (settings.contracts) options.contracts = settings.contracts;
  if (settings.catalog) options.catalog = settings.catalog;
  if (settings.directory) options.directory = settings.directory;
  return options;
}

/** The documents the server is for: YAML under an `integrations.d`, and
 * the event contracts beside it. */
export const documentSelector = [
  { scheme: "file", language: "yaml", pattern: "**/integrations.d/**/*.{yaml,yml}" },
  { scheme: "file", language: "json", pattern: "**/schemas/events/**/*.json" },
];

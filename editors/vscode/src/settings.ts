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
}

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
  };
}

/** How the server is started: `busbar lsp`, speaking on stdio. */
export function serverCommand(settings: Settings): { command: string; args: string[] } {
  return { command: settings.path, args: ["lsp"] };
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

import { strict as assert } from "node:assert";
import { test } from "node:test";

import {
  DATABASE_URL_VARIABLE,
  documentSelector,
  initializationOptions,
  readSettings,
  serverCommand,
} from "../src/settings";

test("defaults start `busbar lsp` with no options", () => {
  const settings = readSettings(() => undefined);
  assert.deepEqual(serverCommand(settings), { command: "busbar", args: ["lsp"] });
  assert.deepEqual(initializationOptions(settings), {});
});

test("set paths become the server's initialization options", () => {
  const values: Record<string, unknown> = {
    path: " /opt/busbar/bin/busbar ",
    contracts: "/srv/schemas/events",
    catalog: "",
    directory: "/srv/integrations.d",
  };
  const settings = readSettings((key) => values[key]);
  assert.equal(serverCommand(settings).command, "/opt/busbar/bin/busbar");
  assert.deepEqual(initializationOptions(settings), {
    contracts: "/srv/schemas/events",
    directory: "/srv/integrations.d",
  });
});

test("an empty or wrongly typed path falls back to busbar", () => {
  assert.equal(readSettings((key) => (key === "path" ? "" : undefined)).path, "busbar");
  assert.equal(readSettings((key) => (key === "path" ? 42 : undefined)).path, "busbar");
});

test("the selector covers integration files and contracts", () => {
  const patterns = documentSelector.map((s) => s.pattern);
  assert.ok(patterns.some((p) => p.includes("integrations.d")));
  assert.ok(patterns.some((p) => p.includes("schemas/events")));
});

test("a database URL goes in the server's environment, not its arguments", () => {
  const url = "postgres://busbar:secret@db.internal/target";
  const settings = readSettings((key) => (key === "databaseUrl" ? ` ${url} ` : undefined));
  const command = serverCommand(settings, { PATH: "/usr/bin", HOME: "/home/me" });
  assert.deepEqual(command.args, ["lsp"]);
  assert.ok(!command.args.some((arg) => arg.includes("secret")));
  assert.deepEqual(command.options?.env, {
    PATH: "/usr/bin",
    HOME: "/home/me",
    [DATABASE_URL_VARIABLE]: url,
  });
  assert.equal(DATABASE_URL_VARIABLE, "BUSBAR_LSP_DATABASE_URL");
  // Not an initialization option: those are logged by some clients.
  assert.deepEqual(initializationOptions(settings), {});
});

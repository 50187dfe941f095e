// The busbar extension: starts `busbar lsp` for integration files. All the
// knowledge is the server's; this only starts it with the user's settings.

import * as vscode from "vscode";
import { LanguageClient, LanguageClientOptions, ServerOptions } from "vscode-languageclient/node";

import { documentSelector, initializationOptions, readSettings, serverCommand } from "./settings";

let client: LanguageClient | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const configuration = vscode.workspace.getConfiguration("busbar");
  const settings = readSettings((key) => configuration.get(key));
  const server: ServerOptions = serverCommand(settings, process.env);
  const options: LanguageClientOptions = {
    documentSelector,
    initializationOptions: initializationOptions(settings),
    synchronize: {
      // Contracts and catalogs changed on disk are read again (and a
      // saved file that names new tables has them read from the database).
      fileEvents: vscode.workspace.createFileSystemWatcher("**/{schemas/events/**/*.json,catalog.json}"),
    },
  };
  client = new LanguageClient("busbar", "busbar", server, options);
  context.subscriptions.push(
    vscode.commands.registerCommand("busbar.refresh", () =>
      client?.sendRequest("workspace/executeCommand", { command: "busbar.refresh", arguments: [] }),
    ),
  );
  await client.start();
}

export async function deactivate(): Promise<void> {
  await client?.stop();
}

// Driven by tests/acceptance/test_mcp_ts_sdk.py: the TypeScript MCP SDK (1.32.x) client's experimental
// tasks API against a live nessus-pool over Streamable HTTP. Prints one JSON object.
// usage: node mcp_ts_tasks.mjs URL TOKEN
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: "ts-sdk-tasks-test", version: "1.0.0" });
await client.connect(transport);
const out = { protocolVersion: transport.protocolVersion ?? null };
out.capabilities = client.getServerCapabilities();
const tools = (await client.listTools()).tools;
out.taskTools = tools.filter((t) => t.execution?.taskSupport).map((t) => t.name).sort();

// 1. a scan as a task, to its result
const kinds = [];
let created = null;
let result = null;
for await (const message of client.experimental.tasks.callToolStream({
  name: "run_untrusted_scan",
  arguments: { targets: "10.6.0.1" },
})) {
  kinds.push(message.type);
  if (message.type === "taskCreated") created = message.task;
  if (message.type === "result") result = message.result;
  if (message.type === "error") out.streamError = String(message.error);
}
out.kinds = kinds;
out.created = created;
out.result = result;
out.task = await client.experimental.tasks.getTask(created.taskId);
out.listed = (await client.experimental.tasks.listTasks()).tasks.map((t) => t.taskId);
const status = await client.callTool({ name: "get_scan_status", arguments: { task_id: created.taskId } });
out.status = status.structuredContent;

// 2. a second scan, cancelled while it runs or waits
const stream = client.experimental.tasks.callToolStream({
  name: "run_untrusted_scan",
  arguments: { targets: "10.6.0.2" },
});
const first = (await stream.next()).value;
out.cancelled = await client.experimental.tasks.cancelTask(first.task.taskId);
await stream.return(undefined);
out.afterCancel = await client.experimental.tasks.getTask(first.task.taskId);
try {
  await client.experimental.tasks.cancelTask(created.taskId);
  out.cancelFinished = "accepted";
} catch (err) {
  out.cancelFinished = err.code ?? String(err);
}
await client.close();
console.log(JSON.stringify(out));

// Test support: a real `triggers serve` (embedded Redis, in-process worker) on a free port, and
// loopback HTTP servers. The service command: TRIGGERS_COMMAND, else the repository's .venv.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, existsSync, rmSync, openSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const repository = resolve(here, "..", "..", "..");

export function triggersCommand() {
  if (process.env.TRIGGERS_COMMAND) return process.env.TRIGGERS_COMMAND.split(" ");
  const local = join(repository, ".venv", "bin", "triggers");
  return [existsSync(local) ? local : "triggers"];
}

export function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

export async function waitUntil(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`${what} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function startService() {
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), "triggers-ts-"));
  const secret = "whsec_" + randomBytes(32).toString("base64");
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("TRIGGERS_")));
  Object.assign(env, {
    TRIGGERS_AUTH: "off",
    TRIGGERS_OUTBOUND_ALLOW: "127.0.0.1,localhost",
    TRIGGERS_DATA_DIR: dataDir,
    TRIGGERS_WEBHOOK_SECRET: secret,
  });
  const [command, ...args] = triggersCommand();
  const logPath = join(dataDir, "serve.log");
  const log = openSync(logPath, "w");
  const child = spawn(command, [...args, "serve", "--port", String(port), "--log-level", "warning"], {
    env, cwd: dataDir, stdio: ["ignore", log, log],
  });
  let exited = false;
  child.on("exit", () => { exited = true; });
  const url = `http://127.0.0.1:${port}`;
  await waitUntil(async () => {
    if (exited) throw new Error(`triggers serve exited:\n${readFileSync(logPath, "utf8")}`);
    try { return (await fetch(`${url}/readyz`)).status === 200; } catch { return false; }
  }, 90_000, `triggers serve ready on ${url}`);
  return {
    url, secret,
    async stop() {
      if (!exited) {
        child.kill("SIGTERM");
        await waitUntil(() => exited, 30_000, "triggers serve stopped").catch(() => child.kill("SIGKILL"));
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A loopback server: `handler(request, body)` answers `{status, json}`; requests are recorded. */
export async function startServer(handler) {
  const requests = [];
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      requests.push({ path: req.url, headers: req.headers, body });
      const { status = 200, json } = handler(req, body) ?? {};
      res.writeHead(status, json === undefined ? {} : { "content-type": "application/json" });
      res.end(json === undefined ? undefined : JSON.stringify(json));
    });
  });
  await new Promise((done) => server.listen(0, "127.0.0.1", done));
  const url = `http://127.0.0.1:${server.address().port}`;
  return { url, requests, close: () => new Promise((done) => server.close(done)) };
}

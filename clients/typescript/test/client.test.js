// The TypeScript client against a real `triggers serve` started here: configure, fire, wait,
// verify the sessionFinalized webhook; problem documents; the committed types are up to date.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "node:http";
import { TriggersClient, ProblemError, verifyWebhook } from "../src/index.js";
import { startService, startServer, waitUntil, repository } from "./support.js";

let service, endpoint, client;

before(async () => {
  service = await startService();
  endpoint = await startServer((req) =>
    req.url === "/compare" ? { status: 200, json: { same: true } } : { status: 204 });
  client = new TriggersClient({ baseUrl: service.url, namespace: `ts-${Date.now()}:` });
});

after(async () => {
  await endpoint?.close();
  await service?.stop();
});

test("configure, fire, wait, verify a webhook", async () => {
  const config = await client.configure("applicant:1", {
    tasks: { t_compare: { after: ["flora_page3", "fauna_page6"], unless: ["withdrawn"], run: `${endpoint.url}/compare` } },
    webhooks: [{ url: `${endpoint.url}/hook`, events: ["sessionFinalized"] }],
  });
  assert.deepEqual(config.tasks.t_compare.after, ["flora_page3", "fauna_page6"]);
  await client.fire("applicant:1", "flora_page3", { responses: { q1: "yes" } });
  const unresolved = await client.unresolved("applicant:1");
  assert.deepEqual(unresolved.map((t) => t.waitingFor), [["fauna_page6"]]);
  const fired = await client.fire("applicant:1", "fauna_page6", { page: 6 });
  assert.deepEqual(fired.scheduled, ["t_compare#0"]);

  const session = await client.waitFinalized("applicant:1", { timeoutMs: 60_000 });
  assert.equal(session.finalized, true);
  const instance = await client.instance("applicant:1", "t_compare#0");   // t_compare%230
  assert.equal(instance.status, "finished");
  assert.deepEqual(instance.metadata.result, { same: true });

  await waitUntil(() => endpoint.requests.some((r) => r.path === "/hook"), 60_000, "webhook delivered");
  const delivery = endpoint.requests.find((r) => r.path === "/hook");
  const event = verifyWebhook(delivery.headers, delivery.body, service.secret);
  assert.equal(event.type, "sessionFinalized");
  assert.equal(event.session, client.uid("applicant:1"));
  assert.throws(() => verifyWebhook(delivery.headers, delivery.body + " ", service.secret));
  const task = endpoint.requests.find((r) => r.path === "/compare");
  verifyWebhook(task.headers, task.body, service.secret);   // HTTP tasks are signed too
});

test("problem documents are ProblemErrors naming the field", async () => {
  await assert.rejects(client.session("never-configured"), (error) =>
    error instanceof ProblemError && error.status === 404 && error.kind === "not-found");
  await assert.rejects(client.configure("bad", { tasks: { t: { after: ["a"], run: "ftp://x" } } }), (error) =>
    error instanceof ProblemError && error.kind === "validation-error" &&
    error.errors.some((e) => e.field.startsWith("body.tasks.t")));
});

test("replay and list instances", async () => {
  await client.configure("r", { tasks: { t: { after: ["go"], run: "ext", using: "external" } } });
  await client.fire("r", "go");
  await client.setStatus("r", "t#0", "failed", { metadata: { exceptionType: "Example" } });
  const replay = await client.replay("r", "t#0", { go: { n: 2 } });
  assert.deepEqual(replay, { replayed: "t#0", instance: "t#1" });
  const names = [];
  for await (const i of client.instances("r")) names.push(`${i.name}:${i.status}`);
  assert.deepEqual(names.sort(), ["t#0:replayed", "t#1:scheduled"]);
  await client.delete("r");
});

test("the committed types are generated from the committed openapi.json", () => {
  const out = join(mkdtempSync(join(tmpdir(), "triggers-types-")), "schema.d.ts");
  const cli = join(repository, "clients", "typescript", "node_modules", ".bin", "openapi-typescript");
  execFileSync(cli, [join(repository, "openapi.json"), "--default-non-nullable", "false", "--output", out], { stdio: "ignore" });
  const committed = readFileSync(join(repository, "clients", "typescript", "src", "schema.d.ts"), "utf8");
  assert.equal(readFileSync(out, "utf8"), committed, "run `npm run generate` in clients/typescript");
});

test("a fire whose answer is lost is retried with the same Idempotency-Key and recorded once", async () => {
  // A loopback proxy that forwards every request but answers the first with 503 (Retry-After: 0).
  const keys = [];
  const proxy = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", async () => {
      keys.push(req.headers["idempotency-key"]);
      const answer = await fetch(service.url + req.url, {
        method: req.method, body: body || undefined, headers: { "content-type": "application/json", "idempotency-key": req.headers["idempotency-key"] ?? "" },
      });
      const text = await answer.text();
      if (keys.length === 1) { res.writeHead(503, { "retry-after": "0" }); return res.end(); }
      res.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "application/json" });
      res.end(text);
    });
  });
  await new Promise((done) => proxy.listen(0, "127.0.0.1", done));
  try {
    await client.configure("i", { tasks: { t: { after: [], andEvery: "page", run: "ext", using: "external" } } });
    const viaProxy = new TriggersClient({ baseUrl: `http://127.0.0.1:${proxy.address().port}`, namespace: client.namespace });
    const fired = await viaProxy.fire("i", "page", { n: 1 });
    assert.equal(keys.length, 2);
    assert.ok(keys[0] && keys[0] === keys[1]);
    assert.deepEqual(fired.scheduled, ["t#0"]);
    assert.deepEqual(Object.keys((await client.session("i")).instances), ["t#0"]);
  } finally {
    await new Promise((done) => proxy.close(done));
  }
});

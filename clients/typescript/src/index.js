// Thin fetch client of the Triggers service. Types: index.d.ts over schema.d.ts, which is
// generated from the repository's openapi.json (npm run generate), so they cannot drift.
import { randomUUID } from "node:crypto";
import { Webhook } from "standardwebhooks";

const RETRY_STATUSES = new Set([429, 503]);

/** A problem document (RFC 9457) the service answered with; `kind` is the last segment of `type`. */
export class ProblemError extends Error {
  constructor(status, problem) {
    const fields = (problem.errors ?? []).map((e) => `${e.field}: ${e.message}`).join(", ");
    super(`${status} ${problem.type}: ${problem.detail ?? problem.title}${fields ? ` (${fields})` : ""}`);
    this.name = "ProblemError";
    this.status = status;
    this.problem = problem;
    this.type = problem.type ?? "about:blank";
    this.kind = String(this.type).split("/").pop();
    this.title = problem.title ?? "";
    this.detail = problem.detail;
    this.errors = problem.errors ?? [];
  }
}

/** One path segment, percent-encoded: instance `t#0` is `t%230` in a URL. */
export const segment = (name) => encodeURIComponent(name);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function retryAfterMs(response) {
  const value = response.headers.get("retry-after");
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const when = Date.parse(value);
  return Number.isNaN(when) ? undefined : Math.max(0, when - Date.now());
}

export class TriggersClient {
  /**
   * @param {object} [options] baseUrl (else TRIGGERS_URL), apiKey (else TRIGGERS_API_KEY),
   *   namespace (prefixed to every UID), retries (attempts of idempotent calls), fetch.
   */
  constructor(options = {}) {
    const env = globalThis.process?.env ?? {};
    this.baseUrl = (options.baseUrl ?? env.TRIGGERS_URL ?? "http://127.0.0.1:8000").replace(/\/$/, "");
    this.apiKey = options.apiKey ?? env.TRIGGERS_API_KEY;
    this.namespace = options.namespace ?? "";
    this.attempts = options.retries ?? 5;
    this.backoffMs = options.backoffMs ?? 250;
    this.fetch = options.fetch ?? globalThis.fetch;
  }

  uid(uid) {
    return this.namespace + uid;
  }

  #session(uid) {
    return `/sessions/${segment(this.uid(uid))}`;
  }

  #instance(uid, name) {
    return `${this.#session(uid)}/instances/${segment(name)}`;
  }

  /** Sends a call; idempotent ones (GET, PUT, DELETE, or with an Idempotency-Key reused on
   * every attempt) are retried on network errors, 429 and 503 (honouring Retry-After) and
   * while the same key is still in flight. */
  async #call(method, path, { body, query, idempotencyKey } = {}) {
    const headers = { accept: "application/json" };
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    if (idempotencyKey) headers["idempotency-key"] = idempotencyKey;
    const url = new URL(this.baseUrl + path);
    for (const [key, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
    }
    const idempotent = ["GET", "PUT", "DELETE"].includes(method) || Boolean(idempotencyKey);
    const attempts = idempotent ? this.attempts : 1;
    for (let attempt = 0; ; attempt++) {
      const last = attempt >= attempts - 1;
      let response;
      try {
        response = await this.fetch(url, {
          method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        });
      } catch (error) {
        if (last) throw error;
        await sleep(Math.random() * Math.min(8000, this.backoffMs * 2 ** attempt));
        continue;
      }
      const text = await response.text();
      // 409 idempotency-in-flight: our own earlier attempt still holds the Idempotency-Key.
      const again = RETRY_STATUSES.has(response.status) ||
        (response.status === 409 && text.includes("idempotency-in-flight"));
      if (!last && again) {
        await sleep(retryAfterMs(response) ?? Math.random() * Math.min(8000, this.backoffMs * 2 ** attempt));
        continue;
      }
      if (response.status >= 400) {
        let problem;
        try { problem = JSON.parse(text); } catch { problem = { title: response.statusText, detail: text }; }
        throw new ProblemError(response.status, problem);
      }
      return text ? JSON.parse(text) : undefined;
    }
  }

  configure(uid, config, { idempotencyKey } = {}) {
    return this.#call("PATCH", `${this.#session(uid)}/config`, { body: config, idempotencyKey: idempotencyKey ?? randomUUID() });
  }

  replaceConfig(uid, config, { idempotencyKey } = {}) {
    return this.#call("PUT", `${this.#session(uid)}/config`, { body: config, idempotencyKey: idempotencyKey ?? randomUUID() });
  }

  config(uid) {
    return this.#call("GET", `${this.#session(uid)}/config`);
  }

  fire(uid, trigger, kwargs = {}, { idempotencyKey } = {}) {
    return this.#call("POST", `${this.#session(uid)}/fire`, { body: { trigger, kwargs }, idempotencyKey: idempotencyKey ?? randomUUID() });
  }

  session(uid) {
    return this.#call("GET", this.#session(uid));
  }

  async unresolved(uid) {
    return (await this.#call("GET", `${this.#session(uid)}/tasks/unresolved`)).tasks;
  }

  async *instances(uid, { status, task, limit } = {}) {
    let cursor;
    do {
      const page = await this.#call("GET", `${this.#session(uid)}/instances`, { query: { status, task, cursor, limit } });
      yield* page.instances;
      cursor = page.next;
    } while (cursor);
  }

  instance(uid, name) {
    return this.#call("GET", this.#instance(uid, name));
  }

  replay(uid, name, kwargs, { idempotencyKey } = {}) {
    const body = kwargs === undefined ? {} : { kwargs };
    return this.#call("POST", `${this.#instance(uid, name)}/replay`, { body, idempotencyKey: idempotencyKey ?? randomUUID() });
  }

  skip(uid, name, { cascade = false, result, idempotencyKey } = {}) {
    return this.#call("POST", `${this.#instance(uid, name)}/skip`, { body: { cascade, result }, idempotencyKey: idempotencyKey ?? randomUUID() });
  }

  setStatus(uid, name, status, { metadata, cascade = false, cascadeKwargs, idempotencyKey } = {}) {
    const body = { status, metadata, cascade, cascadeKwargs };
    return this.#call("POST", `${this.#instance(uid, name)}/status`, { body, idempotencyKey: idempotencyKey ?? randomUUID() });
  }

  delete(uid) {
    return this.#call("DELETE", this.#session(uid));
  }

  /** Polls GET /sessions/{uid} until it is finalized (the event stream does not exist yet). */
  async waitFinalized(uid, { timeoutMs = 60_000, pollMs = 200 } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const session = await this.session(uid);
      if (session.finalized) return session;
      if (Date.now() >= deadline) throw new Error(`session ${this.uid(uid)} not finalized within ${timeoutMs} ms`);
      await sleep(pollMs);
    }
  }
}

/** The verified event of a webhook delivery (Standard Webhooks); throws when it does not verify.
 * `body` must be the raw text received; `secret` is TRIGGERS_WEBHOOK_SECRET's `whsec_...`. */
export function verifyWebhook(headers, body, secret) {
  const plain = {};
  const entries = typeof headers.entries === "function" ? headers.entries() : Object.entries(headers);
  for (const [key, value] of entries) plain[key.toLowerCase()] = Array.isArray(value) ? value[0] : value;
  return new Webhook(secret).verify(typeof body === "string" ? body : Buffer.from(body).toString("utf8"), plain);
}

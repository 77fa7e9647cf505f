// Types of the client, over the schemas generated from openapi.json (schema.d.ts).
import type { components } from "./schema.js";

type Schemas = components["schemas"];
export type TaskConfig = Schemas["TaskConfig"];
export type ConfigInput = Schemas["ConfigPatch"];
export type Config = Schemas["ConfigBody"];
export type FireAnswer = Schemas["FireAnswer"];
export type Session = Schemas["SessionAnswer"];
export type Instance = Schemas["Instance"];
export type UnresolvedTask = Schemas["UnresolvedTaskView"];
export type ReplayAnswer = Schemas["ReplayAnswer"];
export type Problem = Schemas["Problem"];
export type Status = Instance["status"];
export type { components, paths } from "./schema.js";

export interface WebhookEvent {
  type: string;
  session: string;
  timestamp: string;
  data: Record<string, unknown>;
}

export interface ClientOptions {
  baseUrl?: string;
  apiKey?: string;
  namespace?: string;
  retries?: number;
  backoffMs?: number;
  fetch?: typeof fetch;
}

export interface Keyed {
  idempotencyKey?: string;
}

export declare class ProblemError extends Error {
  readonly status: number;
  readonly problem: Problem;
  readonly type: string;
  readonly kind: string;
  readonly title: string;
  readonly detail?: string | null;
  readonly errors: Schemas["FieldError"][];
}

export declare function segment(name: string): string;

export declare class TriggersClient {
  constructor(options?: ClientOptions);
  readonly baseUrl: string;
  readonly namespace: string;
  uid(uid: string): string;
  configure(uid: string, config: ConfigInput, options?: Keyed): Promise<Config>;
  replaceConfig(uid: string, config: Schemas["ConfigInput"], options?: Keyed): Promise<Config>;
  config(uid: string): Promise<Config>;
  fire(uid: string, trigger: string, kwargs?: Record<string, unknown>, options?: Keyed): Promise<FireAnswer>;
  session(uid: string): Promise<Session>;
  unresolved(uid: string): Promise<UnresolvedTask[]>;
  instances(uid: string, options?: { status?: Status; task?: string; limit?: number }): AsyncIterable<Instance>;
  instance(uid: string, name: string): Promise<Instance>;
  replay(uid: string, name: string, kwargs?: Record<string, Record<string, unknown>>, options?: Keyed): Promise<ReplayAnswer>;
  skip(uid: string, name: string, options?: Keyed & { cascade?: boolean; result?: Record<string, unknown> }): Promise<Instance>;
  setStatus(
    uid: string, name: string, status: Status,
    options?: Keyed & { metadata?: Record<string, unknown>; cascade?: boolean; cascadeKwargs?: Record<string, unknown> },
  ): Promise<Instance>;
  delete(uid: string): Promise<void>;
  waitFinalized(uid: string, options?: { timeoutMs?: number; pollMs?: number }): Promise<Session>;
}

export declare function verifyWebhook(
  headers: Headers | Record<string, string | string[] | undefined>,
  body: string | Uint8Array,
  secret: string,
): WebhookEvent;

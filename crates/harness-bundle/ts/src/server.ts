// Routing of protocol v1 over node:http.
import { randomBytes } from "node:crypto";
import fsp from "node:fs/promises";
import path from "node:path";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Config } from "./config.js";
import { HttpError, notFound, validation } from "./errors.js";
import { authorized, readJsonObject, sendEmpty, sendError, sendJson } from "./http.js";
import { handleFs } from "./fsroutes.js";
import { log } from "./log.js";
import { Session } from "./session.js";
import { materialise } from "./sources.js";
import { createSessionBody, isObj, userMessage } from "./validate.js";
import type { Engine } from "./engines/engine.js";
import type { Decision } from "./engines/engine.js";

export const VERSION = "0.1.0";

export class Harness {
  readonly sessions = new Map<string, Session>();

  constructor(private readonly config: Config, private readonly engines: Map<string, Engine>) {}

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://harness");
    const method = req.method ?? "GET";
    const parts = url.pathname.split("/").filter(Boolean);
    try {
      if (method === "GET" && url.pathname === "/v1/health") return this.health(res);
      if (!authorized(req, this.config.token)) throw new HttpError("UNAUTHORIZED", "missing or wrong bearer token");
      if (parts[0] !== "v1") throw notFound(`no route ${url.pathname}`);
      await this.route(method, parts.slice(1), req, res, url);
    } catch (e) {
      const err = e instanceof HttpError ? e : internal(e, method, url.pathname);
      sendError(res, err);
    }
  }

  private health(res: ServerResponse): void {
    const engines: Record<string, unknown> = {};
    for (const [name, engine] of this.engines) engines[name] = engine.capabilities;
    sendJson(res, 200, { ok: true, version: VERSION, protocol: 1, engines });
  }

  private async route(method: string, p: string[], req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const allow = (...methods: string[]) => {
      if (!methods.includes(method)) throw new HttpError("METHOD_NOT_ALLOWED", `${method} is not allowed here`);
    };
    if (p[0] === "health" && p.length === 1) return allow("GET");
    if (p[0] === "chat" && p.length === 1) {
      allow("POST");
      return this.chat(req, res);
    }
    if (p[0] !== "sessions") throw notFound(`no route /v1/${p.join("/")}`);
    if (p.length === 1) {
      allow("POST");
      const created = await this.create(await readJsonObject(req, this.config.maxJsonBytes), false);
      return sendJson(res, 201, created.answer);
    }
    const session = this.sessions.get(p[1]);
    if (!session) throw notFound(`no session ${p[1]}`);
    if (p.length === 2) {
      allow("GET", "DELETE");
      if (method === "GET") return sendJson(res, 200, session.info());
      await this.remove(session);
      return sendEmpty(res, 204);
    }
    const action = p[2];
    if (action === "fs" && p.length === 4) {
      session.touch();
      return handleFs(p[3], req, res, url, session.workdir, this.config);
    }
    if (action === "events" && p.length === 3) {
      allow("GET");
      return this.subscribe(session, req, res, url);
    }
    if (action === "permission" && p.length === 4) {
      allow("POST");
      const body = await readJsonObject(req, this.config.maxJsonBytes);
      return this.permission(session, p[3], body, res);
    }
    if (p.length !== 3) throw notFound(`no route /v1/${p.join("/")}`);
    allow("POST");
    const body = await readJsonObject(req, this.config.maxJsonBytes);
    switch (action) {
      case "messages": {
        const queued = session.enqueue(userMessage(body.message, "message"));
        return sendJson(res, 202, { queued });
      }
      case "end-input":
        session.endInput();
        return sendJson(res, 202, {});
      case "cancel":
        await session.cancel();
        return sendJson(res, 202, {});
      default:
        throw notFound(`no route /v1/${p.join("/")}`);
    }
  }

  private async create(o: Record<string, unknown>, forChat: boolean): Promise<{ session: Session; answer: unknown }> {
    const body = createSessionBody(o);
    const engine = this.engines.get(body.engine);
    if (!engine) {
      throw new HttpError("UNKNOWN_ENGINE", `no engine ${JSON.stringify(body.engine)}`, { available: [...this.engines.keys()] });
    }
    const id = body.sessionId ?? `sess_${randomBytes(12).toString("base64url")}`;
    if (this.sessions.has(id)) throw new HttpError("CONFLICT", `session ${id} already exists`);
    const workdir = path.join(this.config.workdirRoot, id);
    const home = path.join(this.config.workdirRoot, ".home", id);
    const messages = [...body.messages];
    if (forChat) messages.push(userMessage(o.message, "message"));
    try {
      await fsp.mkdir(workdir, { recursive: false, mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EEXIST") throw new HttpError("CONFLICT", `workdir of ${id} already exists`);
      throw e;
    }
    try {
      await fsp.mkdir(home, { recursive: true, mode: 0o700 });
      await materialise(workdir, body.source);
      const { writeFileSpec } = await import("./fsroutes.js");
      for (const a of body.attachments) await writeFileSpec(workdir, a);
    } catch (e) {
      await fsp.rm(workdir, { recursive: true, force: true });
      await fsp.rm(home, { recursive: true, force: true });
      throw e;
    }
    const env = engineEnv(body.envs, home);
    const session = new Session(
      id, engine, workdir, home, env, body.options, body.identity, messages,
      forChat ? false : body.streamingInput, this.config.eventRing, this.config.permissionTimeoutMs,
    );
    this.sessions.set(id, session);
    log("info", "session created", { sessionId: id, engine: engine.name });
    return { session, answer: { sessionId: id, engine: engine.name, capabilities: engine.capabilities, eventsUrl: `/v1/sessions/${id}/events`, workdir } };
  }

  private subscribe(session: Session, req: IncomingMessage, res: ServerResponse, url: URL): void {
    const raw = (req.headers["last-event-id"] as string | undefined) ?? url.searchParams.get("lastEventId") ?? undefined;
    let after: number | null = null;
    if (raw !== undefined && raw !== "") {
      if (!/^\d+$/.test(raw.trim())) throw validation("Last-Event-ID must be a non-negative integer");
      after = Number(raw.trim());
      if (after + 1 < session.events.firstId) {
        throw new HttpError("EVENTS_EXPIRED", `events after ${after} are no longer kept (oldest is ${session.events.firstId})`);
      }
    }
    openSse(res);
    session.touch();
    session.events.subscribe(res, after, () => session.touch());
    session.start();
  }

  private permission(session: Session, callId: string, body: Record<string, unknown>, res: ServerResponse): void {
    let decision: Decision;
    switch (body.decision) {
      case "allow":
        decision = { decision: "allow" };
        break;
      case "deny":
        decision = { decision: "deny", reason: typeof body.reason === "string" && body.reason ? body.reason : "denied by the client" };
        break;
      case "modify":
        if (!isObj(body.input)) throw validation("modify needs input: the tool input to use instead (an object)");
        decision = { decision: "modify", input: body.input };
        break;
      default:
        throw validation('decision must be "allow", "deny" or "modify"');
    }
    if (body.reason !== undefined && typeof body.reason !== "string") throw validation("reason must be a string");
    session.decide(callId, decision);
    sendJson(res, 200, {});
  }

  private async chat(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const o = await readJsonObject(req, this.config.maxJsonBytes);
    if (o.message === undefined) throw validation("message is required");
    if (o.keep !== undefined && typeof o.keep !== "boolean") throw validation("keep must be true or false");
    const { session } = await this.create(o, true);
    openSse(res);
    session.events.subscribe(res, null, () => {
      if (session.state !== "ended" && o.keep !== true) void this.remove(session);
    });
    session.start();
    await session.whenEnded();
    if (o.keep !== true) await this.remove(session);
  }

  async remove(session: Session): Promise<void> {
    if (this.sessions.get(session.sessionId) !== session) return;
    this.sessions.delete(session.sessionId);
    await session.destroy();
    log("info", "session deleted", { sessionId: session.sessionId });
  }

  /** Deletes sessions that are not running and have had no subscriber for the idle time. */
  reapIdle(): void {
    const now = Date.now();
    for (const s of this.sessions.values()) {
      if (s.state !== "running" && s.events.subscriberCount === 0 && now - s.lastActivity > this.config.sessionIdleMs) {
        log("info", "reaping idle session", { sessionId: s.sessionId });
        void this.remove(s);
      }
    }
  }

  async shutdown(): Promise<void> {
    await Promise.all([...this.sessions.values()].map((s) => s.cancel()));
  }
}

function openSse(res: ServerResponse): void {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive", "x-accel-buffering": "no" });
  res.flushHeaders();
}

function internal(e: unknown, method: string, pathname: string): HttpError {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === "ENOENT") return notFound((e as Error).message);
  log("error", "request failed", { method, path: pathname, error: e instanceof Error ? e.stack : String(e) });
  return new HttpError("INTERNAL", `internal error: ${e instanceof Error ? e.message : String(e)}`);
}

/** The engine's environment: the harness's minus HARNESS_* and PORT, the session's on top. */
function engineEnv(envs: Record<string, string>, home: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || k.startsWith("HARNESS_") || k === "PORT") continue;
    env[k] = v;
  }
  Object.assign(env, envs);
  if (!("HOME" in envs)) env.HOME = home;
  return env;
}

// One session: its workdir, event log, input queue, permission calls, and engine run.
import { randomBytes } from "node:crypto";
import fsp from "node:fs/promises";
import { HttpError } from "./errors.js";
import { EventLog } from "./events.js";
import { log } from "./log.js";
import type { Decision, Engine, EngineHost, Usage } from "./engines/engine.js";
import type { EngineOptions, UserMessage } from "./validate.js";

export type State = "created" | "running" | "idle" | "ended";
export type EndReason = "complete" | "cancelled" | "error" | "budget_exceeded";

interface PendingCall { settle: (d: Decision, by: "client" | "timeout" | "cancel") => void }

export class Session implements EngineHost {
  state: State = "created";
  turns = 0;
  endReason: EndReason | null = null;
  lastActivity = Date.now();
  readonly createdAt = new Date().toISOString();
  readonly events: EventLog;
  private queue: UserMessage[] = [];
  private inputEnded: boolean;
  private waiter: ((m: UserMessage | null) => void) | null = null;
  private pending = new Map<string, PendingCall>();
  private decided = new Set<string>();
  private abort = new AbortController();
  private interruptFn: (() => Promise<void>) | null = null;
  private usage: Usage = { inputTokens: 0, outputTokens: 0, cacheReadInputTokens: 0, cacheCreationInputTokens: 0, totalCostUsd: 0 };
  private budgetExceeded = false;
  private cancelled = false;
  private ended: Promise<void>;
  private markEnded!: () => void;

  constructor(
    readonly sessionId: string, readonly engine: Engine, readonly workdir: string, readonly home: string,
    readonly env: Record<string, string>, readonly options: EngineOptions, readonly identity: unknown,
    messages: UserMessage[], streamingInput: boolean, ringSize: number, private readonly permissionTimeoutMs: number,
  ) {
    this.events = new EventLog(sessionId, ringSize);
    this.queue = [...messages];
    this.inputEnded = !streamingInput;
    this.ended = new Promise((resolve) => { this.markEnded = resolve; });
  }

  get abortSignal(): AbortSignal { return this.abort.signal; }
  whenEnded(): Promise<void> { return this.ended; }

  info(): Record<string, unknown> {
    return {
      sessionId: this.sessionId, engine: this.engine.name, state: this.state, createdAt: this.createdAt,
      turns: this.turns, lastEventId: this.events.lastId, endReason: this.endReason, identity: this.identity, workdir: this.workdir,
    };
  }

  // --- input -------------------------------------------------------------------------------

  enqueue(message: UserMessage): number {
    if (this.state === "ended") throw new HttpError("SESSION_ENDED", `session ${this.sessionId} has ended (${this.endReason})`);
    if (this.inputEnded) throw new HttpError("INPUT_ENDED", `input of session ${this.sessionId} has ended`);
    this.touch();
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w(message);
      return 1;
    }
    this.queue.push(message);
    return this.queue.length;
  }

  endInput(): void {
    if (this.state === "ended") throw new HttpError("SESSION_ENDED", `session ${this.sessionId} has ended (${this.endReason})`);
    this.inputEnded = true;
    this.touch();
    if (this.waiter && this.queue.length === 0) {
      const w = this.waiter;
      this.waiter = null;
      w(null);
    }
  }

  nextMessage(): Promise<UserMessage | null> {
    const handOut = (m: UserMessage | null) => {
      if (m !== null && !this.cancelled) {
        this.turns += 1;
        this.state = "running";
        this.events.emit("ca_turn_started", { turn: this.turns, message: m });
      }
      return this.cancelled ? null : m;
    };
    if (this.cancelled) return Promise.resolve(null);
    const next = this.queue.shift();
    if (next !== undefined) return Promise.resolve(handOut(next));
    if (this.inputEnded) return Promise.resolve(null);
    return new Promise((resolve) => { this.waiter = (m) => resolve(handOut(m)); });
  }

  // --- engine callbacks --------------------------------------------------------------------

  sdkMessage(message: unknown): void {
    this.touch();
    this.events.emit("sdk_message", { message });
  }

  turnEnded(usage: Usage, budgetExceeded: boolean): void {
    this.usage = usage;
    this.events.emit("ca_usage_snapshot", { turn: this.turns, usage });
    if (this.state === "running") this.state = "idle";
    if (budgetExceeded) {
      this.budgetExceeded = true;
      this.inputEnded = true;
      this.queue = [];
    }
  }

  askPermission(toolName: string, input: Record<string, unknown>, toolUseId: string | undefined, signal: AbortSignal): Promise<Decision> {
    const callId = `call_${randomBytes(9).toString("base64url")}`;
    this.events.emit("ca_permission_request", { callId, toolName, input, ...(toolUseId ? { toolUseId } : {}) });
    return new Promise<Decision>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const settle = (d: Decision, by: "client" | "timeout" | "cancel") => {
        if (!this.pending.delete(callId)) return;
        this.decided.add(callId);
        if (timer) clearTimeout(timer);
        const reason = d.decision === "deny" ? d.reason : undefined;
        this.events.emit("ca_permission_decision", { callId, decision: d.decision, ...(reason ? { reason } : {}), by });
        resolve(d);
      };
      this.pending.set(callId, { settle });
      timer = setTimeout(() => settle({ decision: "deny", reason: "no permission decision in time" }, "timeout"), this.permissionTimeoutMs);
      timer.unref();
      signal?.addEventListener("abort", () => settle({ decision: "deny", reason: "cancelled" }, "cancel"), { once: true });
    });
  }

  decide(callId: string, decision: Decision): void {
    if (this.decided.has(callId)) throw new HttpError("CONFLICT", `permission ${callId} was already decided`);
    const call = this.pending.get(callId);
    if (!call) throw new HttpError("NOT_FOUND", `no pending permission ${callId}`);
    this.touch();
    call.settle(decision, "client");
  }

  log(level: "debug" | "info" | "warn" | "error", msg: string, fields: Record<string, unknown> = {}): void {
    log(level, msg, { sessionId: this.sessionId, ...fields });
  }

  // --- lifecycle ---------------------------------------------------------------------------

  /** Starts the engine (the first subscriber does this). */
  start(): void {
    if (this.state !== "created") return;
    this.state = "idle";
    this.events.emit("ca_session_started", { engine: this.engine.name, workdir: this.workdir });
    this.engine
      .run(this, (fn) => { this.interruptFn = fn; })
      .then(() => this.end(this.cancelled ? "cancelled" : this.budgetExceeded ? "budget_exceeded" : "complete"))
      .catch((e: unknown) => {
        if (this.cancelled) return this.end("cancelled");
        const code = e instanceof HttpError ? e.code : "ENGINE_FAILED";
        const message = e instanceof Error ? e.message : String(e);
        this.log("error", "engine failed", { error: message });
        this.end(this.budgetExceeded ? "budget_exceeded" : "error", { code, message });
      });
  }

  /** Interrupts the engine; the session ends `cancelled`. */
  async cancel(): Promise<void> {
    if (this.state === "ended") return;
    this.cancelled = true;
    this.inputEnded = true;
    this.queue = [];
    for (const call of [...this.pending.values()]) call.settle({ decision: "deny", reason: "cancelled" }, "cancel");
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w(null);
    }
    if (this.state === "created") {
      this.events.emit("ca_session_started", { engine: this.engine.name, workdir: this.workdir });
      this.end("cancelled");
      return;
    }
    const interrupt = this.interruptFn;
    if (interrupt) await Promise.race([interrupt(), new Promise((r) => setTimeout(r, 2000))]);
    this.abort.abort();
    // An engine that ignores the abort must not keep the session open.
    const force = setTimeout(() => this.end("cancelled"), 5000);
    force.unref();
  }

  private end(reason: EndReason, error?: { code: string; message: string }): void {
    if (this.state === "ended") return;
    this.state = "ended";
    this.endReason = reason;
    this.touch();
    for (const call of [...this.pending.values()]) call.settle({ decision: "deny", reason: "session ended" }, "cancel");
    this.events.emit("ca_session_ended", { reason, ...(error ? { error } : {}), usage: this.usage });
    this.events.close();
    this.abort.abort();
    this.markEnded();
  }

  touch(): void { this.lastActivity = Date.now(); }

  /** Cancels and removes every file of the session. */
  async destroy(): Promise<void> {
    await this.cancel();
    this.events.close();
    await fsp.rm(this.workdir, { recursive: true, force: true });
    await fsp.rm(this.home, { recursive: true, force: true });
  }
}

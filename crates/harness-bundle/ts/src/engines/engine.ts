// What an engine is to the harness: a name, capabilities, and a run over a session's turns.
import type { EngineOptions, UserMessage } from "../validate.js";

export interface Capabilities {
  streamingInput: boolean; partialMessages: boolean; permissionCallback: boolean; sessions: boolean; budget: boolean;
}

export interface Usage {
  inputTokens: number; outputTokens: number; cacheReadInputTokens: number; cacheCreationInputTokens: number; totalCostUsd: number;
}

export type Decision =
  | { decision: "allow" }
  | { decision: "modify"; input: Record<string, unknown> }
  | { decision: "deny"; reason: string };

/** What a running engine may do to its session. */
export interface EngineHost {
  readonly sessionId: string;
  readonly workdir: string;
  readonly env: Record<string, string>;
  readonly options: EngineOptions;
  readonly abortSignal: AbortSignal;
  /** The next user message, or null once input has ended; waits for one. */
  nextMessage(): Promise<UserMessage | null>;
  /** Emits the engine's own message verbatim. */
  sdkMessage(message: unknown): void;
  /** The engine finished a turn; `usage` is cumulative for the session. */
  turnEnded(usage: Usage, budgetExceeded: boolean): void;
  /** Asks the client whether a tool may run. */
  askPermission(toolName: string, input: Record<string, unknown>, toolUseId: string | undefined, signal: AbortSignal): Promise<Decision>;
  log(level: "debug" | "info" | "warn" | "error", msg: string, fields?: Record<string, unknown>): void;
}

export interface Engine {
  readonly name: string;
  readonly capabilities: Capabilities;
  /** Runs until input ends (resolves) or the engine fails (rejects). */
  run(host: EngineHost, interrupt: (fn: () => Promise<void>) => void): Promise<void>;
}

// Validation of request bodies: every error names the field and what it should be.
import { validation } from "./errors.js";

export type UserMessage = string | { role: "user"; content: string | unknown[] };

export interface FileSpec { path: string; content: string; encoding: "utf8" | "base64"; mode?: number }

export type SourceSpec =
  | { type: "files"; files: FileSpec[] }
  | { type: "git"; url: string; ref?: string }
  | { type: "dir"; path: string };

export interface EngineOptions {
  model?: string; systemPrompt?: string; appendSystemPrompt?: string; maxTurns?: number;
  maxBudgetUsd?: number; permissionMode?: string; allowedTools?: string[]; disallowedTools?: string[];
  includePartialMessages?: boolean; resume?: string; extra?: Record<string, unknown>;
}

export interface CreateSessionBody {
  engine: string; sessionId?: string; identity?: unknown; envs: Record<string, string>;
  messages: UserMessage[]; streamingInput: boolean; options: EngineOptions;
  source?: SourceSpec; attachments: FileSpec[];
}

const SESSION_ID = /^sess_[A-Za-z0-9_-]{1,64}$/;
type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

function str(o: Obj, key: string, where: string, required = false): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) {
    if (required) throw validation(`${where}${key} is required (a string)`);
    return undefined;
  }
  if (typeof v !== "string") throw validation(`${where}${key} must be a string`);
  return v;
}

function strArray(o: Obj, key: string, where: string): string[] | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) throw validation(`${where}${key} must be an array of strings`);
  return v as string[];
}

function num(o: Obj, key: string, where: string): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0) throw validation(`${where}${key} must be a non-negative number`);
  return v;
}

function bool(o: Obj, key: string, where: string): boolean | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw validation(`${where}${key} must be true or false`);
  return v;
}

export function userMessage(v: unknown, where: string): UserMessage {
  if (typeof v === "string") return v;
  if (isObj(v) && v.role === "user" && (typeof v.content === "string" || Array.isArray(v.content))) {
    return { role: "user", content: v.content as string | unknown[] };
  }
  throw validation(`${where} must be a string or {"role": "user", "content": string | blocks}`);
}

export function fileSpec(v: unknown, where: string): FileSpec {
  if (!isObj(v)) throw validation(`${where} must be an object {path, content, encoding?, mode?}`);
  const path = str(v, "path", `${where}.`, true) as string;
  const content = str(v, "content", `${where}.`, true) as string;
  const encoding = (str(v, "encoding", `${where}.`) ?? "utf8") as FileSpec["encoding"];
  if (encoding !== "utf8" && encoding !== "base64") throw validation(`${where}.encoding must be "utf8" or "base64"`);
  const mode = num(v, "mode", `${where}.`);
  if (mode !== undefined && (!Number.isInteger(mode) || mode > 0o7777)) throw validation(`${where}.mode must be Unix mode bits (0–0o7777)`);
  return { path, content, encoding, mode };
}

function options(v: unknown): EngineOptions {
  if (v === undefined || v === null) return {};
  if (!isObj(v)) throw validation("options must be an object");
  const w = "options.";
  const extra = v.extra;
  if (extra !== undefined && extra !== null && !isObj(extra)) throw validation("options.extra must be an object");
  return {
    model: str(v, "model", w), systemPrompt: str(v, "systemPrompt", w), appendSystemPrompt: str(v, "appendSystemPrompt", w),
    maxTurns: num(v, "maxTurns", w), maxBudgetUsd: num(v, "maxBudgetUsd", w), permissionMode: str(v, "permissionMode", w),
    allowedTools: strArray(v, "allowedTools", w), disallowedTools: strArray(v, "disallowedTools", w),
    includePartialMessages: bool(v, "includePartialMessages", w), resume: str(v, "resume", w),
    extra: (extra as Obj | undefined) ?? undefined,
  };
}

function source(v: unknown): SourceSpec | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObj(v)) throw validation("source must be an object with a type: files | git | dir");
  switch (v.type) {
    case "files": {
      if (!Array.isArray(v.files)) throw validation("source.files must be an array");
      return { type: "files", files: v.files.map((f, i) => fileSpec(f, `source.files[${i}]`)) };
    }
    case "git": {
      const url = str(v, "url", "source.", true) as string;
      if (url.startsWith("-") || !/^(https?|ssh|git|file):\/\/|^[\w.-]+@[\w.-]+:/.test(url)) {
        throw validation("source.url must be an https://, http://, ssh://, git://, file:// or user@host: URL");
      }
      const ref = str(v, "ref", "source.");
      if (ref !== undefined && (ref.startsWith("-") || ref === "")) throw validation("source.ref must be a branch or tag name");
      return { type: "git", url, ref };
    }
    case "dir":
      return { type: "dir", path: str(v, "path", "source.", true) as string };
    default:
      throw validation("source.type must be one of files, git, dir");
  }
}

export function createSessionBody(o: Obj): CreateSessionBody {
  const engine = str(o, "engine", "", true) as string;
  const sessionId = str(o, "sessionId", "");
  if (sessionId !== undefined && !SESSION_ID.test(sessionId)) {
    throw validation("sessionId must match ^sess_[A-Za-z0-9_-]{1,64}$");
  }
  const envs = o.envs ?? {};
  if (!isObj(envs) || !Object.values(envs).every((x) => typeof x === "string")) {
    throw validation("envs must be an object of string values");
  }
  const messages = o.messages ?? [];
  if (!Array.isArray(messages)) throw validation("messages must be an array");
  const attachments = o.attachments ?? [];
  if (!Array.isArray(attachments)) throw validation("attachments must be an array");
  return {
    engine, sessionId, identity: o.identity ?? null, envs: envs as Record<string, string>,
    messages: messages.map((m, i) => userMessage(m, `messages[${i}]`)),
    streamingInput: bool(o, "streamingInput", "") ?? true,
    options: options(o.options), source: source(o.source),
    attachments: attachments.map((a, i) => fileSpec(a, `attachments[${i}]`)),
  };
}

export { isObj, bool as optionalBool, str as optionalStr };

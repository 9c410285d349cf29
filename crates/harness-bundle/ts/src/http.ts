// Small HTTP helpers over node:http: bounded JSON bodies, JSON answers, bearer auth.
import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { HttpError, validation } from "./errors.js";

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

export function sendEmpty(res: ServerResponse, status: number): void {
  res.writeHead(status);
  res.end();
}

export function sendError(res: ServerResponse, err: HttpError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = err.body();
  const headers: Record<string, string | number> = { "content-type": "application/json", "content-length": Buffer.byteLength(text) };
  if (err.code === "PAYLOAD_TOO_LARGE") drainRest(res);
  res.writeHead(err.status, headers);
  res.end(text);
}

/** How much of a refused body is read and thrown away before the connection is cut. */
const DRAIN_CAP = 64 * 1024 * 1024;

/**
 * Reads and discards the rest of a refused body, so that the client, still sending it, gets
 * to read the 413 instead of a reset connection. Past DRAIN_CAP the connection is cut.
 */
function drainRest(res: ServerResponse): void {
  const req = res.req;
  if (!req || req.readableEnded) return;
  let drained = 0;
  req.on("data", (chunk: Buffer) => {
    drained += chunk.length;
    if (drained > DRAIN_CAP) req.socket.destroy();
  });
  req.resume();
}

/** Reads the whole body, refusing more than `limit` bytes with 413. */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers["content-length"] ?? "0");
  if (declared > limit) return Promise.reject(tooLarge(limit));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on("data", (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > limit) {
        done = true;
        req.pause();
        reject(tooLarge(limit));
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => { if (!done) { done = true; resolve(Buffer.concat(chunks)); } });
    req.on("error", (e) => { if (!done) { done = true; reject(e); } });
  });
}

export function tooLarge(limit: number): HttpError {
  return new HttpError("PAYLOAD_TOO_LARGE", `body larger than ${limit} bytes`);
}

/** A JSON object body; anything else is VALIDATION. */
export async function readJsonObject(req: IncomingMessage, limit: number): Promise<Record<string, unknown>> {
  const raw = await readBody(req, limit);
  let value: unknown;
  try {
    value = raw.length === 0 ? {} : JSON.parse(raw.toString("utf8"));
  } catch (e) {
    throw validation(`body is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw validation("body must be a JSON object");
  return value as Record<string, unknown>;
}

const digest = (s: string) => createHash("sha256").update(s).digest();

/** Constant-time bearer check (hashing first makes the lengths equal). */
export function authorized(req: IncomingMessage, token: string | undefined): boolean {
  if (token === undefined) return true;
  const header = req.headers.authorization ?? "";
  const match = /^Bearer (.+)$/.exec(header);
  if (!match) return false;
  return timingSafeEqual(digest(match[1]), digest(token));
}

// The fs routes of a session: file get/put/delete, tree, edit, mkdir, move.
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { pipeline } from "node:stream/promises";
import { Transform } from "node:stream";
import { HttpError, notFound, validation } from "./errors.js";
import { readJsonObject, sendEmpty, sendJson, tooLarge } from "./http.js";
import { relative, resolveInside } from "./jail.js";
import { isObj } from "./validate.js";

async function lstatOrNull(p: string): Promise<fs.Stats | null> {
  try {
    return await fsp.lstat(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
}

function parseMode(raw: string | null): number | undefined {
  if (raw === null || raw === "") return undefined;
  if (!/^[0-7]{1,4}$/.test(raw)) throw validation("mode must be octal Unix mode bits, e.g. 644");
  return parseInt(raw, 8);
}

/** Writes atomically: a temp file beside the target, then rename. */
/** Chunk size of file streams: large enough that syscalls, not copies, stop dominating. */
const STREAM_CHUNK = 1 << 20;

async function writeAtomic(target: string, data: Buffer | string, mode?: number): Promise<void> {
  const tmp = path.join(path.dirname(target), `.${path.basename(target)}.${randomBytes(6).toString("hex")}.tmp`);
  await fsp.writeFile(tmp, data, mode === undefined ? {} : { mode });
  if (mode !== undefined) await fsp.chmod(tmp, mode);
  await fsp.rename(tmp, target);
}

export async function handleFs(
  op: string, req: IncomingMessage, res: ServerResponse, url: URL, workdir: string,
  limits: { maxJsonBytes: number; maxFileBytes: number },
): Promise<void> {
  const q = url.searchParams;
  const method = req.method ?? "GET";
  const methodNotAllowed = () => new HttpError("METHOD_NOT_ALLOWED", `${method} is not allowed on fs/${op}`);

  if (op === "file") {
    if (method === "GET") {
      const p = resolveInside(workdir, q.get("path"));
      const st = await lstatOrNull(p);
      if (!st) throw notFound(`no file ${q.get("path")}`);
      if (!st.isFile()) throw new HttpError("NOT_A_FILE", `${q.get("path")} is not a regular file`);
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": st.size });
      await pipeline(fs.createReadStream(p, { highWaterMark: STREAM_CHUNK }), res);
      return;
    }
    if (method === "PUT") {
      const p = resolveInside(workdir, q.get("path"));
      const mode = parseMode(q.get("mode"));
      const st = await lstatOrNull(p);
      if (st?.isDirectory()) throw new HttpError("NOT_A_FILE", `${q.get("path")} is a directory`);
      const declared = Number(req.headers["content-length"] ?? "0");
      if (declared > limits.maxFileBytes) throw tooLarge(limits.maxFileBytes);
      await fsp.mkdir(path.dirname(p), { recursive: true });
      // Parents were just created: check again that nothing raced a symlink into them.
      resolveInside(workdir, q.get("path"));
      const tmp = path.join(path.dirname(p), `.${path.basename(p)}.${randomBytes(6).toString("hex")}.tmp`);
      let size = 0;
      const counter = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          size += chunk.length;
          if (size > limits.maxFileBytes) cb(tooLarge(limits.maxFileBytes));
          else cb(null, chunk);
        },
      });
      const out = fs.createWriteStream(tmp, { highWaterMark: STREAM_CHUNK, ...(mode === undefined ? {} : { mode }) });
      try {
        // Node delivers no more than a declared Content-Length, so only a chunked body needs
        // counting on the way (the counter costs a copy-free but per-chunk hop).
        if (req.headers["content-length"] !== undefined) {
          await pipeline(req, out);
          size = out.bytesWritten;
        } else {
          await pipeline(req, counter, out);
        }
        if (mode !== undefined) await fsp.chmod(tmp, mode);
        await fsp.rename(tmp, p);
      } catch (e) {
        await fsp.rm(tmp, { force: true });
        throw e;
      }
      sendJson(res, 200, { path: relative(workdir, p), size });
      return;
    }
    if (method === "DELETE") {
      const p = resolveInside(workdir, q.get("path"), false);
      if (p === fs.realpathSync(workdir)) throw validation("the workdir itself cannot be deleted");
      const st = await lstatOrNull(p);
      if (!st) throw notFound(`no file ${q.get("path")}`);
      if (st.isDirectory()) {
        if (q.get("recursive") !== "true") throw new HttpError("NOT_A_FILE", `${q.get("path")} is a directory; pass recursive=true`);
        await fsp.rm(p, { recursive: true, force: true });
      } else {
        await fsp.unlink(p);
      }
      sendEmpty(res, 204);
      return;
    }
    throw methodNotAllowed();
  }

  if (op === "tree") {
    if (method !== "GET") throw methodNotAllowed();
    const rel = q.get("path") || ".";
    const root = rel === "." ? fs.realpathSync(workdir) : resolveInside(workdir, rel);
    const depthRaw = q.get("depth") ?? "1";
    if (!/^\d+$/.test(depthRaw)) throw validation("depth must be a non-negative integer (0 = unlimited)");
    const depth = Number(depthRaw);
    const st = await lstatOrNull(root);
    if (!st) throw notFound(`no directory ${rel}`);
    if (!st.isDirectory()) throw new HttpError("NOT_A_DIRECTORY", `${rel} is not a directory`);
    const entries: unknown[] = [];
    const walk = async (dir: string, level: number): Promise<void> => {
      for (const name of await fsp.readdir(dir)) {
        const p = path.join(dir, name);
        const s = await lstatOrNull(p);
        if (!s) continue;
        const type = s.isSymbolicLink() ? "symlink" : s.isDirectory() ? "dir" : "file";
        entries.push({ path: relative(workdir, p), type, size: s.size, mode: s.mode, mtimeMs: s.mtimeMs });
        if (type === "dir" && (depth === 0 || level < depth)) await walk(p, level + 1);
      }
    };
    await walk(root, 1);
    entries.sort((a, b) => ((a as { path: string }).path < (b as { path: string }).path ? -1 : 1));
    sendJson(res, 200, { path: relative(workdir, root), entries });
    return;
  }

  if (method !== "POST") throw methodNotAllowed();
  const body = await readJsonObject(req, limits.maxJsonBytes);

  if (op === "edit") {
    const p = resolveInside(workdir, body.path);
    if (typeof body.oldString !== "string" || body.oldString === "") throw validation("oldString is required (a non-empty string)");
    if (typeof body.newString !== "string") throw validation("newString is required (a string)");
    const st = await lstatOrNull(p);
    if (!st) throw notFound(`no file ${body.path}`);
    if (!st.isFile()) throw new HttpError("NOT_A_FILE", `${body.path} is not a regular file`);
    const text = await fsp.readFile(p, "utf8");
    const count = text.split(body.oldString).length - 1;
    if (count === 0) throw new HttpError("EDIT_NO_MATCH", `oldString not found in ${body.path}`);
    if (count > 1 && body.replaceAll !== true) {
      throw new HttpError("EDIT_AMBIGUOUS", `oldString occurs ${count} times in ${body.path}; pass replaceAll or a longer oldString`);
    }
    await writeAtomic(p, text.split(body.oldString).join(body.newString), st.mode & 0o7777);
    sendJson(res, 200, { path: relative(workdir, p), replacements: count });
    return;
  }

  if (op === "mkdir") {
    const p = resolveInside(workdir, body.path);
    const st = await lstatOrNull(p);
    if (st && !st.isDirectory()) throw new HttpError("CONFLICT", `${body.path} exists and is not a directory`);
    if (st && body.recursive !== true) throw new HttpError("CONFLICT", `${body.path} already exists`);
    try {
      await fsp.mkdir(p, { recursive: body.recursive === true });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ENOENT") throw notFound(`the parent of ${body.path} does not exist; pass recursive`);
      if (code === "ENOTDIR" || code === "EEXIST") throw new HttpError("CONFLICT", `cannot create ${body.path}: a parent is a file`);
      throw e;
    }
    sendJson(res, 201, { path: relative(workdir, p) });
    return;
  }

  if (op === "move") {
    const from = resolveInside(workdir, body.from, false);
    const to = resolveInside(workdir, body.to, false);
    if (!(await lstatOrNull(from))) throw notFound(`no file ${body.from}`);
    const existing = await lstatOrNull(to);
    if (existing && body.overwrite !== true) throw new HttpError("CONFLICT", `${body.to} exists; pass overwrite`);
    await fsp.mkdir(path.dirname(to), { recursive: true });
    if (existing?.isDirectory()) await fsp.rm(to, { recursive: true, force: true });
    await fsp.rename(from, to);
    sendJson(res, 200, { from: relative(workdir, from), to: relative(workdir, to) });
    return;
  }
  throw notFound(`no route fs/${op}`);
}

/** Writes one FileSpec through the jail (sources and attachments). */
export async function writeFileSpec(workdir: string, f: { path: string; content: string; encoding: string; mode?: number }): Promise<void> {
  const p = resolveInside(workdir, f.path);
  await fsp.mkdir(path.dirname(p), { recursive: true });
  resolveInside(workdir, f.path);
  const data = f.encoding === "base64" ? Buffer.from(f.content, "base64") : Buffer.from(f.content, "utf8");
  await writeAtomic(p, data, f.mode);
}

export { isObj };

// The path jail: every fs path is relative to the session workdir and must stay inside it,
// through symlinks too.
import fs from "node:fs";
import path from "node:path";
import { HttpError, validation } from "./errors.js";

const escape = (p: string, why: string) => new HttpError("PATH_ESCAPE", `path ${JSON.stringify(p)} ${why}`);

function inside(root: string, p: string): boolean {
  return p === root || p.startsWith(root + path.sep);
}

/**
 * Resolves `rel` inside `workdir` and returns the real path to operate on. With
 * `followFinal`, an existing last component that is a symlink is followed and must land
 * inside; without it, the link itself is the target (for delete and move).
 */
export function resolveInside(workdir: string, rel: unknown, followFinal = true): string {
  if (typeof rel !== "string" || rel === "") throw validation("path is required");
  if (rel.includes("\0")) throw escape(rel.replace(/\0/g, "\\0"), "contains a NUL byte");
  if (path.isAbsolute(rel) || rel.startsWith("\\")) throw escape(rel, "is absolute; paths are relative to the workdir");
  if (rel.split(/[\\/]+/).includes("..")) throw escape(rel, "contains `..`");
  const realRoot = fs.realpathSync(workdir);
  const full = path.resolve(realRoot, rel);
  if (!inside(realRoot, full)) throw escape(rel, "leaves the workdir");
  // Walk up to the deepest existing ancestor; resolve it through its symlinks.
  let existing = followFinal ? full : path.dirname(full);
  const tail: string[] = followFinal ? [] : [path.basename(full)];
  for (;;) {
    try {
      fs.lstatSync(existing);
      break;
    } catch {
      tail.unshift(path.basename(existing));
      existing = path.dirname(existing);
    }
  }
  let real: string;
  try {
    real = fs.realpathSync(existing);
  } catch {
    // A dangling symlink: where it points is outside our knowledge, so refuse.
    throw escape(rel, "goes through a dangling symlink");
  }
  if (!inside(realRoot, real)) throw escape(rel, "resolves outside the workdir through a symlink");
  const result = path.join(real, ...tail);
  if (!inside(realRoot, result)) throw escape(rel, "leaves the workdir");
  return result;
}

/** The path relative to the workdir, with `/` separators, for answers. */
export function relative(workdir: string, p: string): string {
  const rel = path.relative(fs.realpathSync(workdir), p);
  return rel === "" ? "." : rel.split(path.sep).join("/");
}

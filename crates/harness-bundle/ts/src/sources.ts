// Materialising an agent's source into a fresh session workdir.
import { execFile } from "node:child_process";
import fsp from "node:fs/promises";
import path from "node:path";
import { validation } from "./errors.js";
import { writeFileSpec } from "./fsroutes.js";
import type { SourceSpec } from "./validate.js";

function git(args: string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile("git", args, { cwd, timeout: 300_000, env: { ...process.env, GIT_TERMINAL_PROMPT: "0" }, maxBuffer: 1 << 20 }, (err, _out, stderr) => {
      if (err) reject(validation(`git ${args[0]} failed: ${(stderr || err.message).toString().trim().slice(-2000)}`));
      else resolve();
    });
  });
}

export async function materialise(workdir: string, source: SourceSpec | undefined): Promise<void> {
  if (!source) return;
  switch (source.type) {
    case "files":
      for (const f of source.files) await writeFileSpec(workdir, f);
      return;
    case "git": {
      const args = ["clone", "--depth", "1", "--quiet"];
      if (source.ref) args.push("--branch", source.ref);
      args.push("--", source.url, workdir);
      await git(args, path.dirname(workdir));
      return;
    }
    case "dir": {
      if (!path.isAbsolute(source.path)) throw validation("source.path must be absolute");
      const st = await fsp.stat(source.path).catch(() => null);
      if (!st?.isDirectory()) throw validation(`source.path ${source.path} is not a directory visible to the harness`);
      await fsp.cp(source.path, workdir, { recursive: true, verbatimSymlinks: true });
      return;
    }
  }
}

// Process lookups in /proc, for tests that check what the daemon started.
import fs from 'node:fs';

/** Live (not zombie) child processes of `pid` with the given command name. */
export function childrenNamed(pid: number, comm: string): number[] {
  const found: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      // pid (comm) state ppid ...
      const m = /^\d+ \((.*)\) (\S) (\d+)/.exec(stat);
      if (m && m[1] === comm && m[2] !== 'Z' && Number(m[3]) === pid) found.push(Number(entry));
    } catch {
      // the process exited while we looked
    }
  }
  return found;
}

/**
 * Whether `needle` is anywhere in the writable memory of process `pid`
 * (heap, stack, anonymous maps): where a secret it was handed would stay.
 * Needs root (ptrace access to the process).
 */
export function memoryContains(pid: number, needle: Buffer): boolean {
  const fd = fs.openSync(`/proc/${pid}/mem`, 'r');
  try {
    for (const line of fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
      const m = /^([0-9a-f]+)-([0-9a-f]+) rw/.exec(line);
      if (!m) continue;
      const start = parseInt(m[1]!, 16);
      const region = Buffer.alloc(parseInt(m[2]!, 16) - start);
      try {
        fs.readSync(fd, region, 0, region.length, start);
      } catch {
        continue; // a mapping that cannot be read (guard pages, vsyscall)
      }
      if (region.includes(needle)) return true;
    }
    return false;
  } finally {
    fs.closeSync(fd);
  }
}

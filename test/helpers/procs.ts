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

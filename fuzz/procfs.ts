/**
 * What /proc says about the daemon: resident memory, open file descriptors,
 * child processes and CPU time. Linux only, like the daemon.
 */
import fs from 'node:fs';

/** VmRSS in KiB, from /proc/PID/status. */
export function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]);
}

/** Open file descriptors (entries of /proc/PID/fd). */
export function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** What the descriptors point at, summarized ("socket" x 3, "pipe" x 6, ...), for failure messages. */
export function fdSummary(pid: number): string {
  const kinds = new Map<string, number>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`).replace(/:\[\d+\]$/, '').replace(/^\/.*/, 'file');
    } catch {
      continue;
    }
    kinds.set(target, (kinds.get(target) ?? 0) + 1);
  }
  return [...kinds].map(([k, n]) => `${k} x${n}`).join(', ');
}

function statFields(pid: number): string[] {
  const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after "pid (comm)"; index 0 is field 3 (state).
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

/** utime + stime in clock ticks (USER_HZ, 100 per second on Linux). */
export function cpuTicks(pid: number): number {
  const f = statFields(pid);
  return Number(f[11]) + Number(f[12]);
}

export const TICKS_PER_SECOND = 100;

/** Direct children of `pid`, with their command names. */
export function children(pid: number): { pid: number; comm: string }[] {
  const found: { pid: number; comm: string }[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const text = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const comm = text.slice(text.indexOf('(') + 1, text.lastIndexOf(')'));
      const ppid = Number(text.slice(text.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) found.push({ pid: Number(entry), comm });
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** True while the process exists and is not a zombie. */
export function alive(pid: number): boolean {
  try {
    return statFields(pid)[0] !== 'Z';
  } catch {
    return false;
  }
}

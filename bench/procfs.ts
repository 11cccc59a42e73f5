// Reading /proc: CPU time, memory and children of the processes under test.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

/** Clock ticks per second for /proc/PID/stat times (getconf CLK_TCK; 100 on Linux). */
export const CLK_TCK: number = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

export interface CpuTimes {
  /** utime + stime of the process itself, seconds. */
  self: number;
  /** utime alone (user space), seconds. */
  user: number;
  /** cutime + cstime: children (and their descendants) that were waited for, seconds. */
  children: number;
}

/** Fields of /proc/PID/stat after "pid (comm)". Index 0 is field 3 (state). */
function statFields(pid: number | 'self'): string[] {
  const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

export function cpuTimes(pid: number | 'self'): CpuTimes {
  const f = statFields(pid);
  // Fields 14-17 of stat are utime, stime, cutime, cstime.
  const [utime, stime, cutime, cstime] = [f[11], f[12], f[13], f[14]].map(Number) as [number, number, number, number];
  return { self: (utime + stime) / CLK_TCK, user: utime / CLK_TCK, children: (cutime + cstime) / CLK_TCK };
}

export function cpuDelta(before: CpuTimes, after: CpuTimes): CpuTimes {
  return { self: after.self - before.self, user: after.user - before.user, children: after.children - before.children };
}

/**
 * Steal time of all CPUs so far, seconds: time a vCPU wanted to run while
 * the hypervisor ran another guest (the 8th value of /proc/stat's `cpu`
 * line, in USER_HZ ticks, which CLK_TCK is). The project's machines are
 * shared VMs; a run that lost CPU this way is slower for a reason outside
 * both paths.
 */
export function hostStealSeconds(): number {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  const steal = Number(line.trim().split(/\s+/)[8]);
  return Number.isFinite(steal) ? steal / CLK_TCK : 0;
}

/** A field of /proc/PID/status in kB (VmRSS, VmHWM, RssAnon, ...). */
export function statusKb(pid: number, field: string): number {
  const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]);
}

/** Proportional set size in kB (shared pages split among their users), or 0 if the process is gone. */
export function pssKb(pid: number): number {
  try {
    const text = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const m = /^Pss:\s+(\d+) kB/m.exec(text);
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

interface ProcInfo {
  pid: number;
  ppid: number;
  comm: string;
  state: string;
}

/** Name, state and parent of a process from /proc, or undefined once it is gone. */
function processInfo(pid: number): ProcInfo | undefined {
  try {
    const m = /^\d+ \((.*)\) (\S) (\d+)/s.exec(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
    return m ? { pid, comm: m[1]!, state: m[2]!, ppid: Number(m[3]) } : undefined;
  } catch {
    return undefined; // exited while we looked
  }
}

/** A process's state letter (R, S, T for stopped, Z, ...), or undefined once it is gone. */
export function processState(pid: number): string | undefined {
  return processInfo(pid)?.state;
}

export function processes(): ProcInfo[] {
  const found: ProcInfo[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const info = processInfo(Number(entry));
    if (info) found.push(info);
  }
  return found;
}

/**
 * Descendants of `pid`, optionally only those named `comm`. Zombies are left
 * out unless `includeZombies`: a zombie's CPU time reaches its parent's
 * cutime only when it is reaped.
 */
export function descendants(pid: number, comm?: string, includeZombies = false): number[] {
  const all = processes();
  const byParent = new Map<number, ProcInfo[]>();
  for (const p of all) {
    const list = byParent.get(p.ppid) ?? [];
    list.push(p);
    byParent.set(p.ppid, list);
  }
  const out: number[] = [];
  const stack = [pid];
  while (stack.length > 0) {
    const parent = stack.pop()!;
    for (const child of byParent.get(parent) ?? []) {
      stack.push(child.pid);
      if ((includeZombies || child.state !== 'Z') && (comm === undefined || child.comm === comm)) out.push(child.pid);
    }
  }
  return out;
}

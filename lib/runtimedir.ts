/**
 * The daemon's private folder under --runtime-dir (`sshd-XXXXXX`: the
 * internal sshd's configuration and keys), and the removal of folders that
 * daemons left behind when they died without removing their own (SIGKILL,
 * the OOM killer, a crash; /run on disk across a power loss).
 *
 * Each folder records its owner: pid, start time and boot. A folder is
 * stale once that process is gone: no such pid, or a pid reused by another
 * process (its start time differs), or a record from an earlier boot. A
 * folder with no record is left alone: it may belong to a running daemon
 * from before records existed, or to one that has not written its record
 * yet.
 */
import fs from 'node:fs';
import path from 'node:path';

const PREFIX = 'sshd-';
const OWNER_RECORD = 'owner';

export interface RuntimeDir {
  /** The new private folder. */
  dir: string;
  /** Folders of daemons that are gone, removed. */
  removed: string[];
  /** Folders with no owner record, left alone. */
  unowned: string[];
}

/** Makes a private folder in `parent` (created if needed) and removes the stale ones beside it. */
export function claimRuntimeDir(parent: string): RuntimeDir {
  fs.mkdirSync(parent, { recursive: true, mode: 0o755 });
  const dir = fs.mkdtempSync(path.join(parent, PREFIX));
  fs.writeFileSync(path.join(dir, OWNER_RECORD), ownerRecord(process.pid), { mode: 0o644 });
  const removed: string[] = [];
  const unowned: string[] = [];
  for (const name of fs.readdirSync(parent)) {
    const other = path.join(parent, name);
    if (!name.startsWith(PREFIX) || other === dir) continue;
    let record: string;
    try {
      record = fs.readFileSync(path.join(other, OWNER_RECORD), 'utf8');
    } catch {
      unowned.push(other);
      continue;
    }
    if (!isStale(record)) continue;
    fs.rmSync(other, { recursive: true, force: true });
    removed.push(other);
  }
  return { dir, removed, unowned };
}

/** "pid start-time boot-id": who owns a folder. */
export function ownerRecord(pid: number): string {
  const startTime = startTimeOf(pid);
  if (startTime === undefined) throw new Error(`no process ${pid}`);
  return `${pid} ${startTime} ${bootId()}\n`;
}

/** Whether the process a record names is gone. */
export function isStale(record: string): boolean {
  const [pid, startTime, boot] = record.trim().split(' ');
  // Not a record we wrote: keep the folder rather than guess.
  if (!pid || !/^\d+$/.test(pid) || !startTime || !boot) return false;
  return boot !== bootId() || startTimeOf(Number(pid)) !== startTime;
}

/** Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot. */
function startTimeOf(pid: number): string | undefined {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // Field 2 (the command name, in parentheses) may hold spaces and ')': count from the last ')'.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

function bootId(): string {
  return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
}

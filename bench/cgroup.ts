// CPU accounting for a process tree that outlives its reaping: a cgroup
// (v1 cpuacct, as on this machine, or v2) counts the CPU time of every task
// that was ever in it. /proc cutime would not do: sshd's monitor exits
// without waiting for its post-auth child, so the session process (where
// sshd encrypts) is reaped by init and its CPU time never reaches the parent.
import fs from 'node:fs';
import path from 'node:path';

export interface CpuGroup {
  name: string;
  /** Moves a process (all its threads) and its future children into the group. */
  add(pid: number): void;
  /** CPU seconds used by every task that has been in the group. */
  usageSeconds(): number;
  /** Moves what is left back to the root group and removes the group. */
  remove(): void;
}

const V1 = '/sys/fs/cgroup/cpuacct';
const V2_CANDIDATES = ['/sys/fs/cgroup/unified', '/sys/fs/cgroup'];

function v2Root(): string | undefined {
  for (const root of V2_CANDIDATES) {
    try {
      if (fs.existsSync(path.join(root, 'cgroup.procs')) && fs.existsSync(path.join(root, 'cgroup.controllers'))) return root;
    } catch {
      // not there
    }
  }
  return undefined;
}

/** A new CPU accounting group, or undefined when this machine offers none we can write. */
export function createCpuGroup(name: string): CpuGroup | undefined {
  const unique = `${name}-${process.pid}`;
  if (fs.existsSync(path.join(V1, 'cpuacct.usage'))) {
    const dir = path.join(V1, unique);
    try {
      fs.mkdirSync(dir);
    } catch {
      return undefined;
    }
    return group(unique, dir, V1, () => Number(fs.readFileSync(path.join(dir, 'cpuacct.usage'), 'utf8')) / 1e9);
  }
  const root = v2Root();
  if (root) {
    const dir = path.join(root, unique);
    try {
      fs.mkdirSync(dir);
    } catch {
      return undefined;
    }
    // cpu.stat's usage_usec is there without enabling the cpu controller.
    return group(unique, dir, root, () => {
      const m = /^usage_usec (\d+)$/m.exec(fs.readFileSync(path.join(dir, 'cpu.stat'), 'utf8'));
      return m ? Number(m[1]) / 1e6 : NaN;
    });
  }
  return undefined;
}

function group(name: string, dir: string, root: string, usage: () => number): CpuGroup {
  let removed = false;
  return {
    name,
    add: (pid) => fs.writeFileSync(path.join(dir, 'cgroup.procs'), `${pid}\n`),
    usageSeconds: usage,
    remove: () => {
      if (removed) return;
      removed = true;
      for (let attempt = 0; attempt < 20; attempt++) {
        try {
          const left = fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean);
          for (const pid of left) {
            try {
              fs.writeFileSync(path.join(root, 'cgroup.procs'), `${pid}\n`);
            } catch {
              // exited meanwhile
            }
          }
          fs.rmdirSync(dir);
          return;
        } catch {
          // tasks still leaving (zombies): try again shortly
          const until = Date.now() + 50;
          while (Date.now() < until) {
            // brief synchronous wait; cleanup may run from an exit path
          }
        }
      }
      console.error(`cleanup: could not remove cgroup ${dir}`);
    },
  };
}

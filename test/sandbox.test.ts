// lib/sandbox.ts on made-up /proc trees: what of the daemon's sandbox it
// reports, compared with PID 1 (the real daemon under unshare and setpriv:
// test/operations.test.ts).
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sandboxReachingSessions } from '../lib/sandbox.js';

interface ProcEntry {
  /** The mount IDs of its mountinfo. */
  mounts?: number[];
  status?: Record<string, string>;
}

describe('sandboxReachingSessions', function () {
  let root: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-proc-'));
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  function proc(self: ProcEntry, init: ProcEntry): string[] {
    for (const [pid, entry] of [['self', self], ['1', init]] as const) {
      fs.mkdirSync(path.join(root, pid), { recursive: true });
      if (entry.mounts !== undefined) {
        const lines = entry.mounts.map((id, i) => `${id} ${i === 0 ? 1 : entry.mounts![0]} 0:${20 + i} / /m${i} rw - tmpfs tmpfs rw`);
        fs.writeFileSync(path.join(root, pid, 'mountinfo'), `${lines.join('\n')}\n`);
      }
      if (entry.status !== undefined) {
        const lines = Object.entries(entry.status).map(([k, v]) => `${k}:\t${v}`);
        fs.writeFileSync(path.join(root, pid, 'status'), `Name:\tx\n${lines.join('\n')}\nCpus_allowed:\t3\n`);
      }
    }
    return sandboxReachingSessions(root);
  }

  const host = { mounts: [22, 23, 27], status: { NoNewPrivs: '0', Seccomp: '0' } };

  it('finds nothing where the daemon shares everything with PID 1', function () {
    expect(proc(host, host)).to.deep.equal([]);
  });

  it('names each difference: its own mount namespace, no_new_privs, a system call filter', function () {
    const found = proc({ mounts: [49, 50, 51], status: { NoNewPrivs: '1', Seccomp: '2' } }, host);
    expect(found).to.have.length(3);
    expect(found[0]).to.include('a mount namespace of its own');
    expect(found[1]).to.include('no_new_privs');
    expect(found[2]).to.include('a system call filter');
  });

  it('finds nothing in a container, whose PID 1 has the same filter and flag', function () {
    const container = { mounts: [301, 302], status: { NoNewPrivs: '1', Seccomp: '2' } };
    expect(proc(container, container)).to.deep.equal([]);
  });

  it('counts what it cannot read as no difference (no root, hidepid)', function () {
    expect(proc({ mounts: [49, 50, 51], status: { NoNewPrivs: '1', Seccomp: '2' } }, {})).to.deep.equal([]);
  });
});

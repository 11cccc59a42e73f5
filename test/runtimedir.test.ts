// lib/runtimedir.ts: a daemon's runtime folder records its owner, and the
// folders of daemons that are gone are removed when the next one starts.
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { claimRuntimeDir, isStale, ownerRecord } from '../lib/runtimedir.js';
import { startProxy } from './helpers/proxy.js';

describe('runtime folders (lib/runtimedir.ts)', function () {
  this.timeout(30_000);
  let parent: string;
  const children: ChildProcess[] = [];
  beforeEach(() => {
    parent = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-runtimedir-'));
  });
  afterEach(() => {
    for (const child of children.splice(0)) child.kill('SIGKILL');
    fs.rmSync(parent, { recursive: true, force: true });
  });

  /** A folder as a daemon with process `pid` left it. */
  function folderOf(name: string, record: string | undefined): string {
    const dir = path.join(parent, name);
    fs.mkdirSync(path.join(dir, 'private'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'private', 'sshd_config'), '# a config\n');
    if (record !== undefined) fs.writeFileSync(path.join(dir, 'owner'), record);
    return dir;
  }

  async function startedProcess(): Promise<ChildProcess> {
    const child = spawn('sleep', ['60'], { stdio: 'ignore' });
    children.push(child);
    await once(child, 'spawn');
    return child;
  }

  it('records its owner in the new folder', () => {
    const { dir } = claimRuntimeDir(parent);
    expect(path.dirname(dir)).to.equal(parent);
    expect(path.basename(dir)).to.match(/^sshd-/);
    const record = fs.readFileSync(path.join(dir, 'owner'), 'utf8');
    expect(record).to.match(new RegExp(`^${process.pid} \\d+ [0-9a-f-]{36}\\n$`));
    expect(isStale(record)).to.equal(false);
  });

  it('makes the parent folder when it is missing', () => {
    const { dir } = claimRuntimeDir(path.join(parent, 'a', 'b'));
    expect(fs.statSync(dir).isDirectory()).to.equal(true);
  });

  it("removes the folder of a daemon that was killed, and keeps a running daemon's", async () => {
    const dead = await startedProcess();
    const deadRecord = ownerRecord(dead.pid!);
    dead.kill('SIGKILL');
    await once(dead, 'exit');
    const alive = await startedProcess();
    const gone = folderOf('sshd-gone01', deadRecord);
    const running = folderOf('sshd-alive1', ownerRecord(alive.pid!));

    const { dir, removed, unowned } = claimRuntimeDir(parent);
    expect(removed).to.deep.equal([gone]);
    expect(unowned).to.deep.equal([]);
    expect(fs.existsSync(gone)).to.equal(false);
    expect(fs.existsSync(path.join(running, 'private', 'sshd_config'))).to.equal(true);
    expect(fs.existsSync(dir)).to.equal(true);
  });

  it('treats a reused pid or an earlier boot as gone', async () => {
    const alive = await startedProcess();
    const [pid, startTime, boot] = ownerRecord(alive.pid!).trim().split(' ');
    const reused = folderOf('sshd-reused', `${pid} ${Number(startTime) + 1} ${boot}\n`);
    const earlierBoot = folderOf('sshd-reboot', `${pid} ${startTime} 00000000-0000-0000-0000-000000000000\n`);

    const { removed } = claimRuntimeDir(parent);
    expect(removed.sort()).to.deep.equal([earlierBoot, reused].sort());
  });

  it('leaves folders without a readable record, and anything not named sshd-*', () => {
    const legacy = folderOf('sshd-legacy', undefined);
    const garbled = folderOf('sshd-garble', 'not a record\n');
    const other = folderOf('keep-me', '1 1 00000000-0000-0000-0000-000000000000\n');

    const { removed, unowned } = claimRuntimeDir(parent);
    expect(removed).to.deep.equal([]);
    expect(unowned).to.deep.equal([legacy]);
    for (const dir of [legacy, garbled, other]) expect(fs.existsSync(dir)).to.equal(true);
  });

  it('a daemon removes the folder of one killed with SIGKILL before it', async () => {
    const runtimeDir = path.join(parent, 'run');
    const args = ['--runtime-dir', runtimeDir];
    const killed = await startProxy('http://127.0.0.1:9', args);
    const [left] = fs.readdirSync(runtimeDir);
    expect(left).to.match(/^sshd-/);
    killed.child.kill('SIGKILL');
    await killed.stop();
    expect(fs.readdirSync(runtimeDir)).to.deep.equal([left]);

    const next = await startProxy('http://127.0.0.1:9', args);
    try {
      expect(next.logs()).to.contain(`removed 1 runtime folders of daemons that are gone: ${path.join(runtimeDir, left!)}`);
      const now = fs.readdirSync(runtimeDir);
      expect(now).to.have.length(1);
      expect(now[0]).to.not.equal(left);
    } finally {
      await next.stop();
    }
    // A clean stop removes its own.
    expect(fs.readdirSync(runtimeDir)).to.deep.equal([]);
  });
});

// lib/spawner.ts: processes started by the native addon on libuv's thread
// pool, so that a slow spawn on a loaded machine cannot block the daemon's
// event loop.
import { expect } from 'chai';
import childProcess from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runProcess, startProcess } from '../lib/spawner.js';
import { waitFor } from './helpers/wait.js';

/** A connected pair of loopback sockets: `ours` to talk to the child, `theirs` to hand to it. */
async function socketPair(): Promise<{ ours: net.Socket; theirs: net.Socket }> {
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const ours = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise<void>((resolve) => ours.once('connect', resolve));
  const theirs = await accepted;
  server.close();
  return { ours, theirs };
}

describe('process starter (lib/spawner.ts)', function () {
  this.timeout(30_000);

  it('runs a program on a socket, passes its stderr, and reports how it ended', async () => {
    const { ours, theirs } = await socketPair();
    let stderr = '';
    const child = await startProcess('/bin/sh', ['-c', 'echo to-stderr >&2; exec cat'], theirs, (text) => (stderr += text));
    theirs.destroy(); // the child has its own copy
    expect(child.pid).to.be.a('number').above(1);
    expect(child.ended).to.equal(undefined);

    let echoed = '';
    ours.setEncoding('utf8');
    ours.on('data', (d: string) => (echoed += d));
    const ended = new Promise<void>((resolve) => ours.once('end', resolve));
    ours.end('through the child\n');
    await ended;
    expect(echoed).to.equal('through the child\n');
    expect(await child.exited).to.equal('exit status 0');
    expect(child.ended).to.equal('exit status 0');
    expect(stderr).to.equal('to-stderr\n');
    ours.destroy();
  });

  it('kills a running process on request', async () => {
    const { ours, theirs } = await socketPair();
    const child = await startProcess('/bin/sleep', ['60'], theirs, () => {});
    theirs.destroy();
    child.kill('SIGTERM');
    expect(await child.exited).to.equal('killed by SIGTERM');
    child.kill('SIGKILL'); // after the end: nothing happens, nothing throws
    ours.destroy();
  });

  it('rejects with the reason when the program cannot start', async () => {
    const { ours, theirs } = await socketPair();
    const failure = await startProcess('/nonexistent/sshd', [], theirs, () => {}).then(
      () => undefined,
      (err: NodeJS.ErrnoException) => err,
    );
    expect(failure?.code).to.equal('ENOENT');
    ours.destroy();
    theirs.destroy();
  });

  it('runs a program to its end: exit status and output, or why it did not run', async () => {
    const root = await runProcess('getent', ['passwd', 'root']);
    expect(root.code).to.equal(0);
    expect(root.stdout).to.match(/^root:/);
    expect((await runProcess('getent', ['passwd', 'no-such-user-jsp'])).code).to.equal(2);
    expect((await runProcess('/nonexistent/getent', [])).code).to.equal('ENOENT');
  });

  it('holds the process alive while a request is pending, and not after', async () => {
    // A script that awaits a run and then has nothing left to do must print
    // the result (the pending start kept it alive) and exit by itself (nothing does).
    const spawner = new URL('../lib/spawner.js', import.meta.url).href;
    const script = `const { runProcess } = await import(${JSON.stringify(spawner)}); const r = await runProcess('getent', ['passwd', 'root']); console.log('code', r.code);`;
    const child = childProcess.spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
    clearTimeout(killer);
    expect(signal, 'killed after 20 s: something held the process').to.equal(null);
    expect(code).to.equal(0);
    expect(out.trim()).to.equal('code 0');
  });

  it('reports a run that was killed by a signal, and keeps stdout and stderr apart', async () => {
    const run = await runProcess('/bin/sh', ['-c', 'echo out; echo err >&2; exit 3']);
    expect(run).to.deep.equal({ code: 3, stdout: 'out\n', stderr: 'err\n' });
    expect((await runProcess('/bin/sh', ['-c', 'kill -TERM $$'])).code).to.equal('SIGTERM');
  });

  it('passes stderr on in whole lines, with characters split across writes intact', async () => {
    // "é" is 0xc3 0xa9: written as two separate writes, then a line without its end.
    const { ours, theirs } = await socketPair();
    const texts: string[] = [];
    const script = "printf 'one\\n\\303'; sleep 0.1; printf '\\251t\\351\\n'; sleep 0.1; printf 'last'";
    const child = await startProcess('/bin/sh', ['-c', `(${script}) >&2`], theirs, (text) => texts.push(text));
    theirs.destroy();
    expect(await child.exited).to.equal('exit status 0');
    expect(texts.join('')).to.equal('one\nét\ufffd\nlast');
    for (const text of texts.slice(0, -1)) expect(text.endsWith('\n'), JSON.stringify(texts)).to.equal(true);
    ours.destroy();
  });

  it('reports the end only once every output pipe is read to its end', async () => {
    // The shell exits at once; a child it left behind still holds stderr.
    const { ours, theirs } = await socketPair();
    let stderr = '';
    const child = await startProcess('/bin/sh', ['-c', '(sleep 0.3; echo late >&2) & exit 0'], theirs, (text) => (stderr += text));
    theirs.destroy();
    expect(await child.exited).to.equal('exit status 0');
    expect(stderr).to.equal('late\n');
    ours.destroy();
  });

  it('gives the child a session of its own, default signal handling and only its stdio', async () => {
    // Node ignores SIGPIPE; an ignored signal would survive the exec. glibc's
    // posix_spawn leaves its own internal signals 32 and 33 ignored (bits 31, 32).
    const status = (await runProcess('/bin/cat', ['/proc/self/status'])).stdout;
    expect(/^SigIgn:\s+(\S+)$/m.exec(status)?.[1]).to.equal('0000000180000000');
    expect(/^SigBlk:\s+(\S+)$/m.exec(status)?.[1]).to.equal('0000000000000000');
    // /proc/self/stat: pid (comm) state ppid pgrp session ...
    const stat = (await runProcess('/bin/cat', ['/proc/self/stat'])).stdout.split(' ');
    expect(stat[5]).to.equal(stat[0]);
    // Not even a descriptor the test runner inherited without close-on-exec;
    // ls's own descriptor for the directory it lists is 3.
    expect((await runProcess('/bin/ls', ['/proc/self/fd'])).stdout.split('\n').filter(Boolean)).to.deep.equal(['0', '1', '2', '3']);
  });

  it('closes every descriptor it opened once the processes have ended', async () => {
    const open = () => fs.readdirSync('/proc/self/fd').length;
    const before = open();
    for (let i = 0; i < 20; i++) expect((await runProcess('/bin/true', [])).code).to.equal(0);
    const { ours, theirs } = await socketPair();
    const child = await startProcess('/bin/sleep', ['60'], theirs, () => {});
    theirs.destroy();
    child.kill('SIGKILL');
    expect(await child.exited).to.equal('killed by SIGKILL');
    ours.destroy();
    // The sockets close on the next turns of the loop.
    await waitFor(() => (open() === before ? true : undefined), { timeoutMs: 5_000, what: `${before} descriptors open (now ${open()})` });
  });

  it('survives garbage collections while starts are pending and processes run', async () => {
    // The addon's memory must outlive the handle the caller may drop at once
    // (runProcess does): collect after every start and every end.
    const spawner = new URL('../lib/spawner.js', import.meta.url).href;
    const script = `
      const { runProcess } = await import(${JSON.stringify(spawner)});
      let ok = 0;
      for (let i = 0; i < 100; i++) {
        const runs = [runProcess('/bin/true', []), runProcess('/bin/echo', [String(i)])];
        gc();
        const [t, e] = await Promise.all(runs);
        gc();
        if (t.code === 0 && e.stdout === i + '\\n') ok++;
      }
      console.log(ok);`;
    const out = await new Promise<string>((resolve, reject) =>
      childProcess.execFile(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { timeout: 60_000 }, (err, stdout) =>
        err ? reject(err) : resolve(stdout),
      ),
    );
    expect(out.trim()).to.equal('100');
  });

  it('makes a daemon without the addons say so in one line, and exit', async () => {
    // A copy of the launcher and dist/ beside the real node_modules, with no build/.
    const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-noaddon-'));
    try {
      fs.cpSync(path.join(repo, 'bin'), path.join(dir, 'bin'), { recursive: true });
      fs.cpSync(path.join(repo, 'dist'), path.join(dir, 'dist'), { recursive: true });
      fs.cpSync(path.join(repo, 'package.json'), path.join(dir, 'package.json'));
      fs.symlinkSync(path.join(repo, 'node_modules'), path.join(dir, 'node_modules'));
      const result = childProcess.spawnSync(process.execPath, [path.join(dir, 'bin', 'jupyter_ssh_proxy'), '-p', '0', 'http://127.0.0.1:9'], {
        encoding: 'utf8',
        timeout: 30_000,
      });
      expect(result.status).to.equal(1);
      const lines = result.stderr.trim().split('\n');
      expect(lines, result.stderr).to.have.length(1);
      // Whichever of the two addons (binding.gyp) loads first names itself.
      expect(lines[0]).to.match(/^jupyter_ssh_proxy: cannot start: the (process starter|packet relay) addon .* does not load: .*`npm ci` builds it/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('starts processes on the thread pool: the event loop keeps turning while a start waits', async () => {
    // A child node with a single pool thread, held by an open() of a FIFO
    // that has no writer yet: a start queued behind it cannot run. Timers
    // must still fire meanwhile, and the start must go through once the
    // pool thread is free.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-spawner-'));
    try {
      const fifo = path.join(dir, 'fifo');
      childProcess.execFileSync('mkfifo', [fifo]);
      const spawner = new URL('../lib/spawner.js', import.meta.url).href;
      const script = `
        import fs from 'node:fs';
        const { runProcess } = await import(${JSON.stringify(spawner)});
        const events = [];
        const held = fs.promises.readFile(${JSON.stringify(fifo)});
        const ran = runProcess('/bin/echo', ['started']).then((r) => events.push('ran ' + r.stdout.trim()));
        await new Promise((resolve) => setTimeout(resolve, 300));
        events.push('timer');
        fs.writeFileSync(${JSON.stringify(fifo)}, 'x');
        await held;
        await ran;
        console.log(JSON.stringify(events));`;
      const out = await new Promise<string>((resolve, reject) =>
        childProcess.execFile(
          process.execPath,
          ['--input-type=module', '-e', script],
          { timeout: 20_000, env: { ...process.env, UV_THREADPOOL_SIZE: '1' } },
          (err, stdout) => (err ? reject(err) : resolve(stdout)),
        ),
      );
      expect(JSON.parse(out)).to.deep.equal(['timer', 'ran started']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

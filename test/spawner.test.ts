// lib/spawner.ts: processes started from a worker thread, so that a slow
// spawn on a loaded machine cannot block the daemon's event loop.
import { expect } from 'chai';
import childProcess from 'node:child_process';
import { syncBuiltinESMExports } from 'node:module';
import { once } from 'node:events';
import net from 'node:net';
import { collectWorkerGarbage, runProcess, startProcess } from '../lib/spawner.js';

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
    // the result (the worker kept it alive) and exit by itself (it no longer does).
    const spawner = new URL('../lib/spawner.js', import.meta.url).href;
    const script = `const { runProcess } = await import(${JSON.stringify(spawner)}); const r = await runProcess('getent', ['passwd', 'root']); console.log('code', r.code);`;
    const child = childProcess.spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
    clearTimeout(killer);
    expect(signal, 'killed after 20 s: the worker held the process').to.equal(null);
    expect(code).to.equal(0);
    expect(out.trim()).to.equal('code 0');
  });

  it("compacts the worker's heap on request, where node runs with --expose-gc", async () => {
    // In this test process (no --expose-gc) the worker cannot collect.
    expect((await runProcess('/bin/true', [])).code).to.equal(0);
    expect(await collectWorkerGarbage()).to.equal(undefined);
    // A child node as the daemon runs: 300 processes leave their garbage in the worker.
    const spawner = new URL('../lib/spawner.js', import.meta.url).href;
    const script = `
      const { runProcess, collectWorkerGarbage } = await import(${JSON.stringify(spawner)});
      for (let i = 0; i < 300; i++) if ((await runProcess('/bin/true', [])).code !== 0) throw new Error('/bin/true failed');
      console.log(JSON.stringify(await collectWorkerGarbage()));`;
    const out = await new Promise<string>((resolve, reject) =>
      childProcess.execFile(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { timeout: 60_000 }, (err, stdout) =>
        err ? reject(err) : resolve(stdout),
      ),
    );
    const heap = JSON.parse(out) as { usedBefore: number; usedAfter: number; totalBefore: number; totalAfter: number };
    expect(heap.usedAfter).to.be.above(0);
    expect(heap.usedAfter).to.be.below(heap.usedBefore);
    expect(heap.totalAfter).to.be.at.most(heap.totalBefore);
  });

  it('starts nothing on the calling thread', async () => {
    // Node's spawn blocks its thread until the child has exec'd (100-290 ms
    // per spawn with 100 busy processes on 2 cores). Every spawn and
    // execFile on this thread is counted while the starter works; ESM
    // imports of child_process see the patch after syncBuiltinESMExports.
    // The worker has its own copy of the module, unpatched.
    const calls: string[] = [];
    const originals = { spawn: childProcess.spawn, execFile: childProcess.execFile };
    childProcess.spawn = ((...args: Parameters<typeof childProcess.spawn>) => {
      calls.push(`spawn ${String(args[0])}`);
      return originals.spawn(...args);
    }) as typeof childProcess.spawn;
    childProcess.execFile = ((...args: Parameters<typeof childProcess.execFile>) => {
      calls.push(`execFile ${String(args[0])}`);
      return originals.execFile(...args);
    }) as typeof childProcess.execFile;
    syncBuiltinESMExports();
    try {
      const { ours, theirs } = await socketPair();
      const child = await startProcess('/bin/true', [], theirs, () => {});
      theirs.destroy();
      expect(await child.exited).to.equal('exit status 0');
      expect((await runProcess('getent', ['passwd', 'root'])).code).to.equal(0);
      ours.destroy();
      // The patch itself works: a spawn here is seen.
      await new Promise((resolve) => childProcess.spawn('/bin/true').once('exit', resolve));
    } finally {
      childProcess.spawn = originals.spawn;
      childProcess.execFile = originals.execFile;
      syncBuiltinESMExports();
    }
    expect(calls).to.deep.equal(['spawn /bin/true']);
  });
});

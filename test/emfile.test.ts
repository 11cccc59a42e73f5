// The kernel out of file descriptors (EMFILE): the daemon runs under
// `prlimit --nofile=64:64`, idle TCP connections use up its descriptors, and
// it must neither exit nor spin at 100% CPU (libuv keeps a spare descriptor
// to accept and close connections it cannot serve). A login attempt at the
// edge fails with a message, not a hang; once the connections are gone, a
// real ssh login works again.
import { expect } from 'chai';
import fs from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { alive, cpuTicks, fdCount, fdSummary, TICKS_PER_SECOND } from '../fuzz/procfs.js';
import { createHubUser, createToken, startHub, type Hub } from './helpers/hub.js';
import { startProxy, type ProxyProcess } from './helpers/proxy.js';
import { ssh } from './helpers/ssh.js';
import { createUnixUser, type UnixUser } from './helpers/unixuser.js';
import { waitFor } from './helpers/wait.js';

const LIMIT = 64;
const QUIET = ['-o', 'LogLevel=ERROR'];

interface Idle {
  socket: net.Socket;
  /** The daemon's identification line arrived: it accepted and serves this one. */
  greeted: boolean;
  closed: boolean;
}

function openIdle(port: number): Idle {
  const socket = net.connect(port, '127.0.0.1');
  const idle: Idle = { socket, greeted: false, closed: false };
  socket.on('data', () => (idle.greeted = true));
  socket.on('error', () => {});
  socket.on('close', () => (idle.closed = true));
  return idle;
}

/**
 * Descriptors below the limit: those the limit governs. (A descriptor the
 * daemon inherited from whatever started the test, numbered above the limit,
 * does not count.)
 */
function slotsUsed(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).filter((fd) => Number(fd) < LIMIT).length;
}

/** CPU the daemon used over `ms`, as a fraction of one core. */
async function cpuShare(pid: number, ms: number): Promise<number> {
  const before = cpuTicks(pid);
  const t0 = Date.now();
  // A measurement window, not a wait for something to happen.
  await sleep(ms);
  return (cpuTicks(pid) - before) / TICKS_PER_SECOND / ((Date.now() - t0) / 1000);
}

describe('EMFILE: the daemon out of file descriptors', function () {
  let hub: Hub;
  let user: UnixUser;
  let token: string;
  let proxy: ProxyProcess;
  const idle: Idle[] = [];

  before(async function () {
    this.timeout(120_000);
    hub = await startHub();
    user = await createUnixUser('emfile');
    await createHubUser(hub, user.name);
    token = (await createToken(hub, user.name)).token;
    proxy = await startProxy(
      hub.url,
      // Idle unauthenticated connections are the point here: MaxStartups must not drop them first.
      ['--max-startups', '1000:100:1000'],
      { logLevel: 'info', commandPrefix: ['prlimit', `--nofile=${LIMIT}:${LIMIT}`] },
    );
  });
  after(async function () {
    this.timeout(60_000);
    for (const i of idle) i.socket.destroy();
    await proxy?.stop();
    await user?.remove();
    await hub?.stop();
  });

  it('neither exits nor spins while out of descriptors, and serves a login once they are free', async function () {
    this.timeout(180_000);
    const pid = proxy.child.pid!;
    expect(/Max open files\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/limits`, 'utf8'))?.[1], 'the daemon runs with the low limit').to.equal(String(LIMIT));
    const baseline = fdCount(pid);

    // Fill up, one connection at a time, until only a few descriptors are left.
    while (slotsUsed(pid) < LIMIT - 3) {
      const i = openIdle(proxy.port);
      idle.push(i);
      await waitFor(() => i.greeted || i.closed, { timeoutMs: 10_000, intervalMs: 10, what: 'the daemon to take the connection' });
      expect(i.closed, `connection ${idle.length} closed early at ${slotsUsed(pid)} descriptors`).to.equal(false);
    }
    const kept = idle.length;

    // At the edge: a login needs a socket to the Hub and pipes to sshd. It must
    // end with a message (or a refused connection), never hang, never kill the daemon.
    const edge = await ssh(proxy.port, user.name, token, ['echo edge'], QUIET, { timeoutMs: 60_000 });
    console.log(`      login with ${LIMIT - slotsUsed(pid)} descriptors left: exit ${edge.code}, ${JSON.stringify(edge.stderr.trim())}`);
    expect(alive(pid), 'the daemon survives a login at the edge').to.equal(true);
    expect(edge.code).to.equal(255);

    // Exhaust completely: more connections than descriptors.
    const extra = Array.from({ length: 40 }, () => openIdle(proxy.port));
    idle.push(...extra);
    // Each is either served or closed at once (accepted and closed with libuv's spare descriptor).
    await waitFor(() => extra.every((i) => i.greeted || i.closed), { timeoutMs: 20_000, what: 'every extra connection to be served or closed' });
    const refused = extra.filter((i) => i.closed && !i.greeted).length;
    expect(refused, 'connections beyond the limit are closed, not left hanging').to.be.above(0);
    expect(slotsUsed(pid), `descriptor slots used (${fdSummary(pid)})`).to.be.at.least(LIMIT - 1);

    // Neither exited nor spinning.
    const share = await cpuShare(pid, 2000);
    console.log(
      `      ${kept} idle connections held, ${refused} of 40 more closed at once; daemon at ${slotsUsed(pid)}/${LIMIT} descriptors, ` +
        `${(share * 100).toFixed(1)}% CPU over 2 s`,
    );
    expect(alive(pid), 'the daemon is alive').to.equal(true);
    expect(share, 'CPU share of one core while out of descriptors').to.be.below(0.2);
    // New connections are still taken (and closed) promptly: the accept loop did not stop.
    const probe = openIdle(proxy.port);
    idle.push(probe);
    await waitFor(() => probe.closed || probe.greeted, { timeoutMs: 10_000, what: 'a new connection to be answered or closed' });

    // Free everything; the daemon's descriptors come back and a real login works.
    for (const i of idle) i.socket.destroy();
    await waitFor(() => fdCount(pid) <= baseline + 2, { timeoutMs: 30_000, what: `descriptors back near ${baseline} (now ${fdSummary(pid)})` });
    const r = await ssh(proxy.port, user.name, token, ['echo after-emfile'], QUIET, { timeoutMs: 60_000 });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.toString()).to.equal('after-emfile\n');
    expect(proxy.logs(), 'no uncaught exception').to.not.match(/Uncaught|EMFILE.*\n\s+at /);
    // Checked last, so that the checks above report on their own: whatever the message
    // at the edge, it must not blame what is fine (the account exists, sshd is installed).
    expect(edge.stderr, 'message for a login that ran out of descriptors').to.not.match(/There is no account|is not installed/);
    // One line that tells the user it is temporary (which step ran out varies: the Hub call, getent, sshd).
    expect(edge.stderr, 'message for a login that ran out of descriptors').to.match(/try again later/);
  });
});


// The fuzz harness (fuzz/) inside the suite: ~20,000 mutated and random
// pre-auth inputs against the real daemon, in front of a real JupyterHub,
// then the daemon must be alive, its memory bounded, its descriptors and
// children back to the baseline, and a real `ssh` login must work.
// `npm run fuzz -- --cases 1000000` is the long run (fuzz/README.md).
import { expect } from 'chai';
import http from 'node:http';
import net from 'node:net';
import { clientOffer } from '../lib/algorithms.js';
import { buildOffer } from '../lib/ssh2internals.js';
import * as w from '../fuzz/wire.js';
import { STAGES } from '../fuzz/cases.js';
import { canary, formatStats, runFuzz } from '../fuzz/harness.js';
import { alive, rssKiB } from '../fuzz/procfs.js';
import { baseline, checkAfterRun, startTarget, type Baseline, type FuzzTarget } from '../fuzz/setup.js';
import { FuzzClient } from '../fuzz/client.js';
import { startProxy, type ProxyProcess } from './helpers/proxy.js';
import { waitFor } from './helpers/wait.js';

/** Cases in the suite (JSP_FUZZ_CASES overrides): ~80 s at ~240 cases/s on 2 cores. */
const CASES = Number(process.env.JSP_FUZZ_CASES ?? 20_000);
const WARMUP = Math.min(1000, Math.floor(CASES / 10));
/** A fixed seed keeps the suite reproducible; JSP_FUZZ_SEED explores others. */
const SEED = Number(process.env.JSP_FUZZ_SEED ?? 20_250_401);
const MiB = 1024;

describe('fuzzing the pre-auth stages (real daemon, Hub, sshd)', function () {
  let target: FuzzTarget;
  let base: Baseline;

  before(async function () {
    this.timeout(120_000);
    target = await startTarget();
    base = baseline(target.pid);
  });
  after(async function () {
    this.timeout(60_000);
    await target?.stop();
  });

  it(`survives ${CASES} cases (version line, KEXINIT, kex, userauth, encrypted stream, random bytes) and still serves ssh`, async function () {
    // ~90 s on a quiet 2-core machine; a loaded one (other suites) can take several times that.
    this.timeout(20 * 60_000);
    const common = {
      port: target.proxy.port,
      user: target.user.name,
      token: target.token,
      seed: SEED,
      concurrency: 16,
      caseTimeoutMs: 10_000,
      pid: target.pid,
    };
    const warm = await runFuzz({ ...common, first: 0, cases: WARMUP });
    expect(warm.failure, formatStats(warm)).to.equal(undefined);
    const warmRss = rssKiB(target.pid);
    const stats = await runFuzz({ ...common, first: WARMUP, cases: CASES - WARMUP });
    const report = formatStats(stats);
    console.log(`      ${report.replace(/\n/g, '\n      ')}`);

    expect(stats.failure, report).to.equal(undefined);
    expect(alive(target.pid), 'the daemon is alive').to.equal(true);
    expect(stats.casesRun + warm.casesRun).to.equal(CASES);
    for (const stage of STAGES) expect(stats.byStage[stage].cases, `cases of stage ${stage}`).to.be.above((CASES - WARMUP) / 20);
    expect(stats.canaries.failed, `canaries: ${stats.canaries.failures.join('; ')}`).to.equal(0);
    expect(stats.canaries.run, 'canaries ran while fuzzing').to.be.above(0);

    const after = await checkAfterRun(target, base);
    console.log(
      `      daemon RSS before ${(base.rssKiB / MiB).toFixed(1)} MiB, after warm-up ${(warmRss / MiB).toFixed(1)} MiB, ` +
        `max ${(stats.rss.maxKiB / MiB).toFixed(1)} MiB, end ${(after.rssKiB / MiB).toFixed(1)} MiB; ` +
        `descriptors ${after.fds} (baseline ${base.fds}); real ssh login ${after.loginOk ? 'OK' : 'FAILED'}`,
    );
    expect(after.problems).to.deep.equal([]);
    expect(after.loginOk).to.equal(true);
    // Memory bounded: no growth beyond noise after the warm-up, no runaway peak.
    expect((after.rssKiB - warmRss) / MiB, 'RSS growth after warm-up, MiB').to.be.below(64);
    // (One INFO_RESPONSE claiming 2^25-1 answers made ssh2 allocate 256 MiB at once: that shows here.)
    expect(stats.rss.maxKiB / MiB, 'peak RSS, MiB').to.be.below(256);
    // Bad input must be refused as bad input, not reach the daemon's error paths.
    expect(target.suspicious, 'daemon log lines that point at a bug').to.deep.equal([]);
  });
});

describe('fuzzing with per-source penalties on', function () {
  let proxy: ProxyProcess;
  before(async function () {
    // Stages before auth need no Hub: an unreachable URL will do. OpenSSH's
    // default penalties and no exempt list: 127.0.0.7 is the fuzzer.
    proxy = await startProxy('http://127.0.0.1:9', ['--per-source-penalties', 'authfail:5 noauth:1 grace-exceeded:10 malformed:90 max:600 min:15'], {
      logLevel: 'info',
    });
  });
  after(async () => proxy?.stop());

  it('refuses a source after its malformed input, while other sources are served', async function () {
    this.timeout(120_000);
    const stats = await runFuzz({
      port: proxy.port,
      localAddress: '127.0.0.7',
      user: 'nobody',
      token: 'not-a-token',
      seed: SEED,
      cases: 50,
      concurrency: 1,
      caseTimeoutMs: 10_000,
      stages: ['random', 'kexinit', 'version'],
      pid: proxy.child.pid,
    });
    expect(stats.failure).to.equal(undefined);
    await waitFor(() => /source 127\.0\.0\.7 penalized \(malformed\): refused for \d+s/.test(proxy.logs()), {
      timeoutMs: 10_000,
      what: 'the malformed penalty in the log',
    });
    // Refused at accept: not even a version line.
    const refused = new FuzzClient({ port: proxy.port, localAddress: '127.0.0.7' });
    try {
      expect(await refused.wait(() => false, 10_000)).to.equal('closed');
      expect(refused.bytesIn, 'bytes the penalized source received').to.equal(0);
    } finally {
      refused.destroy();
    }
    // Nearly all of the 50 cases were refused the same way.
    const closed = Object.values(stats.byStage).reduce((n, s) => n + (s.outcomes['closed-by-daemon'] ?? 0), 0);
    expect(closed, 'cases closed by the daemon').to.be.above(40);
    expect(proxy.logs()).to.match(/refused a connection from 127\.0\.0\.7 \(penalty\)/);
    // Another source is untouched.
    expect(await canary(proxy.port)).to.be.below(10_000);
  });
});

// What the fuzzer found, as deterministic cases: each broke the daemon before
// its fix (see fuzz/README.md, "Findings").
describe('fuzz findings, replayed', function () {
  const GOOD_TOKEN = 'a-good-token-0123456789';
  const hubRequests: string[] = [];
  let proxy: ProxyProcess;
  let hub: http.Server;
  let hubUrl: string;
  before(async function () {
    this.timeout(60_000);
    // A Hub that refuses every token (403), like JupyterHub for an unknown one,
    // except GOOD_TOKEN: the token of 'nobody' (an account every machine has),
    // whose server runs.
    hub = http.createServer((req, res) => {
      const json = (status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      hubRequests.push(`${req.method} ${req.url} ${JSON.stringify(req.headers.authorization)}`);
      if (req.headers.authorization !== `token ${GOOD_TOKEN}`) return json(403, { status: 403 });
      if (req.url === '/hub/api/user') return json(200, { name: 'nobody', scopes: ['access:servers!user=nobody'] });
      if (req.url?.startsWith('/hub/api/users/nobody')) return json(200, { name: 'nobody', servers: { '': { name: '', ready: true, pending: null } } });
      return json(404, { status: 404 });
    });
    await new Promise<void>((resolve) => hub.listen(0, '127.0.0.1', resolve));
    hubUrl = `http://127.0.0.1:${(hub.address() as net.AddressInfo).port}`;
    proxy = await startProxy(hubUrl, ['--per-source-penalties', 'no'], { logLevel: 'info' });
  });
  after(async () => {
    await proxy?.stop();
    hub?.close();
  });

  /** A client through key exchange and "ssh-userauth", with the given cipher. */
  async function ready(cipher?: string): Promise<FuzzClient> {
    const dir = () => ({ cipher: [cipher!], mac: ['hmac-sha2-256-etm@openssh.com'], compress: ['none'], lang: [] });
    const offer = cipher
      ? buildOffer({ kex: ['curve25519-sha256', 'kex-strict-c-v00@openssh.com'], serverHostKey: ['ssh-ed25519'], cs: dir(), sc: dir() })
      : clientOffer();
    const client = new FuzzClient({ port: proxy.port, ssh: { offer } });
    expect(await client.wait(() => client.ready, 10_000)).to.equal('ok');
    client.sendPayload(w.serviceRequest('ssh-userauth'));
    expect(await client.wait(() => client.count(w.MSG.SERVICE_ACCEPT) > 0, 10_000)).to.equal('ok');
    return client;
  }

  it('survives a packet that ends the connection followed by another in the same segment (chacha20-poly1305, AES-CTR)', async function () {
    this.timeout(60_000);
    // The daemon freed ssh2's native decipher inside parse(); ssh2 then
    // decrypted the next packet with it: SIGSEGV, every session gone.
    for (const cipher of ['chacha20-poly1305@openssh.com', 'aes128-ctr']) {
      for (const first of [w.disconnect(11, 'bye'), w.serviceRequest('no-such-service')]) {
        for (let i = 0; i < 3; i++) {
          const client = await ready(cipher);
          client.write(Buffer.concat([client.encrypt(first)!, client.encrypt(w.ignore(Buffer.alloc(16)))!]));
          await client.wait(() => false, 10_000);
          client.destroy();
          expect(alive(proxy.child.pid!), `the daemon after ${cipher}, message ${first[0]}`).to.equal(true);
        }
      }
    }
    expect(await canary(proxy.port)).to.be.below(10_000);
  });

  it('echoes an unknown service name only as short printable text', async function () {
    this.timeout(30_000);
    // The name came back verbatim in the DISCONNECT (and the log): NULs, escapes, 5,000 characters.
    const client = await ready();
    client.sendPayload(w.serviceRequest(`ssh-\u001b[31m\u0000${'x'.repeat(5000)}`));
    expect(await client.wait(() => false, 10_000)).to.equal('closed');
    client.destroy();
    expect(client.disconnectText).to.match(/^Service ssh-\?\[31m\?x+\.\.\. is not available$/);
    expect(client.disconnectText!.length).to.be.below(100);
  });

  it('refuses a USERAUTH_INFO_RESPONSE that claims 2^25-1 answers without allocating for them', async function () {
    this.timeout(60_000);
    // ssh2 ran new Array(count) first: 256 MiB and ~0.3 s of CPU for 5 bytes.
    const client = await ready();
    client.sendPayload(w.authKeyboard('someone'));
    expect(await client.wait(() => client.count(w.MSG.USERAUTH_INFO_REQUEST) > 0, 10_000)).to.equal('ok');
    const pid = proxy.child.pid!;
    const before = rssKiB(pid);
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, rssKiB(pid))), 5);
    try {
      client.sendPayload(w.msg(w.MSG.USERAUTH_INFO_RESPONSE, w.u32(0x1ffffff)));
      expect(await client.wait(() => false, 10_000)).to.equal('closed');
    } finally {
      clearInterval(sampler);
      client.destroy();
    }
    expect((peak - before) / MiB, 'RSS rise for one 5-byte payload, MiB').to.be.below(64);
  });

  it('answers a client-sent USERAUTH_SUCCESS as a protocol error, not with an internal error', async function () {
    this.timeout(30_000);
    // ssh2 shifted its queue of pending auth requests for it; the daemon's own
    // USERAUTH_FAILURE then threw "No auth in progress".
    const client = await ready();
    client.write(Buffer.concat([client.encrypt(w.authPassword('someone', 'bad-token'))!, client.encrypt(w.msg(w.MSG.USERAUTH_SUCCESS))!]));
    await client.wait(() => false, 10_000);
    client.destroy();
    expect(client.disconnectText ?? '').to.not.contain('Internal error');
    expect(proxy.logs()).to.not.contain('No auth in progress');
  });

  it('refuses a token no HTTP header can carry as a bad token, not as a Hub outage', async function () {
    this.timeout(30_000);
    // got threw ERR_INVALID_CHAR: "JupyterHub is unavailable", no authfail penalty, a Hub error in the metrics.
    for (const token of ['x\r\nX-Injected: 1', 'caf\u00e9', 'a\u0000b']) {
      const client = await ready();
      client.sendPayload(w.authPassword('someone', token));
      await client.wait(() => client.count(w.MSG.USERAUTH_FAILURE) > 0, 10_000);
      client.destroy();
      expect(client.disconnectText ?? '', JSON.stringify(token)).to.not.contain('JupyterHub is unavailable');
      expect(client.count(w.MSG.USERAUTH_FAILURE), JSON.stringify(token)).to.equal(1);
    }
  });

  it('uses the token as accepted (trimmed) for the Hub calls after the login, too', async function () {
    this.timeout(30_000);
    // " token\n" was trimmed to log in, then sent as it came in the
    // Authorization header of the next call: ERR_INVALID_CHAR, "JupyterHub is unavailable".
    const client = await ready();
    client.sendPayload(w.authPassword('nobody', ` ${GOOD_TOKEN}\n`));
    await client.wait(() => client.disconnectText !== undefined || client.count(w.MSG.USERAUTH_SUCCESS) > 0, 20_000);
    client.destroy();
    expect(hubRequests.filter((r) => r.includes('/users/nobody')), 'the server lookup reached the Hub').to.not.deep.equal([]);
    expect(client.disconnectText ?? '').to.not.contain('JupyterHub is unavailable');
  });

  it('does not buffer unbounded auth requests while the Hub is slow to answer the first', async function () {
    this.timeout(120_000);
    // Each pipelined USERAUTH_REQUEST waited in a promise chain with its token.
    const held: net.Socket[] = [];
    const slowHub = net.createServer((s) => held.push(s));
    await new Promise<void>((resolve) => slowHub.listen(0, '127.0.0.1', resolve));
    const slow = await startProxy(`http://127.0.0.1:${(slowHub.address() as net.AddressInfo).port}`, ['--per-source-penalties', 'no', '--hub-timeout', '60'], {
      logLevel: 'info',
    });
    try {
      const dir = { cipher: ['aes128-gcm@openssh.com'], mac: ['hmac-sha2-256-etm@openssh.com'], compress: ['none'], lang: [] };
      const client = new FuzzClient({ port: slow.port, ssh: { offer: buildOffer({ kex: ['curve25519-sha256'], serverHostKey: ['ssh-ed25519'], cs: dir, sc: dir }) } });
      expect(await client.wait(() => client.ready, 10_000)).to.equal('ok');
      client.sendPayload(w.serviceRequest('ssh-userauth'));
      expect(await client.wait(() => client.count(w.MSG.SERVICE_ACCEPT) > 0, 10_000)).to.equal('ok');
      const pid = slow.child.pid!;
      const before = rssKiB(pid);
      // 64 MiB of password attempts with 1000-character tokens.
      const token = 't'.repeat(1000);
      for (let i = 0; i < 64 * 1024; i++) client.sendPayload(w.authPassword('someone', `${token}${i}`));
      // Let the daemon read what it will: until the socket stops moving or the data is all in.
      let last = -1;
      await waitFor(
        () => {
          const pending = client.socket.writableLength;
          const stopped = pending === 0 || pending === last;
          last = pending;
          return stopped;
        },
        { timeoutMs: 60_000, intervalMs: 1000, what: 'the daemon to stop reading' },
      );
      const growth = (rssKiB(pid) - before) / MiB;
      client.destroy();
      // Buffering them all grew the daemon by more than the input (366 MiB of
      // requests: +424 MiB). What remains is garbage from the socket reads
      // before the disconnect, collected whenever V8 gets to it (32-35 MiB on a loaded machine).
      expect(growth, 'RSS growth for 64 MiB of pipelined auth requests, MiB').to.be.below(48);
    } finally {
      await slow.stop();
      for (const s of held) s.destroy();
      slowHub.close();
    }
  });
});

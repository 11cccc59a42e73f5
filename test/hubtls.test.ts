// A Hub served over https by a private certificate authority (JupyterHub's
// ssl_cert: its proxy terminates TLS), as a Hub across machines should be:
// the daemon trusts it with --hub-ca for the Hub's API, and with
// --upstream websocket for the servers' raw streams and their key files.
// Real JupyterHub, configurable-http-proxy, ssh and sshd.
import { expect } from 'chai';
import crypto from 'node:crypto';
import { useEnv } from './helpers/fixture.js';
import { ensureServer } from './helpers/hub.js';
import { metricsOrigin, scrapeMetrics } from './helpers/metrics.js';
import { startProxy } from './helpers/proxy.js';
import { CLASSIC_NOTEBOOK_SERVER, SESSION_SOCKET, useServerExtension } from './helpers/serverextension.js';
import { keyLoginOptions, run, ssh } from './helpers/ssh.js';
import { newKey, publicLine } from './helpers/sshkeys.js';
import { useCertificates } from './helpers/tls.js';
import { listAuthorizedKeys } from './helpers/unixuser.js';
import { waitFor } from './helpers/wait.js';

describe('a Hub over https with a private certificate authority (--hub-ca): the local sshd', function () {
  this.timeout(180_000);
  const { tls } = useCertificates();
  const env = useEnv({ hub: { tls }, proxyArgs: ['--hub-ca', tls.caFile] });

  it('asks the Hub over https, trusting the authority, and logs in with a token', async () => {
    expect(env.hub.url).to.match(/^https:\/\//);
    await waitFor(() => /JupyterHub \S+ answers at https:\/\//.test(env.proxy.logs()), { timeoutMs: 10_000, what: "the daemon's check of the Hub" });
    const result = await env.ssh(['id -un']);
    expect(result.code, result.stderr).to.equal(0);
    expect(result.stdout.toString()).to.equal(`${env.user.name}\n`);
  });

  it('without --hub-ca: says at start that the certificate is not trusted and what to do, and a login gets one line', async () => {
    const untrusting = await startProxy(env.hub.url, []);
    try {
      const problem = await waitFor(() => /JupyterHub does not answer at .*/.exec(untrusting.logs())?.[0], { timeoutMs: 10_000, what: 'the warning' });
      expect(problem).to.match(/not trusted.*--hub-ca/);
      const before = untrusting.logs().length;
      const refused = await ssh(untrusting.port, env.user.name, env.token, ['true']);
      expect(refused.code).to.equal(255);
      expect(refused.stderr.toString()).to.include('JupyterHub is unavailable, try again later');
      expect(untrusting.logs().slice(before)).to.match(/not trusted.*--hub-ca/);
      // It still serves: the same login through the daemon that trusts the authority.
      expect((await env.ssh(['true'])).code).to.equal(0);
    } finally {
      await untrusting.stop();
    }
  });
});

describe('a Hub over https with a private certificate authority (--hub-ca): sessions in the user\'s server (--upstream websocket)', function () {
  this.timeout(180_000);
  const { dir, tls } = useCertificates();
  const extension = useServerExtension(CLASSIC_NOTEBOOK_SERVER);
  const env = useEnv({
    hub: { tls, extraConfig: extension },
    proxyArgs: ['--upstream', 'websocket', '--hub-ca', tls.caFile, '--authorized-keys-file', '.ssh/authorized_keys', '--metrics-ip', '127.0.0.1', '--metrics-port', '0'],
    serviceToken: true,
  });

  it("runs the session in the server on the raw stream through TLS, byte for byte both ways, on the daemon's own path, not the native relay", async () => {
    const origin = metricsOrigin(env.proxy.logs())!;
    const onSockets = async () => (await scrapeMetrics(origin)).get('jupyter_ssh_proxy_packets_forwarded_total{path="socket_relay"}') ?? 0;
    const relayedBefore = await onSockets();
    // The session's sshd holds the connection's TCP socket twice: the raw stream reached the server.
    const held = await env.ssh([`echo "$JUPYTERHUB_USER"; ${SESSION_SOCKET}`]);
    expect(held.code, held.stderr).to.equal(0);
    const [hubUser, socket, kind] = held.stdout.toString().split('\n');
    expect(hubUser).to.equal(env.user.name);
    expect(socket).to.match(/^socket:\[\d+\]$/);
    expect(kind).to.equal('tcp');
    expect(env.proxy.logs()).not.to.include('not the raw stream');

    const data = crypto.randomBytes(16 * 1024 * 1024);
    const up = await env.ssh(['sha256sum'], [], { input: data });
    expect(up.code, up.stderr).to.equal(0);
    expect(up.stdout.toString().split(' ')[0]).to.equal(crypto.createHash('sha256').update(data).digest('hex'));
    const down = await env.ssh(['head -c 16M /dev/zero']);
    expect(down.code, down.stderr).to.equal(0);
    expect(down.stdout.equals(Buffer.alloc(16 * 1024 * 1024))).to.equal(true);
    // A TLS socket's descriptor carries ciphertext: a native write there would skip the encryption.
    expect((await onSockets()) - relayedBefore).to.equal(0);
  });

  it("logs in with a key from the server's ~/.ssh/authorized_keys, read over https", async () => {
    const key = await newKey(dir, 'listed');
    listAuthorizedKeys(env.user, [publicLine(key)]);
    await ensureServer(env.hub, env.user.name);
    const result = await run('ssh', [...keyLoginOptions(env.proxy.port, key), `${env.user.name}@127.0.0.1`, 'id', '-un']);
    expect(result.code, result.stderr).to.equal(0);
    expect(result.stdout.toString()).to.equal(`${env.user.name}\n`);
  });
});

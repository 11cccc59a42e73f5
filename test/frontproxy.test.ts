// --upstream websocket behind nginx, the front proxy most Hubs have, set up
// as JupyterHub's documentation sets it up and terminating TLS (the Hub's
// own proxy behind it speaks http): the daemon reaches the Hub's API, the
// servers' raw streams and their key files only through it. Real nginx,
// JupyterHub, ssh, sftp and sshd.
import { expect } from 'chai';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { createHubUser, createToken, ensureServer, startHub, type Hub } from './helpers/hub.js';
import { startNginx, type Nginx } from './helpers/nginx.js';
import { startProxy, type ProxyProcess } from './helpers/proxy.js';
import { CLASSIC_NOTEBOOK_SERVER, useServerExtension } from './helpers/serverextension.js';
import { fileCopyOptions, askpassEnv, keyLoginOptions, run, ssh } from './helpers/ssh.js';
import { newKey, publicLine } from './helpers/sshkeys.js';
import { useCertificates } from './helpers/tls.js';
import { createUnixUser, listAuthorizedKeys, type UnixUser } from './helpers/unixuser.js';

/** nginx's proxy_read_timeout here: it closes an upgraded connection after this long without a byte (its default is 60 s). */
const IDLE_TIMEOUT_S = 25;

describe("--upstream websocket behind nginx with TLS, as JupyterHub's documentation sets it up", function () {
  this.timeout(180_000);
  const { dir, tls } = useCertificates();
  const extension = useServerExtension(CLASSIC_NOTEBOOK_SERVER);
  let hub: Hub;
  let nginx: Nginx;
  let user: UnixUser;
  let token: string;
  let proxy: ProxyProcess;
  before(async function () {
    this.timeout(240_000);
    hub = await startHub({ extraConfig: extension });
    nginx = await startNginx({ upstream: hub.url, tls, readTimeoutSeconds: IDLE_TIMEOUT_S });
    user = await createUnixUser('f');
    await createHubUser(hub, user.name);
    token = (await createToken(hub, user.name)).token;
    proxy = await startProxy(nginx.url, ['--upstream', 'websocket', '--hub-ca', tls.caFile, '--authorized-keys-file', '.ssh/authorized_keys'], {
      env: { JUPYTERHUB_API_TOKEN: hub.serviceToken },
    });
  });
  after(async function () {
    this.timeout(60_000);
    await proxy?.stop();
    await user?.remove();
    await nginx?.stop();
    await hub?.stop();
  });

  it("logs in with a token through nginx into the user's server, started on demand, on the raw stream", async () => {
    const result = await ssh(proxy.port, user.name, token, ['echo "$JUPYTERHUB_USER"']);
    expect(result.code, result.stderr).to.equal(0);
    expect(result.stdout.toString()).to.equal(`${user.name}\n`);
    expect(result.stderr.toString()).to.include('Your server is not running; starting it...');
    expect(proxy.logs()).not.to.include('not the raw stream');
  });

  it(`keeps a session that is silent for longer than nginx's idle timeout (${IDLE_TIMEOUT_S} s): the session's sshd sends a keepalive after 10 to 20 s of silence`, async () => {
    await ensureServer(hub, user.name);
    const errorsBefore = nginx.errors().length;
    const result = await ssh(proxy.port, user.name, token, [`sleep ${IDLE_TIMEOUT_S + 8}; echo still here`]);
    expect(result.code, `${result.stderr}\nnginx: ${nginx.errors().slice(errorsBefore)}`).to.equal(0);
    expect(result.stdout.toString()).to.equal('still here\n');
    expect(nginx.errors().slice(errorsBefore)).not.to.include('timed out');
  });

  it('moves files both ways with sftp, byte for byte, and logs in with a key from the server, read through nginx', async () => {
    const local = path.join(dir, 'upload.bin');
    const back = path.join(dir, 'download.bin');
    fs.writeFileSync(local, crypto.randomBytes(8 * 1024 * 1024 + 123));
    const batch = path.join(dir, 'batch');
    fs.writeFileSync(batch, `put ${local} front.bin\nget front.bin ${back}\nrm front.bin\n`);
    const sftp = await run('sftp', [...fileCopyOptions(proxy.port), '-o', 'BatchMode=no', '-b', batch, `${user.name}@127.0.0.1`], { env: askpassEnv(token) });
    expect(sftp.code, sftp.stderr).to.equal(0);
    expect(fs.readFileSync(back).equals(fs.readFileSync(local))).to.equal(true);

    const key = await newKey(dir, 'listed');
    listAuthorizedKeys(user, [publicLine(key)]);
    const keyed = await run('ssh', [...keyLoginOptions(proxy.port, key), `${user.name}@127.0.0.1`, 'id', '-un']);
    expect(keyed.code, keyed.stderr).to.equal(0);
    expect(keyed.stdout.toString()).to.equal(`${user.name}\n`);
  });
});

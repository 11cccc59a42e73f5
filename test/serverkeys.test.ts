// ServerAuthorizedKeys (lib/serverkeys.ts) against a stand-in for the Hub's
// proxy and the server extension: the answers a real server gives only by
// accident (garbage, errors, silence), what is kept for a stopped server,
// and when a kept line still lets in. websocketupstream.test.ts has the
// real Hub, extension, ssh and sshd.
import { expect } from 'chai';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { AuthorizedKeys } from '../lib/authorizedkeys.js';
import type { HubUser } from '../lib/hub.js';
import { ServerAuthorizedKeys } from '../lib/serverkeys.js';
import { generateKeyPair } from '../lib/ssh2internals.js';

const publicKey = () => generateKeyPair('ed25519').public.trim().split(' ').slice(0, 2).join(' ');
const ALICE = { hubUser: 'alice', server: '' };

describe('ServerAuthorizedKeys (lib/serverkeys.ts): keys read in users\' servers, and kept while they are stopped', function () {
  /** What the stand-in answers next: a status and a body, or nothing at all. */
  let answer: { status: number; body: string } | 'silence';
  let requests: http.IncomingMessage[];
  let running: boolean;
  let server: http.Server;
  let keys: ServerAuthorizedKeys;

  const json = (value: unknown) => ({ status: 200, body: JSON.stringify(value) });
  const file = (text: string) => json({ user: 'jovyan', file: '/home/jovyan/.ssh/authorized_keys', text });

  beforeEach(async () => {
    answer = file('');
    requests = [];
    running = true;
    server = http.createServer((req, res) => {
      requests.push(req);
      if (answer === 'silence') return;
      res.writeHead(answer.status, { 'Content-Type': 'application/json' }).end(answer.body);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const hub = {
      user: async (name: string): Promise<HubUser | null> =>
        name === 'alice' ? { name, servers: { '': { name: '', ready: running, pending: null } } } : null,
    };
    keys = new ServerAuthorizedKeys({
      serversUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jh/`,
      serviceToken: 'service-token',
      timeoutMs: 500,
      keysFile: '.ssh/authorized_keys',
      hub,
    });
  });
  afterEach(() => {
    server.closeAllConnections();
    server.close();
  });

  it('asks the running server for the file, with the service token, and takes its keys for its user', async () => {
    const key = publicKey();
    answer = file(`# a comment\nrestrict,command="date" ${key}\nnot a key\n`);
    // alice has no server "gpu" here: not asked.
    expect((await keys.authorizedKeys({ hubUser: 'alice', server: 'gpu' })).notice).to.include('which is not running');
    expect(requests).to.have.length(0);
    const got = await keys.authorizedKeys(ALICE);
    expect(requests[0]!.url).to.equal('/jh/user/alice/ssh-proxy/authorized-keys');
    expect(requests[0]!.headers.authorization).to.equal('token service-token');
    expect(requests[0]!.headers['x-ssh-proxy-keys-file']).to.equal('.ssh/authorized_keys');
    expect(got.account).to.equal('jovyan');
    expect(got.keys.map((k) => [k.line, k.sessionOptions?.text])).to.deep.equal([[2, 'restrict,command="date"']]);
    expect(got.problems).to.deep.equal(['/home/jovyan/.ssh/authorized_keys in the server alice/ line 3: skipped, not a public key line']);
    expect(got.notice).to.equal(undefined);
    expect(got.recheck, 'read now: nothing to check later').to.equal(undefined);
  });

  it('a file the server refuses: no keys, its reason logged in printable form', async () => {
    answer = json({ user: 'jovyan', file: '/home/jovyan/.ssh/authorized_keys', problem: 'bad ownership or modes for directory /home/jovyan\n[fake] line' });
    const got = await keys.authorizedKeys(ALICE);
    expect(got.keys).to.deep.equal([]);
    expect(got.problems).to.deep.equal(['/home/jovyan/.ssh/authorized_keys in the server alice/: refused, bad ownership or modes for directory /home/jovyan?[fake] line']);
  });

  const failures: [string, typeof answer, RegExp, string][] = [
    ['HTTP 500', { status: 500, body: 'oops' }, /answered HTTP 500$/, 'Your server refused the SSH connection'],
    ['a redirect (the server is not where the Hub says)', { status: 302, body: '' }, /answered HTTP 302$/, 'Your server refused the SSH connection'],
    ['HTTP 403', { status: 403, body: '' }, /answered HTTP 403$/, 'its service token needs access:servers'],
    ['not JSON', { status: 200, body: '<html>' }, /not the extension's list of keys$/, 'Your server refused the SSH connection'],
    ['JSON with text and problem both', json({ user: 'u', file: 'f', text: '', problem: 'p' }), /not the extension's list of keys$/, 'Your server refused the SSH connection'],
    ['no answer in time', 'silence', /no answer within 500 ms$/, 'Your server is not reachable through the Hub'],
  ];
  for (const [what, failure, problem, notice] of failures) {
    it(`${what}: no keys, the user told in one line, and the keys read before still kept`, async () => {
      const key = publicKey();
      answer = file(`${key}\n`);
      await keys.authorizedKeys(ALICE);
      answer = failure;
      const got = await keys.authorizedKeys(ALICE);
      expect(got.keys).to.deep.equal([]);
      expect(got.problems).to.have.length(1);
      expect(got.problems[0]).to.match(problem);
      expect(got.notice).to.include(notice);
      running = false;
      expect((await keys.authorizedKeys(ALICE)).keys.map((k) => k.line)).to.deep.equal([1]);
    });
  }

  it('a server without the endpoint (HTTP 404): says so, and keeps no keys for it', async () => {
    answer = file(`${publicKey()}\n`);
    await keys.authorizedKeys(ALICE);
    answer = { status: 404, body: '' };
    expect((await keys.authorizedKeys(ALICE)).notice).to.include('Your server has no SSH endpoint');
    running = false;
    const kept = await keys.authorizedKeys(ALICE);
    expect([kept.keys, kept.notice]).to.deep.equal([[], undefined]);
  });

  it('a stopped server never read: no keys, and the user told to start it or use a token', async () => {
    running = false;
    const got = await keys.authorizedKeys(ALICE);
    expect(got.keys).to.deep.equal([]);
    expect(got.notice).to.equal('Key logins read ~/.ssh/authorized_keys in your server, which is not running: start it from JupyterHub, or log in with your token');
    expect(got.problems[0]).to.equal('the server alice/ is not running, and its .ssh/authorized_keys was not read since this daemon started');
    expect(requests, 'a stopped server is not asked').to.have.length(0);
    expect(await keys.authorizedKeys({ hubUser: 'nobody', server: '' }), 'no such Hub user').to.deep.equal({ keys: [], problems: [] });
  });

  it('a stopped server read before: its keys, to be checked once it runs; a line that changed, went or cannot be read does not let in', async () => {
    const [one, two] = [publicKey(), publicKey()];
    answer = file(`${one}\nfrom="10.0.0.0/8" ${two}\n`);
    await keys.authorizedKeys(ALICE);
    running = false;
    const kept: AuthorizedKeys = await keys.authorizedKeys(ALICE);
    expect(kept.keys.map((k) => k.line)).to.deep.equal([1, 2]);
    expect(kept.problems).to.deep.equal([]);
    const [first, second] = kept.keys;
    const recheck = kept.recheck!;
    // The server runs again (the login started it): read afresh.
    running = true;
    answer = file(`# moved down a line\n${one}\nfrom="10.0.0.0/8" ${two}\n`);
    expect(await recheck(first!), 'the same line elsewhere').to.equal(undefined);
    expect(await recheck(second!)).to.equal(undefined);
    answer = file(`${one}\nfrom="10.0.0.0/8",command="true" ${two}\n`);
    expect(await recheck(second!), 'options changed').to.equal('Your key is no longer in ~/.ssh/authorized_keys in your server (or its line changed)');
    answer = file(`from="192.168.0.0/16" ${two}\n`);
    expect(await recheck(first!), 'gone').to.equal('Your key is no longer in ~/.ssh/authorized_keys in your server (or its line changed)');
    answer = { status: 503, body: '' };
    expect(await recheck(first!)).to.equal('Your key could not be checked against ~/.ssh/authorized_keys in your server (Your server is not reachable through the Hub; try again in a moment)');
    // The last good read is what is kept now.
    running = false;
    expect((await keys.authorizedKeys(ALICE)).keys.map((k) => k.from)).to.deep.equal(['192.168.0.0/16']);
  });
});

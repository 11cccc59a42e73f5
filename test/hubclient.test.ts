// Hub error paths a real JupyterHub cannot produce on demand, against a fake
// HTTP server: each becomes HubUnavailableError (users: "JupyterHub is
// unavailable"), the token never shows in an error, and concurrency is capped.
import { expect } from 'chai';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { HubAuthorizer } from '../lib/authorizer.js';
import { HubClient, HubUnavailableError } from '../lib/hub.js';
import { rejectionOf } from './helpers/wait.js';

const TOKEN = 'secret-token-0123456789abcdef';

interface Fake {
  url: string;
  requests: { path: string; authorization?: string }[];
  close(): Promise<void>;
}

async function fakeHub(handler: http.RequestListener): Promise<Fake> {
  const requests: Fake['requests'] = [];
  const server = http.createServer((req, res) => {
    requests.push({ path: req.url ?? '', authorization: req.headers.authorization });
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hub/api`,
    requests,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

function client(url: string, timeoutMs = 2000, maxConcurrent = 4): HubClient {
  return new HubClient({ apiUrl: url, timeoutMs, maxConcurrent });
}

async function expectUnavailable(promise: Promise<unknown>): Promise<HubUnavailableError> {
  const err = await rejectionOf(promise);
  expect(err).to.be.instanceOf(HubUnavailableError);
  expect(err.message).to.not.contain(TOKEN);
  return err as HubUnavailableError;
}

describe('Hub client error paths (fake Hub)', function () {
  let fake: Fake | undefined;
  afterEach(async () => {
    await fake?.close();
    fake = undefined;
  });

  it('sends the token only in the Authorization header', async function () {
    fake = await fakeHub((_req, res) => res.end(JSON.stringify({ name: 'alice', scopes: [] })));
    expect(await client(fake.url).identify(TOKEN)).to.deep.include({ name: 'alice' });
    expect(fake.requests).to.deep.equal([{ path: '/hub/api/user', authorization: `token ${TOKEN}` }]);
  });

  it('reads 401/403 as "token rejected"', async function () {
    for (const status of [401, 403]) {
      const f = await fakeHub((_req, res) => { res.statusCode = status; res.end('{}'); });
      try {
        expect(await client(f.url).identify(TOKEN)).to.equal(null);
      } finally {
        await f.close();
      }
    }
  });

  it('turns a 500, retries exhausted on 503, garbage and a missing name into HubUnavailableError', async function () {
    const answers: [number, string][] = [
      [500, 'oops'],
      [503, 'busy'],
      [200, '<html>not json'],
      [200, '{"kind":"user"}'],
    ];
    for (const [status, body] of answers) {
      const f = await fakeHub((_req, res) => { res.statusCode = status; res.end(body); });
      try {
        await expectUnavailable(client(f.url).identify(TOKEN));
        // GETs are retried on 503 only (safe and likely to help).
        expect(f.requests.length, `requests for HTTP ${status}`).to.equal(status === 503 ? 3 : 1);
      } finally {
        await f.close();
      }
    }
  });

  it('turns a refused connection and a timeout into HubUnavailableError', async function () {
    const f = await fakeHub(() => { /* never answers */ });
    const closed = await fakeHub(() => {});
    const deadUrl = closed.url;
    await closed.close();
    await expectUnavailable(client(deadUrl).identify(TOKEN));
    const started = Date.now();
    await expectUnavailable(client(f.url, 300).identify(TOKEN));
    expect(Date.now() - started).to.be.lessThan(5000);
    await f.close();
  });

  it('follows no redirect: it names the address it was sent to, and the token goes nowhere else', async function () {
    const elsewhere = await fakeHub((_req, res) => res.end(JSON.stringify({ name: 'alice', version: '5.0.0' })));
    try {
      fake = await fakeHub((req, res) => {
        res.statusCode = 308;
        res.setHeader('location', `${elsewhere.url.replace('127.0.0.1', 'localhost')}${req.url!.slice('/hub/api'.length)}`);
        res.end();
      });
      const hub = client(fake.url);
      for (const call of [hub.identify(TOKEN), hub.version(), hub.followProgress('alice', '', TOKEN, () => {}, new AbortController().signal)]) {
        const err = await expectUnavailable(call);
        expect(err.message).to.match(/answered GET \/\w+ with a redirect \(HTTP 308\) to http:\/\/localhost:\d+\/hub\/api\//);
        expect(err.message).to.include(fake.url);
        expect(err.message).to.include('http://127.0.0.1:15001');
      }
      expect(fake.requests).to.have.length(3);
      expect(elsewhere.requests).to.deep.equal([]);
    } finally {
      await elsewhere.close();
    }
  });

  it("reads the Hub's version without a token", async function () {
    fake = await fakeHub((_req, res) => res.end(JSON.stringify({ version: '3.0.0' })));
    expect(await client(fake.url).version()).to.equal('3.0.0');
    expect(fake.requests).to.deep.equal([{ path: '/hub/api/', authorization: undefined }]);
    const notHub = await fakeHub((_req, res) => res.end('{}'));
    try {
      expect((await expectUnavailable(client(notHub.url).version())).message).to.include('without a JupyterHub version');
    } finally {
      await notHub.close();
    }
  });

  it('caps concurrent Hub requests', async function () {
    let active = 0;
    let peak = 0;
    fake = await fakeHub((_req, res) => {
      active++;
      peak = Math.max(peak, active);
      setTimeout(() => { active--; res.end(JSON.stringify({ name: 'alice' })); }, 30);
    });
    const hub = client(fake.url, 5000, 3);
    await Promise.all(Array.from({ length: 12 }, (_, i) => hub.identify(`${TOKEN}-${i}`)));
    expect(fake.requests).to.have.length(12);
    expect(peak).to.equal(3);
  });

  it('caches a verified token (by hash) for the TTL, and a rejected one briefly', async function () {
    let valid = true;
    fake = await fakeHub((_req, res) => {
      if (valid) res.end(JSON.stringify({ name: 'alice', scopes: ['access:servers!user=alice'] }));
      else { res.statusCode = 403; res.end('{}'); }
    });
    const authorizer = new HubAuthorizer(client(fake.url), {
      separator: '+', cacheTtlMs: 300, failureCacheTtlMs: 300, tokenPage: 'http://hub/hub/token',
    });
    expect((await authorizer.authorize('alice', TOKEN)).ok).to.equal(true);
    valid = false;
    expect((await authorizer.authorize('alice', TOKEN)).ok, 'cached').to.equal(true);
    expect(fake.requests).to.have.length(1);
    await new Promise((resolve) => setTimeout(resolve, 350));
    expect((await authorizer.authorize('alice', TOKEN)).ok, 'after the TTL').to.equal(false);
    expect((await authorizer.authorize('alice', TOKEN)).ok, 'rejection cached').to.equal(false);
    expect(fake.requests).to.have.length(2);
  });

  it('tells the user the Hub is unavailable and ends the connection (final) when it is down', async function () {
    fake = await fakeHub((_req, res) => { res.statusCode = 502; res.end('bad gateway'); });
    const authorizer = new HubAuthorizer(client(fake.url), {
      separator: '+', cacheTtlMs: 1000, failureCacheTtlMs: 1000, tokenPage: 'http://hub/hub/token',
    });
    const decision = await authorizer.authorize('alice', TOKEN);
    expect(decision).to.deep.include({ ok: false, message: 'JupyterHub is unavailable, try again later', final: true });
    expect(JSON.stringify(decision)).to.not.contain(TOKEN);
  });

  it('selects a named server by the owner\'s name even when it contains the separator', async function () {
    fake = await fakeHub((req, res) => {
      if (req.url === '/hub/api/user') res.end(JSON.stringify({ name: 'a+b', scopes: ['access:servers!user=a+b'] }));
      else { res.statusCode = 404; res.end('{}'); }
    });
    const authorizer = new HubAuthorizer(client(fake.url), {
      separator: '+', cacheTtlMs: 1000, failureCacheTtlMs: 1000, tokenPage: 'http://hub/hub/token',
    });
    expect(await authorizer.authorize('a+b', TOKEN)).to.deep.include({ ok: true, target: { hubUser: 'a+b', server: '' } });
    expect(await authorizer.authorize('a+b+gpu', TOKEN)).to.deep.include({ ok: true, target: { hubUser: 'a+b', server: 'gpu' } });
  });

  it('finds a key login\'s server with the service token: the longest existing user name, no Hub call without a separator, none past two', async function () {
    fake = await fakeHub((req, res) => {
      if (req.url?.startsWith('/hub/api/users/a%2Bb?')) res.end(JSON.stringify({ name: 'a+b' }));
      else { res.statusCode = 404; res.end('{}'); }
    });
    const authorizer = new HubAuthorizer(client(fake.url), {
      separator: '+', cacheTtlMs: 1000, failureCacheTtlMs: 1000, tokenPage: 'http://hub/hub/token', serviceToken: 'service-token',
    });
    expect(await authorizer.keyLoginTarget('alice')).to.deep.equal({ hubUser: 'alice', server: '' });
    expect(fake.requests, 'a plain name needs no lookup').to.have.length(0);
    expect(await authorizer.keyLoginTarget('a+b+gpu')).to.deep.equal({ hubUser: 'a+b', server: 'gpu' });
    expect(await authorizer.keyLoginTarget('bob+gpu')).to.deep.equal({ hubUser: 'bob', server: 'gpu' });
    const asked = fake.requests.length;
    expect(asked).to.be.greaterThan(0);
    for (const request of fake.requests) expect(request.authorization).to.equal('token service-token');
    expect(await authorizer.keyLoginTarget('a+b+c+d'), 'more than two separators').to.equal(undefined);
    expect(fake.requests.length, 'no lookups for it').to.equal(asked);
  });
});

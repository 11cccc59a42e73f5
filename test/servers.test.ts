// ServerStarter against a fake Hub, for the races a real JupyterHub cannot
// produce on demand: a server started by someone else between our look and
// our POST ("already running", "pending spawn"), and a spawn already under
// way when a login arrives. The real-Hub counterparts (simultaneous logins,
// a start begun through the API) are in hub.test.ts.
import { expect } from 'chai';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { HubClient } from '../lib/hub.js';
import { ServerStarter, ServerUnavailableError } from '../lib/servers.js';
import { rejectionOf } from './helpers/wait.js';

const TOKEN = 'servers-test-token';
const TARGET = { hubUser: 'alice', server: '' };

interface FakeState {
  /** alice's default server as GET /users/alice shows it (undefined: none). */
  server?: { ready: boolean; pending: string | null };
  /** What POST …/server answers. */
  post: { status: number; message?: string; delayMs?: number };
  /** The progress stream's events (JSON), sent 20 ms apart; undefined: 400 (not spawning). */
  progress?: object[];
}

interface FakeHub {
  state: FakeState;
  posts: number;
  close(): Promise<void>;
  starter(): ServerStarter;
}

async function fakeHub(state: FakeState): Promise<FakeHub> {
  const fake = { state, posts: 0 } as FakeHub;
  const server = http.createServer((req, res) => {
    const url = req.url ?? '';
    if (req.method === 'GET' && url.startsWith('/hub/api/users/alice?')) {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ name: 'alice', servers: fake.state.server ? { '': { name: '', ...fake.state.server } } : {} }));
    } else if (req.method === 'POST' && url === '/hub/api/users/alice/server') {
      fake.posts++;
      const { status, message, delayMs = 0 } = fake.state.post;
      setTimeout(() => {
        res.statusCode = status;
        res.end(message === undefined ? '' : JSON.stringify({ status, message }));
      }, delayMs);
    } else if (req.method === 'GET' && url === '/hub/api/users/alice/server/progress') {
      const events = fake.state.progress;
      if (!events) {
        res.statusCode = 400;
        res.end('{"message": "not spawning"}');
        return;
      }
      res.setHeader('content-type', 'text/event-stream');
      let i = 0;
      const next = () => {
        if (i === events.length) {
          res.end();
          return;
        }
        res.write(`data: ${JSON.stringify(events[i++])}\n\n`);
        setTimeout(next, 20);
      };
      next();
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const hub = new HubClient({ apiUrl: `http://127.0.0.1:${port}/hub/api`, timeoutMs: 5000, maxConcurrent: 8 });
  fake.starter = () =>
    new ServerStarter(hub, {
      startServers: true,
      createNamedServers: true,
      spawnTimeoutMs: 5000,
      homePage: 'http://hub/hub/home',
      tokenPage: 'http://hub/hub/token',
    });
  fake.close = () =>
    new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return fake;
}

const SPAWN_EVENTS = [
  { progress: 0, message: 'Server requested' },
  { progress: 50, message: 'Spawning server...' },
  { progress: 100, ready: true, message: 'Server ready', url: '/user/alice/' },
];

describe('ServerStarter: starts raced by others (fake Hub)', function () {
  let fake: FakeHub | undefined;
  afterEach(async () => {
    await fake?.close();
    fake = undefined;
  });

  it('simultaneous logins share one start, and each is shown every step', async function () {
    fake = await fakeHub({ post: { status: 202, delayMs: 100 }, progress: SPAWN_EVENTS });
    const starter = fake.starter();
    const lines: string[][] = [[], [], [], [], []];
    const first = starter.ensureRunning(TARGET, TOKEN, (l) => lines[0]!.push(l));
    // The others arrive once the first has shown its first step.
    await new Promise((resolve) => setTimeout(resolve, 50));
    await Promise.all([first, ...lines.slice(1).map((mine) => starter.ensureRunning(TARGET, TOKEN, (l) => mine.push(l)))]);
    expect(fake.posts).to.equal(1);
    for (const mine of lines) {
      expect(mine).to.deep.equal([
        'Your server is not running; starting it...',
        '0% Server requested',
        '50% Spawning server...',
        '100% Server ready',
      ]);
    }
  });

  it('logins with different tokens do not share a start (nor its verdict)', async function () {
    fake = await fakeHub({ post: { status: 202, delayMs: 100 }, progress: SPAWN_EVENTS });
    const starter = fake.starter();
    await Promise.all([starter.ensureRunning(TARGET, TOKEN, () => undefined), starter.ensureRunning(TARGET, `${TOKEN}-2`, () => undefined)]);
    expect(fake.posts).to.equal(2);
  });

  it('a failed start fails every login waiting for it, and the next login tries again', async function () {
    fake = await fakeHub({ post: { status: 500, message: 'Spawner failed to start [status=1]', delayMs: 100 } });
    const starter = fake.starter();
    const errors = await Promise.all([1, 2, 3].map(() => rejectionOf(starter.ensureRunning(TARGET, TOKEN, () => undefined))));
    expect(fake.posts).to.equal(1);
    for (const err of errors) {
      expect(err).to.be.instanceOf(ServerUnavailableError);
      expect(err.message).to.equal('Your server failed to start: Spawner failed to start [status=1]');
    }
    fake.state.post = { status: 201 };
    await starter.ensureRunning(TARGET, TOKEN, () => undefined);
    expect(fake.posts).to.equal(2);
  });

  it('POST answered 400 "already running" (started by someone else meanwhile): the login goes ahead', async function () {
    fake = await fakeHub({ post: { status: 400, message: 'alice is already running' } });
    await fake.starter().ensureRunning(TARGET, TOKEN, () => undefined);
    expect(fake.posts).to.equal(1);
  });

  it('POST answered 400 "pending spawn": the login follows that spawn to the end', async function () {
    fake = await fakeHub({ post: { status: 400, message: 'alice is pending spawn' }, progress: SPAWN_EVENTS });
    const lines: string[] = [];
    await fake.starter().ensureRunning(TARGET, TOKEN, (l) => lines.push(l));
    expect(lines).to.include('100% Server ready');
    // The same 400 for a spawn that then fails is a failure, not a success.
    fake.state.progress = [{ progress: 100, failed: true, message: 'Spawn failed: boom' }];
    const err = await rejectionOf(fake.starter().ensureRunning(TARGET, TOKEN, () => undefined));
    expect(err.message).to.equal('Your server failed to start: Spawn failed: boom');
  });

  it('a spawn already under way (pending spawn): no POST, the login waits for it', async function () {
    fake = await fakeHub({ server: { ready: false, pending: 'spawn' }, post: { status: 500, message: 'must not be asked' }, progress: SPAWN_EVENTS });
    const lines: string[] = [];
    await fake.starter().ensureRunning(TARGET, TOKEN, (l) => lines.push(l));
    expect(fake.posts).to.equal(0);
    expect(lines[0]).to.equal('Your server is starting; waiting for it...');
    expect(lines).to.include('100% Server ready');
  });

  it('a spawn under way whose stream has already ended: the Hub is asked for the state', async function () {
    fake = await fakeHub({ server: { ready: false, pending: 'spawn' }, post: { status: 500 } });
    const starter = fake.starter();
    // Still not ready after the stream said nothing: refused, without a POST.
    const err = await rejectionOf(starter.ensureRunning(TARGET, TOKEN, () => undefined));
    expect(err.message).to.equal('Your server did not become ready');
    expect(fake.posts).to.equal(0);
  });
});

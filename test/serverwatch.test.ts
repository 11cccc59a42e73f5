// ServerWatches: one Hub poll and one activity report per interval for all
// the sessions on a server, not one per session. A fake Hub client stands in
// for the calls; test/hub.test.ts drives the same paths against a real Hub.
import { expect } from 'chai';
import type { HubClient, HubUser } from '../lib/hub.js';
import { ServerWatches, type WatchedSession } from '../lib/serverwatch.js';
import { waitFor } from './helpers/wait.js';

const INTERVAL_MS = 100;
const ALICE = { hubUser: 'alice', server: '' };

/** A Hub that records calls and answers from `state`. */
function fakeHub() {
  const calls = { user: [] as { at: number; token: string }[], activity: [] as { at: number; server: string }[] };
  const state = { ready: true, fail: false };
  const hub = {
    async user(name: string, token: string): Promise<HubUser | null> {
      calls.user.push({ at: performance.now(), token });
      if (state.fail) throw new Error('JupyterHub request GET /users failed: ECONNREFUSED');
      return { name, servers: state.ready ? { '': { name: '', ready: true, pending: null } } : {} };
    },
    async postActivity(_user: string, server: string): Promise<void> {
      calls.activity.push({ at: performance.now(), server });
    },
  };
  return { hub: hub as unknown as HubClient, calls, state };
}

class Session implements WatchedSession {
  bytes = 0;
  stopped: string[] = [];
  traffic(): number {
    return this.bytes;
  }
  onStopped(message: string): void {
    this.stopped.push(message);
  }
}

function smallestGap(times: number[]): number {
  let gap = Infinity;
  for (let i = 1; i < times.length; i++) gap = Math.min(gap, times[i]! - times[i - 1]!);
  return gap;
}

describe('ServerWatches: one watch per server and token (fake Hub)', function () {
  const unwatchers: (() => void)[] = [];
  afterEach(() => {
    for (const unwatch of unwatchers.splice(0)) unwatch();
  });

  function start(watches: ServerWatches, sessions: Session[], target = ALICE, token = 'tok-a'): void {
    for (const s of sessions) unwatchers.push(watches.watch(target, token, s));
  }

  it("polls the Hub once per interval for all of a server's sessions", async function () {
    const { hub, calls } = fakeHub();
    const watches = new ServerWatches(hub, { activityIntervalMs: 3_600_000, pollIntervalMs: INTERVAL_MS }, () => undefined);
    start(watches, [new Session(), new Session(), new Session(), new Session(), new Session()]);
    expect(watches.size).to.equal(1);
    await waitFor(() => calls.user.length >= 4, { timeoutMs: 5000, what: '4 polls' });
    // Five watches of their own would poll in bursts of five, a few ms apart.
    expect(smallestGap(calls.user.map((c) => c.at)), JSON.stringify(calls.user)).to.be.at.least(INTERVAL_MS / 2);
  });

  it('reports activity once per interval when any session moved data, and not at all when none did', async function () {
    const { hub, calls } = fakeHub();
    const watches = new ServerWatches(hub, { activityIntervalMs: INTERVAL_MS, pollIntervalMs: 3_600_000 }, () => undefined);
    const sessions = [new Session(), new Session(), new Session()];
    start(watches, sessions);
    const quietFrom = performance.now();
    // Idle: several intervals pass without a report. A second watch on another
    // server, with traffic, shows when intervals have passed.
    const other = new Session();
    start(watches, [other], { hubUser: 'alice', server: 'gpu' });
    const busy = setInterval(() => (other.bytes += 100), 10);
    try {
      await waitFor(() => calls.activity.filter((c) => c.server === 'gpu').length >= 3, { timeoutMs: 5000, what: "the other server's reports" });
      expect(calls.activity.filter((c) => c.server === '' && c.at >= quietFrom)).to.have.length(0);
      // Now every session moves data all the time.
      const moving = setInterval(() => sessions.forEach((s) => (s.bytes += 100)), 10);
      try {
        await waitFor(() => calls.activity.filter((c) => c.server === '').length >= 3, { timeoutMs: 5000, what: '3 reports' });
      } finally {
        clearInterval(moving);
      }
    } finally {
      clearInterval(busy);
    }
    expect(smallestGap(calls.activity.filter((c) => c.server === '').map((c) => c.at))).to.be.at.least(INTERVAL_MS / 2);
  });

  it('ends every session on a stopped server once, and forgets the watch', async function () {
    const { hub, state } = fakeHub();
    const watches = new ServerWatches(hub, { activityIntervalMs: 3_600_000, pollIntervalMs: INTERVAL_MS }, () => undefined);
    const sessions = [new Session(), new Session(), new Session()];
    start(watches, sessions);
    state.ready = false;
    await waitFor(() => sessions.every((s) => s.stopped.length > 0), { timeoutMs: 5000, what: 'every session told' });
    for (const s of sessions) expect(s.stopped).to.deep.equal(['Your JupyterHub server was stopped, so this SSH session ends']);
    expect(watches.size).to.equal(0);
    // The sessions' own teardown then ends their part: harmless.
    for (const unwatch of unwatchers.splice(0)) unwatch();
    expect(watches.size).to.equal(0);
  });

  it('keeps the sessions through a Hub outage, and logs it', async function () {
    const { hub, calls, state } = fakeHub();
    const logged: string[] = [];
    const watches = new ServerWatches(hub, { activityIntervalMs: 3_600_000, pollIntervalMs: INTERVAL_MS }, (level, message) =>
      logged.push(`${level}: ${message}`),
    );
    const session = new Session();
    start(watches, [session]);
    state.fail = true;
    await waitFor(() => calls.user.length >= 2, { timeoutMs: 5000, what: 'two failed polls' });
    expect(session.stopped).to.deep.equal([]);
    expect(logged[0]).to.equal('warn: server of alice: JupyterHub request GET /users failed: ECONNREFUSED');
    expect(logged.join('\n')).not.to.contain('tok-a');
  });

  it('keeps servers and tokens apart, and stops polling when the last session leaves', async function () {
    const { hub, calls } = fakeHub();
    const watches = new ServerWatches(hub, { activityIntervalMs: 3_600_000, pollIntervalMs: INTERVAL_MS }, () => undefined);
    const a = watches.watch(ALICE, 'tok-a', new Session());
    const b = watches.watch(ALICE, 'tok-b', new Session());
    const c = watches.watch({ hubUser: 'alice', server: 'gpu' }, 'tok-a', new Session());
    const d = watches.watch({ hubUser: 'bob', server: '' }, 'tok-a', new Session());
    expect(watches.size).to.equal(4);
    await waitFor(() => new Set(calls.user.map((u) => u.token)).size === 2, { timeoutMs: 5000, what: 'polls with both tokens' });
    for (const unwatch of [a, b, c, d]) unwatch();
    expect(watches.size).to.equal(0);
    const after = calls.user.length;
    const t0 = performance.now();
    // Three intervals with no watch: no poll may come.
    await waitFor(() => performance.now() - t0 > 3 * INTERVAL_MS, { timeoutMs: 5000, intervalMs: 20, what: 'three intervals' });
    expect(calls.user.length).to.equal(after);
  });

  it('a session that joins after a stop gets a watch of its own', async function () {
    const { hub, state } = fakeHub();
    const watches = new ServerWatches(hub, { activityIntervalMs: 3_600_000, pollIntervalMs: INTERVAL_MS }, () => undefined);
    const first = new Session();
    start(watches, [first]);
    state.ready = false;
    await waitFor(() => first.stopped.length > 0, { timeoutMs: 5000, what: 'the stop' });
    // The server is started again and a new session arrives.
    state.ready = true;
    const second = new Session();
    start(watches, [second]);
    expect(watches.size).to.equal(1);
    state.ready = false;
    await waitFor(() => second.stopped.length > 0, { timeoutMs: 5000, what: 'the second stop' });
    expect(first.stopped).to.have.length(1);
  });
});

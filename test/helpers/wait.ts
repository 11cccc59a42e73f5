// Polling and port helpers shared by the integration-test fixtures.
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export interface WaitOptions {
  timeoutMs: number;
  /** Pause between attempts; default 100 ms. */
  intervalMs?: number;
  /** Human description used in the timeout message. */
  what: string;
}

/**
 * Calls `fn` until it returns something other than `undefined` or `false`,
 * and returns that value. Exceptions thrown by `fn` count as "not yet" (the
 * thing being waited for is often a server that refuses connections until it
 * is up) and the last one is reported if the deadline passes.
 * `null`, `0` and `''` are treated as real results, so callers can wait for them.
 */
export async function waitFor<T>(
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  opts: WaitOptions,
): Promise<T> {
  const interval = opts.intervalMs ?? 100;
  const deadline = Date.now() + opts.timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) break;
    await sleep(Math.max(0, Math.min(interval, deadline - Date.now())));
  }
  let msg = `timed out after ${opts.timeoutMs}ms waiting for ${opts.what}`;
  if (lastError !== undefined) {
    msg += `: last error: ${lastError instanceof Error ? lastError.message : String(lastError)}`;
  }
  // `cause` keeps the original stack for debugging without cluttering the message.
  throw new Error(msg, lastError !== undefined ? { cause: lastError } : undefined);
}

function listenEphemeral(): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    // 127.0.0.1 because every fixture binds there; the OS then hands out a port
    // that is free on that address.
    srv.listen(0, '127.0.0.1', () => resolve(srv));
  });
}

function closeServer(srv: net.Server): Promise<void> {
  return new Promise((resolve) => srv.close(() => resolve()));
}

/** A TCP port on 127.0.0.1 that the OS reported free a moment ago. */
export async function freePort(): Promise<number> {
  const [port] = await freePorts(1);
  return port;
}

/**
 * `n` distinct free ports. All listeners are held open at the same time before
 * any is closed, so the OS cannot hand the same port out twice in one call
 * (calling freePort() n times could return duplicates).
 */
export async function freePorts(n: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < n; i++) servers.push(await listenEphemeral());
    return servers.map((s) => (s.address() as net.AddressInfo).port);
  } finally {
    await Promise.all(servers.map(closeServer));
  }
}

/** The error `promise` rejects with; throws if it resolves instead. */
export async function rejectionOf(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

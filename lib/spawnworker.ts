/**
 * The worker thread behind spawner.ts: it starts processes, so that the time
 * each start blocks an event loop is spent here and not on the daemon's main
 * thread. Requests and replies are the messages declared in spawner.ts.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import v8 from 'node:v8';
import { parentPort } from 'node:worker_threads';
import { childEnv } from './allocator.js';
import { compacting } from './quietgc.js';
import type { SpawnerReply, SpawnerRequest, WorkerHeapCollection } from './spawner.js';

const port = parentPort!;
const children = new Map<number, ChildProcess>();
/** Every process started here runs without the daemon's allocator settings. */
const env = childEnv(process.env);

function reply(message: SpawnerReply): void {
  port.postMessage(message);
}

function startProcess(id: number, file: string, args: string[], fd: number): void {
  // `fd` is the main thread's socket: descriptors are per process, so the
  // child gets its own copy of it here; the main thread closes its one after
  // our 'spawned' reply.
  let child: ChildProcess;
  try {
    child = spawn(file, args, { stdio: [fd, fd, 'pipe'], detached: true, env });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    reply({ id, kind: 'spawn-error', code: e.code ?? '', message: e.message });
    return;
  }
  child.once('error', (err: NodeJS.ErrnoException) => {
    children.delete(id);
    reply({ id, kind: 'spawn-error', code: err.code ?? '', message: err.message });
  });
  child.once('spawn', () => {
    children.set(id, child);
    reply({ id, kind: 'spawned', pid: child.pid! });
  });
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (text: string) => reply({ id, kind: 'stderr', text }));
  // 'close' (not 'exit'): stderr has been read to its end by then.
  child.once('close', (code, signal) => {
    if (!children.delete(id)) return; // never started: 'spawn-error' said so
    reply({ id, kind: 'exit', code, signal });
  });
}

function runToEnd(id: number, file: string, args: string[]): void {
  execFile(file, args, { env }, (err, stdout, stderr) => {
    // A number is the exit status; a string (ENOENT, EAGAIN, ...) means the program did not run.
    const code = err === null ? 0 : ((err as { code?: number | string }).code ?? 'unknown');
    reply({ id, kind: 'ran', code, stdout, stderr });
  });
}

/**
 * A compacting collection of this thread's heap; undefined without node's
 * --expose-gc (the daemon's flags reach every isolate). The flag that makes
 * it compact is process-wide: the main thread asks for this collection only
 * once its own has finished.
 */
function collect(): WorkerHeapCollection | undefined {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc !== 'function') return undefined;
  const before = v8.getHeapStatistics();
  compacting(gc)();
  const after = v8.getHeapStatistics();
  return {
    usedBefore: before.used_heap_size,
    usedAfter: after.used_heap_size,
    totalBefore: before.total_heap_size,
    totalAfter: after.total_heap_size,
  };
}

port.on('message', (request: SpawnerRequest) => {
  switch (request.kind) {
    case 'spawn':
      startProcess(request.id, request.file, request.args, request.fd);
      break;
    case 'run':
      runToEnd(request.id, request.file, request.args);
      break;
    case 'kill':
      children.get(request.id)?.kill(request.signal);
      break;
    case 'collect':
      reply({ id: request.id, kind: 'collected', heap: collect() });
      break;
  }
});

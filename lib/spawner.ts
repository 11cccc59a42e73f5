/**
 * Starts processes (sshd per connection, getent) from a worker thread.
 *
 * Node's spawn blocks the calling thread until the child has exec'd. On an
 * idle machine that is ~1.5 ms; with 100 busy processes on 2 cores it was
 * 100-290 ms per spawn (the child waits for a time slice before it can exec).
 * A burst of logins then ran dozens of spawns back to back on the daemon's
 * event loop: every open session froze and new clients waited over 10 s for
 * the SSH banner (100 parallel logins in the bench: 2 clients gave up, after
 * ConnectTimeout=20). Here only this worker waits; the main thread keeps
 * relaying and accepting.
 *
 * One worker for the whole daemon, started at the first request. Should it
 * die, waiting requests fail (the user is told to try again) and the next
 * request starts a new one.
 */
import type net from 'node:net';
import { Worker } from 'node:worker_threads';

/** Messages to the worker. */
export type SpawnerRequest =
  | { id: number; kind: 'spawn'; file: string; args: string[]; fd: number }
  | { id: number; kind: 'run'; file: string; args: string[] }
  | { id: number; kind: 'kill'; signal: NodeJS.Signals }
  | { id: number; kind: 'collect' };

/** Messages from the worker. */
export type SpawnerReply =
  | { id: number; kind: 'spawned'; pid: number }
  | { id: number; kind: 'spawn-error'; code: string; message: string }
  | { id: number; kind: 'stderr'; text: string }
  | { id: number; kind: 'exit'; code: number | null; signal: NodeJS.Signals | null }
  | { id: number; kind: 'ran'; code: number | string; stdout: string; stderr: string }
  | { id: number; kind: 'collected'; heap: WorkerHeapCollection | undefined };

/** The worker's V8 heap (bytes in use and reserved) before and after a compacting collection. */
export interface WorkerHeapCollection {
  usedBefore: number;
  usedAfter: number;
  totalBefore: number;
  totalAfter: number;
}

/** A process started with startProcess. */
export interface StartedProcess {
  readonly pid: number;
  /** How it ended ("exit status 0", "killed by SIGTERM"), once it has. */
  readonly ended: string | undefined;
  /** Resolves with `ended` once the process has ended and its stderr is read. */
  readonly exited: Promise<string>;
  kill(signal: NodeJS.Signals): void;
}

/** What a finished run gave: the exit status, or an error code (ENOENT, EAGAIN, ...) when it did not run. */
export interface RunResult {
  code: number | string;
  stdout: string;
  stderr: string;
}

interface Waiting {
  onReply(reply: SpawnerReply): void;
  /** The worker is gone: no more replies will come. */
  onLost(): void;
}

/** The error code when the worker died before answering. */
export const WORKER_LOST = 'EWORKERLOST';

let worker: Worker | undefined;
let nextId = 1;
const waiting = new Map<number, Waiting>();

function send(request: SpawnerRequest, entry: Waiting): void {
  if (!worker) {
    try {
      worker = startWorker();
    } catch {
      // Out of descriptors or memory for a thread: like a failed spawn.
      entry.onLost();
      return;
    }
  }
  waiting.set(request.id, entry);
  holdProcess();
  worker.postMessage(request);
}

function settle(id: number): void {
  waiting.delete(id);
  holdProcess();
}

/**
 * Like child_process: the process stays alive while a request is pending or
 * a started process runs, and may exit otherwise (the worker alone does not
 * hold it; tests and short scripts end).
 */
function holdProcess(): void {
  if (waiting.size > 0) worker?.ref();
  else worker?.unref();
}

function startWorker(): Worker {
  const started = new Worker(new URL('./spawnworker.js', import.meta.url), {
    // Not the daemon's node flags (--input-type, --cpu-prof, ... would break
    // or burden a worker); it only starts processes and passes a few messages.
    execArgv: [],
    resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 2 },
  });
  started.on('message', (reply: SpawnerReply) => waiting.get(reply.id)?.onReply(reply));
  const lost = () => {
    if (worker !== started) return;
    worker = undefined;
    const entries = [...waiting.values()];
    waiting.clear();
    for (const e of entries) e.onLost();
  };
  started.on('error', lost);
  started.on('exit', lost);
  return started;
}

/** The descriptor behind a connected socket (net.Socket keeps it in its libuv handle). */
function socketFd(socket: net.Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) throw new Error('socket has no descriptor');
  return fd;
}

function describeEnd(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `killed by ${signal}` : `exit status ${code}`;
}

/**
 * Starts `file` detached (a session of its own) with `socket` as its stdin
 * and stdout; its stderr goes to `onStderr`. Rejects with an Error whose
 * `code` says why it did not start (ENOENT, EMFILE, ..., WORKER_LOST).
 * The caller must keep `socket` open until this settles.
 */
export function startProcess(file: string, args: string[], socket: net.Socket, onStderr: (text: string) => void): Promise<StartedProcess> {
  const fd = socketFd(socket);
  const id = nextId++;
  return new Promise<StartedProcess>((resolve, reject) => {
    const started = new SpawnedProcess(id);
    send(
      { id, kind: 'spawn', file, args, fd },
      {
        onReply: (reply) => {
          switch (reply.kind) {
            case 'spawned':
              started.pid = reply.pid;
              resolve(started);
              break;
            case 'spawn-error':
              settle(id);
              reject(Object.assign(new Error(reply.message), { code: reply.code }));
              break;
            case 'stderr':
              onStderr(reply.text);
              break;
            case 'exit':
              settle(id);
              started.markEnded(describeEnd(reply.code, reply.signal));
              break;
          }
        },
        onLost: () => {
          reject(Object.assign(new Error('the process starter thread stopped'), { code: WORKER_LOST }));
          started.markEnded('unknown (the process starter thread stopped)');
        },
      },
    );
  });
}

/**
 * A process started in the worker, as its caller sees it. A class, not an
 * object literal: V8 keeps a literal with a getter as a property dictionary,
 * ~450 bytes more for each session.
 */
class SpawnedProcess implements StartedProcess {
  pid = 0;
  ended: string | undefined = undefined;
  readonly exited: Promise<string>;
  private resolveExited!: (how: string) => void;

  constructor(private readonly id: number) {
    this.exited = new Promise<string>((resolve) => (this.resolveExited = resolve));
  }

  markEnded(how: string): void {
    this.ended = how;
    this.resolveExited(how);
  }

  kill(signal: NodeJS.Signals): void {
    if (this.ended === undefined && worker) worker.postMessage({ id: this.id, kind: 'kill', signal } satisfies SpawnerRequest);
  }
}

/** Runs `file` to its end (like execFile) and reports its exit status and output. */
export function runProcess(file: string, args: string[]): Promise<RunResult> {
  const id = nextId++;
  return new Promise<RunResult>((resolve) => {
    send(
      { id, kind: 'run', file, args },
      {
        onReply: (reply) => {
          if (reply.kind !== 'ran') return;
          settle(id);
          resolve({ code: reply.code, stdout: reply.stdout, stderr: reply.stderr });
        },
        onLost: () => resolve({ code: WORKER_LOST, stdout: '', stderr: '' }),
      },
    );
  });
}

/**
 * Runs one compacting collection in the worker, as the daemon's quiet
 * collection does on the main thread (lib/quietgc.ts). Each process started
 * leaves a ChildProcess and its stderr stream in the worker's heap (~2 KiB);
 * the worker allocates too little for V8 to collect by itself, so after
 * 1,000 sessions it kept 10 MB of heap, most of it garbage once they had
 * closed. Resolves with the heap figures; undefined when there is no worker
 * yet or node runs without --expose-gc.
 */
export function collectWorkerGarbage(): Promise<WorkerHeapCollection | undefined> {
  if (!worker) return Promise.resolve(undefined);
  const id = nextId++;
  return new Promise((resolve) => {
    send(
      { id, kind: 'collect' },
      {
        onReply: (reply) => {
          if (reply.kind !== 'collected') return;
          settle(id);
          resolve(reply.heap);
        },
        onLost: () => resolve(undefined),
      },
    );
  });
}

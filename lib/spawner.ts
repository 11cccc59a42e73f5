/**
 * Starts processes (sshd per connection, getent, `sshd -t`) without blocking
 * the daemon's event loop, through the small native addon in
 * native/processstarter.c.
 *
 * Node's spawn blocks the calling thread until the child has exec'd. On an
 * idle machine that is ~1.5 ms; with 100 busy processes on 2 cores it was
 * 100-290 ms per spawn (the child waits for a time slice before it can exec).
 * A burst of logins then ran dozens of spawns back to back on the daemon's
 * event loop: every open session froze and new clients waited over 10 s for
 * the SSH banner (100 parallel logins in the bench: 2 clients gave up, after
 * ConnectTimeout=20). The addon runs posix_spawn on libuv's thread pool, so
 * only a pool thread waits, and posix_spawn does not copy the daemon's page
 * tables as fork does. A worker thread did this before: its V8 isolate cost
 * ~10 MiB, and every running process ~2 KiB more in its heap.
 */
import type net from 'node:net';
import os from 'node:os';
import { loadAddon } from './addons.js';
import { childEnv } from './allocator.js';
import { socketFd } from './sharedreads.js';

/** A process started with startProcess. */
export interface StartedProcess {
  readonly pid: number;
  /** How it ended ("exit status 0", "killed by SIGTERM"), once it has. */
  readonly ended: string | undefined;
  /** Resolves with `ended` once the process has ended and its stderr is read. */
  readonly exited: Promise<string>;
  kill(signal: NodeJS.Signals): void;
}

/**
 * What a finished run gave: the exit status, or a string: why the program
 * did not run (ENOENT, EAGAIN, ...) or the signal that ended it.
 */
export interface RunResult {
  code: number | string;
  stdout: string;
  stderr: string;
}

/** The addon's events, delivered as method calls on the object given to start(). */
interface ProcessEvents {
  /** `code` is null when the process runs, else why it did not start (ENOENT, EMFILE, ...). */
  onStarted(code: string | null, message: string | null, pid: number): void;
  /** A chunk the process wrote to its stdout (1, when a pipe was asked for) or stderr (2). */
  onOutput(fd: 1 | 2, chunk: Buffer): void;
  /** It ended and every output pipe is read to its end: an exit status, or the signal number that ended it. */
  onExit(status: number | null, signal: number | null): void;
}

/** Opaque: the addon's hold on one process, for kill(). */
type ProcessHandle = object & { readonly __processHandle: unique symbol };

interface ProcessStarterAddon {
  /** argv includes argv[0]; a descriptor of -1 is /dev/null (stdin) or a pipe (stdout). */
  start(file: string, argv: string[], envp: string[], stdinFd: number, stdoutFd: number, events: ProcessEvents): ProcessHandle;
  /** 0, or an errno (ESRCH once the process has ended). */
  kill(handle: ProcessHandle, signal: number): number;
}

const addon = loadAddon<ProcessStarterAddon>('processstarter', 'process starter');

/**
 * The daemon's Hub service token, under both names a managed service gets
 * it. sshd needs neither, and what sshd is given stays in the memory of
 * every sshd process, the one that runs as the user included.
 */
const HUB_TOKEN_VARIABLES = ['JUPYTERHUB_API_TOKEN', 'JPY_API_TOKEN'];

/** What every process started here gets: the daemon's environment without its allocator settings and its Hub token. */
let childEnvironment: string[] | undefined;
function environment(): string[] {
  childEnvironment ??= Object.entries(childEnv(process.env))
    .filter((entry): entry is [string, string] => entry[1] !== undefined && !HUB_TOKEN_VARIABLES.includes(entry[0]))
    .map(([name, value]) => `${name}=${value}`);
  return childEnvironment;
}

const signalNames = new Map<number, string>(Object.entries(os.constants.signals).map(([name, number]) => [number, name]));

function describeEnd(status: number | null, signal: number | null): string {
  return signal !== null ? `killed by ${signalNames.get(signal) ?? `signal ${signal}`}` : `exit status ${status}`;
}

/** The descriptor behind a connected socket (net.Socket keeps it in its libuv handle). */
function connectedFd(socket: net.Socket): number {
  const fd = socketFd(socket);
  if (fd === undefined) throw new Error('socket has no descriptor');
  return fd;
}

function startError(code: string, message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code });
}

/**
 * Starts `file` detached (a session of its own) with `socket` as its stdin
 * and stdout; its stderr goes to `onStderr` in whole lines (and what follows
 * the last line end once it has ended). Rejects with an Error whose
 * `code` says why it did not start (ENOENT, EMFILE, ...). The caller must
 * keep `socket` open until this settles.
 */
export function startProcess(file: string, args: string[], socket: net.Socket, onStderr: (text: string) => void): Promise<StartedProcess> {
  const fd = connectedFd(socket);
  return new Promise<StartedProcess>((resolve, reject) => {
    new SpawnedProcess(onStderr, resolve, reject).start(file, args, fd);
  });
}

/**
 * A process started by startProcess, and the receiver of its events. A
 * class, not an object literal: V8 keeps a literal with a getter as a
 * property dictionary, ~450 bytes more for each session.
 */
class SpawnedProcess implements StartedProcess, ProcessEvents {
  pid = 0;
  ended: string | undefined = undefined;
  readonly exited: Promise<string>;
  private resolveExited!: (how: string) => void;
  private handle: ProcessHandle | undefined;
  /** Until it has started. */
  private starting: { resolve: (started: StartedProcess) => void; reject: (err: Error) => void } | undefined;
  /** Stderr bytes after its last line end, until the rest of the line comes. */
  private stderrPartial: Buffer | undefined;

  constructor(
    private readonly onStderr: (text: string) => void,
    resolve: (started: StartedProcess) => void,
    reject: (err: Error) => void,
  ) {
    this.starting = { resolve, reject };
    this.exited = new Promise<string>((resolveExited) => (this.resolveExited = resolveExited));
  }

  start(file: string, args: string[], fd: number): void {
    this.handle = addon.start(file, [file, ...args], environment(), fd, fd, this);
  }

  onStarted(code: string | null, message: string | null, pid: number): void {
    const starting = this.starting!;
    this.starting = undefined;
    if (code !== null) {
      // The caller gets the rejection, never this object.
      this.handle = undefined;
      starting.reject(startError(code, message ?? code));
      return;
    }
    this.pid = pid;
    starting.resolve(this);
  }

  /**
   * Passes stderr on in whole lines: a UTF-8 character split across two
   * chunks is then decoded whole (a newline byte never occurs inside one),
   * without a StringDecoder and its buffer kept for the session's life.
   */
  onOutput(_fd: 1 | 2, chunk: Buffer): void {
    const bytes = this.stderrPartial ? Buffer.concat([this.stderrPartial, chunk]) : chunk;
    const end = bytes.lastIndexOf(0x0a) + 1;
    this.stderrPartial = end < bytes.length ? Buffer.from(bytes.subarray(end)) : undefined;
    if (end > 0) this.onStderr(bytes.toString('utf8', 0, end));
  }

  onExit(status: number | null, signal: number | null): void {
    if (this.stderrPartial) this.onStderr(this.stderrPartial.toString('utf8'));
    this.stderrPartial = undefined;
    this.handle = undefined;
    this.markEnded(describeEnd(status, signal));
  }

  kill(signal: NodeJS.Signals): void {
    if (this.ended === undefined && this.handle) addon.kill(this.handle, os.constants.signals[signal]);
  }

  private markEnded(how: string): void {
    this.ended = how;
    this.resolveExited(how);
  }
}

/** Output kept of a run, per stream, as execFile's default maxBuffer. */
const RUN_OUTPUT_LIMIT = 1024 * 1024;

/** Runs `file` to its end (like execFile, with stdin /dev/null) and reports its exit status and output. */
export function runProcess(file: string, args: string[]): Promise<RunResult> {
  return new Promise<RunResult>((resolve) => {
    addon.start(file, [file, ...args], environment(), -1, -1, new Run(resolve));
  });
}

/** The receiver of a runProcess's events: collects its output until it ends. */
class Run implements ProcessEvents {
  private readonly output: Record<1 | 2, Buffer[]> = { 1: [], 2: [] };
  private readonly length: Record<1 | 2, number> = { 1: 0, 2: 0 };

  constructor(private readonly resolve: (result: RunResult) => void) {}

  onStarted(code: string | null): void {
    if (code !== null) this.resolve({ code, stdout: '', stderr: '' });
  }

  onOutput(fd: 1 | 2, chunk: Buffer): void {
    const room = RUN_OUTPUT_LIMIT - this.length[fd];
    if (room <= 0) return;
    this.output[fd].push(room < chunk.length ? chunk.subarray(0, room) : chunk);
    this.length[fd] += Math.min(room, chunk.length);
  }

  onExit(status: number | null, signal: number | null): void {
    this.resolve({
      code: signal !== null ? (signalNames.get(signal) ?? `signal ${signal}`) : status!,
      stdout: Buffer.concat(this.output[1]).toString('utf8'),
      stderr: Buffer.concat(this.output[2]).toString('utf8'),
    });
  }
}

// Test fixture: the real daemon, started through bin/jupyter_ssh_proxy on an
// ephemeral port with a fresh key folder.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from './wait.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const BIN = path.join(REPO_ROOT, 'bin', 'jupyter_ssh_proxy');

export interface ProxyProcess {
  port: number;
  keyDir: string;
  /** The --runtime-dir the daemon was given: a folder of its own under /run, removed at stop (unless the test passed one). */
  runtimeDir: string;
  child: ChildProcess;
  /** Everything the daemon logged so far. */
  logs(): string;
  /** The first line logged so far that contains `fragment`. */
  logLine(fragment: string): string | undefined;
  /** SIGTERM, wait for exit (SIGKILL after a deadline), remove the key and runtime folders it made. Idempotent. */
  stop(): Promise<void>;
}

/** Every log line of every daemon this test process started, for the secrets check. */
export const allProxyLogs: string[] = [];

export interface StartProxyOptions {
  /**
   * Added to the daemon's environment (which otherwise is this process's),
   * e.g. JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN for managed-service mode.
   */
  env?: NodeJS.ProcessEnv;
  /** Address to listen on; default 127.0.0.1. */
  ip?: string;
  /** Port to listen on; default 0 (a free one). */
  port?: number;
  /** Default debug. */
  logLevel?: string;
  /** An existing key folder, kept at stop; default a fresh temp folder, removed at stop. */
  keyDir?: string;
  /** Called with each chunk of the daemon's output as it arrives. */
  onOutput?: (text: string) => void;
  /** Own process group: a terminal's Ctrl-C then reaches the caller only, which stops the daemon itself. */
  detached?: boolean;
  /**
   * A command that runs node and the daemon, e.g. ['prlimit', '--nofile=64:64'].
   * It must exec its argument (so that `child.pid` is the daemon's pid).
   */
  commandPrefix?: string[];
  /** Flags for node itself, before the script, e.g. ['--max-semi-space-size=2']. */
  nodeArgs?: string[];
  /** A file the daemon's stdout is appended to instead of a pipe (stderr stays a pipe); logs() includes it. */
  stdoutFile?: string;
}

/**
 * Starts the daemon in front of the Hub at `hubUrl`; `undefined` leaves the
 * URL argument out (managed-service mode, with JUPYTERHUB_API_URL in `env`).
 */
export async function startProxy(
  hubUrl: string | undefined,
  extraArgs: string[] = [],
  options: StartProxyOptions = {},
): Promise<ProxyProcess> {
  const ownKeyDir = options.keyDir === undefined;
  const keyDir = options.keyDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-keys-'));
  // Not the default /run/jupyter-ssh-proxy, which would stay behind. Under
  // /run, as sshd's StrictModes refuses /tmp (world-writable) above a key
  // file; 0755, as sshd reads there as the user.
  const runtimeArg = extraArgs.indexOf('--runtime-dir');
  const ownRuntimeDir = runtimeArg < 0;
  const runtimeDir = ownRuntimeDir ? fs.mkdtempSync('/run/jsp-proxy-') : extraArgs[runtimeArg + 1]!;
  if (ownRuntimeDir) fs.chmodSync(runtimeDir, 0o755);
  const removeOwnFolders = () => {
    if (ownKeyDir) fs.rmSync(keyDir, { recursive: true, force: true });
    if (ownRuntimeDir) fs.rmSync(runtimeDir, { recursive: true, force: true });
  };
  const [command, ...prefixArgs] = [...(options.commandPrefix ?? []), process.execPath];
  const stdoutFd = options.stdoutFile === undefined ? undefined : fs.openSync(options.stdoutFile, 'a');
  const child = spawn(
    command!,
    [
      ...prefixArgs,
      ...(options.nodeArgs ?? []),
      BIN,
      '--ip', options.ip ?? '127.0.0.1',
      '-p', String(options.port ?? 0),
      '-k', keyDir,
      ...(ownRuntimeDir ? ['--runtime-dir', runtimeDir] : []),
      '--log-level', options.logLevel ?? 'debug',
      // stop() waits 10 s before SIGKILL: drain open sessions well within that.
      ...(extraArgs.includes('--drain-timeout') ? [] : ['--drain-timeout', '2']),
      // Every test client comes from 127.0.0.1: tests that fail logins on
      // purpose must not get the next test's client refused. Penalty tests
      // pass --per-source-* flags of their own.
      ...(extraArgs.some((a) => a.startsWith('--per-source')) ? [] : ['--per-source-penalty-exempt-list', '127.0.0.1']),
      ...extraArgs,
      ...(hubUrl === undefined ? [] : [hubUrl]),
    ],
    {
      stdio: ['ignore', stdoutFd ?? 'pipe', 'pipe'],
      env: options.env === undefined ? process.env : { ...process.env, ...options.env },
      detached: options.detached ?? false,
    },
  );
  if (stdoutFd !== undefined) fs.closeSync(stdoutFd);
  let output = '';
  const logs = () => (options.stdoutFile === undefined ? output : output + fs.readFileSync(options.stdoutFile, 'utf8'));
  const collect = (chunk: Buffer) => {
    const text = chunk.toString();
    output += text;
    allProxyLogs.push(text);
    options.onOutput?.(text);
  };
  child.stdout?.on('data', collect);
  child.stderr!.on('data', collect);
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once('exit', () => { exited = true; resolve(); }));
  // 'close' comes after the last of the output, which 'exit' may precede.
  let closed = false;
  child.once('close', () => (closed = true));

  let port: number;
  try {
    const listened = await waitFor(
      () => {
        // Listened first: a daemon stopped at once (a test's SIGTERM) has still started.
        const m = /listening on [^\s]+:(\d+)/.exec(logs());
        if (m) return Number(m[1]);
        return closed ? null : undefined;
      },
      { timeoutMs: 90_000, what: 'the proxy to listen' },
    );
    if (listened === null) throw new Error(`proxy exited during startup:\n${logs()}`);
    port = listened;
  } catch (err) {
    child.kill('SIGKILL');
    removeOwnFolders();
    throw err;
  }

  let stopped: Promise<void> | undefined;
  return {
    port,
    keyDir,
    runtimeDir,
    child,
    logs,
    logLine: (fragment) => logs().split('\n').find((line) => line.includes(fragment)),
    stop: () =>
      (stopped ??= (async () => {
        if (!exited) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
          await exit;
          clearTimeout(timer);
        }
        // The secrets check reads every line, the file's too.
        if (options.stdoutFile !== undefined) allProxyLogs.push(fs.readFileSync(options.stdoutFile, 'utf8'));
        removeOwnFolders();
      })()),
  };
}

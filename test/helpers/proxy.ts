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
  child: ChildProcess;
  /** Everything the daemon logged so far. */
  logs(): string;
  /** SIGTERM, wait for exit (SIGKILL after a deadline), remove the key folder. Idempotent. */
  stop(): Promise<void>;
}

/** Every log line of every daemon this test process started, for the secrets check. */
export const allProxyLogs: string[] = [];

export async function startProxy(hubUrl: string, extraArgs: string[] = []): Promise<ProxyProcess> {
  const keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-keys-'));
  const child = spawn(
    process.execPath,
    [BIN, '--ip', '127.0.0.1', '-p', '0', '-k', keyDir, '--log-level', 'debug', ...extraArgs, hubUrl],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  const collect = (chunk: Buffer) => {
    const text = chunk.toString();
    output += text;
    allProxyLogs.push(text);
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once('exit', () => { exited = true; resolve(); }));

  let port: number;
  try {
    port = await waitFor(
      () => {
        if (exited) throw new Error(`proxy exited during startup:\n${output}`);
        const m = /listening on [^\s]+:(\d+)/.exec(output);
        return m ? Number(m[1]) : undefined;
      },
      { timeoutMs: 30_000, what: 'the proxy to listen' },
    );
  } catch (err) {
    child.kill('SIGKILL');
    fs.rmSync(keyDir, { recursive: true, force: true });
    throw err;
  }

  let stopped: Promise<void> | undefined;
  return {
    port,
    keyDir,
    child,
    logs: () => output,
    stop: () =>
      (stopped ??= (async () => {
        if (!exited) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
          await exit;
          clearTimeout(timer);
        }
        fs.rmSync(keyDir, { recursive: true, force: true });
      })()),
  };
}

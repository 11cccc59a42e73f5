// Every process the bench starts is tracked, so that Ctrl-C or a failure can
// kill what is still running before the fixtures are torn down.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

const live = new Set<ChildProcess>();

export function spawnTracked(cmd: string, args: string[], options: SpawnOptions): ChildProcess {
  const child = spawn(cmd, args, options);
  live.add(child);
  child.once('exit', () => live.delete(child));
  child.once('error', () => live.delete(child));
  return child;
}

export function killAllTracked(signal: NodeJS.Signals = 'SIGKILL'): void {
  for (const child of live) {
    try {
      child.kill(signal);
    } catch {
      // gone
    }
  }
}

export interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Output kept per stream: enough for a checksum line or an error message. */
const KEEP_CHARS = 16_384;

/**
 * Waits for a child to exit and its pipes (if any) to close, keeping the
 * start of stdout and the end of stderr. Rejects after `timeoutMs` (and kills).
 */
export function finished(child: ChildProcess, timeoutMs: number, what: string): Promise<Finished> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8');
    child.stderr?.setEncoding('utf8');
    child.stdout?.on('data', (s: string) => {
      if (stdout.length < KEEP_CHARS) stdout += s;
    });
    child.stderr?.on('data', (s: string) => {
      stderr = (stderr + s).slice(-KEEP_CHARS);
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${what} did not finish within ${timeoutMs / 1000} s; stderr: ${stderr.trim()}`));
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

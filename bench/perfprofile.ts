// The daemon's CPU time by kind and by thread, from Linux perf.
//
// V8's --cpu-prof samples wall time: time the daemon spends preempted inside
// a system call counts as that call (bench/README.md, "The parallel case
// under perf"). perf samples CPU time, in the kernel too, so its shares add
// up to the daemon's CPU seconds. The profile case records both.
//
//   node dist/bench/perfprofile.js FILE.perf DAEMON_PID
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from '../test/helpers/wait.js';

/** Samples per second per CPU: ~1 % of one core for perf itself. */
const SAMPLE_HZ = 999;

export interface PerfShare {
  name: string;
  /** Share of the daemon's samples, percent. */
  percent: number;
}

export interface PerfSummary {
  file: string;
  /** The daemon's samples (its own threads; not the sshd it starts). */
  samples: number;
  categories: PerfShare[];
  /** Heaviest symbols, "name (library)". */
  symbols: PerfShare[];
  /** Share of the daemon's samples on its main thread (the event loop); the rest is V8's helpers and the spawner. */
  mainThreadPercent: number;
}

/** Why perf cannot profile here, or undefined if it can. */
export function perfUnusable(): string | undefined {
  const r = spawnSync('perf', ['stat', '-e', 'cpu-clock', '-x', ',', 'true'], { encoding: 'utf8' });
  if (r.error) return `perf is not installed (${(r.error as NodeJS.ErrnoException).code}; Debian's package linux-perf)`;
  if (r.status !== 0) return `perf stat failed: ${r.stderr.trim().split('\n').pop()}`;
  return undefined;
}

export interface PerfRecording {
  /** Stops sampling and writes the file. */
  stop(): Promise<void>;
}

/** Samples every thread of `pid` (and what it forks) into `file` until stopped. */
export async function recordPerf(pid: number, file: string): Promise<PerfRecording> {
  fs.rmSync(file, { force: true });
  const child: ChildProcess = spawn('perf', ['record', '-q', '-e', 'cpu-clock', '-F', String(SAMPLE_HZ), '-p', String(pid), '-o', file], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let gone = false;
  void exited.then(() => (gone = true));
  // perf writes the file's header once it has attached to every thread.
  await waitFor(() => gone || (fs.existsSync(file) && fs.statSync(file).size > 0), { timeoutMs: 10_000, what: 'perf record to attach' });
  if (gone) throw new Error(`perf record ended at once: ${stderr.trim()}`);
  return {
    async stop() {
      child.kill('SIGINT');
      const code = await exited;
      if (code !== 0 && code !== null) throw new Error(`perf record exit ${code}: ${stderr.trim()}`);
    },
  };
}

/** Coarse kinds of the daemon's CPU time; the first match wins. */
const CATEGORIES: { name: string; kernel?: boolean; match: (sym: string, dso: string) => boolean }[] = [
  { name: 'kernel: socket read copies (to user space)', kernel: true, match: (s) => s === '_copy_to_iter' },
  { name: 'kernel: socket write copies (from user space)', kernel: true, match: (s) => s === '_copy_from_iter' },
  {
    name: 'kernel: scheduler and wakeups',
    kernel: true,
    match: (s) => /^(finish_task_switch|__?schedule|try_to_wake_up|_raw_spin_unlock_irqrestore|__raw_callee_save___pv_queued_spin_unlock)/.test(s),
  },
  {
    name: 'kernel: memory (page faults, madvise, page allocation)',
    kernel: true,
    match: (s) => /page|pte|folio|memcg|madvise|tlb|zap_|unmap|mm_fault|lru/.test(s),
  },
  { name: 'kernel: the rest (TCP/IP, system calls, epoll)', kernel: true, match: () => true },
  { name: 'ciphers (AES-GCM, ChaCha20, Poly1305)', match: (s) => /aes|gcm|ghash|chacha|poly1305/i.test(s) },
  // Before garbage collection: compiler phases have "Mark" and "Visitor" in their names too.
  { name: 'V8 optimizing compiler (helper threads)', match: (s) => /v8::internal::(compiler|maglev|turboshaft)::/.test(s) },
  {
    name: 'V8 garbage collection',
    match: (s) => /v8::internal::.*(Heap::|Scaveng|Marking|MarkCompact|Sweep|Evacuat|Compact|Remembered|SlotSet|Worklist|Visitor|GCTracer|Collector)/.test(s),
  },
  { name: 'libc memmove / memcpy / memset', match: (s, d) => d.startsWith('libc') && /mem(move|cpy|set)/.test(s) },
  { name: 'allocator (jemalloc / malloc)', match: (s, d) => d.startsWith('libjemalloc') || /^(je_|malloc|free|realloc|calloc|operator new|operator delete)/.test(s) },
  { name: 'JIT-compiled JavaScript', match: (_s, d) => d.startsWith('[JIT]') || /^perf-\d+\.map$/.test(d) },
  { name: 'V8 builtins and runtime', match: (s) => /^(Builtins_|v8::)/.test(s) },
  { name: 'Node and libuv', match: (s) => /^(node::|uv_|uv__|non-virtual thunk to node::)/.test(s) },
  { name: 'the rest of user space (OpenSSL outside the ciphers, libc, libstdc++)', match: () => true },
];

/**
 * Sample counts by `sort` keys, from `perf report -n -t TAB`: [samples, ...keys].
 * Filtering here instead of with --comms: perf 6.1's --comms with
 * --percentage relative put half of the daemon's kernel samples under the
 * wrong keys.
 */
function report(file: string, sort: string): [number, ...string[]][] {
  const r = spawnSync('perf', ['report', '-i', file, '--stdio', '--no-children', '-n', '--sort', sort, '-g', 'none', '-t', '\t'], {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`perf report: ${r.stderr.trim()}`);
  return r.stdout
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const [, samples, ...keys] = l.split('\t').map((f) => f.trim());
      return [Number(samples), ...keys] as [number, ...string[]];
    })
    .filter(([n]) => Number.isFinite(n));
}

/** The daemon's own threads: forked sshd and what they run have other names. */
const DAEMON_COMM = 'node';

/** Splits the samples of the daemon's own threads in `file` by kind and by thread. */
export function summarizePerf(file: string, daemonPid: number, top = 15): PerfSummary {
  const rows = report(file, 'comm,dso,sym').filter(([, comm]) => comm === DAEMON_COMM);
  const samples = rows.reduce((sum, [n]) => sum + n, 0);
  const pct = (n: number) => (samples > 0 ? (100 * n) / samples : 0);
  const counts = new Map<string, number>(CATEGORIES.map((c) => [c.name, 0]));
  const bySymbol: { name: string; n: number }[] = [];
  for (const [n, , dso, sym] of rows) {
    const kernel = sym!.startsWith('[k]');
    const name = sym!.replace(/^\[.\]\s*/, '');
    const category = CATEGORIES.find((c) => (c.kernel === true) === kernel && c.match(name, dso!))!;
    counts.set(category.name, counts.get(category.name)! + n);
    bySymbol.push({ name: `${name} (${dso})`, n });
  }
  let mainThread = 0;
  for (const [n, comm, thread] of report(file, 'comm,pid')) {
    // "2991:node": perf's pid sort key is the thread id.
    if (comm === DAEMON_COMM && Number.parseInt(thread!, 10) === daemonPid) mainThread += n;
  }
  return {
    file,
    samples,
    categories: [...counts].filter(([, n]) => n > 0).map(([name, n]) => ({ name, percent: pct(n) })),
    symbols: bySymbol
      .sort((a, b) => b.n - a.n)
      .slice(0, top)
      .map((e) => ({ name: e.name, percent: pct(e.n) })),
    mainThreadPercent: pct(mainThread),
  };
}

export function formatPerfSummary(s: PerfSummary): string {
  const lines = [`${path.basename(s.file)}: ${s.samples} samples of the daemon's threads, ${s.mainThreadPercent.toFixed(0)} % on the main thread`];
  lines.push('  CPU by kind:');
  for (const c of s.categories) lines.push(`    ${c.percent.toFixed(1).padStart(5)}%  ${c.name}`);
  lines.push('  heaviest symbols:');
  for (const e of s.symbols) lines.push(`    ${e.percent.toFixed(1).padStart(5)}%  ${e.name}`);
  return lines.join('\n');
}

// CLI
if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const [file, pid] = process.argv.slice(2);
  if (!file || !pid) {
    console.error('usage: node dist/bench/perfprofile.js FILE.perf DAEMON_PID');
    process.exit(2);
  }
  console.log(formatPerfSummary(summarizePerf(file, Number(pid))));
}

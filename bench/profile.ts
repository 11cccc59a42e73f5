// Summarizes a V8 .cpuprofile (from `node --cpu-prof`): self time per
// function and per source file, heaviest first.
//
//   node dist/bench/profile.js FILE.cpuprofile [TOP]
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileEntry {
  name: string;
  where: string;
  selfMs: number;
  /** Share of the busy (non-idle) time, percent. */
  percent: number;
}

export interface ProfileSummary {
  file: string;
  /** True when only the samples of the given window were counted. */
  windowed: boolean;
  wallMs: number;
  busyMs: number;
  idleMs: number;
  functions: ProfileEntry[];
  files: ProfileEntry[];
  categories: ProfileEntry[];
}

/** Shortens a script URL to something readable: package-relative or node-internal. */
function shortUrl(url: string): string {
  if (url === '') return '(native)';
  let u = url.replace(/^file:\/\//, '');
  const nm = u.lastIndexOf('/node_modules/');
  if (nm >= 0) return u.slice(nm + '/node_modules/'.length);
  const dist = u.indexOf('/dist/');
  if (dist >= 0) u = u.slice(dist + '/dist/'.length);
  return u;
}

/** Coarse buckets: where the proxy's time goes. */
function category(frame: CallFrame): string {
  const url = frame.url;
  const name = frame.functionName;
  if (name === '(garbage collector)') return 'garbage collection';
  if (name === '(program)') return 'V8/libuv outside JS ((program))';
  if (name === '(idle)') return 'idle';
  if (url === '') return `native: ${name || '(anonymous)'}`;
  if (url.includes('/ssh2/lib/protocol/crypto')) return 'ssh2 crypto.js (cipher/decipher JS glue)';
  if (url.includes('/ssh2/')) return 'ssh2 other (Protocol, parser, utils)';
  if (url.includes('/dist/lib/')) return 'proxy (dist/lib)';
  if (url.startsWith('node:internal/streams') || url.startsWith('node:stream')) return 'node streams';
  if (url.startsWith('node:net') || url.startsWith('node:internal/stream_base')) return 'node net/stream_base';
  if (url.startsWith('node:internal/crypto') || url.startsWith('node:crypto')) return 'node crypto (randomFill etc.)';
  if (url.startsWith('node:internal/buffer') || url.startsWith('node:buffer')) return 'node buffer';
  if (url.startsWith('node:')) return `node other (${url.replace(/^node:(internal\/)?/, '').split('/')[0]})`;
  if (url.includes('/node_modules/')) return `npm: ${shortUrl(url).split('/')[0]}`;
  return shortUrl(url);
}

/**
 * `window` (CLOCK_MONOTONIC microseconds, as V8's profile timestamps and
 * process.hrtime use) keeps only the samples taken in it, e.g. the transfer
 * without the daemon's start-up; ignored if it does not overlap the profile.
 */
export function summarize(file: string, top = 25, window?: { fromUs: number; toUs: number }): ProfileSummary {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  const useWindow = window !== undefined && window.fromUs < profile.endTime && window.toUs > profile.startTime;
  let t = profile.startTime;
  let first = Infinity;
  let last = -Infinity;
  // timeDeltas[i] is the time between sample i-1 and sample i; attribute it to sample i.
  for (let i = 0; i < profile.samples.length; i++) {
    const delta = Math.max(0, profile.timeDeltas[i] ?? 0);
    t += delta;
    if (useWindow && (t < window.fromUs || t > window.toUs)) continue;
    first = Math.min(first, t - delta);
    last = Math.max(last, t);
    const id = profile.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + delta);
  }
  const fn = new Map<string, { name: string; where: string; us: number }>();
  const files = new Map<string, number>();
  const cats = new Map<string, number>();
  let idleUs = 0;
  let totalUs = 0;
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)!.callFrame;
    totalUs += us;
    if (frame.functionName === '(idle)') {
      idleUs += us;
      continue;
    }
    const where = frame.url ? `${shortUrl(frame.url)}:${frame.lineNumber + 1}` : '(native)';
    const name = frame.functionName || '(anonymous)';
    const key = `${name}@${where}`;
    const entry = fn.get(key) ?? { name, where, us: 0 };
    entry.us += us;
    fn.set(key, entry);
    const f = frame.url ? shortUrl(frame.url) : frame.functionName.startsWith('(') ? frame.functionName : '(native)';
    files.set(f, (files.get(f) ?? 0) + us);
    const c = category(frame);
    cats.set(c, (cats.get(c) ?? 0) + us);
  }
  const busyUs = totalUs - idleUs;
  const pct = (us: number) => (busyUs > 0 ? (100 * us) / busyUs : 0);
  const sorted = <T extends { us: number }>(xs: T[]) => xs.sort((a, b) => b.us - a.us).slice(0, top);
  return {
    file,
    windowed: useWindow,
    wallMs: (useWindow ? last - first : profile.endTime - profile.startTime) / 1000,
    busyMs: busyUs / 1000,
    idleMs: idleUs / 1000,
    functions: sorted([...fn.values()]).map((e) => ({ name: e.name, where: e.where, selfMs: e.us / 1000, percent: pct(e.us) })),
    files: sorted([...files].map(([name, us]) => ({ name, us }))).map((e) => ({
      name: e.name,
      where: '',
      selfMs: e.us / 1000,
      percent: pct(e.us),
    })),
    categories: sorted([...cats].map(([name, us]) => ({ name, us }))).map((e) => ({
      name: e.name,
      where: '',
      selfMs: e.us / 1000,
      percent: pct(e.us),
    })),
  };
}

export function formatSummary(s: ProfileSummary, top = 15): string {
  const lines: string[] = [];
  lines.push(`${path.basename(s.file)}${s.windowed ? ' (transfer window only)' : ''}: wall ${(s.wallMs / 1000).toFixed(1)} s, busy ${(s.busyMs / 1000).toFixed(2)} s, idle ${(s.idleMs / 1000).toFixed(2)} s`);
  lines.push('  by category:');
  for (const e of s.categories.slice(0, 12)) lines.push(`    ${e.percent.toFixed(1).padStart(5)}%  ${(e.selfMs / 1000).toFixed(2).padStart(6)} s  ${e.name}`);
  lines.push('  top functions (self time):');
  for (const e of s.functions.slice(0, top)) {
    lines.push(`    ${e.percent.toFixed(1).padStart(5)}%  ${(e.selfMs / 1000).toFixed(2).padStart(6)} s  ${e.name}  ${e.where}`);
  }
  return lines.join('\n');
}

// CLI
if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const [file, top] = process.argv.slice(2);
  if (!file) {
    console.error('usage: node dist/bench/profile.js FILE.cpuprofile [TOP]');
    process.exit(2);
  }
  const n = Number(top ?? 25);
  console.log(formatSummary(summarize(file, n), n));
}

// Reading the daemon's Prometheus endpoint in tests and the bench.

/**
 * The metrics listener's origin (`http://127.0.0.1:PORT`, `http://[::1]:PORT`)
 * from the daemon's "metrics on URL" log line, if it has been logged.
 */
export function metricsOrigin(logs: string): string | undefined {
  return /metrics on (http:\/\/\S+)\/metrics/.exec(logs)?.[1];
}

/** Parses Prometheus text into `name{labels}` → value. */
export function metricSamples(text: string): Map<string, number> {
  const map = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    map.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return map;
}

/** One scrape of `${origin}/metrics`, as `name{labels}` → value. */
export async function scrapeMetrics(origin: string): Promise<Map<string, number>> {
  const response = await fetch(`${origin}/metrics`);
  if (response.status !== 200) throw new Error(`${origin}/metrics answered ${response.status}`);
  return metricSamples(await response.text());
}

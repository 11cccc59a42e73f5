/**
 * Whether `text` matches a pattern with `*` (any run) and `?` (one
 * character), as OpenSSH's match_pattern. Not a regular expression: a
 * pattern may be a user's (from= in authorized_keys), and `*1*1*1*...*2`
 * would make a backtracking match take minutes on the daemon's one thread;
 * this takes at most length × length steps.
 */
export function wildcardMatch(text: string, pattern: string): boolean {
  let t = 0;
  let p = 0;
  // The last `*` seen, and where in `text` its run ends so far.
  let star = -1;
  let runEnd = 0;
  while (t < text.length) {
    if (p < pattern.length && (pattern[p] === '?' || pattern[p] === text[t])) {
      t++;
      p++;
    } else if (p < pattern.length && pattern[p] === '*') {
      star = p++;
      runEnd = t;
    } else if (star >= 0) {
      p = star + 1;
      t = ++runEnd;
    } else {
      return false;
    }
  }
  while (pattern[p] === '*') p++;
  return p === pattern.length;
}

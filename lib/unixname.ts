/**
 * Which unix account a Hub user logs in to (--unix-user).
 *
 * A template with `{username}` replaced by the Hub user's name, or `tljh`:
 * the accounts The Littlest JupyterHub makes, `jupyter-{username}` cut to
 * 26 characters with `-` and the first 5 hex digits of the uncut name's
 * SHA-256 added once it is 26 or longer (tljh/normalize.py,
 * generate_system_username), which keeps them within 32 characters. A plain
 * `jupyter-{username}` template misses those for Hub names of 18 characters
 * or more.
 */
import { createHash } from 'node:crypto';

export const TLJH_NAMING = 'tljh';

/** TLJH's cut: names this long or longer are cut and hashed. */
const TLJH_CUT_AT = 26;
const TLJH_HASH_DIGITS = 5;

export function unixUserFor(naming: string, hubUser: string): string {
  if (naming !== TLJH_NAMING) return naming.replaceAll('{username}', hubUser);
  const name = `jupyter-${hubUser}`;
  if (name.length < TLJH_CUT_AT) return name;
  const hash = createHash('sha256').update(name, 'utf8').digest('hex').slice(0, TLJH_HASH_DIGITS);
  return `${name.slice(0, TLJH_CUT_AT)}-${hash}`;
}

/** Why `naming` cannot be a --unix-user value, or undefined. */
export function unixNamingProblem(naming: string): string | undefined {
  if (naming === TLJH_NAMING || naming.includes('{username}')) return undefined;
  return `--unix-user must contain {username}, or be ${TLJH_NAMING} (The Littlest JupyterHub's accounts)`;
}

/**
 * JupyterHub's scope filters (RBAC, JupyterHub 2+): a scope is `name` (on
 * everything it applies to) or `name!filter=value` with filter `user`,
 * `server` (`user/servername`, the default server being `user/`) or `group`.
 * `GET /hub/api/user` returns a token's scopes already expanded, so a plain
 * match is JupyterHub's own meaning.
 */

/** A user's server; `server` is '' for the default server. */
export interface ServerRef {
  user: string;
  server: string;
}

export function serverLabel(ref: ServerRef): string {
  return `${ref.user}/${ref.server}`;
}

function split(scope: string): { name: string; filter?: { kind: string; value: string } } {
  const bang = scope.indexOf('!');
  if (bang < 0) return { name: scope };
  const filter = scope.slice(bang + 1);
  const eq = filter.indexOf('=');
  return { name: scope.slice(0, bang), filter: { kind: filter.slice(0, eq), value: filter.slice(eq + 1) } };
}

/** Whether `scopes` hold `scope` for `target`; `groups` are the target user's groups. */
export function grantsOn(scopes: readonly string[], scope: string, target: ServerRef, groups: readonly string[] = []): boolean {
  for (const entry of scopes) {
    const { name, filter } = split(entry);
    if (name !== scope) continue;
    if (filter === undefined) return true;
    if (filter.kind === 'user' && filter.value === target.user) return true;
    if (filter.kind === 'server' && filter.value === serverLabel(target)) return true;
    if (filter.kind === 'group' && groups.includes(filter.value)) return true;
  }
  return false;
}

/** Whether deciding `scope` needs the target user's groups. */
export function dependsOnGroups(scopes: readonly string[], scope: string): boolean {
  return scopes.some((entry) => entry.startsWith(`${scope}!group=`));
}

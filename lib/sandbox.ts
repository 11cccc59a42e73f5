/**
 * Whether the daemon runs in a sandbox that users' sessions would inherit.
 *
 * Every session is a descendant of the daemon (it starts `sshd -i`, which
 * starts the user's shell): it sees the files and devices the daemon sees
 * (its mount namespace) and gets its system call filter and no_new_privs
 * flag. A daemon started under a sandboxing systemd unit (ProtectSystem=,
 * ProtectHome=, PrivateTmp=, RestrictAddressFamilies=, NoNewPrivileges=,
 * ...), or as a managed service of a JupyterHub whose unit has them (The
 * Littlest JupyterHub's hides /home and /tmp and the devices), hands all of
 * that to every user: empty homes, a read-only /etc, no GPU, no sudo.
 *
 * Each property is compared with PID 1's, so that a container, whose
 * processes all share one sandbox, is not reported.
 */
import fs from 'node:fs';
import path from 'node:path';

/** The fields of /proc/PID/status compared, and what a difference means for sessions. */
const STATUS_FIELDS: readonly { field: string; meaning: string }[] = [
  {
    field: 'NoNewPrivs',
    meaning: 'no_new_privs (NoNewPrivileges= or a filter that implies it): sudo and other setuid programs gain no privileges',
  },
  {
    field: 'Seccomp',
    meaning: 'a system call filter (SystemCallFilter=, RestrictAddressFamilies=, LockPersonality=, ...): the same calls are refused',
  },
];

function statusField(procRoot: string, pid: string, field: string): string | undefined {
  try {
    const status = fs.readFileSync(path.join(procRoot, pid, 'status'), 'utf8');
    return new RegExp(`^${field}:\\s*(\\S+)`, 'm').exec(status)?.[1];
  } catch {
    return undefined;
  }
}

/**
 * The IDs of the mounts a process sees. A mount namespace made as a copy
 * gives each of its mounts a new ID, so two processes see the same IDs only
 * in the same namespace. (/proc/1/ns/mnt would say it directly, but reading
 * it needs ptrace access to PID 1, which a sandbox may withhold from root.)
 */
function mountIds(procRoot: string, pid: string): string | undefined {
  try {
    const mountinfo = fs.readFileSync(path.join(procRoot, pid, 'mountinfo'), 'utf8');
    return mountinfo.split('\n').map((line) => line.split(' ', 1)[0]).join(' ');
  } catch {
    return undefined;
  }
}

/**
 * What of the daemon's sandbox reaches users' sessions: one phrase each, or
 * none. What cannot be read (no root, /proc mounted with hidepid) counts as
 * no difference.
 */
export function sandboxReachingSessions(procRoot = '/proc'): string[] {
  const found: string[] = [];
  const ownMounts = mountIds(procRoot, 'self');
  const initMounts = mountIds(procRoot, '1');
  if (ownMounts !== undefined && initMounts !== undefined && ownMounts !== initMounts) {
    found.push('a mount namespace of its own (ProtectSystem=, ProtectHome=, PrivateTmp=, PrivateDevices=, ...): files and devices look as they do to the daemon, not as to a login on this machine');
  }
  for (const { field, meaning } of STATUS_FIELDS) {
    const own = statusField(procRoot, 'self', field);
    const init = statusField(procRoot, '1', field);
    if (own !== undefined && init !== undefined && own !== init && own !== '0') found.push(meaning);
  }
  return found;
}

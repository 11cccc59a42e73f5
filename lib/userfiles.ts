/**
 * A user's file read with the user's file-system identity, as sshd reads a
 * user's authorized_keys (native/userfiles.c says how and why): read as
 * root, a home that root may not enter is refused, such as NFS exported
 * with root_squash.
 */
import { loadAddon } from './addons.js';

/** The unix account a file is read as. */
export interface FileReader {
  name: string;
  uid: number;
  gid: number;
}

export interface FileStat {
  dev: number;
  ino: number;
  uid: number;
  mode: number;
  regular: boolean;
}

/** What reading `file` found, or at which step and errno name it failed. */
export type UserFileRead =
  | { error: string; step: 'identity' | 'realpath' | 'open' | 'stat' }
  | {
      error?: undefined;
      /** The file's resolved name. */
      real: string;
      /** The home's resolved name; as given when it does not resolve. */
      realHome: string;
      /** The opened file. */
      file: FileStat;
      /** `real` looked up again after reading: another file if the name was swapped meanwhile. */
      named: FileStat;
      /** The folders from the file's own up to realHome or /. */
      dirs: { path: string; uid: number; mode: number }[];
      /** At most maxBytes + 1 bytes; null when the file is not a regular one (it is not read). */
      content: Buffer | null;
    };

interface UserFilesAddon {
  readAsUser(file: string, home: string, name: string, uid: number, gid: number, maxBytes: number): Promise<UserFileRead>;
}

const addon = loadAddon<UserFilesAddon>('userfiles', 'user files');

/** Reads `file` (a FIFO or device is opened, not read) as `reader`; a daemon not run as root reads as itself. */
export function readAsUser(file: string, home: string, reader: FileReader, maxBytes: number): Promise<UserFileRead> {
  return addon.readAsUser(file, home, reader.name, reader.uid, reader.gid, maxBytes);
}

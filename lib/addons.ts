/**
 * Loads the daemon's native addons (binding.gyp: native/*.c), which `npm ci`
 * builds with node-gyp. A missing build is a one-line reason at start-up
 * (bin/jupyter_ssh_proxy prints it), not a stack trace.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** `name`: the target in binding.gyp; `what`: how the error names the addon. */
export function loadAddon<T>(name: string, what: string): T {
  // Where node-gyp puts it, from dist/lib/.
  const file = `build/Release/${name}.node`;
  try {
    return require(`../../${file}`) as T;
  } catch (err) {
    // Only the reason: require's message goes on with its "Require stack".
    const reason = (err as Error).message.split('\n')[0];
    throw new Error(`the ${what} addon (${file}) does not load: ${reason}; ` + '`npm ci` builds it with node-gyp, which needs python3, make and a C compiler');
  }
}

/**
 * Loads a module while `Intl.ListFormat` builds its formatters on first use.
 *
 * got's dependency `@sindresorhus/is` (7.x and 8.x) builds two
 * `Intl.ListFormat('en')` when it loads, for one error message about
 * mismatched types. Building one reads ICU's locale data: pages of the node
 * binary and ICU objects that stay in the daemon's memory for good. A settled
 * daemon was 5 MiB smaller without them, fresh (80.1, 81.8 → 76.9, 76.2 MiB)
 * and with 1,000 idle sessions alike (115.8, 115.9 → 110.8, 111.0).
 *
 * The stand-in is in place only while the module loads; `Intl.ListFormat`
 * is the real class again afterwards. test/lazylistformat.test.ts fails if
 * got starts building formatters of its own in another way.
 */

type ListFormatArgs = ConstructorParameters<typeof Intl.ListFormat>;

function deferredListFormat(Real: typeof Intl.ListFormat): typeof Intl.ListFormat {
  class DeferredListFormat {
    private real?: Intl.ListFormat;
    private readonly args: ListFormatArgs;

    constructor(...args: ListFormatArgs) {
      this.args = args;
    }

    private formatter(): Intl.ListFormat {
      this.real ??= new Real(...this.args);
      return this.real;
    }

    format(list: Iterable<string>): string {
      return this.formatter().format(list);
    }

    formatToParts(list: Iterable<string>): ReturnType<Intl.ListFormat['formatToParts']> {
      return this.formatter().formatToParts(list);
    }

    resolvedOptions(): ReturnType<Intl.ListFormat['resolvedOptions']> {
      return this.formatter().resolvedOptions();
    }

    static supportedLocalesOf(...args: Parameters<typeof Intl.ListFormat.supportedLocalesOf>): string[] {
      return Real.supportedLocalesOf(...args);
    }
  }
  return DeferredListFormat as unknown as typeof Intl.ListFormat;
}

/** Runs `load` (a dynamic import) with a deferring `Intl.ListFormat` in place. */
export async function importWithLazyListFormat<T>(load: () => Promise<T>): Promise<T> {
  // A writable property at run time, like every Intl constructor; read-only in TypeScript's lib.
  const intl = Intl as { ListFormat: typeof Intl.ListFormat };
  const Real = intl.ListFormat;
  intl.ListFormat = deferredListFormat(Real);
  try {
    return await load();
  } finally {
    intl.ListFormat = Real;
  }
}

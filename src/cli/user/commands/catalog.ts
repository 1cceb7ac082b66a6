// atrium catalog ls / show: the packages one can launch (public: a server is enough, no token).
import { unwrap, type AtriumClient, type Schemas } from '@atrium/client';
import type { RegisterCommands } from '../../program.js';
import { CliError, exitCodes } from '../context.js';

/**
 * A package named as CATALOG/PACKAGE, or as PACKAGE alone when exactly one catalog has it.
 */
export async function resolvePackage(
  client: AtriumClient,
  reference: string,
): Promise<{ catalogId: string; packageName: string }> {
  const slash = reference.indexOf('/');
  if (slash > 0) return { catalogId: reference.slice(0, slash), packageName: reference.slice(slash + 1) };
  const found: string[] = [];
  for await (const catalog of client.paginate('/catalogs')) {
    const { response } = await client.GET('/catalogs/{catalogId}/packages/{packageName}', {
      params: { path: { catalogId: catalog.id, packageName: reference } },
    });
    if (response.ok) found.push(catalog.id);
  }
  if (found.length === 0)
    throw new CliError(`no catalog has a package named ${reference}`, exitCodes.notFound);
  if (found.length > 1)
    throw new CliError(
      `several catalogs have ${reference}: name one (${found.map((c) => `${c}/${reference}`).join(', ')})`,
      exitCodes.usage,
    );
  return { catalogId: found[0]!, packageName: reference };
}

export const registerCatalog: RegisterCommands = (program, act) => {
  const catalog = program.command('catalog').description('the catalogs and their packages');

  catalog
    .command('ls')
    .alias('list')
    .description('list the packages of every catalog (or of one, with --catalog)')
    .option('--catalog <id>', 'only this catalog')
    .option('-q, --search <text>', 'packages whose name, title, description or keywords contain this')
    .option('--keyword <word...>', 'packages carrying every one of these keywords')
    .action(
      act(async (ctx, _args, options) => {
        const client = ctx.client({ anonymous: true });
        const catalogIds: string[] = [];
        if (options.catalog) catalogIds.push(options.catalog as string);
        else for await (const c of client.paginate('/catalogs')) catalogIds.push(c.id);
        const rows: Schemas['PackageSummary'][] = [];
        for (const catalogId of catalogIds)
          for await (const item of client.paginate('/catalogs/{catalogId}/packages', {
            params: {
              path: { catalogId },
              query: {
                ...(options.search ? { q: options.search as string } : {}),
                ...(options.keyword ? { keyword: options.keyword as string[] } : {}),
              },
            },
          }))
            rows.push(item);
        ctx.table(rows, [
          { header: 'PACKAGE', value: (p) => `${p.catalog_id}/${p.name}` },
          { header: 'VERSION', value: (p) => p.latest_version },
          { header: 'TITLE', value: (p) => p.title },
          { header: 'KEYWORDS', value: (p) => p.keywords.join(',') },
        ]);
      }),
    );

  catalog
    .command('show')
    .description('one package: its description, versions, options and resources')
    .argument('<package>', 'CATALOG/PACKAGE, or PACKAGE when one catalog has it')
    .action(
      act(async (ctx, [reference]) => {
        const client = ctx.client({ anonymous: true });
        const { catalogId, packageName } = await resolvePackage(client, reference!);
        const pkg = unwrap(
          await client.GET('/catalogs/{catalogId}/packages/{packageName}', {
            params: { path: { catalogId, packageName } },
          }),
        );
        ctx.result(pkg, () => ctx.out(JSON.stringify(pkg, null, 2)));
      }),
    );
};

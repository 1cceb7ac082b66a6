// The built-in QPIs and plans: the YAML files of qpis/ and plans/ beside this module's source
// (read from src/ also when running from dist/, since the compiler copies no YAML).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../../paths.js';
import {
  BenchmarkDefinitionError,
  parsePlan,
  parseQpi,
  parseYamlDocument,
  type PlanDefinition,
  type QpiDefinition,
} from './definitions.js';

export const builtinDefinitionsDir = join(repoRoot, 'src', 'backends', 'benchmark');

export interface BenchmarkDefinitions {
  qpis: Map<string, QpiDefinition>;
  plans: Map<string, PlanDefinition>;
}

function readYamlDir(dir: string): { source: string; document: unknown }[] {
  return readdirSync(dir)
    .filter((file) => file.endsWith('.yaml'))
    .sort()
    .map((file) => {
      const source = join(dir, file);
      return { source, document: parseYamlDocument(readFileSync(source, 'utf8'), source) };
    });
}

function byName<T extends { name: string }>(items: { source: string; value: T }[]): Map<string, T> {
  const map = new Map<string, T>();
  for (const { source, value } of items) {
    if (map.has(value.name))
      throw new BenchmarkDefinitionError(source, [`name "${value.name}" is used twice`]);
    map.set(value.name, value);
  }
  return map;
}

/** Loads and validates every QPI of `dir/qpis` and every plan of `dir/plans`; throws on the first bad file. */
export function loadBenchmarkDefinitions(dir = builtinDefinitionsDir): BenchmarkDefinitions {
  const qpis = byName(
    readYamlDir(join(dir, 'qpis')).map(({ source, document }) => ({
      source,
      value: parseQpi(document, source),
    })),
  );
  const plans = byName(
    readYamlDir(join(dir, 'plans')).map(({ source, document }) => ({
      source,
      value: parsePlan(document, qpis, source),
    })),
  );
  return { qpis, plans };
}

// The order of package versions (semantic version precedence), shared by the catalog loader and
// the catalog's queries.
import semver from 'semver';

/** Newest first by semantic version precedence. */
export function compareVersionsDescending(a: string, b: string): number {
  return semver.rcompare(a, b);
}

/** The version a launch gets by default: the highest release, or the highest pre-release if there is no release. */
export function latestVersion(versions: string[]): string {
  const sorted = [...versions].sort(compareVersionsDescending);
  const latest = sorted.find((v) => semver.prerelease(v) === null) ?? sorted[0];
  if (latest === undefined) throw new RangeError('a package has at least one version');
  return latest;
}

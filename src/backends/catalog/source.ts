import type { PackageVersionSpec } from './manifest.js';

export interface LoadedVersion {
  spec: PackageVersionSpec;
  /** The directory holding the manifest: where the local runtime runs the package from. */
  sourceDir: string;
}

export interface CatalogIssue {
  file: string;
  message: string;
}

export interface CatalogContents {
  /** Valid versions, grouped by package name. */
  packages: Map<string, LoadedVersion[]>;
  /** Manifests that were rejected; the rest of the catalog is usable without them. */
  issues: CatalogIssue[];
}

/** Where a catalog's packages come from: a directory today, remote indexes later. */
export interface CatalogSource {
  /** Reads every manifest. Throws only when the source as a whole cannot be read. */
  load(): Promise<CatalogContents>;
}

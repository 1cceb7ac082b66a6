import type { Handler } from '../http/operation.js';
import { pageOf } from './paging.js';
import {
  page,
  presentCatalog,
  presentPackage,
  presentPackageSummary,
  presentPackageVersion,
} from './present.js';

export const listCatalogs: Handler<'listCatalogs'> = async ({ query }, { services }) => ({
  status: 200,
  body: page(await services.catalogs.list(pageOf(query)), presentCatalog),
});

export const getCatalog: Handler<'getCatalog'> = async ({ params }, { services }) => ({
  status: 200,
  body: presentCatalog(await services.catalogs.get(params.catalogId)),
});

export const refreshCatalog: Handler<'refreshCatalog'> = async ({ params }, { principal, services }) => ({
  status: 200,
  body: presentCatalog(await services.catalogs.refresh(principal, params.catalogId)),
});

export const listPackages: Handler<'listPackages'> = async ({ params, query }, { services }) => ({
  status: 200,
  body: page(
    await services.catalogs.listPackages(
      params.catalogId,
      { keywords: query.keyword, q: query.q },
      pageOf(query),
    ),
    presentPackageSummary,
  ),
});

export const getPackage: Handler<'getPackage'> = async ({ params }, { services }) => ({
  status: 200,
  body: presentPackage(await services.catalogs.getPackage(params.catalogId, params.packageName)),
});

export const getPackageVersion: Handler<'getPackageVersion'> = async ({ params }, { services }) => ({
  status: 200,
  body: presentPackageVersion(
    await services.catalogs.getPackageVersion(params.catalogId, params.packageName, params.version),
  ),
});

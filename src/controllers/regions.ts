import type { Handler } from '../http/operation.js';
import { pageOf } from './paging.js';
import { page, presentRegion } from './present.js';

export const listRegions: Handler<'listRegions'> = async ({ query }, { services }) => ({
  status: 200,
  body: page(services.regions.list(pageOf(query)), presentRegion),
});

export const getRegion: Handler<'getRegion'> = async ({ params }, { services }) => ({
  status: 200,
  body: presentRegion(services.regions.get(params.regionId)),
});

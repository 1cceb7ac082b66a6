import { pageSizeDefault } from '../services/platform.js';
import type { PageRequest } from '../services/model.js';

/** The shared list parameters; the spec bounds `limit` and the validator applies its default. */
export function pageOf(query: { limit?: number; cursor?: string }): PageRequest {
  return { limit: query.limit ?? pageSizeDefault, cursor: query.cursor };
}

import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import * as q from '../db/audit.js';
import type { AuditEvent, AuditFilter } from '../db/audit.js';
import type { Page, PageRequest } from '../db/pagination.js';
import { newId } from '../ids.js';
import { requireAdmin, type Principal } from './principal.js';

export class AuditService {
  private pending = new Set<Promise<void>>();

  constructor(private readonly deps: { db: Knex; clock: Clock; log: Logger }) {}

  /**
   * Records a mutating request after its response is sent, off the request's path. A failure to
   * record is logged, never turned into a failed request.
   */
  record(event: Omit<AuditEvent, 'id' | 'at'>): void {
    const write = q
      .insertAuditEvent(this.deps.db, { ...event, id: newId('aud'), at: iso(this.deps.clock()) })
      .catch((err: unknown) => this.deps.log.error({ err, event }, 'audit record lost'))
      .finally(() => this.pending.delete(write));
    this.pending.add(write);
  }

  /** Waits for records still being written (on shutdown, and in tests). */
  async flush(): Promise<void> {
    await Promise.all([...this.pending]);
  }

  list(principal: Principal, filter: AuditFilter, page: PageRequest): Promise<Page<AuditEvent>> {
    requireAdmin(principal);
    return q.listAuditEvents(this.deps.db, filter, page);
  }
}

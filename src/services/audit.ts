import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import * as q from '../db/audit.js';
import type { AuditEvent, AuditFilter } from '../db/audit.js';
import type { Page, PageRequest } from '../db/pagination.js';
import type { ChangeRecord } from '../db/with-change.js';
import { newId } from '../ids.js';
import { requireAdmin, type Principal } from './principal.js';

/** An audit record begun for a request: written with its first change, completed when it ends. */
export interface AuditDraft {
  event: AuditEvent;
  /** The rows to write with the request's change (the record, with the status it would end with). */
  records: () => ChangeRecord[];
  /** Set once the request's work is done: whether the record was written with a change. */
  written: boolean;
}

export class AuditService {
  private pending = new Set<Promise<void>>();

  constructor(private readonly deps: { db: Knex; clock: Clock; log: Logger }) {}

  /**
   * Begins the record of a mutating request. Its row is written with the request's first change, in
   * the same transaction (so that no change outlives a crash without its record), marked with the
   * status the operation answers on success; `finish` then records the status it really ended with.
   */
  begin(event: Omit<AuditEvent, 'id' | 'at'>): AuditDraft {
    const full: AuditEvent = { ...event, id: newId('aud'), at: iso(this.deps.clock()) };
    return { event: full, records: () => [{ table: q.auditTable, row: q.auditRow(full) }], written: false };
  }

  /**
   * Completes a record after the response was sent, off the request's path: the final status of one
   * written with its change, or the whole record of a request that changed nothing. A failure to
   * record is logged, never turned into a failed request.
   */
  finish(draft: AuditDraft, status: number): void {
    const { db } = this.deps;
    const event = { ...draft.event, status };
    if (draft.written) {
      if (status !== draft.event.status) this.track(q.updateAuditStatus(db, event.id, status), event);
    } else {
      this.track(q.insertAuditEvent(db, event), event);
    }
  }

  /** Records a mutating request that never reached its operation's work (refused before it). */
  record(event: Omit<AuditEvent, 'id' | 'at'>): void {
    this.track(
      q.insertAuditEvent(this.deps.db, { ...event, id: newId('aud'), at: iso(this.deps.clock()) }),
      event,
    );
  }

  private track(write: Promise<void>, event: Omit<AuditEvent, 'id' | 'at'>): void {
    const tracked = write
      .catch((err: unknown) => this.deps.log.error({ err, event }, 'audit record lost'))
      .finally(() => this.pending.delete(tracked));
    this.pending.add(tracked);
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

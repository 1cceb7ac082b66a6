import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import {
  conflict,
  DomainError,
  forbidden,
  notFound,
  operationProblemKinds,
  problemKinds,
  problemTypeBase,
  type OperationProblemKind,
  type ProblemKind,
} from '../errors.js';
import * as q from '../db/operations.js';
import type { OperationKind, OperationRecord } from '../db/operations.js';
import type { Page, PageRequest } from '../db/pagination.js';
import { appendEvent, listEvents } from '../db/events.js';
import { newId } from '../ids.js';
import { followEvents, type EventFeed } from './event-feed.js';
import { topics, type Notifier } from '../notifier.js';
import type { Principal } from './principal.js';
import { produced } from './changes.js';

/** The longest `Prefer: wait` honoured, in seconds. */
export const maxWaitSeconds = 60;

/** An operation's error: a problem document, as the API's errors are. */
export function operationProblem(
  kind: ProblemKind | OperationProblemKind,
  detail: string,
  extra: Record<string, unknown> = {},
) {
  const { status, title } =
    kind in operationProblemKinds
      ? operationProblemKinds[kind as OperationProblemKind]
      : problemKinds[kind as ProblemKind];
  return { type: `${problemTypeBase}${kind}`, title, status, detail, ...extra };
}

/** Stops what an operation stands for, as `principal` asked (checking what it must besides). */
export type Canceller = (principal: Principal, operation: OperationRecord) => Promise<void>;

/**
 * Whether `principal` may see what an operation acts on (its subject): resolves true, or false or
 * a not-found/forbidden error when they may not. Given by whoever owns each kind of subject.
 */
export type SubjectCheck = (principal: Principal, operation: OperationRecord) => Promise<boolean>;
type SubjectType = NonNullable<OperationRecord['target']>['type'];

export type OperationOutcome =
  | { status: 'succeeded'; message: string; result: Record<string, unknown> }
  | { status: 'failed' | 'cancelled'; message: string; error: Record<string, unknown> };

export class OperationService {
  private readonly cancellers = new Map<OperationKind, Canceller>();
  private readonly subjects = new Map<SubjectType, SubjectCheck>();

  constructor(private readonly deps: { db: Knex; clock: Clock; notifier: Notifier }) {}

  /**
   * How operations of `kind` are cancelled by whoever runs them (a pipeline run's jobs, a benchmark
   * run's); the others are asked to stop through their cancelRequested flag (launches).
   */
  cancelWith(kind: OperationKind, canceller: Canceller): void {
    this.cancellers.set(kind, canceller);
  }

  /** Who may see operations on subjects of `type`: those who may see the subject itself. */
  seeWith(type: SubjectType, check: SubjectCheck): void {
    this.subjects.set(type, check);
  }

  /** Records a new running operation, in the caller's transaction. */
  async create(
    trx: Knex.Transaction,
    input: {
      kind: OperationKind;
      projectId: string | null;
      target: OperationRecord['target'];
      userId: string;
      message: string;
    },
  ): Promise<OperationRecord> {
    const now = iso(this.deps.clock());
    const op: OperationRecord = {
      id: newId('op'),
      kind: input.kind,
      projectId: input.projectId,
      target: input.target,
      userId: input.userId,
      status: 'running',
      progress: 0,
      message: input.message,
      error: null,
      result: null,
      cancelRequested: false,
      createdAt: now,
      updatedAt: now,
      finishedAt: null,
    };
    // What a launch or a run request answers with: kept with it under an Idempotency-Key.
    produced(op);
    await q.insertOperation(trx, op);
    await appendEvent(trx, 'operation', op.id, {
      at: now,
      type: 'created',
      message: input.message,
      data: {},
    });
    return op;
  }

  /** Records progress of a running operation (ignored once it is done). */
  async progress(
    id: string,
    progress: number,
    message: string,
    data: Record<string, unknown> = {},
  ): Promise<void> {
    const { db, clock, notifier } = this.deps;
    const at = iso(clock());
    await db.transaction(async (trx) => {
      if (await q.updateRunningOperation(trx, id, { progress, message }, at)) {
        await appendEvent(trx, 'operation', id, {
          at,
          type: 'progress',
          message,
          data: { progress, ...data },
        });
      }
    });
    notifier.notify(topics.operation(id));
  }

  /** Ends a running operation; a finished one never changes again. */
  async finish(id: string, outcome: OperationOutcome): Promise<void> {
    await this.deps.db.transaction((trx) => this.finishIn(trx, id, outcome));
    this.deps.notifier.notify(topics.operation(id));
  }

  /** Ends a running operation in the caller's transaction; waiters are woken when it commits. */
  async finishIn(trx: Knex.Transaction, id: string, outcome: OperationOutcome): Promise<void> {
    const at = iso(this.deps.clock());
    const changes: q.OperationChanges = {
      status: outcome.status,
      message: outcome.message,
      finishedAt: at,
    };
    if (outcome.status === 'succeeded') {
      changes.progress = 100;
      changes.result = outcome.result;
    } else {
      changes.error = outcome.error;
    }
    if (await q.updateRunningOperation(trx, id, changes, at)) {
      await appendEvent(trx, 'operation', id, {
        at,
        type: 'done',
        message: outcome.message,
        data: { status: outcome.status },
      });
    }
    this.notifyOnCommit(trx, id);
  }

  /** Records progress in the caller's transaction (ignored once the operation is done). */
  async progressIn(
    trx: Knex.Transaction,
    id: string,
    progress: number,
    message: string,
    data: Record<string, unknown> = {},
  ): Promise<void> {
    const at = iso(this.deps.clock());
    if (await q.updateRunningOperation(trx, id, { progress, message }, at)) {
      await appendEvent(trx, 'operation', id, { at, type: 'progress', message, data: { progress, ...data } });
    }
    this.notifyOnCommit(trx, id);
  }

  private notifyOnCommit(trx: Knex.Transaction, id: string): void {
    void trx.executionPromise?.then(
      () => this.deps.notifier.notify(topics.operation(id)),
      () => undefined,
    );
  }

  async setResult(id: string, result: Record<string, unknown>): Promise<void> {
    await q.updateRunningOperation(this.deps.db, id, { result }, iso(this.deps.clock()));
  }

  /**
   * One item of a bulk operation is done: it moves from `pending` to `done` in the operation's
   * result, under a row lock (items finish concurrently); the operation ends with its last item.
   */
  async bulkItemDone(id: string, item: string): Promise<void> {
    const { db, clock, notifier } = this.deps;
    const at = iso(clock());
    await db.transaction(async (trx) => {
      const op = await q.findOperationForUpdate(trx, id);
      const pending = (op?.result?.pending as string[] | undefined) ?? [];
      if (!op || op.status !== 'running' || !pending.includes(item)) return;
      const left = pending.filter((p) => p !== item);
      const done = [...((op.result?.done as string[] | undefined) ?? []), item];
      const progress = Math.round((100 * done.length) / (done.length + left.length));
      const message =
        left.length === 0 ? `all ${done.length} done` : `${done.length} done, ${left.length} to go`;
      const changes: q.OperationChanges = { result: { pending: left, done }, progress, message };
      if (left.length === 0) Object.assign(changes, { status: 'succeeded', finishedAt: at });
      await q.updateRunningOperation(trx, id, changes, at);
      await appendEvent(trx, 'operation', id, {
        at,
        type: left.length === 0 ? 'done' : 'progress',
        message,
        data: left.length === 0 ? { status: 'succeeded' } : { progress, item },
      });
    });
    notifier.notify(topics.operation(id));
  }

  /** The running operations that act on a target. */
  running(targetId: string): Promise<OperationRecord[]> {
    return q.findRunningOperations(this.deps.db, targetId);
  }

  find(id: string): Promise<OperationRecord | null> {
    return q.findOperation(this.deps.db, id);
  }

  /**
   * An operation the principal may see: one they started, one whose subject they may see (a
   * member does not see the launch of another member's unshared service), or any for admins.
   */
  async get(principal: Principal, id: string): Promise<OperationRecord> {
    const op = await q.findOperation(this.deps.db, id);
    if (!op || !(await this.visible(principal, op))) throw notFound('operation', id);
    return op;
  }

  private async visible(principal: Principal, op: OperationRecord): Promise<boolean> {
    if (principal.user.admin || op.userId === principal.user.id) return true;
    const check = op.target ? this.subjects.get(op.target.type) : undefined;
    if (!check) return false;
    try {
      return await check(principal, op);
    } catch (error) {
      if (error instanceof DomainError && (error.kind === 'not-found' || error.kind === 'forbidden')) {
        return false;
      }
      throw error;
    }
  }

  list(
    principal: Principal,
    filter: {
      projectId?: string | undefined;
      status?: q.OperationStatus | undefined;
      all?: boolean | undefined;
    },
    page: PageRequest,
  ): Promise<Page<OperationRecord>> {
    if (filter.all && !principal.user.admin)
      throw forbidden('only platform administrators may list every operation');
    return q.listOperations(
      this.deps.db,
      { userId: filter.all ? null : principal.user.id, projectId: filter.projectId, status: filter.status },
      page,
    );
  }

  /**
   * Holds until the operation is done or `seconds` have passed, whichever first; returns it then.
   * Wakes on in-process notifications and polls the database (other API processes) twice a second.
   */
  async wait(id: string, seconds: number, signal?: AbortSignal): Promise<OperationRecord | null> {
    const deadline = Date.now() + Math.min(seconds, maxWaitSeconds) * 1000;
    let op = await q.findOperation(this.deps.db, id);
    for (
      let round = 0;
      round < maxWaitSeconds * 10 && op && op.status === 'running' && !signal?.aborted;
      round++
    ) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      await this.deps.notifier.wait(topics.operation(id), Math.min(left, 500), signal);
      op = await q.findOperation(this.deps.db, id);
    }
    return op;
  }

  /** Asks a running operation to stop; what stopping means is up to whoever runs it. */
  async requestCancel(principal: Principal, id: string): Promise<OperationRecord> {
    const op = await this.get(principal, id);
    if (op.userId !== principal.user.id && !principal.user.admin) {
      throw forbidden('only whoever started an operation (or an administrator) may cancel it');
    }
    if (op.status !== 'running') throw conflict(`operation ${id} is already ${op.status}`);
    const canceller = this.cancellers.get(op.kind);
    if (canceller) {
      await canceller(principal, op);
      return (await q.findOperation(this.deps.db, id)) as OperationRecord;
    }
    if (op.kind !== 'launch-service') throw conflict(`a ${op.kind} operation cannot be cancelled`);
    await q.updateRunningOperation(
      this.deps.db,
      id,
      { cancelRequested: true, message: 'cancelling' },
      iso(this.deps.clock()),
    );
    this.deps.notifier.notify(topics.operation(id));
    return (await q.findOperation(this.deps.db, id)) as OperationRecord;
  }

  /** The events of an operation the principal may see, followed until it ends. */
  async *events(
    principal: Principal,
    id: string,
    options: { afterSeq: number; follow: boolean; signal: AbortSignal },
  ): EventFeed {
    await this.get(principal, id);
    yield* followEvents(
      {
        read: (after) => listEvents(this.deps.db, 'operation', id, after, 100),
        ended: async () => (await q.findOperation(this.deps.db, id))?.status !== 'running',
        topic: topics.operation(id),
        notifier: this.deps.notifier,
      },
      options,
    );
  }
}

// Pipelines: ordered tasks, each validated against its function's options schema when saved, and
// editable and reorderable afterwards (runs keep a copy of the tasks they were made with).
import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import * as q from '../db/pipelines.js';
import type { PipelineRecord, PipelineTask } from '../db/pipelines.js';
import type { Page, PageRequest } from '../db/pagination.js';
import { DomainError, notFound, type FieldError } from '../errors.js';
import { newId } from '../ids.js';
import { checkIfMatch, etagFor } from './etag.js';
import type { ModuleService } from './modules.js';
import type { Principal } from './principal.js';
import type { ProjectService } from './projects.js';
import { produced } from './changes.js';

export type { PipelineRecord, PipelineTask } from '../db/pipelines.js';

export const pipelineEtag = (p: PipelineRecord) => etagFor(p.version, p.updatedAt);

export interface TaskInput {
  module: string;
  function: string;
  options?: Record<string, unknown> | undefined;
}

export class PipelineService {
  constructor(
    private readonly deps: { db: Knex; clock: Clock; projects: ProjectService; modules: ModuleService },
  ) {}

  /**
   * Every task's function must exist and accept its options; returns the tasks with defaults
   * applied, or throws 422 listing every problem with a pointer into the request body.
   */
  async validateTasks(tasks: TaskInput[]): Promise<PipelineTask[]> {
    const errors: FieldError[] = [];
    const valid: PipelineTask[] = [];
    for (const [i, task] of tasks.entries()) {
      const options = task.options ?? {};
      try {
        const outcome = await this.deps.modules.validateOptions(task.module, task.function, options);
        if ('errors' in outcome) {
          for (const e of outcome.errors) {
            errors.push({
              location: 'body',
              pointer: `/tasks/${i}/options${e.pointer === '/' ? '' : e.pointer}`,
              message: e.message,
            });
          }
        } else {
          valid.push({ module: task.module, function: task.function, options: outcome.value });
        }
      } catch (error) {
        if (!(error instanceof DomainError && error.kind === 'not-found')) throw error;
        errors.push({ location: 'body', pointer: `/tasks/${i}`, message: error.detail });
      }
    }
    if (errors.length > 0) {
      throw new DomainError(
        'unprocessable',
        `${errors.length} problem${errors.length === 1 ? '' : 's'} with the tasks: ${errors
          .map((e) => `${e.pointer} ${e.message}`)
          .join('; ')}`,
        { errors },
      );
    }
    return valid;
  }

  async create(
    principal: Principal,
    projectId: string,
    input: {
      name: string;
      description?: string | undefined;
      enabled?: boolean | undefined;
      tasks: TaskInput[];
    },
  ): Promise<PipelineRecord> {
    await this.deps.projects.access(principal, projectId, 'member');
    const tasks = await this.validateTasks(input.tasks);
    const now = iso(this.deps.clock());
    const pipeline: PipelineRecord = {
      id: newId('pipe'),
      projectId,
      name: input.name,
      description: input.description ?? '',
      enabled: input.enabled ?? true,
      tasks,
      createdBy: principal.user.id,
      version: 1,
      createdAt: now,
      updatedAt: now,
    };
    await this.deps.db.transaction(async (trx) => {
      produced(pipeline);
      await q.insertPipeline(trx, pipeline);
    });
    return pipeline;
  }

  /** A pipeline of the project (any member may read it). */
  async get(principal: Principal, projectId: string, pipelineId: string): Promise<PipelineRecord> {
    await this.deps.projects.readable(principal, projectId);
    return this.find(projectId, pipelineId);
  }

  async find(projectId: string, pipelineId: string): Promise<PipelineRecord> {
    const pipeline = await q.findPipeline(this.deps.db, projectId, pipelineId);
    if (!pipeline) throw notFound('pipeline', pipelineId);
    return pipeline;
  }

  async list(
    principal: Principal,
    projectId: string,
    filter: { enabled?: boolean | undefined },
    page: PageRequest,
  ): Promise<Page<PipelineRecord>> {
    await this.deps.projects.readable(principal, projectId);
    return q.listPipelines(this.deps.db, projectId, filter, page);
  }

  private async changeable(
    principal: Principal,
    projectId: string,
    pipelineId: string,
  ): Promise<PipelineRecord> {
    return this.deps.projects.changeable(
      principal,
      projectId,
      () => this.find(projectId, pipelineId),
      'only whoever created a pipeline, the project owners and administrators may change it',
    );
  }

  async update(
    principal: Principal,
    projectId: string,
    pipelineId: string,
    changes: {
      name?: string | undefined;
      description?: string | undefined;
      enabled?: boolean | undefined;
      tasks?: TaskInput[] | undefined;
    },
    ifMatch: string | undefined,
  ): Promise<PipelineRecord> {
    const pipeline = await this.changeable(principal, projectId, pipelineId);
    checkIfMatch(ifMatch, pipelineEtag(pipeline), `pipeline ${pipelineId}`);
    const tasks = changes.tasks ? await this.validateTasks(changes.tasks) : undefined;
    const { name, description, enabled } = changes;
    const updated = await q.updatePipeline(
      this.deps.db,
      projectId,
      pipelineId,
      { name, description, enabled, tasks },
      pipeline.version,
      iso(this.deps.clock()),
    );
    if (!updated) checkIfMatch('"stale"', pipelineEtag(pipeline), `pipeline ${pipelineId}`);
    return this.find(projectId, pipelineId);
  }

  async delete(principal: Principal, projectId: string, pipelineId: string, ifMatch: string | undefined) {
    const pipeline = await this.changeable(principal, projectId, pipelineId);
    checkIfMatch(ifMatch, pipelineEtag(pipeline), `pipeline ${pipelineId}`);
    if (!(await q.deletePipeline(this.deps.db, projectId, pipelineId, pipeline.version))) {
      checkIfMatch('"stale"', pipelineEtag(pipeline), `pipeline ${pipelineId}`);
    }
  }
}

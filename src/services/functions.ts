// Service functions: what a package version declares its service can do (name, input and output
// schemas, timeout, idempotency, cache), performed by a driver on the running service. A call is
// synchronous (the answer carries the result) or queued: then it is a durable scheduler job on the
// service's own queue (at most `functions.concurrency` of them run at once), tried again only if the function is
// idempotent, and its result is kept for a while. A service offers the functions of its package
// version (declared, and its scope's) and those of every plugin driver registered for its app
// (drivers.ts): a name both offer is the package's, so a plugin never changes what a package says.
import { createHash } from 'node:crypto';
import { Ajv2020, type AnySchema, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { ServiceFunctionSpec } from '../backends/catalog/manifest.js';
import type { PortReach } from '../backends/cluster/types.js';
import { DriverError, ping, type DriverContext } from '../backends/drivers/http-json.js';
import { callPlugin } from '../backends/drivers/plugin.js';
import {
  JobFailure,
  type JobHandler,
  type JobRecord,
  type RunContext,
  type Scheduler,
  type Transition,
} from '../backends/scheduler/scheduler.js';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import * as q from '../db/calls.js';
import type { CallRecord } from '../db/calls.js';
import type { Page, PageRequest } from '../db/pagination.js';
import { findService, type ServiceRecord } from '../db/services.js';
import { conflict, DomainError, notFound, type FieldError } from '../errors.js';
import { newId } from '../ids.js';
import type { Notifier } from '../notifier.js';
import type { AppVersion, DriverService, PluginDriver, PluginFunction } from './drivers.js';
import { healthOf, portAddress, type GatewayService } from './gateway.js';
import type { Principal } from './principal.js';
import type { ServiceManager } from './services.js';

export const serviceCallKind = 'service-call';
const callTopic = (id: string) => `call:${id}`;
const maxWaitSeconds = 60;

export interface FunctionSettings {
  /** Queued calls of one service running at the same time, at most. */
  concurrency: number;
  /** How long a call's result is kept after it ended. */
  resultTtlMs: number;
}

interface FunctionDeps {
  db: Knex;
  clock: Clock;
  log: Logger;
  notifier: Notifier;
  scheduler: Scheduler;
  serviceManager: ServiceManager;
  gateway: GatewayService;
  drivers: DriverService;
  /** The content of a file of a project, at most `maxBytes` (null: no such file, or larger). */
  fileContent(projectId: string, fileId: string, maxBytes: number): Promise<Buffer | null>;
  settings: FunctionSettings;
}

/** A function a service offers: its package's (performed by a native driver), or a plugin's. */
export type OfferedFunction =
  | (ServiceFunctionSpec & { plugin: null })
  | (PluginFunction & { driver: string; http: null; plugin: PluginDriver });

/** A function as a service offers it. */
export type ServiceFunctionView = OfferedFunction & { serviceId: string };

/**
 * The app a service runs, which plugins are chosen by: the one its package version named, else its
 * package's name and version.
 */
export const appOf = (service: ServiceRecord): AppVersion =>
  service.app ?? { name: service.packageName, version: service.packageVersion };

/** Where a call reaches the service: one port's address (native drivers), or every http port's (plugins). */
type Reach = string | Record<string, string>;

/** A call, with its place in the queue while it waits. */
export interface CallView extends CallRecord {
  position: number | null;
}

/** The outcome of a call request: the call, and whether its result came from the cache. */
export interface CallOutcome {
  call: CallView;
  cache: 'hit' | 'miss' | 'none';
}

export class FunctionService {
  private readonly ajv = new Ajv2020({ strict: false, allErrors: true });
  private readonly validators = new Map<string, ValidateFunction>();

  constructor(private readonly deps: FunctionDeps) {
    addFormats.default(this.ajv);
  }

  async list(principal: Principal, projectId: string, serviceId: string): Promise<ServiceFunctionView[]> {
    const service = await this.deps.serviceManager.get(principal, projectId, serviceId);
    return (await this.offered(service)).map((f) => ({ ...f, serviceId }));
  }

  /** The package version's functions, then those of the plugins for its app whose names are free. */
  private async offered(service: ServiceRecord): Promise<OfferedFunction[]> {
    const own: OfferedFunction[] = service.functions.map((f) => ({ ...f, plugin: null }));
    const taken = new Set(own.map((f) => f.name));
    const plugins = (await this.deps.drivers.functionsForApp(appOf(service)))
      .filter(({ fn }) => !taken.has(fn.name))
      .map(({ plugin, fn }): OfferedFunction => ({ ...fn, driver: plugin.name, http: null, plugin }));
    return [...own, ...plugins];
  }

  async get(
    principal: Principal,
    projectId: string,
    serviceId: string,
    name: string,
  ): Promise<ServiceFunctionView> {
    const service = await this.deps.serviceManager.get(principal, projectId, serviceId);
    return { ...(await this.functionOf(service, name)), serviceId };
  }

  private async functionOf(service: ServiceRecord, name: string): Promise<OfferedFunction> {
    const fn = (await this.offered(service)).find((f) => f.name === name);
    if (!fn) throw notFound(`function of service ${service.id}`, name);
    return fn;
  }

  /**
   * Where the service is reached for this function, or the problem (503 while it does not run).
   * A plugin gets the address of every http port: it decides which it calls.
   */
  private reach(service: ServiceRecord, fn: OfferedFunction): Reach {
    const reached = this.deps.gateway.reaches(service.regionId);
    if (!fn.plugin) return portAddress(service, fn.http.port, reached);
    // The ports its run specs declare, and those it reports (a backend Atrium did not launch has
    // no run spec, only endpoints).
    const ports = [
      ...(service.runSpec.local?.ports ?? []),
      ...(service.runSpec.cluster?.ports ?? []),
      ...service.endpoints.map((e) => ({ name: e.port, protocol: e.protocol })),
    ];
    const names = [...new Set(ports.filter((p) => p.protocol === 'http').map((p) => p.name))];
    return Object.fromEntries(names.map((port) => [port, portAddress(service, port, reached)]));
  }

  private validator(
    service: ServiceRecord,
    fn: OfferedFunction,
    which: 'input' | 'output',
  ): ValidateFunction {
    // A plugin registered again under the same name may declare other schemas: its registration time tells them apart.
    const key = fn.plugin
      ? `plugin:${fn.plugin.name}@${fn.plugin.createdAt}/${fn.name}/${which}`
      : `${service.catalogId}/${service.packageName}@${service.packageVersion}/${fn.name}/${which}`;
    let validate = this.validators.get(key);
    if (!validate) {
      const { $id: _ignored, ...schema } = (which === 'input' ? fn.input : fn.output) ?? {};
      validate = this.ajv.compile(schema as AnySchema);
      if (this.validators.size >= 1000) this.validators.delete(this.validators.keys().next().value as string);
      this.validators.set(key, validate);
    }
    return validate;
  }

  private checkInput(service: ServiceRecord, fn: OfferedFunction, input: unknown): void {
    const validate = this.validator(service, fn, 'input');
    if (validate(structuredClone(input))) return;
    const errors: FieldError[] = (validate.errors ?? []).map((e) => ({
      location: 'body',
      pointer: `/input${e.instancePath}${e.keyword === 'additionalProperties' ? `/${String(e.params.additionalProperty)}` : ''}`,
      message: e.message ?? 'invalid',
      code: e.keyword,
    }));
    throw new DomainError('validation', `the input does not match the input schema of ${fn.name}`, {
      errors,
    });
  }

  private cacheKeyOf(fn: OfferedFunction, input: unknown): string | null {
    return fn.cache_ttl_s > 0
      ? createHash('sha256')
          .update(`${fn.name}\n${canonicalJson(input)}`)
          .digest('hex')
      : null;
  }

  private expiry(from: Date): string {
    return iso(new Date(from.getTime() + this.deps.settings.resultTtlMs));
  }

  /**
   * Calls a function: validates the input, then answers from the cache (a cacheable function with
   * the same input, recently), performs it now (`sync`), or queues it as a job.
   */
  async call(
    principal: Principal,
    projectId: string,
    serviceId: string,
    name: string,
    input: unknown,
    { sync, signal }: { sync: boolean; signal: AbortSignal },
  ): Promise<CallOutcome> {
    const { db, clock } = this.deps;
    const service = await this.deps.serviceManager.get(principal, projectId, serviceId);
    const fn = await this.functionOf(service, name);
    this.checkInput(service, fn, input);
    const cacheKey = this.cacheKeyOf(fn, input);
    const now = clock();
    if (cacheKey) {
      const since = iso(new Date(now.getTime() - fn.cache_ttl_s * 1000));
      const hit = await q.cachedCall(db, serviceId, fn.name, cacheKey, since);
      if (hit) return { call: { ...hit, position: null }, cache: 'hit' };
    }
    const call: CallRecord = {
      id: newId('call'),
      serviceId,
      projectId,
      function: fn.name,
      input,
      status: sync ? 'running' : 'queued',
      sync,
      result: null,
      error: null,
      jobId: null,
      cacheKey,
      userId: principal.user.id,
      createdAt: iso(now),
      startedAt: sync ? iso(now) : null,
      finishedAt: null,
      expiresAt: null,
    };
    if (sync) {
      // The address first: a service that does not run (or a plugin that is down) answers 503
      // before anything is recorded.
      const address = this.reach(service, fn);
      if (fn.plugin) await this.deps.drivers.ensureUp(fn.plugin);
      await q.insertCall(db, call);
      const ended = await this.perform(call, service, fn, address, signal);
      if (ended.status === 'failed') throw problemOf(ended.error ?? {}, fn);
      return { call: { ...ended, position: null }, cache: cacheKey ? 'miss' : 'none' };
    }
    await db.transaction(async (trx) => {
      await q.insertCall(trx, call);
      const job = await this.deps.scheduler.enqueue(trx, {
        kind: serviceCallKind,
        projectId,
        payload: { callId: call.id },
        maxAttempts: fn.idempotent ? 3 : 1,
        concurrencyKey: `service-call:${serviceId}`,
        concurrencyLimit: this.deps.settings.concurrency,
      });
      await q.setCallJob(trx, call.id, job.id);
      call.jobId = job.id;
    });
    return { call: await this.view(call), cache: cacheKey ? 'miss' : 'none' };
  }

  /** Performs a call on the service and records how it ended. */
  private async perform(
    call: CallRecord,
    service: ServiceRecord,
    fn: OfferedFunction,
    address: Reach,
    signal: AbortSignal,
  ): Promise<CallRecord> {
    const outcome = await this.attempt(service, fn, call.input, address, signal);
    const at = this.deps.clock();
    await q.finishCall(this.deps.db, call.id, outcome, iso(at), this.expiry(at));
    this.deps.notifier.notify(callTopic(call.id));
    return (await q.findCall(this.deps.db, call.id)) as CallRecord;
  }

  /** One try: the driver's answer checked against the output schema, or the problem. */
  private async attempt(
    service: ServiceRecord,
    fn: OfferedFunction,
    input: unknown,
    address: Reach,
    signal: AbortSignal,
  ): Promise<
    | { status: 'succeeded'; result: unknown }
    | { status: 'failed'; error: Record<string, unknown>; retriable: boolean }
  > {
    const driver = fn.plugin ? null : this.deps.drivers.native(fn.driver);
    if (!fn.plugin && !driver)
      return {
        status: 'failed',
        error: callProblem('bad-gateway', `no driver ${fn.driver}`),
        retriable: false,
      };
    const timeout = AbortSignal.timeout(fn.timeout_ms);
    // The way to the port, kept to tell the way in's own refusals from the service's answers.
    let target: PortReach | null = null;
    try {
      const both = AbortSignal.any([signal, timeout]);
      let result: unknown;
      if (fn.plugin) {
        const endpoints = typeof address === 'string' ? {} : address;
        const { id, projectId } = service;
        result = await callPlugin(
          fn.plugin,
          fn.name,
          input,
          { id, projectId, app: appOf(service), endpoints },
          both,
        ).catch(async (error: unknown) => {
          // Seen down now rather than at the next health round: the next sync call is refused fast.
          if (error instanceof DriverError && error.reason === 'unreachable' && fn.plugin)
            await this.deps.drivers.noteDown(fn.plugin, error.message);
          throw error;
        });
      } else if (driver) {
        const sent = driver.prepare ? await driver.prepare(fn, input, this.driverContext(service)) : input;
        // The port as its backend reaches it (an API server's service proxy, say), now.
        target = await this.deps.gateway.reach(service, fn.http.port).catch((error: unknown) => {
          throw error instanceof DomainError ? new DriverError('unreachable', error.detail) : error;
        });
        result = await driver.call(fn, sent, target, both);
      }
      if (fn.output) {
        const validate = this.validator(service, fn, 'output');
        if (!validate(result)) {
          return {
            status: 'failed',
            error: callProblem(
              'bad-gateway',
              `${fn.name} answered something that does not match its output schema: ${this.ajv.errorsText(validate.errors)}`,
            ),
            retriable: false,
          };
        }
      }
      return { status: 'succeeded', result };
    } catch (error) {
      if (!(error instanceof DriverError)) throw error;
      // An API server's service proxy saying no (no ready pod, say): its problem, not its words.
      const refused = error.answer ? target?.refusal?.(error.answer.status, error.answer.body) : null;
      if (refused) {
        return { status: 'failed', error: callProblem(refused.kind, refused.detail), retriable: true };
      }
      const timedOut = error.reason === 'timeout' && timeout.aborted;
      const kind = timedOut
        ? 'gateway-timeout'
        : error.answer && error.answer.status < 500
          ? 'unprocessable'
          : 'bad-gateway';
      const detail = timedOut ? `${fn.name} did not answer within ${fn.timeout_ms} ms` : error.message;
      return {
        status: 'failed',
        error: callProblem(
          kind,
          detail,
          error.answer ? { service_status: error.answer.status, service_answer: error.answer.body } : {},
        ),
        retriable: error.retriable,
      };
    }
  }

  /** What a driver may read for a call on this service: files of its project. */
  private driverContext(service: ServiceRecord): DriverContext {
    return {
      readFile: async (fileId, maxBytes) => {
        const content = await this.deps.fileContent(service.projectId, fileId, maxBytes);
        if (!content) {
          throw new DriverError(
            'refused',
            `no file ${fileId} of at most ${maxBytes} bytes in ${service.projectId}`,
            {
              status: 404,
              body: { error: `no file ${fileId}` },
            },
          );
        }
        return content;
      },
    };
  }

  private async view(call: CallRecord): Promise<CallView> {
    return {
      ...call,
      position: call.status === 'queued' ? await q.positionInQueue(this.deps.db, call) : null,
    };
  }

  private async callOf(
    principal: Principal,
    projectId: string,
    serviceId: string,
    callId: string,
  ): Promise<CallRecord> {
    await this.deps.serviceManager.get(principal, projectId, serviceId);
    const call = await q.findCall(this.deps.db, callId);
    if (!call || call.serviceId !== serviceId) throw notFound('call', callId);
    return call;
  }

  async getCall(
    principal: Principal,
    projectId: string,
    serviceId: string,
    callId: string,
    wait: { seconds: number; signal: AbortSignal } | null,
  ): Promise<CallView> {
    let call = await this.callOf(principal, projectId, serviceId, callId);
    if (wait) {
      const deadline = Date.now() + Math.min(wait.seconds, maxWaitSeconds) * 1000;
      for (let round = 0; round < maxWaitSeconds * 10 && !ended(call) && !wait.signal.aborted; round++) {
        const left = deadline - Date.now();
        if (left <= 0) break;
        await this.deps.notifier.wait(callTopic(callId), Math.min(left, 500), wait.signal);
        call = (await q.findCall(this.deps.db, callId)) ?? call;
      }
    }
    return this.view(call);
  }

  async listCalls(
    principal: Principal,
    projectId: string,
    serviceId: string,
    page: PageRequest,
  ): Promise<Page<CallView>> {
    await this.deps.serviceManager.get(principal, projectId, serviceId);
    const found = await q.listCalls(this.deps.db, serviceId, page);
    return { ...found, items: await Promise.all(found.items.map((c) => this.view(c))) };
  }

  /** Cancels a queued call (409 once it runs or has ended). Whoever made it, or may change the service. */
  async cancelCall(
    principal: Principal,
    projectId: string,
    serviceId: string,
    callId: string,
  ): Promise<CallView> {
    const call = await this.callOf(principal, projectId, serviceId, callId);
    if (call.userId !== principal.user.id)
      await this.deps.serviceManager.checkWrite(principal, projectId, serviceId);
    if (call.status !== 'queued' || !call.jobId)
      throw conflict(`call ${callId} is ${call.status}: only a queued call can be cancelled`);
    const jobId = call.jobId;
    await this.deps.db.transaction(async (trx) => {
      // The job's cancellation ends the call too (onTransition), in this transaction.
      if (!(await this.deps.scheduler.cancelIfLive(trx, jobId, 'the call was cancelled'))) {
        throw conflict(`call ${callId} has started meanwhile`);
      }
    });
    const after = (await q.findCall(this.deps.db, callId)) as CallRecord;
    if (after.status === 'running') throw conflict(`call ${callId} has started meanwhile`);
    this.deps.notifier.notify(callTopic(callId));
    return this.view(after);
  }

  /** Whether the service answers: its health path (or its first http port's root) through the driver's ping. */
  async heartbeat(principal: Principal, projectId: string, serviceId: string, signal: AbortSignal) {
    const service = await this.deps.serviceManager.get(principal, projectId, serviceId);
    const health = healthOf(service);
    if (!health) throw new DomainError('unprocessable', `${service.name} has no http port to ping`);
    const address = await this.deps.gateway.reach(service, health.port);
    const started = performance.now();
    try {
      const { status } = await ping(
        address,
        health.path,
        AbortSignal.any([signal, AbortSignal.timeout(5000)]),
      );
      return {
        status: status < 500 ? ('up' as const) : ('down' as const),
        httpStatus: status,
        latencyMs: performance.now() - started,
        at: iso(this.deps.clock()),
      };
    } catch (error) {
      if (!(error instanceof DriverError)) throw error;
      throw new DomainError(error.reason === 'timeout' ? 'gateway-timeout' : 'bad-gateway', error.message);
    }
  }

  /** Removes the calls whose results have expired. */
  purgeExpired(): Promise<number> {
    return q.purgeExpiredCalls(this.deps.db, iso(this.deps.clock()));
  }

  /** The scheduler's handler of queued calls. */
  handler(): JobHandler {
    return {
      run: (job, ctx) => this.runJob(job, ctx),
      commit: async (trx, job, result) => {
        const at = this.deps.clock();
        await q.finishCall(
          trx,
          callIdOf(job),
          { status: 'succeeded', result: result.result ?? null },
          iso(at),
          this.expiry(at),
        );
      },
      onTransition: (trx, job, transition) => this.onTransition(trx, job, transition),
    };
  }

  private async runJob(job: JobRecord, ctx: RunContext): Promise<Record<string, unknown>> {
    const { db, clock } = this.deps;
    const callId = callIdOf(job);
    const call = await q.findCall(db, callId);
    if (!call || (call.status !== 'queued' && call.status !== 'running')) {
      throw new JobFailure(`call ${callId} is ${call?.status ?? 'gone'}`, false);
    }
    await q.startCall(db, callId, iso(clock()));
    this.deps.notifier.notify(callTopic(callId));
    const service = await findService(db, call.serviceId);
    if (!service)
      throw new JobFailure('the service is gone', false, {
        problem: callProblem('not-found', 'the service is gone'),
      });
    const fn = (await this.offered(service)).find((f) => f.name === call.function);
    if (!fn)
      throw new JobFailure(`the service has no function ${call.function}`, false, {
        problem: callProblem('not-found', `no function ${call.function}`),
      });
    let address: Reach;
    try {
      address = this.reach(service, fn);
    } catch (error) {
      if (!(error instanceof DomainError)) throw error;
      const problem = callProblem(error.kind, error.detail);
      await q.noteCallProblem(db, callId, problem);
      throw new JobFailure(error.detail, fn.idempotent, { problem });
    }
    const outcome = await this.attempt(service, fn, call.input, address, ctx.signal);
    if (outcome.status === 'failed') {
      await q.noteCallProblem(db, callId, outcome.error);
      throw new JobFailure(
        String(outcome.error.detail ?? 'the call failed'),
        fn.idempotent && outcome.retriable,
        { problem: outcome.error },
      );
    }
    return { result: outcome.result as never };
  }

  private async onTransition(trx: Knex.Transaction, job: JobRecord, transition: Transition): Promise<void> {
    const callId = callIdOf(job);
    const at = this.deps.clock();
    if (transition.to === 'failed' || transition.to === 'cancelled') {
      // The problem of the last attempt, as runJob noted it on the call.
      const problem =
        (await q.findCall(trx, callId))?.error ??
        (job.error as { problem?: Record<string, unknown> } | null)?.problem;
      await q.finishCall(
        trx,
        callId,
        {
          status: transition.to === 'failed' ? 'failed' : 'cancelled',
          error:
            transition.to === 'failed'
              ? (problem ?? callProblem('bad-gateway', transition.message))
              : callProblem('cancelled', transition.message),
        },
        iso(at),
        this.expiry(at),
      );
    } else if (transition.to === 'queued' && transition.from === 'running') {
      // Tried again (an idempotent function): waiting for its next attempt.
      await trx('service_calls').where({ id: callId, status: 'running' }).update({ status: 'queued' });
    }
    void trx.executionPromise?.then(
      () => this.deps.notifier.notify(callTopic(callId)),
      () => undefined,
    );
  }
}

const ended = (call: CallRecord) =>
  call.status === 'succeeded' || call.status === 'failed' || call.status === 'cancelled';

const callIdOf = (job: JobRecord) => String((job.payload as { callId?: unknown }).callId ?? '');

/** A problem document as a call's `error` holds it. */
function callProblem(
  kind: string,
  detail: string,
  extensions: Record<string, unknown> = {},
): Record<string, unknown> {
  return { type: `https://atrium.dev/problems/${kind}`, kind, detail, ...extensions };
}

/** The answer to a synchronous call that failed: the call's problem, as a response. */
function problemOf(error: Record<string, unknown>, fn: OfferedFunction): DomainError {
  const kind = String(error.kind ?? 'bad-gateway');
  const { type: _type, kind: _kind, detail, ...extensions } = error;
  if (kind === 'unavailable') {
    return new DomainError('unavailable', String(detail ?? `${fn.name} failed`), extensions, {
      'Retry-After': '2',
    });
  }
  const known = ['gateway-timeout', 'unprocessable', 'bad-gateway'].includes(kind) ? kind : 'bad-gateway';
  return new DomainError(known as 'bad-gateway', String(detail ?? `${fn.name} failed`), extensions);
}

/** JSON with object keys sorted: the same input gives the same cache key. */
function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) =>
    a < b ? -1 : a > b ? 1 : 0,
  );
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

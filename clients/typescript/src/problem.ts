// Problems (RFC 9457 problem+json, spec/components/schemas/Problem.yaml) as typed errors: every
// helper of the client throws an AtriumProblem for an error answer, and `unwrap` does the same for
// the plain openapi-fetch calls.
import type { components } from './generated/openapi.js';

export type Problem = components['schemas']['Problem'];
export type ProblemFieldError = components['schemas']['ProblemFieldError'];
export type Operation = components['schemas']['Operation'];

/** The prefix of every problem `type` Atrium sends; `kind` is what follows it. */
export const problemTypePrefix = 'https://atrium.dev/problems/';

export class AtriumProblem extends Error {
  override readonly name = 'AtriumProblem';
  readonly status: number;
  /** A stable URI per kind of error: branch on it (or on `kind`), never on `title` or `detail`. */
  readonly type: string;
  readonly title: string;
  readonly detail: string | undefined;
  /** Field-level validation errors (400 `validation`); empty otherwise. */
  readonly errors: ProblemFieldError[];
  readonly instance: string | undefined;
  /** The whole problem document, with any extension members (`resource`, `limit`, `log_tail` …). */
  readonly problem: Problem;
  /** The operation whose error this is, when it comes from `waitForOperation`. */
  readonly operation: Operation | undefined;

  constructor(problem: Problem, operation?: Operation) {
    super(problem.detail ? `${problem.title}: ${problem.detail}` : problem.title);
    this.status = problem.status;
    this.type = problem.type;
    this.title = problem.title;
    this.detail = problem.detail;
    this.errors = problem.errors ?? [];
    this.instance = problem.instance;
    this.problem = problem;
    this.operation = operation;
  }

  /** The type without Atrium's prefix, for example `not-found` or `validation`. */
  get kind(): string {
    return this.type.startsWith(problemTypePrefix) ? this.type.slice(problemTypePrefix.length) : this.type;
  }

  /**
   * The problem of an error answer. Anything in front of Atrium (a proxy, a load balancer) may answer
   * without a problem document: that becomes an `about:blank` problem with the HTTP status.
   */
  static fromResponse(body: unknown, response: Response): AtriumProblem {
    if (isProblem(body)) return new AtriumProblem({ ...body, status: response.status });
    return new AtriumProblem({
      type: 'about:blank',
      title: response.statusText || `HTTP ${response.status}`,
      status: response.status,
      ...(typeof body === 'string' && body !== '' ? { detail: body.slice(0, 500) } : {}),
    });
  }
}

function isProblem(body: unknown): body is Problem {
  if (typeof body !== 'object' || body === null) return false;
  const fields = body as Record<string, unknown>;
  return typeof fields.type === 'string' && typeof fields.title === 'string';
}

/** What an openapi-fetch call answers: its data on success, its error body otherwise. */
export interface FetchResult {
  data?: unknown;
  error?: unknown;
  response: Response;
}

/** The data of a call's answer, or its problem thrown as an AtriumProblem. */
export function unwrap<R extends FetchResult>(result: R): R extends { data: infer D } ? D : never {
  if (!result.response.ok) throw AtriumProblem.fromResponse(result.error, result.response);
  return result.data as R extends { data: infer D } ? D : never;
}

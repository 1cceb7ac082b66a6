import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import { conflict, DomainError, forbidden, notFound, preconditionFailed, unprocessable } from '../errors.js';
import { isUniqueViolation } from '../db/database.js';
import type { Page, PageRequest } from '../db/pagination.js';
import * as q from '../db/projects.js';
import * as members from '../db/members.js';
import type { ProjectKind, ProjectRole, ProjectView } from '../db/projects.js';
import type { ProjectMember } from '../db/members.js';
import { findUserById, type User } from '../db/users.js';
import { randomBase62 } from '../ids.js';
import { checkIfMatch, etagFor } from './etag.js';
import type { Principal } from './principal.js';
import type { RegionService } from './regions.js';
import { produced } from './changes.js';

export type { ProjectView } from '../db/projects.js';

const rank: Record<ProjectRole, number> = { viewer: 0, member: 1, owner: 2 };

export const personalProjectPrefix = 'user-';

/** The personal project id of a username: `user-` and the username made into an RFC 1123 label. */
export function personalProjectId(username: string): string {
  const label = username
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63 - personalProjectPrefix.length)
    .replace(/-+$/, '');
  return `${personalProjectPrefix}${label || randomBase62(8).toLowerCase()}`;
}

export function projectEtag(project: { version: number; updatedAt: string }): string {
  return etagFor(project.version, project.updatedAt);
}

export interface ProjectServiceDeps {
  db: Knex;
  clock: Clock;
  regions: RegionService;
  /**
   * How long this process trusts a user's role in a project for read access (config
   * cache.readRolesMs). A change of membership or a project made or deleted here clears what it
   * knows at once; another API process sharing the database decides reads on the old role for at
   * most this long. Writes always read the role afresh.
   */
  readRoleTtlMs?: number;
}

const readRoleEntries = 10_000;

export class ProjectService {
  private readonly readRoles = new Map<string, { role: ProjectRole | null; until: number }>();
  /** Counts membership changes: a role read while one ran is not kept. */
  private generation = 0;

  constructor(private readonly deps: ProjectServiceDeps) {}

  /** Forgets every cached role: called after any change of projects or members. */
  private changed(): void {
    this.generation += 1;
    this.readRoles.clear();
  }

  /**
   * The principal's role in a project they may read (null for an administrator who is not a
   * member); the same 404 as `access` otherwise. Cached briefly (deps.readRoleTtlMs): for reads only.
   */
  async readable(principal: Principal, projectId: string): Promise<ProjectRole | null> {
    const key = `${principal.user.id}\u0000${projectId}`;
    const now = performance.now();
    const cached = this.readRoles.get(key);
    let role: ProjectRole | null | undefined = cached && cached.until > now ? cached.role : undefined;
    if (role === undefined) {
      const generation = this.generation;
      const project = await q.findProjectForUser(this.deps.db, projectId, principal.user.id);
      if (!project) throw notFound('project', projectId);
      role = project.role;
      if (generation === this.generation) {
        if (!cached && this.readRoles.size >= readRoleEntries) {
          this.readRoles.delete(this.readRoles.keys().next().value as string);
        }
        const ttl = this.deps.readRoleTtlMs ?? 2_000;
        if (ttl > 0) this.readRoles.set(key, { role, until: now + ttl });
      }
    }
    if (role === null && !principal.user.admin) throw notFound('project', projectId);
    return role;
  }

  /**
   * Something made in a project (a file, a pipeline, a run, a plan), found by `find` once the
   * project is visible, that `principal` may change or act on: its maker may, while still more than
   * a viewer, and so may the project's owners and administrators; anyone else is refused with
   * `refusal`.
   */
  async changeable<T extends { createdBy: string | null }>(
    principal: Principal,
    projectId: string,
    find: () => Promise<T>,
    refusal: string,
  ): Promise<T> {
    const project = await this.access(principal, projectId, 'viewer');
    const made = await find();
    const mine = made.createdBy === principal.user.id && project.role !== 'viewer';
    if (!(principal.user.admin || project.role === 'owner' || mine)) throw forbidden(refusal);
    return made;
  }

  /**
   * The project, when the principal may act in it with at least `role`. Someone who is not a member
   * gets the same 404 as for a project that does not exist; administrators pass every check.
   */
  async access(principal: Principal, projectId: string, role: ProjectRole): Promise<ProjectView> {
    const project = await q.findProjectForUser(this.deps.db, projectId, principal.user.id);
    if (!project || (project.role === null && !principal.user.admin)) throw notFound('project', projectId);
    if (!principal.user.admin && rank[project.role as ProjectRole] < rank[role]) {
      throw forbidden(`you are a ${project.role} of project "${projectId}"; this needs the ${role} role`);
    }
    return project;
  }

  /** Onboarding: gives a user their personal project, once, even when called concurrently. */
  async ensurePersonalProject(user: User): Promise<void> {
    const { db, clock, regions } = this.deps;
    if (await q.findPersonalProject(db, user.id)) return;
    const base = personalProjectId(user.username);
    const region = regions.defaultRegion();
    for (let attempt = 0; attempt < 5; attempt++) {
      const id = attempt === 0 ? base : `${base.slice(0, 58)}-${randomBase62(4).toLowerCase()}`;
      const now = iso(clock());
      const project = {
        id,
        name: user.name ?? user.username,
        description: `Personal project of ${user.username}`,
        kind: 'personal' as const,
        regionId: region.id,
        personalOf: user.id,
        version: 1,
        createdAt: now,
        updatedAt: now,
      };
      try {
        await db.transaction((trx) =>
          q.insertProject(trx, project, user.id, regions.defaultQuota(region.id)),
        );
        this.changed();
        return;
      } catch (error) {
        if (!isUniqueViolation(error)) throw error;
        if (await q.findPersonalProject(db, user.id)) return;
      }
    }
    throw new Error(`cannot allocate a personal project id for ${user.username}`);
  }

  async create(
    principal: Principal,
    input: { id: string; name: string; description?: string | undefined; regionId?: string | undefined },
  ): Promise<ProjectView> {
    const { db, clock, regions } = this.deps;
    if (input.id.startsWith(personalProjectPrefix)) {
      throw unprocessable(
        `project ids starting with "${personalProjectPrefix}" are reserved for personal projects`,
      );
    }
    const regionId = input.regionId ?? regions.defaultRegion().id;
    if (!regions.all().some((r) => r.id === regionId))
      throw unprocessable(`region "${regionId}" does not exist`);
    const now = iso(clock());
    const project = {
      id: input.id,
      name: input.name,
      description: input.description ?? '',
      kind: 'group' as const,
      regionId,
      personalOf: null,
      version: 1,
      createdAt: now,
      updatedAt: now,
    };
    const created: ProjectView = { ...project, role: 'owner' };
    try {
      await db.transaction(async (trx) => {
        produced(created);
        await q.insertProject(trx, project, principal.user.id, regions.defaultQuota(regionId));
      });
    } catch (error) {
      if (isUniqueViolation(error)) throw conflict(`project "${input.id}" already exists`);
      throw error;
    }
    this.changed();
    return created;
  }

  /** Every project of the principal, personal first (for `GET /me`). */
  profileProjects(principal: Principal): Promise<ProjectView[]> {
    return q.userProjectsForProfile(this.deps.db, principal.user.id, 1000);
  }

  async get(principal: Principal, projectId: string): Promise<ProjectView> {
    return this.access(principal, projectId, 'viewer');
  }

  async list(
    principal: Principal,
    filter: { kind?: ProjectKind | undefined; all?: boolean | undefined },
    page: PageRequest,
  ): Promise<Page<ProjectView>> {
    if (filter.all) {
      if (!principal.user.admin) throw forbidden('only platform administrators may list every project');
      return q.listAllProjects(this.deps.db, principal.user.id, filter, page);
    }
    return q.listUserProjects(this.deps.db, principal.user.id, filter, page);
  }

  async update(
    principal: Principal,
    projectId: string,
    changes: { name?: string | undefined; description?: string | undefined },
    ifMatch: string | undefined,
  ): Promise<ProjectView> {
    const { db, clock } = this.deps;
    const project = await this.access(principal, projectId, 'owner');
    checkIfMatch(ifMatch, projectEtag(project), `project "${projectId}"`);
    const updated = await q.updateProject(db, projectId, changes, project.version, iso(clock()));
    this.changed();
    if (!updated) {
      throw preconditionFailed(`project "${projectId}"`);
    }
    return this.access(principal, projectId, 'viewer');
  }

  async delete(principal: Principal, projectId: string, ifMatch: string | undefined): Promise<void> {
    const project = await this.access(principal, projectId, 'owner');
    if (project.kind === 'personal')
      throw conflict('a personal project lasts as long as its user; it cannot be deleted');
    checkIfMatch(ifMatch, projectEtag(project), `project "${projectId}"`);
    if (await q.countProjectServices(this.deps.db, projectId)) {
      throw conflict(`project "${projectId}" still has services; delete them first`);
    }
    const deleted = await q.deleteProject(this.deps.db, projectId, project.version);
    this.changed();
    if (!deleted) throw preconditionFailed(`project "${projectId}"`);
  }

  async listMembers(
    principal: Principal,
    projectId: string,
    page: PageRequest,
  ): Promise<Page<ProjectMember>> {
    await this.access(principal, projectId, 'viewer');
    return members.listProjectMembers(this.deps.db, projectId, page);
  }

  /** Adds a member or changes their role; `created` tells which. */
  async setMember(
    principal: Principal,
    projectId: string,
    userId: string,
    role: ProjectRole,
  ): Promise<{ member: ProjectMember; created: boolean }> {
    const { db, clock } = this.deps;
    const project = await this.access(principal, projectId, 'owner');
    if (project.kind === 'personal') throw conflict('a personal project has a single member: its user');
    const created = await db.transaction(async (trx) => {
      await q.lockProject(trx, projectId);
      const current = await members.findProjectMember(trx, projectId, userId);
      if (!current) {
        if (!(await findUserById(trx, userId))) {
          throw unprocessable(`user "${userId}" does not exist; they must sign in once before being added`);
        }
        await members.insertProjectMember(trx, projectId, userId, role, iso(clock()));
        return true;
      }
      if (current.role === 'owner' && role !== 'owner' && (await members.countOwners(trx, projectId)) === 1) {
        throw conflict(`project "${projectId}" would have no owner left; make someone else owner first`);
      }
      await members.updateProjectMemberRole(trx, projectId, userId, role);
      return false;
    });
    this.changed();
    const member = await members.findProjectMember(db, projectId, userId);
    if (!member) throw new DomainError('conflict', 'the member was removed concurrently');
    return { member, created };
  }

  async removeMember(principal: Principal, projectId: string, userId: string): Promise<void> {
    const { db } = this.deps;
    const leaving = userId === principal.user.id;
    await this.access(principal, projectId, leaving ? 'viewer' : 'owner');
    await db.transaction(async (trx) => {
      await q.lockProject(trx, projectId);
      const member = await members.findProjectMember(trx, projectId, userId);
      if (!member) throw notFound('member', userId);
      if (member.role === 'owner' && (await members.countOwners(trx, projectId)) === 1) {
        throw conflict(`the last owner cannot leave project "${projectId}"; make someone else owner first`);
      }
      await members.deleteProjectMember(trx, projectId, userId);
    });
    this.changed();
  }
}

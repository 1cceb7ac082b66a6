import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import { conflict, notFound } from '../errors.js';
import { isUniqueViolation } from '../db/database.js';
import type { Page, PageRequest } from '../db/pagination.js';
import * as q from '../db/users.js';
import type { User } from '../db/users.js';
import { newId, randomBase62 } from '../ids.js';
import type { OidcIdentity } from '../auth/oidc.js';
import { requireAdmin, type Principal } from './principal.js';
import type { ProjectService } from './projects.js';

const lastSeenResolutionMs = 5 * 60_000;
const maxOnboardedCache = 100_000;

export interface UserServiceDeps {
  db: Knex;
  clock: Clock;
  projects: ProjectService;
  /** Identity-provider groups whose members are administrators. */
  adminGroups: readonly string[];
  /** Called after a user's profile or administration changes (cached credentials are dropped). */
  onUserChanged?: () => void;
}

export class UserService {
  /** Users known to have their personal project, so that onboarding costs nothing after the first request. */
  private readonly onboarded = new Set<string>();
  /** When this process last recorded each user as seen (a cached user's lastSeenAt lags). */
  private readonly seenAt = new Map<string, number>();

  constructor(private readonly deps: UserServiceDeps) {}

  /**
   * Administrators are those granted it in Atrium, and members of a configured admin group (as of
   * their last sign-in). The latter is managed at the identity provider.
   */
  effective(user: User): User {
    const viaGroup = user.groups.some((g) => this.deps.adminGroups.includes(g));
    return viaGroup && !user.admin ? { ...user, admin: true } : user;
  }

  /** Called on every authenticated request: onboarding (personal project) and last-seen tracking. */
  async seen(user: User): Promise<void> {
    if (!this.onboarded.has(user.id)) {
      await this.deps.projects.ensurePersonalProject(user);
      if (this.onboarded.size >= maxOnboardedCache) this.onboarded.clear();
      this.onboarded.add(user.id);
    }
    const now = this.deps.clock();
    const last = Math.max(user.lastSeenAt ? Date.parse(user.lastSeenAt) : 0, this.seenAt.get(user.id) ?? 0);
    if (now.getTime() - last > lastSeenResolutionMs) {
      // Bookkeeping: a database that cannot take it now (full, busy) must not fail the request.
      await q.touchUserLastSeen(this.deps.db, user.id, iso(now)).catch(() => undefined);
      if (this.seenAt.size >= maxOnboardedCache) this.seenAt.clear();
      this.seenAt.set(user.id, now.getTime());
    }
  }

  /** Finds or creates the user of an OIDC identity, keeping their profile as the provider says. */
  async signInOidc(identity: OidcIdentity): Promise<User> {
    const { db, clock } = this.deps;
    const existing = await q.findUserByOidc(db, identity.issuer, identity.subject);
    const profile = { name: identity.name, email: identity.email, groups: identity.groups };
    if (existing) {
      const changed =
        existing.name !== profile.name ||
        existing.email !== profile.email ||
        JSON.stringify([...existing.groups].sort()) !== JSON.stringify([...profile.groups].sort());
      if (!changed) return existing;
      await q.updateUserProfile(db, existing.id, profile, iso(clock()));
      this.deps.onUserChanged?.();
      return { ...existing, ...profile };
    }
    for (let attempt = 0; attempt < 5; attempt++) {
      const username =
        attempt === 0 ? identity.username : `${identity.username}-${randomBase62(4).toLowerCase()}`;
      const now = iso(clock());
      const user: User = {
        id: newId('usr'),
        username,
        ...profile,
        admin: false,
        oidcIssuer: identity.issuer,
        oidcSubject: identity.subject,
        createdAt: now,
        updatedAt: now,
        lastSeenAt: null,
      };
      try {
        await q.insertUser(db, user);
        return user;
      } catch (error) {
        if (!isUniqueViolation(error)) throw error;
        const raced = await q.findUserByOidc(db, identity.issuer, identity.subject);
        if (raced) return raced;
      }
    }
    throw new Error(`cannot allocate a username for ${identity.username}`);
  }

  /** A user who signs in with API tokens only (created by the CLI or at first start). */
  async ensureLocalUser(
    username: string,
    options: { admin?: boolean } = {},
  ): Promise<{ user: User; created: boolean }> {
    const { db, clock } = this.deps;
    const existing = await q.findUserByUsername(db, username);
    if (existing) {
      if (options.admin && !existing.admin) {
        await q.updateUserProfile(db, existing.id, { admin: true }, iso(clock()));
        this.deps.onUserChanged?.();
        return { user: { ...existing, admin: true }, created: false };
      }
      return { user: existing, created: false };
    }
    const now = iso(clock());
    const user: User = {
      id: newId('usr'),
      username,
      name: null,
      email: null,
      groups: [],
      admin: options.admin ?? false,
      oidcIssuer: null,
      oidcSubject: null,
      createdAt: now,
      updatedAt: now,
      lastSeenAt: null,
    };
    try {
      await q.insertUser(db, user);
    } catch (error) {
      // Another process created it first (two instances starting together).
      if (isUniqueViolation(error)) return this.ensureLocalUser(username, options);
      throw error;
    }
    await this.deps.projects.ensurePersonalProject(user);
    return { user, created: true };
  }

  async get(principal: Principal, userId: string): Promise<User> {
    requireAdmin(principal);
    const user = await q.findUserById(this.deps.db, userId);
    if (!user) throw notFound('user', userId);
    return this.effective(user);
  }

  async list(
    principal: Principal,
    filter: { q?: string | undefined },
    page: PageRequest,
  ): Promise<Page<User>> {
    requireAdmin(principal);
    const result = await q.listUsers(this.deps.db, filter, page);
    return { ...result, items: result.items.map((u) => this.effective(u)) };
  }

  async update(
    principal: Principal,
    userId: string,
    changes: { admin?: boolean | undefined },
  ): Promise<User> {
    requireAdmin(principal);
    const user = await this.get(principal, userId);
    if (changes.admin === false) {
      if (userId === principal.user.id) {
        throw conflict('you cannot withdraw your own administration; ask another administrator');
      }
      const group = user.groups.find((g) => this.deps.adminGroups.includes(g));
      if (group)
        throw conflict(
          `${user.username} is an administrator through group "${group}" at the identity provider`,
        );
    }
    if (changes.admin !== undefined) {
      await q.updateUserProfile(this.deps.db, userId, { admin: changes.admin }, iso(this.deps.clock()));
      this.deps.onUserChanged?.();
    }
    return this.get(principal, userId);
  }
}

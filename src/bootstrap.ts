import type { Services } from './services/index.js';

export const adminUsername = 'admin';

/**
 * Makes sure there is an administrator to sign in as. With a configured admin token, that token is
 * registered (once); otherwise the first start generates one and returns its secret, to be shown once.
 */
export async function bootstrapAdmin(services: Services, adminToken: string | null): Promise<string | null> {
  const { user, created } = await services.users.ensureLocalUser(adminUsername, { admin: true });
  if (adminToken) {
    if (!(await services.tokens.exists(adminToken))) {
      await services.tokens.issue(user, { name: 'ATRIUM_ADMIN_TOKEN' }, adminToken);
    }
    return null;
  }
  if (!created) return null;
  const { secret } = await services.tokens.issue(user, { name: 'first start' });
  return secret;
}

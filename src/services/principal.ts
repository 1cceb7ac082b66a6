import { forbidden } from '../errors.js';
import type { TokenScope } from '../db/tokens.js';
import type { User } from '../db/users.js';

/** Who is making a request, and with what rights. */
export interface Principal {
  user: User;
  method: 'token' | 'oidc';
  tokenId: string | null;
  scopes: TokenScope[];
}

export function requireAdmin(principal: Principal): void {
  if (!principal.user.admin) throw forbidden('only platform administrators may do this');
}

import { unauthorized } from '../errors.js';
import type { Principal } from './principal.js';
import type { TokenService } from './tokens.js';
import type { UserService } from './users.js';
import type { OidcVerifier } from '../auth/oidc.js';
import { isAtriumToken } from '../auth/secrets.js';

/** Turns an Authorization header into a principal: an Atrium API token, or an OIDC access token. */
export class Authenticator {
  constructor(
    private readonly deps: { tokens: TokenService; users: UserService; oidc: OidcVerifier | null },
  ) {}

  async authenticate(authorization: string | undefined): Promise<Principal> {
    const match = /^Bearer[ ]+(\S+)\s*$/i.exec(authorization ?? '');
    if (!match) {
      throw unauthorized(
        authorization
          ? 'the Authorization header must be "Bearer <token>"'
          : 'send an API token as "Authorization: Bearer <token>"',
      );
    }
    const credential = match[1] as string;
    const { tokens, users, oidc } = this.deps;
    let principal: Principal;
    if (isAtriumToken(credential)) {
      const { token, user } = await tokens.authenticate(credential);
      principal = { user: users.effective(user), method: 'token', tokenId: token.id, scopes: token.scopes };
    } else if (oidc) {
      const user = await users.signInOidc(await oidc.verify(credential));
      principal = { user: users.effective(user), method: 'oidc', tokenId: null, scopes: ['read', 'write'] };
    } else {
      throw unauthorized('not an Atrium API token, and this server accepts no other');
    }
    await users.seen(principal.user);
    return principal;
  }
}

import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import type { OidcConfig } from '../config.js';
import { DomainError, unauthorized } from '../errors.js';

export interface OidcIdentity {
  issuer: string;
  subject: string;
  username: string;
  name: string | null;
  email: string | null;
  groups: string[];
}

const asymmetric = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];

/**
 * Verifies access tokens (JWTs) of the configured OpenID Connect provider against its JWKS. Keys are
 * cached; a token signed with an unknown key id refetches the JWKS (at most once per cooldown), so
 * key rotation at the provider needs no restart.
 */
export class OidcVerifier {
  private keys: ReturnType<typeof createRemoteJWKSet> | null = null;

  constructor(private readonly config: OidcConfig) {}

  async verify(token: string): Promise<OidcIdentity> {
    const keys = await this.keySet();
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys, {
        issuer: this.config.issuer,
        ...(this.config.audience ? { audience: this.config.audience } : {}),
        algorithms: asymmetric,
        clockTolerance: this.config.clockToleranceSec,
        requiredClaims: ['sub', 'exp'],
      }));
    } catch (error) {
      throw translate(error);
    }
    return this.identity(payload);
  }

  private identity(payload: JWTPayload): OidcIdentity {
    const claim = (name: string) => {
      const value = payload[name];
      return typeof value === 'string' && value.length > 0 ? value : null;
    };
    const rawGroups = payload[this.config.groupsClaim];
    const groups = Array.isArray(rawGroups)
      ? rawGroups.filter((g): g is string => typeof g === 'string')
      : typeof rawGroups === 'string'
        ? rawGroups.split(/\s+/).filter(Boolean)
        : [];
    const subject = payload.sub as string;
    return {
      issuer: this.config.issuer,
      subject,
      username: claim(this.config.usernameClaim) ?? subject,
      name: claim(this.config.nameClaim),
      email: claim(this.config.emailClaim),
      groups,
    };
  }

  private async keySet(): Promise<ReturnType<typeof createRemoteJWKSet>> {
    if (this.keys) return this.keys;
    const jwksUri = this.config.jwksUri ?? (await this.discoverJwksUri());
    this.keys = createRemoteJWKSet(new URL(jwksUri), {
      cooldownDuration: this.config.jwksCooldownMs,
      cacheMaxAge: 10 * 60_000,
      timeoutDuration: 5_000,
    });
    return this.keys;
  }

  private async discoverJwksUri(): Promise<string> {
    const url = `${this.config.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(5_000) });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const document = (await response.json()) as { issuer?: unknown; jwks_uri?: unknown };
      if (document.issuer !== this.config.issuer)
        throw new Error(`it names issuer ${String(document.issuer)}`);
      if (typeof document.jwks_uri !== 'string') throw new Error('it has no jwks_uri');
      return document.jwks_uri;
    } catch (error) {
      throw new DomainError(
        'unavailable',
        `the identity provider's configuration cannot be read (${(error as Error).message})`,
      );
    }
  }
}

function translate(error: unknown): DomainError {
  if (error instanceof joseErrors.JWTExpired) return unauthorized('the access token has expired');
  if (error instanceof joseErrors.JWTClaimValidationFailed)
    return unauthorized(`the access token's "${error.claim}" claim is not acceptable`);
  if (error instanceof joseErrors.JWKSNoMatchingKey)
    return unauthorized('the access token is signed with an unknown key');
  if (error instanceof joseErrors.JWSSignatureVerificationFailed)
    return unauthorized('the access token signature is invalid');
  if (error instanceof joseErrors.JWKSTimeout || error instanceof joseErrors.JWKSInvalid) {
    return new DomainError('unavailable', "the identity provider's keys cannot be fetched");
  }
  if (error instanceof joseErrors.JOSEError) return unauthorized('the access token is not a valid JWT');
  if (error instanceof TypeError || (error as { code?: string }).code === 'ECONNREFUSED') {
    return new DomainError('unavailable', "the identity provider's keys cannot be fetched");
  }
  return unauthorized('the access token is not valid');
}

import {
  createRemoteJWKSet,
  errors as joseErrors,
  jwtVerify,
  type CompactJWSHeaderParameters,
  type CryptoKey,
  type FlattenedJWSInput,
  type JWTPayload,
} from 'jose';
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

type RemoteKeySet = ReturnType<typeof createRemoteJWKSet>;

/**
 * Verifies access tokens (JWTs) of the configured OpenID Connect provider against its JWKS. Keys are
 * cached; a token signed with an unknown key id refetches the JWKS (at most once per cooldown), so
 * key rotation at the provider needs no restart.
 */
export class OidcVerifier {
  /** Shared by concurrent first requests; forgotten when discovery fails, so that it is tried again. */
  private keys: Promise<RemoteKeySet> | null = null;

  constructor(private readonly config: OidcConfig) {}

  async verify(token: string): Promise<OidcIdentity> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, (header, jws) => this.key(header, jws), {
        issuer: this.config.issuer,
        ...(this.config.audience ? { audience: this.config.audience } : {}),
        algorithms: asymmetric,
        clockTolerance: this.config.clockToleranceSec,
        requiredClaims: ['sub', 'exp'],
      }));
    } catch (error) {
      throw translate(error);
    }
    // Without a configured audience, the token must at least have been issued to our client.
    if (!this.config.audience && this.config.clientId && !issuedTo(payload, this.config.clientId)) {
      throw unauthorized(`the access token was not issued to client "${this.config.clientId}"`);
    }
    // jose checks that `sub` is present, not what it holds; users are keyed by it.
    if (typeof payload.sub !== 'string' || payload.sub.length === 0) {
      throw unauthorized(`the access token's "sub" claim must be a non-empty string`);
    }
    return this.identity(payload, payload.sub);
  }

  private identity(payload: JWTPayload, subject: string): OidcIdentity {
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
    return {
      issuer: this.config.issuer,
      subject,
      username: claim(this.config.usernameClaim) ?? subject,
      name: claim(this.config.nameClaim),
      email: claim(this.config.emailClaim),
      groups,
    };
  }

  /**
   * The key of a token. jose asks for it only once the token has parsed and named an allowed
   * algorithm, so a malformed token is refused (401) even while the provider is unreachable.
   */
  private async key(header: CompactJWSHeaderParameters, jws: FlattenedJWSInput): Promise<CryptoKey> {
    const keys = await this.keySet();
    try {
      return await keys(header, jws);
    } catch (error) {
      // No published key, or more than one, fits the token's header (or its algorithm cannot be used
      // with a key set at all): the token's fault, and asking again would not help.
      if (
        error instanceof joseErrors.JWKSNoMatchingKey ||
        error instanceof joseErrors.JWKSMultipleMatchingKeys ||
        error instanceof joseErrors.JOSENotSupported
      ) {
        throw error;
      }
      // Anything else went wrong fetching or reading the JWKS (refused connection, timeout, an answer
      // other than 200, a malformed set): the provider's fault. Decided here, where the fetch happens,
      // rather than by the error's class, which for network failures is a bare TypeError.
      throw unavailable(`the identity provider's keys cannot be fetched (${messageOf(error)})`);
    }
  }

  private keySet(): Promise<RemoteKeySet> {
    this.keys ??= this.createKeySet().catch((error: unknown) => {
      this.keys = null;
      throw error;
    });
    return this.keys;
  }

  private async createKeySet(): Promise<RemoteKeySet> {
    const jwksUri = this.config.jwksUri ? new URL(this.config.jwksUri) : await this.discoverJwksUri();
    return createRemoteJWKSet(jwksUri, {
      cooldownDuration: this.config.jwksCooldownMs,
      cacheMaxAge: 10 * 60_000,
      timeoutDuration: 5_000,
    });
  }

  private async discoverJwksUri(): Promise<URL> {
    const url = `${this.config.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(5_000) });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const document = (await response.json()) as { issuer?: unknown; jwks_uri?: unknown };
      if (document.issuer !== this.config.issuer)
        throw new Error(`it names issuer ${String(document.issuer)}`);
      if (typeof document.jwks_uri !== 'string') throw new Error('it has no jwks_uri');
      return new URL(document.jwks_uri);
    } catch (error) {
      throw unavailable(`the identity provider's configuration cannot be read (${messageOf(error)})`);
    }
  }
}

/** `azp` (the authorised party) or, failing it, `aud` names the client. */
function issuedTo(payload: JWTPayload, clientId: string): boolean {
  if (typeof payload.azp === 'string') return payload.azp === clientId;
  return Array.isArray(payload.aud) ? payload.aud.includes(clientId) : payload.aud === clientId;
}

const unavailable = (detail: string) => new DomainError('unavailable', detail);

/** The message of an error from any realm (fetch's errors are not this realm's Error under jest). */
function messageOf(error: unknown): string {
  const message = (error as { message?: unknown } | null)?.message;
  return typeof message === 'string' && message.length > 0 ? message : String(error);
}

function translate(error: unknown): DomainError {
  if (error instanceof DomainError) return error;
  if (error instanceof joseErrors.JWTExpired) return unauthorized('the access token has expired');
  if (error instanceof joseErrors.JWTClaimValidationFailed)
    return unauthorized(`the access token's "${error.claim}" claim is not acceptable`);
  if (error instanceof joseErrors.JWKSNoMatchingKey)
    return unauthorized('the access token is signed with an unknown key');
  if (error instanceof joseErrors.JWSSignatureVerificationFailed)
    return unauthorized('the access token signature is invalid');
  if (error instanceof joseErrors.JOSEAlgNotAllowed)
    return unauthorized(
      'the access token is signed with an algorithm that is not accepted (asymmetric only)',
    );
  if (error instanceof joseErrors.JOSEError) return unauthorized('the access token is not a valid JWT');
  return unauthorized('the access token is not valid');
}

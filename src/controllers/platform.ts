import type { Handler } from '../http/operation.js';
import { presentRegion } from './present.js';

export const getConfig: Handler<'getConfig'> = async (_input, { services }) => {
  const settings = services.platform.settings();
  return {
    status: 200,
    body: {
      version: settings.build.version,
      build: {
        version: settings.build.version,
        commit: settings.build.commit,
        built_at: settings.build.builtAt,
      },
      api_base_path: settings.apiBasePath,
      auth: {
        token: { prefix: settings.tokenPrefix },
        oidc: settings.oidc && {
          issuer: settings.oidc.issuer,
          audience: settings.oidc.audience,
          client_id: settings.oidc.clientId,
        },
      },
      regions: settings.regions.map(presentRegion),
      limits: {
        page_size_default: settings.limits.pageSizeDefault,
        page_size_max: settings.limits.pageSizeMax,
        max_body_bytes: settings.limits.maxBodyBytes,
      },
    },
  };
};

export const getClientIp: Handler<'getClientIp'> = async (_input, { clientIp }) => ({
  status: 200,
  body: { ip: clientIp },
});

import type { Handler } from '../http/operation.js';
import type { DriverView } from '../services/drivers.js';
import { arrayPage } from '../services/model.js';
import { apiBasePath } from '../services/platform.js';
import { pageOf } from './paging.js';
import { page } from './present.js';

const presentDriver = (d: DriverView) => ({
  name: d.name,
  version: d.version,
  kind: d.kind,
  scope: d.scope,
  functions: d.definitions.map((f) => f.name),
  definitions: d.definitions,
  description: d.description,
  app: d.app,
  url: d.url,
  health: d.health && {
    status: d.health.status,
    checked_at: d.health.checkedAt,
    detail: d.health.detail,
  },
  created_at: d.createdAt,
});

export const listDrivers: Handler<'listDrivers'> = async ({ query }, { principal, services }) => ({
  status: 200,
  body: page(
    arrayPage('drivers', await services.drivers.list(principal), (d) => d.name, pageOf(query)),
    presentDriver,
  ),
});

export const getDriver: Handler<'getDriver'> = async ({ params }, { principal, services }) => ({
  status: 200,
  body: presentDriver(await services.drivers.get(principal, params.driverName)),
});

export const createDriver: Handler<'createDriver'> = async ({ body }, { principal, services }) => {
  const driver = await services.drivers.register(principal, body);
  return {
    status: 201,
    body: presentDriver(driver),
    location: `${apiBasePath}/drivers/${driver.name}`,
  };
};

export const deleteDriver: Handler<'deleteDriver'> = async ({ params }, { principal, services }) => {
  await services.drivers.remove(principal, params.driverName);
  return { status: 204 };
};

// The shapes the services answer with, for the layers outside them (controllers, http): records
// and views of the database, and the definitions of the backends they are about. Those layers
// import them from here, never from db/ or backends/ (the lint's layer rules).
export type { AuditEvent } from '../db/audit.js';
export type { Catalog, PackageDetail, PackageSummary, StoredPackageVersion } from '../db/catalogs.js';
export type { Database } from '../db/database.js';
export type { StoredEvent } from '../db/events.js';
export type { ProjectMember } from '../db/members.js';
export type { ModuleSourceStatus } from '../db/modules.js';
export type { OperationRecord } from '../db/operations.js';
export type { Page, PageRequest } from '../db/pagination.js';
export type { ProjectView } from '../db/projects.js';
export type { Quota } from '../db/quotas.js';
export type { ServiceRecord, ServiceSummary } from '../db/services.js';
export type { ApiToken } from '../db/tokens.js';
export type { User } from '../db/users.js';
export type { PlanDefinition } from '../backends/benchmark/definitions.js';
export type { PlanResults } from '../backends/benchmark/run-plan.js';
export type { AnyMetric } from '../backends/benchmark/types.js';
export type { ModuleFunction } from '../backends/modules/manifest.js';
/** A page of an in-memory list (lists the services build in memory, such as regions). */
export { arrayPage } from '../db/pagination.js';
/** How long a module function may run. */
export { functionTimeoutMs } from '../backends/modules/manifest.js';

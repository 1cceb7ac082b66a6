// Work whose first change carries rows of its own (an audit record, a kept answer): see
// db/with-change.ts. What the services offer the HTTP layer of it.
export { produced, withChangeRecords, type ChangeRecord } from '../db/with-change.js';

// @atrium/client: a typed client for the Atrium API (see README.md).
export {
  apiBasePath,
  createAtriumClient,
  OperationTimeoutError,
  type AtriumClient,
  type AtriumClientOptions,
  type AtriumEvent,
  type AtriumEventData,
  type AtriumFile,
  type AtriumHelpers,
  type EventStreamPath,
  type EventsOptions,
  type ListItem,
  type ListPath,
  type Schemas,
  type UploadFileOptions,
  type WaitForOperationOptions,
} from './client.js';
export { parseEventStream, type RawServerSentEvent } from './event-stream.js';
export {
  AtriumProblem,
  problemTypePrefix,
  unwrap,
  type FetchResult,
  type Operation,
  type Problem,
  type ProblemFieldError,
} from './problem.js';
export type { components, operations, paths } from './generated/openapi.js';

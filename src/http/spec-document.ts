// The parts of the bundled OpenAPI document that binding and the request checks read.
export const methods = ['get', 'put', 'post', 'patch', 'delete'] as const;
export type Method = (typeof methods)[number];

export interface ParameterObject {
  name: string;
  in: string;
}
export type ParameterOrRef = ParameterObject | { $ref: string };
export type SecurityRequirement = Record<string, string[]>;
export interface OperationObject {
  operationId?: string;
  'x-controller'?: string;
  security?: SecurityRequirement[];
  parameters?: ParameterOrRef[];
  responses?: Record<string, unknown>;
}
export type PathItem = Partial<Record<Method, OperationObject>> & { parameters?: ParameterOrRef[] };

/** The parts of a bundled OpenAPI document that binding reads. */
export interface ApiDocument {
  paths?: Record<string, PathItem>;
  security?: SecurityRequirement[];
  components?: { parameters?: Record<string, ParameterObject> };
}

// Fields that package manifests (catalogs) and module manifests share, validated the same way.
import { z } from 'zod';

export const rfc1123Label = z
  .string()
  .regex(/^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$/, 'must be a lower-case RFC 1123 label');

export const cpuQuantity = z
  .string()
  .regex(/^([0-9]+(\.[0-9]{1,3})?|[0-9]+m)$/, 'must be a CPU quantity such as 0.5 or 500m');

export const byteQuantity = z
  .string()
  .regex(/^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$/, 'must be a size such as 256Mi');

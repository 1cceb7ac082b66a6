// The gateway and calls conformance suite on the local runtime: services are processes of this
// machine, reached at their loopback ports.
import { testEngines } from '../fixtures/databases.js';
import { describeGateway } from './gateway.js';

describeGateway('local runtime', testEngines(), async () => ({
  config: {},
  waitSeconds: 20,
  cleanup: async () => undefined,
}));

// Prints "N passed, M failed" from a jest --json report (CI reads this line, not jest's summary).
import { existsSync, readFileSync } from 'node:fs';

const file = process.argv[2] ?? '.test-results.json';
if (!existsSync(file)) {
  console.log('0 passed, 1 failed');
  process.exit(1);
}
const report = JSON.parse(readFileSync(file, 'utf8'));
// Suites that failed to run at all count as failures too.
const brokenSuites = report.testResults.filter(
  (r) => r.status === 'failed' && r.assertionResults.length === 0,
).length;
const failed = report.numFailedTests + brokenSuites;
console.log(`${report.numPassedTests} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);

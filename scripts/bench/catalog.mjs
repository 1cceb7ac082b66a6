// A catalog directory of synthetic packages, one manifest each, shaped like the demo catalog's
// (src/demo/catalog/*/1.0.0.yaml) and valid by src/backends/catalog/manifest.ts.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const topics = ['vision', 'nlp', 'tabular', 'audio', 'storage', 'serving', 'training', 'notebook'];

function manifest(name, index) {
  const topic = topics[index % topics.length];
  return `name: ${name}
version: 1.0.0
title: Benchmark package ${index}
description: |
  A synthetic ${topic} package for benchmarks. Its description is about as long as a real one, so that
  a page of packages weighs what a page of a real catalog weighs when it is read and encoded.
icon: null
keywords: [bench, ${topic}, group-${index % 10}]
home: null
options:
  type: object
  properties:
    greeting:
      type: string
      title: Greeting
      default: hello
      maxLength: 200
  additionalProperties: false
resources:
  cpu: 100m
  memory: 64Mi
run:
  local:
    command: [node, serve.mjs]
    ports:
      - name: http
        protocol: http
    health:
      port: http
      path: /healthz
    env:
      PORT: \${ports.http}
      GREETING: \${options.greeting}
`;
}

/** Writes `count` packages (bench-pkg-0000 …) under `root`; returns the package names. */
export function writeCatalog(root, count) {
  const names = [];
  for (let i = 0; i < count; i++) {
    const name = `bench-pkg-${String(i).padStart(4, '0')}`;
    mkdirSync(join(root, name), { recursive: true });
    writeFileSync(join(root, name, '1.0.0.yaml'), manifest(name, i));
    names.push(name);
  }
  return names;
}

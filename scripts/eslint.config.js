// ESLint for the whole repository (run with `eslint -c scripts/eslint.config.js .`).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// The layers of src/ (README, "Development"), outermost first: http and controllers (HTTP in and
// out) → services (the rules) → backends and db (the machinery). Imports go inwards only; the
// outer layers see the services' shapes through services/model.ts. auth/ (token secrets, OIDC
// verification) and the shared modules at the top of src/ (errors, clock, ids, notifier…) import
// no layer. The composition roots (app, server, cli, bootstrap, config) may import anything.
const into = (...dirs) => `^(\\.\\./)+(${dirs.join('|')})/`;
const layer = (files, patterns) => ({
  files,
  rules: { '@typescript-eslint/no-restricted-imports': ['error', { patterns }] },
});
const express = {
  group: ['express', 'express-*', 'express-openapi-validator'],
  message: 'the domain knows no Express: HTTP belongs to src/http and src/controllers',
};
const layers = [
  layer(
    ['src/controllers/**'],
    [
      {
        regex: into('db', 'backends', 'auth'),
        message: 'controllers reach the domain through services (services/model.ts has the shapes they need)',
      },
    ],
  ),
  layer(
    ['src/http/**'],
    [
      {
        regex: into('db', 'backends', 'auth'),
        message: 'http reaches the domain through services (services/model.ts has the shapes it needs)',
      },
      { regex: into('controllers'), message: 'http does not know the controllers: app.ts binds them' },
    ],
  ),
  layer(
    ['src/services/**'],
    [
      { regex: into('controllers', 'http'), message: 'services never import the HTTP layers above them' },
      express,
    ],
  ),
  // Only the scheduler (a durable queue on the database) uses db/ from among the backends.
  layer(
    ['src/backends/**'],
    [
      {
        regex: into('services', 'controllers', 'http', 'auth'),
        message: 'backends never import the layers above them',
      },
      {
        regex: into('db'),
        message: 'backends do not use the database, except the scheduler (its queue lives there)',
      },
      express,
    ],
  ),
  layer(
    ['src/backends/scheduler/**'],
    [
      {
        regex: into('services', 'controllers', 'http', 'auth'),
        message: 'backends never import the layers above them',
      },
      express,
    ],
  ),
  layer(
    ['src/db/**'],
    [
      {
        regex: into('services', 'controllers', 'http', 'auth'),
        message: 'db never imports the layers above it',
      },
      {
        regex: into('backends'),
        allowTypeImports: true,
        message: 'db may name the shapes of backends it stores (import type), never run their code',
      },
      express,
    ],
  ),
  layer(
    ['src/auth/**'],
    [
      {
        regex: into('services', 'controllers', 'http', 'db', 'backends'),
        message: 'auth/ is a helper of the services: it imports no layer',
      },
      express,
    ],
  ),
  layer(
    ['src/{errors,clock,ids,quantities,paths,log,notifier,versions}.ts'],
    [
      {
        regex: '^\\./(services|controllers|http|db|backends|auth)/',
        message: 'the shared modules import no layer',
      },
      express,
    ],
  ),
];

export default tseslint.config(
  {
    ignores: [
      'generated/**',
      'dist/**',
      'data/**',
      'coverage/**',
      'node_modules/**',
      // The client's generated types and its build, like generated/ and dist/ above.
      'clients/typescript/src/generated/**',
      'clients/typescript/dist/**',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: {
        process: 'readonly',
        console: 'readonly',
        Buffer: 'readonly',
        URL: 'readonly',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
        setInterval: 'readonly',
        clearInterval: 'readonly',
        fetch: 'readonly',
        AbortSignal: 'readonly',
        AbortController: 'readonly',
        structuredClone: 'readonly',
        window: 'readonly',
      },
    },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-console': 'off',
    },
  },
  ...layers,
);

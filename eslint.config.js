// Lint holds two lines of the design: no `any` in the core folders, and the protocol
// boundary (src/ and mesh/ never import the socket or HTTP modules; only the bootstrap in
// src/cli.ts and src/runtime.ts may wire in protocols/).
import tseslint from 'typescript-eslint';

const socketModules = ['node:http', 'node:http2', 'node:net', 'node:tls', 'http', 'http2', 'net', 'tls', 'node:dgram', 'dgram'];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**'] },
  {
    files: ['src/**/*.ts', 'protocols/**/*.ts', 'mesh/**/*.ts'],
    extends: [tseslint.configs.base],
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
    },
  },
  {
    files: ['src/**/*.ts', 'mesh/**/*.ts'],
    ignores: ['src/cli.ts', 'src/runtime.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        paths: socketModules.map((name) => ({ name, message: 'Protocol I/O belongs in protocols/ (DESIGN invariant 1).' })),
        patterns: [{ group: ['**/protocols/**'], message: 'Code past the boundary never imports a protocol module (DESIGN invariant 1).' }],
      }],
    },
  },
  {
    files: ['src/cli.ts', 'src/runtime.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        paths: socketModules.map((name) => ({ name, message: 'Protocol I/O belongs in protocols/.' })),
      }],
    },
  },
);

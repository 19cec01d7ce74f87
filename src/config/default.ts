/**
 * The embedded default config: what Skiff runs when no file is given. It goes through the same
 * parser and checks as a file (load.ts `defaultSnapshot`), so it cannot drift from the schema.
 */

export const DEFAULT_CONFIG_SOURCE = 'embedded default';

export const DEFAULT_CONFIG_YAML = `# Skiff embedded default: inbound sidecar for an app on 127.0.0.1:8080.
admin:
  address: 127.0.0.1:15000
listeners:
  - name: inbound
    address: 127.0.0.1:15006
    protocols: [http1, h2c]
    routes: inbound
routes:
  inbound:
    - match: { prefix: / }
      cluster: local-app
      timeout: 15s
clusters:
  - name: local-app
    protocol: http1
    endpoints: [127.0.0.1:8080]
`;

// deploy/kubernetes/ (issue 5, item 8). Kubernetes is not available here, so the manifests are
// only checked statically: every YAML document parses, the Skiff config inside each ConfigMap
// passes Skiff's own loader (parseConfig), and the Pod agrees with that config (ports, probes,
// mounts, HTTP_PROXY, the commented iptables variant), so the example cannot drift from the
// schema or from itself.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { describe, it } from 'node:test';
import { parse, parseAllDocuments } from 'yaml';
import { ConfigError, parseConfig } from '../../src/config/load.js';
import type { ConfigSnapshot } from '../../src/config/types.js';
import { repoPath } from '../helpers/repo-root.js';

const DIR = repoPath('deploy', 'kubernetes');

type Obj = Record<string, unknown>;

interface Manifest {
  file: string;
  kind: string;
  name: string;
  doc: Obj;
}

interface Container {
  name: string;
  image: string;
  args?: string[];
  env?: { name: string; value?: string }[];
  ports?: { name?: string; containerPort: number }[];
  readinessProbe?: { httpGet?: { path: string; port: number | string } };
  livenessProbe?: { httpGet?: { path: string; port: number | string } };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean; subPath?: string }[];
  securityContext?: { runAsUser?: number; capabilities?: { add?: string[] } };
}

interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  volumes?: { name: string; configMap?: { name: string }; secret?: Obj; projected?: { sources: Obj[] } }[];
}

function yamlFiles(): string[] {
  return readdirSync(DIR)
    .filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'))
    .sort();
}

function loadManifests(): Manifest[] {
  const out: Manifest[] = [];
  for (const file of yamlFiles()) {
    const text = readFileSync(join(DIR, file), 'utf8');
    parseAllDocuments(text).forEach((d, i) => {
      if (!('errors' in d)) assert.fail(`${file}: document ${i + 1}: not a YAML document`);
      assert.deepEqual(d.errors.map((e) => e.message), [], `${file}: document ${i + 1} parses`);
      const doc = d.toJS() as Obj | null;
      if (doc === null) return; // an empty document (a trailing ---)
      const meta = doc.metadata as Obj | undefined;
      assert.equal(typeof doc.apiVersion, 'string', `${file}: document ${i + 1} has apiVersion`);
      assert.equal(typeof doc.kind, 'string', `${file}: document ${i + 1} has kind`);
      assert.equal(typeof meta?.name, 'string', `${file}: document ${i + 1} has metadata.name`);
      out.push({ file, kind: doc.kind as string, name: meta?.name as string, doc });
    });
  }
  return out;
}

/** Every Skiff config in a ConfigMap (data keys ending .yaml), validated by parseConfig. */
function skiffConfigs(manifests: Manifest[]): { cm: Manifest; key: string; snapshot: ConfigSnapshot }[] {
  const out: { cm: Manifest; key: string; snapshot: ConfigSnapshot }[] = [];
  for (const cm of manifests.filter((m) => m.kind === 'ConfigMap')) {
    const data = (cm.doc.data ?? {}) as Record<string, string>;
    for (const [key, text] of Object.entries(data)) {
      if (!key.endsWith('.yaml') && !key.endsWith('.yml')) continue;
      let snapshot: ConfigSnapshot;
      try {
        snapshot = parseConfig(text, `${cm.file}: ConfigMap ${cm.name} ${key}`, '/etc/skiff/config', 1);
      } catch (err) {
        assert.fail(err instanceof ConfigError ? `the example config does not load:\n${err.message}` : (err as Error).message);
      }
      out.push({ cm, key, snapshot });
    }
  }
  return out;
}

const manifests = loadManifests();

describe('deploy/kubernetes', () => {
  it('has manifests, each YAML document with apiVersion, kind and metadata.name', () => {
    assert.ok(yamlFiles().length > 0, 'YAML files in deploy/kubernetes/');
    const kinds = manifests.map((m) => m.kind);
    for (const kind of ['ConfigMap', 'Service', 'Pod']) assert.ok(kinds.includes(kind), `a ${kind}`);
  });

  it('holds a Skiff config in a ConfigMap that passes parseConfig', () => {
    const configs = skiffConfigs(manifests);
    assert.ok(configs.length > 0, 'at least one ConfigMap with a *.yaml key');
    for (const { snapshot } of configs) {
      assert.ok(snapshot.identity !== null, 'the example has a mesh identity');
      assert.ok(snapshot.listeners.some((l) => l.meshTls), 'a tls: mesh listener');
      assert.ok(snapshot.listeners.some((l) => l.direction === 'outbound'), 'an outbound listener');
      const outbound = snapshot.listeners.find((l) => l.direction === 'outbound');
      const table = snapshot.routeTables.get(outbound?.routes ?? '');
      const route = table?.match('backend', '/greeting', []);
      const cluster = snapshot.clusters.get(route?.cluster ?? '');
      assert.ok(cluster?.meshTls === true && cluster.peerIdentity !== null, 'http://backend/ goes to a tls: mesh cluster with a peerIdentity');
    }
  });

  it('runs Skiff in the Pod consistently with that config', () => {
    const [{ cm, key, snapshot }] = skiffConfigs(manifests);
    const pods = manifests.filter((m) => m.kind === 'Pod');
    assert.equal(pods.length, 1);
    const spec = pods[0].doc.spec as PodSpec;
    const skiff = spec.containers.find((c) => c.image === 'skiff:latest');
    assert.ok(skiff !== undefined, 'a container with image skiff:latest (the repository Dockerfile)');
    const app = spec.containers.find((c) => c !== skiff);
    assert.ok(app !== undefined, 'a service container beside it');

    // The config file: a ConfigMap volume, mounted read-only without subPath (subPath stops updates).
    const cfgVolume = spec.volumes?.find((v) => v.configMap?.name === cm.name);
    assert.ok(cfgVolume !== undefined, `a volume from ConfigMap ${cm.name}`);
    const cfgMount = skiff.volumeMounts?.find((m) => m.name === cfgVolume.name);
    assert.ok(cfgMount !== undefined && cfgMount.readOnly === true && cfgMount.subPath === undefined, 'the config mounted read-only, no subPath');
    assert.deepEqual(skiff.args, ['--config', posix.join(cfgMount.mountPath, key)]);

    // Ports: the admin port and every listener port, and nothing else.
    const admin = snapshot.admin;
    assert.ok(admin !== null);
    const containerPorts = (skiff.ports ?? []).map((p) => p.containerPort).sort((a, b) => a - b);
    const configPorts = [admin.port, ...snapshot.listeners.map((l) => l.address.port)].sort((a, b) => a - b);
    assert.deepEqual(containerPorts, configPorts);
    assert.deepEqual(containerPorts, [15000, 15001, 15006, 15008]);
    assert.equal(admin.host, '0.0.0.0', 'the kubelet probes the Pod IP');

    // Probes on the admin port.
    assert.deepEqual(skiff.readinessProbe?.httpGet, { path: '/ready', port: admin.port });
    assert.deepEqual(skiff.livenessProbe?.httpGet, { path: '/live', port: admin.port });

    // The identity files come from a read-only Secret / projected volume.
    const identity = snapshot.identity;
    assert.ok(identity !== null);
    const certVolume = spec.volumes?.find((v) => v.secret !== undefined || v.projected !== undefined);
    assert.ok(certVolume !== undefined, 'a Secret or projected volume');
    const certMount = skiff.volumeMounts?.find((m) => m.name === certVolume.name);
    assert.ok(certMount !== undefined && certMount.readOnly === true && certMount.subPath === undefined, 'the certificates mounted read-only, no subPath');
    for (const path of [identity.cert, identity.key, identity.trustBundle]) {
      assert.ok(path.startsWith(`${certMount.mountPath}/`), `${path} is in the certificate volume`);
    }

    // Explicit-proxy outbound: the app's HTTP_PROXY is the outbound listener.
    const outbound = snapshot.listeners.find((l) => l.direction === 'outbound');
    assert.ok(outbound !== undefined);
    const proxy = app.env?.find((e) => e.name === 'HTTP_PROXY')?.value;
    assert.equal(proxy, `http://${outbound.address.host}:${outbound.address.port}`);

    // The Service targets ports the Skiff container has.
    for (const svc of manifests.filter((m) => m.kind === 'Service')) {
      const ports = ((svc.doc.spec as Obj).ports ?? []) as { targetPort: number | string }[];
      for (const p of ports) {
        const ok = (skiff.ports ?? []).some((cp) => cp.name === p.targetPort || cp.containerPort === p.targetPort);
        assert.ok(ok, `Service ${svc.name} targetPort ${String(p.targetPort)} is a Skiff port`);
      }
    }
  });

  it('has a commented iptables init container that parses and matches the config', () => {
    const [{ snapshot }] = skiffConfigs(manifests);
    const pod = manifests.find((m) => m.kind === 'Pod');
    assert.ok(pod !== undefined);
    const lines = readFileSync(join(DIR, pod.file), 'utf8').split('\n');
    const start = lines.findIndex((l) => /^ {2}# initContainers:\s*$/.test(l));
    assert.ok(start >= 0, 'a commented `initContainers:` block in the Pod spec');
    const block: string[] = [];
    for (let i = start; i < lines.length && lines[i].startsWith('  #'); i++) block.push(lines[i].replace(/^ {2}# ?/, ''));
    const parsed = parse(block.join('\n')) as { initContainers: Container[] };
    const init = parsed.initContainers[0];
    assert.ok(init.securityContext?.capabilities?.add?.includes('NET_ADMIN'), 'NET_ADMIN');
    const script = (init.args ?? []).join('\n');
    const inbound = snapshot.listeners.find((l) => l.name === 'inbound');
    const outbound = snapshot.listeners.find((l) => l.direction === 'outbound');
    assert.ok(inbound !== undefined && outbound !== undefined);
    assert.match(script, new RegExp(`--dport 8080 -j REDIRECT --to-ports ${inbound.address.port}\\b`));
    assert.match(script, new RegExp(`--dport 80 -j REDIRECT --to-ports ${outbound.address.port}\\b`));
    const skiffUid = (pod.doc.spec as PodSpec).containers.find((c) => c.image === 'skiff:latest')?.securityContext?.runAsUser;
    assert.equal(skiffUid, 1000);
    assert.match(script, new RegExp(`--uid-owner ${skiffUid} -j RETURN`), "Skiff's own UID is excluded from the redirect");
    const appUid = (pod.doc.spec as PodSpec).containers.find((c) => c.image !== 'skiff:latest')?.securityContext?.runAsUser;
    assert.notEqual(appUid, skiffUid, 'the app runs under another UID');
  });
});

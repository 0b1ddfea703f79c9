#!/usr/bin/env node
// Checks every kustomize overlay under deploy/k8s/overlays (run through check_manifests.sh):
//  1. it renders (`kubectl kustomize`);
//  2. every rendered object passes the Kubernetes JSON schema of its kind (kubernetes-models,
//     @kubernetes-models/prometheus-operator), with unknown fields reported too (the API
//     server's strict field validation rejects them; the schemas alone would not);
//  3. references inside the overlay resolve: ConfigMaps, Secrets and keys, volumes, named
//     ports, selectors, the HPA's target, the Ingress and ServiceMonitor's Service;
//  4. each segue container's segue.yaml (its mounted ConfigMap) needs no ${VAR} that its
//     environment lacks: the container env, the Secret it loads (rendered in the overlay, or
//     documented in deploy/k8s/base/secret.example.yaml when created out of band);
//  5. `segue --check-config` accepts that config with exactly that environment;
//  6. the storage shape fits the workload: a Deployment (replaceable pods, an HPA) keeps
//     nothing on pod-local storage; a StatefulSet on SQLite runs one replica with the database
//     and blobs on a claimed volume.
// Every problem is printed; the exit code is 1 if there was any.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const YAML = require('yaml');

function usage() {
  console.error('usage: validate.js --root REPO --kubectl KUBECTL --segue SEGUE_BINARY');
  process.exit(2);
}

const args = {};
for (let i = 2; i < process.argv.length; i += 2) {
  const name = process.argv[i];
  if (!['--root', '--kubectl', '--segue'].includes(name) || i + 1 >= process.argv.length) usage();
  args[name.slice(2)] = process.argv[i + 1];
}
if (!args.root || !args.kubectl || !args.segue) usage();

const overlaysDir = path.join(args.root, 'deploy/k8s/overlays');
const exampleSecretPath = path.join(args.root, 'deploy/k8s/base/secret.example.yaml');
// The config path baked into the image's ENTRYPOINT (deploy/Dockerfile).
const CONFIG_DIR = '/etc/segue';
const CONFIG_KEY = 'segue.yaml';

let problems = 0;
function problem(where, message) {
  problems++;
  console.error(`FAIL ${where}: ${message}`);
}

// ---- schemas ----------------------------------------------------------------------------

// The model class for apiVersion/kind: kubernetes-models for the built-in kinds, the
// prometheus-operator models for ServiceMonitor. null when no package knows the kind.
function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : ['', apiVersion];
  const candidates = group === ''
    ? [`kubernetes-models/${version}/${kind}`]
    : [`kubernetes-models/${group}/${version}/${kind}`,
       `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`];
  for (const id of candidates) {
    let mod;
    try {
      mod = require(id);
    } catch (e) {
      if (e.code === 'MODULE_NOT_FOUND' || e.code === 'ERR_PACKAGE_PATH_NOT_EXPORTED') continue;
      throw e;
    }
    if (mod[kind]) return mod[kind];
  }
  return null;
}

// The compiled validators read every property their schema declares (also absent ones) and
// enumerate the keys of maps. Wrapping the object in proxies that record those reads shows
// which fields the schema does not know: keys of an object whose properties were read one by
// one but which were never read themselves.
function track(value, pointer, objects) {
  if (value === null || typeof value !== 'object') return value;
  const entry = { value, pointer, read: new Set(), enumerated: false };
  if (!Array.isArray(value)) objects.push(entry);
  const children = new Map();
  return new Proxy(value, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver);
      if (typeof key !== 'string') return v;
      entry.read.add(key);
      if (!Object.prototype.hasOwnProperty.call(target, key)) return v;
      if (!children.has(key)) children.set(key, track(v, `${pointer}/${key}`, objects));
      return children.get(key);
    },
    has(target, key) {
      if (typeof key === 'string') entry.read.add(key);
      return Reflect.has(target, key);
    },
    ownKeys(target) {
      entry.enumerated = true;
      return Reflect.ownKeys(target);
    },
  });
}

function validateSchema(obj, where) {
  const Model = modelFor(obj.apiVersion, obj.kind);
  if (!Model) {
    problem(where, `no schema for ${obj.apiVersion} ${obj.kind} (add its models package to tests/deploy/package.json)`);
    return;
  }
  // kustomize wraps long base64 values of Secrets over lines; the API server's decoder (Go's
  // base64.StdEncoding) skips the newlines, the schema's "byte" pattern does not.
  if (obj.kind === 'Secret' && obj.data) {
    obj = { ...obj, data: Object.fromEntries(Object.entries(obj.data).map(([k, v]) => [k, String(v).replace(/[\r\n]/g, '')])) };
  }
  const objects = [];
  try {
    Model.prototype.validate.call(track(obj, '', objects));
  } catch (e) {
    if (!e.errors) throw e;
    for (const err of e.errors) problem(where, `${err.instancePath || '/'} ${err.message}`);
  }
  for (const o of objects) {
    if (o.enumerated || o.read.size === 0) continue;
    for (const key of Object.keys(o.value)) {
      if (!o.read.has(key)) problem(where, `${o.pointer}/${key}: unknown field`);
    }
  }
}

// ---- the rendered objects ----------------------------------------------------------------

function render(overlay) {
  const r = spawnSync(args.kubectl, ['kustomize', overlay], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) throw new Error(`cannot run ${args.kubectl}: ${r.error.message}`);
  if (r.status !== 0) return { error: (r.stderr || '').trim() || `exit ${r.status}` };
  return { text: r.stdout };
}

function parseAll(text, where) {
  const objects = [];
  for (const doc of YAML.parseAllDocuments(text)) {
    if (doc.errors.length) {
      for (const e of doc.errors) problem(where, `YAML: ${e.message}`);
      continue;
    }
    const obj = doc.toJS();
    if (obj === null) continue;
    if (typeof obj !== 'object' || !obj.apiVersion || !obj.kind || !obj.metadata?.name) {
      problem(where, `not a Kubernetes object: ${JSON.stringify(obj).slice(0, 120)}`);
      continue;
    }
    objects.push(obj);
  }
  return objects;
}

const id = (o) => `${o.kind}/${o.metadata.name}`;

function secretData(secret) {
  const data = {};
  for (const [k, v] of Object.entries(secret.data || {})) data[k] = Buffer.from(v, 'base64').toString('utf8');
  for (const [k, v] of Object.entries(secret.stringData || {})) data[k] = String(v);
  return data;
}

function matches(selector, labels) {
  if (!selector) return false;
  const want = Object.entries(selector);
  return want.length > 0 && want.every(([k, v]) => labels?.[k] === v);
}

// A metav1.LabelSelector; an empty one would select every pod, which no object here means.
function labelSelectorMatches(sel, labels) {
  const exprs = sel?.matchExpressions || [];
  const plain = Object.entries(sel?.matchLabels || {});
  if (plain.length === 0 && exprs.length === 0) return false;
  const has = (k) => labels != null && Object.prototype.hasOwnProperty.call(labels, k);
  return plain.every(([k, v]) => labels?.[k] === v) && exprs.every((e) => {
    switch (e.operator) {
      case 'In': return has(e.key) && e.values.includes(labels[e.key]);
      case 'NotIn': return !has(e.key) || !e.values.includes(labels[e.key]);
      case 'Exists': return has(e.key);
      case 'DoesNotExist': return !has(e.key);
      default: return false;
    }
  });
}

// ---- configs: ${VAR} like gateway/config/schema_support.cpp (scalar_text) -----------------

// The variables a config needs: each ${VAR} without a :-default. Only values are substituted
// (keys and comments are not); $${ is a literal ${.
function requiredVariables(configText) {
  const required = new Set();
  const scan = (s) => {
    for (let i = 0; i < s.length;) {
      if (s.startsWith('$${', i)) { i += 3; continue; }
      if (!s.startsWith('${', i)) { i++; continue; }
      const close = s.indexOf('}', i + 2);
      if (close < 0) return;
      const inner = s.slice(i + 2, close);
      const sep = inner.indexOf(':-');
      if (sep < 0) required.add(inner);
      i = close + 1;
    }
  };
  const walk = (node) => {
    if (typeof node === 'string') scan(node);
    else if (Array.isArray(node)) node.forEach(walk);
    else if (node && typeof node === 'object') Object.values(node).forEach(walk);
  };
  walk(YAML.parse(configText));
  return required;
}

// A stand-in value for a key of the example Secret, valid where the config checks the format.
function sampleValue(key, placeholder) {
  if (placeholder.startsWith('whsec_')) return 'whsec_' + Buffer.alloc(32, 7).toString('base64');
  if (placeholder.startsWith('postgresql://')) return 'postgresql://segue:test@db.invalid:5432/segue';
  return `test-${key.toLowerCase()}`;
}

// fileName: what segue's messages call the file (their line numbers are the ConfigMap's,
// which are the source segue.yaml's).
function checkConfig(configText, env, fileName, where) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'segue-deploy-'));
  try {
    const file = path.join(dir, fileName);
    fs.writeFileSync(file, configText);
    // Exactly the container's environment: nothing inherited from the test's.
    const r = spawnSync(args.segue, ['--config', file, '--check-config'], { env, encoding: 'utf8' });
    if (r.error) throw new Error(`cannot run ${args.segue}: ${r.error.message}`);
    if (r.status !== 0) problem(where, `segue --check-config failed:\n${(r.stderr || '').trim()}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ---- one overlay -------------------------------------------------------------------------

function checkOverlay(name, example) {
  const where = `overlays/${name}`;
  const before = problems;
  const r = render(path.join(overlaysDir, name));
  if (r.error) {
    problem(where, `kubectl kustomize failed:\n${r.error}`);
    return;
  }
  const objects = parseAll(r.text, where);
  for (const o of objects) validateSchema(o, `${where} ${id(o)}`);

  const byKind = (kind) => objects.filter((o) => o.kind === kind);
  const find = (kind, n) => objects.find((o) => o.kind === kind && o.metadata.name === n);
  const workloads = objects.filter((o) => ['Deployment', 'StatefulSet'].includes(o.kind));
  const podLabels = workloads.map((w) => w.spec?.template?.metadata?.labels || {});
  const secretsOf = (n) => {
    const s = find('Secret', n);
    if (s) return { data: secretData(s), source: `Secret ${n}` };
    if (n === example.metadata.name) return { data: secretData(example), source: `Secret ${n} (documented in base/secret.example.yaml)`, example: true };
    return null;
  };

  let segueContainers = 0;
  for (const w of workloads) {
    const at = `${where} ${id(w)}`;
    const pod = w.spec?.template?.spec || {};
    if (!labelSelectorMatches(w.spec?.selector, w.spec?.template?.metadata?.labels))
      problem(at, 'spec.selector does not match the pod template labels');
    const volumes = new Map((pod.volumes || []).map((v) => [v.name, v]));
    const claims = new Set((w.spec?.volumeClaimTemplates || []).map((c) => c.metadata?.name));
    if (w.kind === 'StatefulSet' && !find('Service', w.spec?.serviceName))
      problem(at, `spec.serviceName ${w.spec?.serviceName} is not a Service of the overlay`);

    for (const v of volumes.values()) {
      if (v.configMap && !find('ConfigMap', v.configMap.name) && !v.configMap.optional)
        problem(at, `volume ${v.name}: ConfigMap ${v.configMap.name} is not in the overlay`);
      if (v.secret && !secretsOf(v.secret.secretName) && !v.secret.optional)
        problem(at, `volume ${v.name}: Secret ${v.secret.secretName} is not in the overlay`);
    }

    for (const c of [...(pod.initContainers || []), ...(pod.containers || [])]) {
      const cat = `${at} container ${c.name}`;
      const ports = new Set((c.ports || []).map((p) => p.name).filter(Boolean));
      for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
        const port = c[probe]?.httpGet?.port ?? c[probe]?.tcpSocket?.port;
        if (typeof port === 'string' && !ports.has(port)) problem(cat, `${probe}: no container port named ${port}`);
      }
      const mounts = new Map();
      for (const m of c.volumeMounts || []) {
        if (!volumes.has(m.name) && !claims.has(m.name)) problem(cat, `volumeMount ${m.name}: no such volume or volumeClaimTemplate`);
        mounts.set(m.mountPath, m);
      }

      // The environment the container gets.
      const env = {};
      const envSources = [];
      let fromExample = false;
      for (const ef of c.envFrom || []) {
        if (!ef.secretRef) continue;
        const s = secretsOf(ef.secretRef.name);
        if (!s) {
          if (!ef.secretRef.optional) problem(cat, `envFrom: Secret ${ef.secretRef.name} is not in the overlay`);
          continue;
        }
        envSources.push(s.source);
        fromExample ||= !!s.example;
        for (const [k, v] of Object.entries(s.data)) env[k] = s.example ? sampleValue(k, v) : v;
      }
      for (const e of c.env || []) {
        const ref = e.valueFrom?.secretKeyRef;
        if (ref) {
          const s = secretsOf(ref.name);
          if (!s || !(ref.key in s.data)) {
            if (!ref.optional) problem(cat, `env ${e.name}: no key ${ref.key} in Secret ${ref.name}`);
            continue;
          }
          env[e.name] = s.example ? sampleValue(ref.key, s.data[ref.key]) : s.data[ref.key];
        } else if (e.valueFrom) {
          env[e.name] = '';
        } else {
          env[e.name] = e.value ?? '';
        }
      }

      // A segue container: the image's ENTRYPOINT reads CONFIG_DIR/CONFIG_KEY.
      const configMount = mounts.get(CONFIG_DIR);
      const configMap = configMount && volumes.get(configMount.name)?.configMap;
      const cm = configMap && find('ConfigMap', configMap.name);
      if (!cm || !(CONFIG_KEY in (cm.data || {}))) continue;
      segueContainers++;
      const configText = cm.data[CONFIG_KEY];
      for (const v of requiredVariables(configText)) {
        if (v in env) continue;
        const sources = envSources.length ? envSources.join(', ') : 'no Secret';
        problem(cat, `${id(cm)} needs \${${v}}, which is neither in the container's env nor in ${sources}`);
      }
      checkConfig(configText, env, `${name}.${CONFIG_KEY}`, `${cat} (${id(cm)}${fromExample ? ', example Secret values' : ''})`);
      checkStorage(w, YAML.parse(configText) || {}, mounts, claims, objects, cat);
    }
  }
  if (segueContainers === 0) problem(where, `no container mounts a ConfigMap with ${CONFIG_KEY} at ${CONFIG_DIR}`);

  for (const s of byKind('Service')) {
    if (!s.spec?.selector) continue;
    const target = workloads.find((w) => matches(s.spec.selector, w.spec?.template?.metadata?.labels));
    if (!target) {
      problem(`${where} ${id(s)}`, 'selector matches no workload');
      continue;
    }
    const names = new Set(target.spec.template.spec.containers.flatMap((c) => (c.ports || []).map((p) => p.name)));
    for (const p of s.spec.ports || []) {
      if (typeof p.targetPort === 'string' && !names.has(p.targetPort))
        problem(`${where} ${id(s)}`, `targetPort ${p.targetPort} is no container port of ${id(target)}`);
    }
  }
  for (const o of [...byKind('PodDisruptionBudget'), ...byKind('NetworkPolicy')]) {
    const sel = o.kind === 'NetworkPolicy' ? o.spec?.podSelector : o.spec?.selector;
    if (!podLabels.some((l) => labelSelectorMatches(sel, l))) problem(`${where} ${id(o)}`, 'selector matches no workload');
  }
  for (const h of byKind('HorizontalPodAutoscaler')) {
    const t = h.spec?.scaleTargetRef || {};
    if (!find(t.kind, t.name)) problem(`${where} ${id(h)}`, `scaleTargetRef ${t.kind}/${t.name} is not in the overlay`);
  }
  for (const ing of byKind('Ingress')) {
    for (const rule of ing.spec?.rules || []) {
      for (const p of rule.http?.paths || []) {
        const b = p.backend?.service;
        const svc = b && find('Service', b.name);
        if (!svc) problem(`${where} ${id(ing)}`, `backend Service ${b?.name} is not in the overlay`);
        else if (b.port?.name && !svc.spec.ports.some((sp) => sp.name === b.port.name))
          problem(`${where} ${id(ing)}`, `Service ${b.name} has no port ${b.port.name}`);
      }
    }
  }
  for (const sm of byKind('ServiceMonitor')) {
    const svc = byKind('Service').find((s) => labelSelectorMatches(sm.spec?.selector, s.metadata.labels));
    if (!svc) {
      problem(`${where} ${id(sm)}`, 'selector matches no Service');
      continue;
    }
    for (const ep of sm.spec.endpoints || []) {
      if (ep.port && !svc.spec.ports.some((p) => p.name === ep.port))
        problem(`${where} ${id(sm)}`, `Service ${svc.metadata.name} has no port ${ep.port}`);
    }
  }
  for (const np of byKind('NetworkPolicy')) {
    const selected = workloads.filter((w) => labelSelectorMatches(np.spec?.podSelector, w.spec?.template?.metadata?.labels));
    const names = new Set(selected.flatMap((w) => w.spec.template.spec.containers.flatMap((c) => (c.ports || []).map((p) => p.name))));
    for (const rule of np.spec?.ingress || []) {
      for (const p of rule.ports || []) {
        if (typeof p.port === 'string' && !names.has(p.port)) problem(`${where} ${id(np)}`, `ingress port ${p.port} is no container port of the pods it selects`);
      }
    }
  }
  checkDevDatabase(objects, where);
  if (problems === before) console.log(`ok   ${where}: ${objects.length} objects (${objects.map(id).join(', ')})`);
}

// The storage a workload's config names must outlive its pods as the workload needs.
function checkStorage(w, config, mounts, claims, objects, where) {
  const storage = config.storage || {};
  const engine = storage.engine ?? 'sqlite';
  const blobs = storage.blobs ?? 'directory';
  // The mount (longest matching path) a file path lands on.
  const mountOf = (p) => {
    let best = null;
    for (const [mp, m] of mounts) {
      if ((p === mp || p.startsWith(mp.endsWith('/') ? mp : mp + '/')) && (!best || mp.length > best[0].length)) best = [mp, m];
    }
    return best && best[1];
  };
  const local = [];
  if (engine === 'sqlite') local.push(['storage.sqlite_path', storage.sqlite_path ?? 'var/segue.db']);
  if (blobs === 'directory') local.push(['storage.blob_dir', storage.blob_dir ?? 'var/blobs']);

  if (w.kind === 'Deployment') {
    // Replaceable pods, scaled by an HPA: everything durable in PostgreSQL.
    for (const [key] of local) problem(where, `a Deployment's pods are replaceable: ${key} keeps data in the pod (use storage.engine/blobs: postgres)`);
    const hpa = objects.find((o) => o.kind === 'HorizontalPodAutoscaler' && o.spec?.scaleTargetRef?.kind === 'Deployment' && o.spec.scaleTargetRef.name === w.metadata.name);
    if (!hpa) problem(where, 'no HorizontalPodAutoscaler targets this Deployment');
    else if ((hpa.spec.minReplicas ?? 1) < 2) problem(where, `${id(hpa)}: minReplicas ${hpa.spec.minReplicas ?? 1} < 2`);
    if (hpa && w.spec.replicas !== undefined) problem(where, 'spec.replicas is set although an HPA owns the count (every apply would reset it)');
    return;
  }
  // A StatefulSet: files on a claimed volume, and only one writer for SQLite.
  for (const [key, p] of local) {
    const m = path.isAbsolute(p) ? mountOf(p) : null;
    if (!m || !claims.has(m.name)) problem(where, `${key} ${p} is not on a volumeClaimTemplate mount`);
  }
  if (engine === 'sqlite' && (w.spec.replicas ?? 1) !== 1) problem(where, `SQLite has one writer: replicas must be 1, not ${w.spec.replicas}`);
  if (engine === 'sqlite' && objects.some((o) => o.kind === 'HorizontalPodAutoscaler' && o.spec?.scaleTargetRef?.name === w.metadata.name))
    problem(where, 'an HPA targets a SQLite StatefulSet');
}

// An overlay that ships its own PostgreSQL (dev): the database URL in its Secret must name
// that server, user, password and database.
function checkDevDatabase(objects, where) {
  const pg = objects.find((o) => o.kind === 'StatefulSet' && o.spec?.template?.spec?.containers?.some((c) => /(^|\/)postgres(:|@|$)/.test(c.image)));
  if (!pg) return;
  const c = pg.spec.template.spec.containers.find((x) => /(^|\/)postgres(:|@|$)/.test(x.image));
  const envOf = (n) => {
    const e = (c.env || []).find((x) => x.name === n);
    if (!e) return undefined;
    if (e.valueFrom?.secretKeyRef) {
      const s = objects.find((o) => o.kind === 'Secret' && o.metadata.name === e.valueFrom.secretKeyRef.name);
      return s && secretData(s)[e.valueFrom.secretKeyRef.key];
    }
    return e.value;
  };
  const urls = objects.filter((o) => o.kind === 'Secret').map((s) => secretData(s).SEGUE_DATABASE_URL).filter(Boolean);
  if (urls.length === 0) problem(where, `${id(pg)} is a PostgreSQL, but no Secret has SEGUE_DATABASE_URL`);
  for (const raw of urls) {
    const u = new URL(raw);
    const want = {
      host: pg.spec.serviceName,
      user: envOf('POSTGRES_USER') ?? 'postgres',
      password: envOf('POSTGRES_PASSWORD'),
      database: envOf('POSTGRES_DB') ?? envOf('POSTGRES_USER') ?? 'postgres',
    };
    const got = { host: u.hostname, user: decodeURIComponent(u.username), password: decodeURIComponent(u.password), database: u.pathname.slice(1) };
    for (const k of Object.keys(want)) {
      if (got[k] !== want[k]) problem(where, `SEGUE_DATABASE_URL ${k} is ${JSON.stringify(got[k])}, ${id(pg)} has ${JSON.stringify(want[k])}`);
    }
  }
}

// ---- main --------------------------------------------------------------------------------

const exampleObjects = parseAll(fs.readFileSync(exampleSecretPath, 'utf8'), 'base/secret.example.yaml');
const example = exampleObjects.find((o) => o.kind === 'Secret');
if (!example) {
  problem('base/secret.example.yaml', 'no Secret in it');
  process.exit(1);
}
validateSchema(example, 'base/secret.example.yaml');

const overlays = fs.readdirSync(overlaysDir, { withFileTypes: true })
  .filter((d) => d.isDirectory() && fs.existsSync(path.join(overlaysDir, d.name, 'kustomization.yaml')))
  .map((d) => d.name)
  .sort();
if (overlays.length === 0) problem('deploy/k8s/overlays', 'no overlay found');
for (const o of overlays) checkOverlay(o, example);

if (problems) {
  console.error(`${problems} problem(s) in the Kubernetes manifests`);
  process.exit(1);
}
console.log(`all ${overlays.length} overlays valid`);

// Validates every manifest under deploy/istio and deploy/k8s (all *.yaml, recursively; *.in
// templates are rendered by deploy/generate.py and checked through their output):
//
//  1. Schema: each document is validated by its kubernetes-models class — Istio kinds by
//     @kubernetes-models/istio (generated from Istio's CRDs), core and apps kinds by
//     kubernetes-models (generated from the Kubernetes OpenAPI). An unknown kind is an error.
//  2. Unknown keys under `spec` of Istio kinds are rejected. The CRD schemas let them through
//     (Istio's CRDs do not set additionalProperties: false), so a misspelt `failStrategy`
//     would otherwise be silently dropped and the plugin would fail OPEN.
//  3. Consistency: the WasmPlugin's callout cluster is the Istio outbound cluster of the
//     auth Service that is shipped here, and the auth Deployment's issuer, audiences and
//     fingerprint attributes equal the pluginConfig's; every Secret, PVC and
//     ServiceAccount the Deployment references is shipped.
//  4. Availability: the auth Deployment runs at least two replicas on PostgreSQL, the database
//     URL (it holds the password) from a Secret, never a literal; no PersistentVolumeClaim (a
//     ReadWriteOnce volume cannot be shared by replicas); readiness and liveness probes; a
//     rolling update that never takes a ready replica away first; a PodDisruptionBudget that
//     selects the pods and keeps at least one while still letting a node drain.
//
// usage: node validate-manifests.mjs [DIR ...]     (after npm ci in deploy/validate)

import { readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import yaml from "js-yaml";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
// Directories to scan (default: the shipped ones); others only for testing the checks themselves.
const dirs = process.argv.length > 2 ? process.argv.slice(2) : ["deploy/istio", "deploy/k8s"];

// ---- allow-lists for Istio spec keys --------------------------------------------------------
// A node is `true` (anything below is accepted: free-form or not checked further), an object
// (the allowed keys, each with its own node) or a one-element array (a list of that node).
const ANY = true;
const targetRef = { group: ANY, kind: ANY, name: ANY, namespace: ANY };
const stringMatch = { exact: ANY, prefix: ANY, regex: ANY };
const portSelector = { number: ANY };
const ISTIO_SPEC = {
  "extensions.istio.io/WasmPlugin": {
    selector: { matchLabels: ANY },
    targetRef,
    targetRefs: [targetRef],
    url: ANY,
    sha256: ANY,
    imagePullPolicy: ANY,
    imagePullSecret: ANY,
    pluginConfig: ANY, // google.protobuf.Struct: the filter's own format, checked by its own parser
    pluginName: ANY,
    phase: ANY,
    priority: ANY,
    failStrategy: ANY,
    vmConfig: { env: [{ name: ANY, value: ANY, valueFrom: ANY }] },
    match: [{ mode: ANY, ports: [portSelector] }],
    type: ANY,
  },
  "networking.istio.io/Gateway": {
    selector: ANY,
    servers: [{ port: { number: ANY, protocol: ANY, name: ANY, targetPort: ANY }, bind: ANY, hosts: ANY, tls: ANY, name: ANY }],
  },
  "networking.istio.io/VirtualService": {
    hosts: ANY,
    gateways: ANY,
    exportTo: ANY,
    tcp: ANY,
    tls: ANY,
    http: [{
      name: ANY,
      match: [{
        name: ANY, uri: stringMatch, scheme: stringMatch, method: stringMatch, authority: stringMatch,
        headers: ANY, port: ANY, sourceLabels: ANY, gateways: ANY, queryParams: ANY, ignoreUriCase: ANY,
        withoutHeaders: ANY, sourceNamespace: ANY, statPrefix: ANY,
      }],
      route: [{ destination: { host: ANY, subset: ANY, port: portSelector }, weight: ANY, headers: ANY }],
      redirect: ANY, directResponse: ANY, delegate: ANY, rewrite: ANY, timeout: ANY, retries: ANY,
      fault: ANY, mirror: ANY, mirrors: ANY, mirrorPercentage: ANY, corsPolicy: ANY, headers: ANY,
    }],
  },
  "networking.istio.io/ServiceEntry": {
    hosts: ANY, addresses: ANY, ports: [{ number: ANY, protocol: ANY, name: ANY, targetPort: ANY }],
    location: ANY, resolution: ANY, endpoints: ANY, workloadSelector: ANY, exportTo: ANY, subjectAltNames: ANY,
  },
  "networking.istio.io/EnvoyFilter": {
    workloadSelector: { labels: ANY },
    targetRefs: [targetRef],
    priority: ANY,
    configPatches: [{ applyTo: ANY, match: ANY, patch: { operation: ANY, value: ANY, filterClass: ANY } }],
  },
  "security.istio.io/RequestAuthentication": {
    selector: { matchLabels: ANY }, targetRef, targetRefs: [targetRef], jwtRules: ANY,
  },
};

function unknownKeys(value, allowed, path) {
  if (allowed === ANY || value === null || value === undefined) return [];
  if (Array.isArray(allowed)) {
    if (!Array.isArray(value)) return [];
    return value.flatMap((v, i) => unknownKeys(v, allowed[0], `${path}[${i}]`));
  }
  if (typeof value !== "object" || Array.isArray(value)) return [];
  return Object.entries(value).flatMap(([k, v]) =>
    k in allowed ? unknownKeys(v, allowed[k], `${path}.${k}`) : [`${path}.${k}`]);
}

// ---- model lookup -------------------------------------------------------------------------------
async function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  let spec;
  if (group.endsWith("istio.io")) spec = `@kubernetes-models/istio/${group}/${version}/${kind}`;
  else if (group === "") spec = `kubernetes-models/${version}/${kind}`;
  else spec = `kubernetes-models/${group}/${version}/${kind}`;
  try {
    const mod = await import(spec);
    return mod[kind];
  } catch {
    return undefined;
  }
}

function yamlFiles(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return yamlFiles(p);
    return /\.ya?ml$/.test(name) ? [p] : [];
  });
}

// ---- run ------------------------------------------------------------------------------------------
const errors = [];
const docs = [];
for (const dir of dirs) {
  for (const file of yamlFiles(resolve(root, dir)).sort()) {
    const rel = relative(root, file);
    let parsed;
    try {
      parsed = yaml.loadAll(readFileSync(file, "utf8"));
    } catch (e) {
      errors.push(`${rel}: not YAML: ${e.message}`);
      continue;
    }
    for (const doc of parsed.filter((d) => d !== null && d !== undefined)) {
      const where = `${rel}: ${doc.kind}/${doc.metadata?.name}`;
      docs.push({ rel, doc });
      const Model = await modelFor(doc.apiVersion ?? "", doc.kind ?? "");
      if (!Model) {
        errors.push(`${where}: no schema for ${doc.apiVersion} ${doc.kind}`);
        continue;
      }
      try {
        new Model(doc).validate();
      } catch (e) {
        errors.push(`${where}: schema: ${e.message}`);
        continue;
      }
      const group = (doc.apiVersion ?? "").split("/")[0];
      if (group.endsWith("istio.io")) {
        const allowed = ISTIO_SPEC[`${group}/${doc.kind}`];
        if (!allowed) {
          errors.push(`${where}: no spec allow-list for this Istio kind (add one to validate-manifests.mjs)`);
          continue;
        }
        const unknown = unknownKeys(doc.spec ?? {}, allowed, "spec");
        if (unknown.length) {
          errors.push(`${where}: unknown keys ${unknown.join(", ")}`);
          continue;
        }
      }
      console.log(`ok  ${where}`);
    }
  }
}

// ---- consistency ----------------------------------------------------------------------------------
const find = (kind, name) => docs.find(({ doc }) => doc.kind === kind && (!name || doc.metadata?.name === name))?.doc;
const plugin = find("WasmPlugin");
const deployment = find("Deployment", "authflow-auth");
if (!plugin) errors.push("no WasmPlugin shipped");
if (!deployment) errors.push("no authflow-auth Deployment shipped");
if (plugin && deployment) {
  const spec = plugin.spec;
  const cfg = spec.pluginConfig ?? {};
  const provider = (cfg.providers ?? [])[0] ?? {};
  if (spec.phase !== "AUTHN") errors.push(`WasmPlugin: phase is ${spec.phase}, expected AUTHN`);
  if (spec.failStrategy !== "FAIL_CLOSE") errors.push(`WasmPlugin: failStrategy is ${spec.failStrategy}, expected FAIL_CLOSE`);
  if (!String(spec.url).startsWith("oci://")) errors.push(`WasmPlugin: url ${spec.url} is not oci://`);
  if (spec.sha256 && !/^[0-9a-f]{64}$/.test(spec.sha256)) errors.push(`WasmPlugin: sha256 ${spec.sha256} is not a hex digest`);

  const upstreams = [provider.jwks?.remote, provider.revocations].filter(Boolean);
  if (upstreams.length !== 2) errors.push("WasmPlugin: pluginConfig needs jwks.remote and revocations upstreams");
  for (const u of upstreams) {
    const m = /^outbound\|(\d+)\|\|([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local$/.exec(u.cluster ?? "");
    if (!m) {
      errors.push(`WasmPlugin: callout cluster ${u.cluster} is not an Istio outbound cluster (outbound|PORT||NAME.NAMESPACE.svc.cluster.local)`);
      continue;
    }
    const [, port, name, namespace] = m;
    const svc = docs.find(({ doc }) => doc.kind === "Service" && doc.metadata?.name === name && doc.metadata?.namespace === namespace)?.doc;
    if (!svc) errors.push(`WasmPlugin: callout cluster ${u.cluster}: no Service ${namespace}/${name} shipped`);
    else if (!(svc.spec.ports ?? []).some((p) => String(p.port) === port)) errors.push(`WasmPlugin: Service ${namespace}/${name} has no port ${port}`);
    if (u.authority !== `${name}.${namespace}.svc.cluster.local`) errors.push(`WasmPlugin: callout authority ${u.authority} is not the Service host`);
    if (svc && deployment.metadata.namespace !== namespace) errors.push(`Deployment and Service ${namespace}/${name} are in different namespaces`);
    if (svc) {
      const labels = deployment.spec.template.metadata.labels ?? {};
      const selects = Object.entries(svc.spec.selector ?? {}).every(([k, v]) => labels[k] === v);
      if (!selects) errors.push(`Service ${namespace}/${name} does not select the authflow-auth pods`);
      const container = deployment.spec.template.spec.containers[0];
      for (const p of svc.spec.ports) {
        const target = p.targetPort ?? p.port;
        if (!(container.ports ?? []).some((cp) => cp.name === target || cp.containerPort === target)) {
          errors.push(`Service ${namespace}/${name}: targetPort ${target} is not a container port`);
        }
      }
    }
  }

  const container = deployment.spec.template.spec.containers[0];
  const env = Object.fromEntries((container.env ?? []).map((e) => [e.name, e]));
  const val = (n) => env[n]?.value;
  const list = (n) => (val(n) ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  if (val("AUTHFLOW_ISSUER") !== provider.issuer) errors.push(`Deployment: AUTHFLOW_ISSUER ${val("AUTHFLOW_ISSUER")} != pluginConfig issuer ${provider.issuer}`);
  if (!list("AUTHFLOW_AUDIENCES").length || !list("AUTHFLOW_AUDIENCES").every((a) => (provider.audiences ?? []).includes(a))) {
    errors.push(`Deployment: AUTHFLOW_AUDIENCES ${val("AUTHFLOW_AUDIENCES")} not accepted by the pluginConfig (${provider.audiences})`);
  }
  if (JSON.stringify(list("AUTHFLOW_FINGERPRINT_ATTRIBUTES")) !== JSON.stringify(cfg.device_binding?.attributes ?? [])) {
    errors.push(`Deployment: AUTHFLOW_FINGERPRINT_ATTRIBUTES ${val("AUTHFLOW_FINGERPRINT_ATTRIBUTES")} != device_binding.attributes`);
  }
  if (val("AUTHFLOW_ENVIRONMENT") === "production" && !String(val("AUTHFLOW_ISSUER")).startsWith("https://")) {
    errors.push("Deployment: production needs an https:// issuer");
  }
  if (!String(val("AUTHFLOW_LISTEN")).endsWith(":8081")) errors.push("Deployment: AUTHFLOW_LISTEN must use port 8081");
  const podSpec = deployment.spec.template.spec;
  for (const e of container.env ?? []) {
    const ref = e.valueFrom?.secretKeyRef;
    if (!ref) continue;
    const secret = find("Secret", ref.name);
    if (!secret) errors.push(`Deployment: env ${e.name} references Secret ${ref.name}, which is not shipped (as a template)`);
    else if (!(ref.key in (secret.stringData ?? {})) && !(ref.key in (secret.data ?? {}))) errors.push(`Deployment: Secret ${ref.name} has no key ${ref.key}`);
  }
  for (const v of podSpec.volumes ?? []) {
    if (v.persistentVolumeClaim && !find("PersistentVolumeClaim", v.persistentVolumeClaim.claimName)) {
      errors.push(`Deployment: PVC ${v.persistentVolumeClaim.claimName} is not shipped`);
    }
  }
  errors.push(...availabilityProblems(deployment, container, env));
  if (podSpec.serviceAccountName && !find("ServiceAccount", podSpec.serviceAccountName)) {
    errors.push(`Deployment: ServiceAccount ${podSpec.serviceAccountName} is not shipped`);
  }
  if (!podSpec.securityContext?.runAsNonRoot) errors.push("Deployment: must run as non-root");
}

// The rate limiter (deploy/istio/ratelimit.yaml) runs after the authflow WasmPlugin on the same
// workloads, keys on the identity header the filter owns, and patches routes that exist.
const limiter = find("EnvoyFilter", "authflow-rate-limits");
if (!limiter) errors.push("no authflow-rate-limits EnvoyFilter shipped");
if (limiter && plugin) {
  const patches = limiter.spec.configPatches ?? [];
  const insert = patches.find((p) => p.applyTo === "HTTP_FILTER" && p.patch?.value?.name === "envoy.filters.http.local_ratelimit");
  const relativeTo = insert?.match?.listener?.filterChain?.filter?.subFilter?.name;
  // The WasmPlugin (phase AUTHN) sits before Istio's own filters; just before the router is after it.
  if (!insert || insert.patch.operation !== "INSERT_BEFORE" || relativeTo !== "envoy.filters.http.router") {
    errors.push("EnvoyFilter authflow-rate-limits: local_ratelimit must be inserted INSERT_BEFORE envoy.filters.http.router (after the authflow WasmPlugin)");
  }
  if (JSON.stringify(limiter.spec.workloadSelector?.labels) !== JSON.stringify(plugin.spec.selector?.matchLabels)) {
    errors.push("EnvoyFilter authflow-rate-limits: workloadSelector differs from the WasmPlugin's selector");
  }
  const subject = plugin.spec.pluginConfig?.identity_headers?.subject;
  const configs = patches.flatMap((p) => [p.patch?.value?.typed_config, p.patch?.value?.typed_per_filter_config?.["envoy.filters.http.local_ratelimit"]])
    .filter((c) => c && c.descriptors);
  for (const c of configs) {
    const headers = (c.rate_limits ?? []).flatMap((r) => r.actions ?? []).map((a) => a.request_headers?.header_name).filter(Boolean);
    if (!subject || JSON.stringify(headers) !== JSON.stringify([subject])) {
      errors.push(`EnvoyFilter authflow-rate-limits (${c.stat_prefix}): per-user descriptor must use the WasmPlugin's identity_headers.subject (${subject}), uses ${headers}`);
    }
  }
  const routeNames = docs.filter(({ doc }) => doc.kind === "VirtualService").flatMap(({ doc }) => (doc.spec.http ?? []).map((h) => h.name));
  for (const p of patches.filter((p) => p.applyTo === "HTTP_ROUTE")) {
    const name = p.match?.routeConfiguration?.vhost?.route?.name;
    if (!routeNames.includes(name)) errors.push(`EnvoyFilter authflow-rate-limits: patches route ${name}, which no shipped VirtualService names`);
  }
}

// Several replicas on one PostgreSQL, and what keeps them available (point 4 above).
function availabilityProblems(deployment, container, env) {
  const problems = [];
  const podSpec = deployment.spec.template.spec;
  const replicas = deployment.spec.replicas ?? 1;
  if (replicas < 2) problems.push(`Deployment: ${replicas} replica(s); run at least 2 (on PostgreSQL)`);
  const url = env.AUTHFLOW_DATABASE_URL;
  if (!url) problems.push("Deployment: no AUTHFLOW_DATABASE_URL: several replicas need the PostgreSQL store");
  else if (!url.valueFrom?.secretKeyRef) problems.push("Deployment: AUTHFLOW_DATABASE_URL must come from a Secret (secretKeyRef), not a literal value");
  if ((podSpec.volumes ?? []).some((v) => v.persistentVolumeClaim)) {
    problems.push("Deployment: mounts a PersistentVolumeClaim; replicas on PostgreSQL need none (a ReadWriteOnce volume holds one pod)");
  }
  const dataDir = env.AUTHFLOW_DATA_DIR?.value;
  if (dataDir && !(container.volumeMounts ?? []).some((m) => m.mountPath === dataDir)) {
    problems.push("Deployment: AUTHFLOW_DATA_DIR must be a mounted volume (the root filesystem is read-only)");
  }
  for (const probe of ["readinessProbe", "livenessProbe"]) {
    if (!container[probe]?.httpGet?.path) problems.push(`Deployment: no HTTP ${probe}`);
  }
  if (container.readinessProbe?.httpGet?.path !== "/readyz") problems.push("Deployment: readinessProbe must be /readyz (it checks the database)");
  const strategy = deployment.spec.strategy ?? {};
  if (strategy.type === "Recreate") problems.push("Deployment: strategy Recreate stops every replica at once");
  if (String(strategy.rollingUpdate?.maxUnavailable ?? "25%") !== "0") {
    problems.push("Deployment: rollingUpdate.maxUnavailable must be 0 (a new replica is ready before an old one stops)");
  }
  const labels = deployment.spec.template.metadata.labels ?? {};
  const pdbs = docs.map(({ doc }) => doc).filter((d) => d.kind === "PodDisruptionBudget"
    && d.metadata?.namespace === deployment.metadata.namespace
    && Object.keys(d.spec?.selector?.matchLabels ?? {}).length > 0
    && Object.entries(d.spec.selector.matchLabels).every(([k, v]) => labels[k] === v));
  if (pdbs.length !== 1) problems.push(`Deployment: expected one PodDisruptionBudget selecting its pods, found ${pdbs.length}`);
  for (const pdb of pdbs) {
    const { minAvailable, maxUnavailable } = pdb.spec;
    const n = (v) => (typeof v === "number" ? v : undefined); // percentages are not checked here
    const keeps = n(minAvailable) ?? (n(maxUnavailable) !== undefined ? replicas - n(maxUnavailable) : undefined);
    if (keeps === undefined) problems.push("PodDisruptionBudget: set minAvailable or maxUnavailable as a number of pods");
    else if (keeps < 1 || keeps >= replicas) {
      problems.push(`PodDisruptionBudget: keeps ${keeps} of ${replicas} pods; it must keep at least 1 and let one be evicted`);
    }
  }
  return problems;
}

if (errors.length) {
  console.error("manifest validation FAILED:\n" + [...new Set(errors)].map((e) => `  - ${e}`).join("\n"));
  process.exit(1);
}
console.log(`manifests valid and consistent: ${docs.length} documents`);

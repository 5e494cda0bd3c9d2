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
//     ServiceAccount the Deployment references is shipped. The auth service's settings are
//     read by their nested names (AUTHFLOW_TOKENS__ISSUER), else by the deprecated flat alias the
//     service still honours (AUTHFLOW_ISSUER); a flat alias in a shipped manifest is an error,
//     the service would warn about it at every start.
//  4. Availability: the auth Deployment runs at least two replicas on PostgreSQL, the database
//     URL (it holds the password) from a Secret, never a literal; no PersistentVolumeClaim (a
//     ReadWriteOnce volume cannot be shared by replicas); readiness and liveness probes; a
//     rolling update that never takes a ready replica away first; a PodDisruptionBudget that
//     selects the pods and keeps at least one while still letting a node drain.
//  5. Access and the edge: the auth pods run a sidecar, their namespace has a STRICT
//     PeerAuthentication, and ALLOW AuthorizationPolicies admit only the ingress gateway
//     (deploy/targets.json istio.gateway_principal; other named callers may only get POST
//     /v1/oauth/token, or GET the filter's callout paths when it runs in their sidecars), so
//     nothing reaches the service past the filter; the gateway the WasmPlugin runs on is
//     that principal's, so the filter's callouts are admitted. Every
//     Gateway server is HTTPS with a credentialName or HTTP that only redirects to https. The
//     WasmPlugin's image is pinned by a 64-hex sha256 unless its url is the
//     registry.example.com placeholder. An EnvoyFilter on the WasmPlugin's workloads rejects
//     underscore headers and normalizes paths (normalize_path, merge_slashes).
//
// usage: node validate-manifests.mjs [DIR ...]     (after npm ci in deploy/validate)
// Without DIRs it checks deploy/istio and deploy/k8s and then tests its own checks: it runs
// itself on altered copies of those manifests (each must fail with the expected error, the
// unaltered copy must pass).

import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import yaml from "js-yaml";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
// Directories to scan (default: the shipped ones); others only for testing the checks themselves.
const SHIPPED_DIRS = ["deploy/istio", "deploy/k8s"];
const dirs = process.argv.length > 2 ? process.argv.slice(2) : SHIPPED_DIRS;
// The audience of the local and compose demos: never a deployment's.
const DEMO_AUDIENCE = "authflow-demo";
// The only caller the auth service admits (rendered into deploy/istio/auth-access.yaml).
const targets = JSON.parse(readFileSync(join(root, "deploy/targets.json"), "utf8"));
const GATEWAY_PRINCIPAL = targets.istio?.gateway_principal;
// The shipped WasmPlugin url, which nothing can pull: the only one allowed without a sha256.
const PLACEHOLDER_WASM_URL = "oci://registry.example.com/";
const PLACEHOLDER_IMAGE = "registry.example.com/";
// Istio's root namespace (default): AuthorizationPolicies there apply to every namespace.
const ROOT_NAMESPACE = "istio-system";
const HCM = "envoy.filters.network.http_connection_manager";
const HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
// Headers naming the client's address that a client could set itself (x-forwarded-for is Envoy's).
const CLIENT_ADDRESS_HEADERS = ["forwarded", "x-real-ip", "x-client-ip", "true-client-ip", "cf-connecting-ip",
  "fastly-client-ip", "x-cluster-client-ip", "x-original-forwarded-for"];

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
    servers: [{
      port: { number: ANY, protocol: ANY, name: ANY, targetPort: ANY }, bind: ANY, hosts: ANY, name: ANY, defaultEndpoint: ANY,
      // A misspelt httpsRedirect or credentialName would be dropped: port 80 serving cleartext.
      tls: {
        httpsRedirect: ANY, mode: ANY, credentialName: ANY, credentialNames: ANY, caCertCredentialName: ANY,
        serverCertificate: ANY, privateKey: ANY, caCertificates: ANY, caCrl: ANY, tlsCertificates: ANY,
        subjectAltNames: ANY, verifyCertificateSpki: ANY, verifyCertificateHash: ANY,
        minProtocolVersion: ANY, maxProtocolVersion: ANY, cipherSuites: ANY,
      },
    }],
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
  "networking.istio.io/DestinationRule": {
    host: ANY, exportTo: ANY, workloadSelector: ANY, subsets: ANY,
    trafficPolicy: {
      connectionPool: { http: { idleTimeout: ANY, maxRequestsPerConnection: ANY, h2UpgradePolicy: ANY,
        http1MaxPendingRequests: ANY, http2MaxRequests: ANY, maxRetries: ANY, useClientProtocol: ANY, maxConcurrentStreams: ANY },
        tcp: { maxConnections: ANY, connectTimeout: ANY, tcpKeepalive: { probes: ANY, time: ANY, interval: ANY },
          maxConnectionDuration: ANY, idleTimeout: ANY } },
      loadBalancer: ANY,
      outlierDetection: { consecutiveLocalOriginFailures: ANY, splitExternalLocalOriginErrors: ANY,
        consecutiveGatewayErrors: ANY, consecutive5xxErrors: ANY, interval: ANY, baseEjectionTime: ANY,
        maxEjectionPercent: ANY, minHealthPercent: ANY }, tls: ANY, portLevelSettings: ANY, tunnel: ANY, proxyProtocol: ANY,
    },
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
  "security.istio.io/PeerAuthentication": {
    selector: { matchLabels: ANY }, mtls: { mode: ANY }, portLevelMtls: ANY,
  },
  // A misspelt `principals` or `from` would be dropped, and the rule would admit every caller.
  "security.istio.io/AuthorizationPolicy": {
    selector: { matchLabels: ANY }, targetRef, targetRefs: [targetRef], action: ANY, provider: { name: ANY },
    rules: [{
      from: [{ source: {
        principals: ANY, notPrincipals: ANY, requestPrincipals: ANY, notRequestPrincipals: ANY,
        namespaces: ANY, notNamespaces: ANY, serviceAccounts: ANY, notServiceAccounts: ANY,
        ipBlocks: ANY, notIpBlocks: ANY, remoteIpBlocks: ANY, notRemoteIpBlocks: ANY,
      } }],
      to: [{ operation: {
        hosts: ANY, notHosts: ANY, ports: ANY, notPorts: ANY, methods: ANY, notMethods: ANY, paths: ANY, notPaths: ANY,
      } }],
      when: [{ key: ANY, values: ANY, notValues: ANY }],
    }],
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
// The auth service's deprecated flat variables → their nested names (AUTHFLOW_ISSUER →
// AUTHFLOW_TOKENS__ISSUER), read from FLAT_ALIASES in its source, so the list cannot drift.
function flatAliases() {
  const src = readFileSync(join(root, "auth-service/src/config/sources.rs"), "utf8");
  const block = /pub const FLAT_ALIASES[^=]*=\s*&\[([\s\S]*?)\n\];/.exec(src)?.[1] ?? "";
  const pairs = [...block.matchAll(/\(\s*"([a-z0-9_]+)",\s*"([a-z0-9_.]+)",?\s*\)/g)].map((m) => [m[1], m[2]]);
  if (!pairs.some(([flat, path]) => flat === "listen" && path === "server.listen")) {
    console.error("validate-manifests.mjs: cannot read FLAT_ALIASES from auth-service/src/config/sources.rs");
    process.exit(2);
  }
  return Object.fromEntries(pairs.map(([flat, path]) => [`AUTHFLOW_${flat.toUpperCase()}`, `AUTHFLOW_${path.replaceAll(".", "__").toUpperCase()}`]));
}
const FLAT_ALIASES = flatAliases();
const FLAT_NAME_OF = Object.fromEntries(Object.entries(FLAT_ALIASES).map(([flat, nested]) => [nested, flat]));
// The env entry (by name) that sets the auth service's setting `nested`, as the service reads it:
// the nested name, else its deprecated flat alias.
const setting = (env, nested) => env[nested] ?? env[FLAT_NAME_OF[nested]];

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
  // Unpinned, the gateway runs whatever the tag points to when it pulls.
  if (!String(spec.url).startsWith(PLACEHOLDER_WASM_URL) && !/^[0-9a-f]{64}$/.test(spec.sha256 ?? "")) {
    errors.push(`WasmPlugin: url ${spec.url} is not pinned: sha256 must be its 64-hex image manifest digest (run \`make wasm-digest\`; only the ${PLACEHOLDER_WASM_URL} placeholder may go without)`);
  }
  const urlDigest = /@sha256:([0-9a-f]{64})$/.exec(String(spec.url))?.[1];
  if (urlDigest && spec.sha256 && urlDigest !== spec.sha256) errors.push("WasmPlugin: the url's @sha256 digest differs from sha256");

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
  // As the Wasm module: a tag is whatever was pushed under it last, and this image holds the
  // KEK and the database. Only the placeholder may go without a digest.
  if (!String(container.image).startsWith(PLACEHOLDER_IMAGE) && !/@sha256:[0-9a-f]{64}$/.test(String(container.image))) {
    errors.push(`Deployment: image ${container.image} is not pinned: name it by digest (…@sha256:<digest>, as \`docker push\` prints it; only the ${PLACEHOLDER_IMAGE} placeholder may go without)`);
  }
  const env = Object.fromEntries((container.env ?? []).map((e) => [e.name, e]));
  const val = (n) => setting(env, n)?.value;
  const list = (n) => (val(n) ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  if (val("AUTHFLOW_TOKENS__ISSUER") !== provider.issuer) errors.push(`Deployment: AUTHFLOW_TOKENS__ISSUER ${val("AUTHFLOW_TOKENS__ISSUER")} != pluginConfig issuer ${provider.issuer}`);
  if (!list("AUTHFLOW_TOKENS__AUDIENCES").length || !list("AUTHFLOW_TOKENS__AUDIENCES").every((a) => (provider.audiences ?? []).includes(a))) {
    errors.push(`Deployment: AUTHFLOW_TOKENS__AUDIENCES ${val("AUTHFLOW_TOKENS__AUDIENCES")} not accepted by the pluginConfig (${provider.audiences})`);
  }
  // The demo's audience, copied into a deployment, makes every token of it good for every other.
  if ([...list("AUTHFLOW_TOKENS__AUDIENCES"), ...(provider.audiences ?? [])].includes(DEMO_AUDIENCE)) {
    errors.push(`Deployment / pluginConfig: the demo's audience ${DEMO_AUDIENCE}: name the API the tokens are for (deploy/targets.json → istio.audience, and AUTHFLOW_TOKENS__AUDIENCES)`);
  }
  if (JSON.stringify(list("AUTHFLOW_TOKENS__FINGERPRINT_ATTRIBUTES")) !== JSON.stringify(cfg.device_binding?.attributes ?? [])) {
    errors.push(`Deployment: AUTHFLOW_TOKENS__FINGERPRINT_ATTRIBUTES ${val("AUTHFLOW_TOKENS__FINGERPRINT_ATTRIBUTES")} != device_binding.attributes`);
  }
  // A page on another origin the gateway serves (the filter's dpop_origins) reaches the service's
  // token endpoints there too, and names that origin in its proofs: the service must take it.
  const origin = (u) => { try { return new URL(u).origin; } catch { return null; } };
  const serviceOrigins = list("AUTHFLOW_DPOP__ORIGINS").map(origin);
  for (const p of plugin.spec?.pluginConfig?.providers ?? []) {
    if ((p.dpop ?? "off") === "off") continue;
    for (const o of p.dpop_origins ?? []) {
      if (origin(o) !== origin(p.issuer) && !serviceOrigins.includes(origin(o))) {
        errors.push(`Deployment: AUTHFLOW_DPOP__ORIGINS leaves out ${o}, which the filter's dpop_origins list: a page there signing in with DPoP names it in its proofs, and the service would refuse them`);
      }
    }
  }
  if (val("AUTHFLOW_ENVIRONMENT") === "production" && !String(val("AUTHFLOW_TOKENS__ISSUER")).startsWith("https://")) {
    errors.push("Deployment: production needs an https:// issuer");
  }
  if (!String(val("AUTHFLOW_SERVER__LISTEN")).endsWith(":8081")) errors.push("Deployment: AUTHFLOW_SERVER__LISTEN must use port 8081");
  for (const c of [...(deployment.spec.template.spec.initContainers ?? []), ...deployment.spec.template.spec.containers]) {
    for (const e of c.env ?? []) {
      if (FLAT_ALIASES[e.name]) errors.push(`Deployment: container ${c.name}: env ${e.name} is a deprecated flat name, use ${FLAT_ALIASES[e.name]}`);
    }
  }
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
  errors.push(...memoryProblems(container, val));
  if (podSpec.serviceAccountName && !find("ServiceAccount", podSpec.serviceAccountName)) {
    errors.push(`Deployment: ServiceAccount ${podSpec.serviceAccountName} is not shipped`);
  }
  if (!podSpec.securityContext?.runAsNonRoot) errors.push("Deployment: must run as non-root");
  // The container holds the KEK: nothing it runs may rewrite its binary or gain privileges.
  const sc = container.securityContext ?? {};
  if (sc.readOnlyRootFilesystem !== true) errors.push("Deployment: container needs securityContext.readOnlyRootFilesystem: true");
  if (sc.allowPrivilegeEscalation !== false) errors.push("Deployment: container needs securityContext.allowPrivilegeEscalation: false");
  if (!(sc.capabilities?.drop ?? []).includes("ALL")) errors.push("Deployment: container needs securityContext.capabilities.drop: [ALL]");
  // Secrets come from the Secret, never as literals in a committed manifest.
  for (const name of ["AUTHFLOW_KEK__KEY", "AUTHFLOW_KEK__PREVIOUS", "AUTHFLOW_SMTP__PASSWORD"]) {
    const e = setting(env, name);
    if (e && !e.valueFrom?.secretKeyRef) errors.push(`Deployment: ${name} must come from a Secret (secretKeyRef), not a literal value`);
  }
  // The development outbox hands every mailed code to whoever reaches the service.
  if (val("AUTHFLOW_ENVIRONMENT") !== "production") errors.push("Deployment: AUTHFLOW_ENVIRONMENT must be production");
  if (String(val("AUTHFLOW_SERVER__DEV_ENDPOINTS") ?? "false").toLowerCase() !== "false") errors.push("Deployment: AUTHFLOW_SERVER__DEV_ENDPOINTS must be off");
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
  // A user's bucket is (subject, issuer): subjects are unique per issuer only.
  const issuer = plugin.spec.pluginConfig?.identity_headers?.issuer ?? "x-auth-issuer";
  // The budget per address before the filter: first in the chain (ahead of the WasmPlugin), keyed
  // on the client's address alone (no header the filter sets is trustworthy before it ran).
  const before = patches.find((p) => p.applyTo === "HTTP_FILTER" && p.patch?.value?.name === "authflow.rate_limit.before_auth");
  if (!before || before.patch.operation !== "INSERT_FIRST") {
    errors.push("EnvoyFilter authflow-rate-limits: authflow.rate_limit.before_auth must be inserted INSERT_FIRST (before the authflow WasmPlugin)");
  } else {
    const actions = (before.patch.value.typed_config?.rate_limits ?? []).flatMap((r) => r.actions ?? []);
    if (actions.length !== 1 || !actions[0].masked_remote_address) {
      errors.push("EnvoyFilter authflow-rate-limits (before_auth): must key on the client's address alone (masked_remote_address)");
    }
  }
  const configs = patches.filter((p) => p !== before)
    .flatMap((p) => [p.patch?.value?.typed_config, p.patch?.value?.typed_per_filter_config?.["envoy.filters.http.local_ratelimit"]])
    .filter((c) => c && c.descriptors);
  for (const c of configs) {
    const headers = (c.rate_limits ?? []).flatMap((r) => r.actions ?? []).map((a) => a.request_headers?.header_name).filter(Boolean);
    if (!subject || JSON.stringify(headers) !== JSON.stringify([subject, issuer])) {
      errors.push(`EnvoyFilter authflow-rate-limits (${c.stat_prefix}): per-user descriptor must use the WasmPlugin's identity_headers.subject (${subject}) and issuer (${issuer}), uses ${headers}`);
    }
  }
  const routeNames = docs.filter(({ doc }) => doc.kind === "VirtualService").flatMap(({ doc }) => (doc.spec.http ?? []).map((h) => h.name));
  for (const p of patches.filter((p) => p.applyTo === "HTTP_ROUTE")) {
    const name = p.match?.routeConfiguration?.vhost?.route?.name;
    if (!routeNames.includes(name)) errors.push(`EnvoyFilter authflow-rate-limits: patches route ${name}, which no shipped VirtualService names`);
  }
}

// ---- access and the edge (point 5 above) ----------------------------------------------------------
const all = (kind) => docs.map(({ doc }) => doc).filter((d) => d.kind === kind);
const sameLabels = (a, b) => JSON.stringify(Object.entries(a ?? {}).sort()) === JSON.stringify(Object.entries(b ?? {}).sort());
const selects = (matchLabels, labels) => Object.entries(matchLabels ?? {}).every(([k, v]) => labels[k] === v);

if (deployment) errors.push(...accessProblems(deployment));
if (plugin) errors.push(...edgeProblems(plugin));

// Nothing reaches the auth pods but the gateway: mutual TLS only, and an ALLOW policy whose rules
// name the gateway's principal. Other principals: only these requests (exact paths and methods).
function otherCallerRequests() {
  const provider = plugin?.spec?.pluginConfig?.providers?.[0] ?? {};
  return [
    { methods: ["POST"], paths: ["/v1/oauth/token"] }, // the client-credentials grant of service accounts
    // the filter's callouts, when it runs in those workloads' sidecars
    { methods: ["GET"], paths: [provider.jwks?.remote?.path, provider.revocations?.path].filter(Boolean) },
  ];
}

// What the gateway asks of the auth service: every route of a shipped VirtualService to it (a
// prefix stands for the paths under it) and the filter's callouts.
function gatewayRequests() {
  const provider = plugin?.spec?.pluginConfig?.providers?.[0] ?? {};
  const toAuth = (h) => (h.route ?? []).some((r) => String(r.destination?.host ?? "").startsWith("authflow-auth."));
  const routed = all("VirtualService").flatMap((vs) => (vs.spec?.http ?? []).filter(toAuth))
    .flatMap((h) => (h.match ?? []).map((m) => m.uri?.prefix ?? m.uri?.exact).filter(Boolean));
  return [...routed, provider.jwks?.remote?.path, provider.revocations?.path].filter(Boolean);
}

function accessProblems(deployment) {
  const problems = [];
  const ns = deployment.metadata.namespace;
  const pod = deployment.spec.template.metadata ?? {};
  const labels = pod.labels ?? {};
  const nsLabels = all("Namespace").find((n) => n.metadata?.name === ns)?.metadata?.labels ?? {};
  const inject = labels["sidecar.istio.io/inject"] ?? pod.annotations?.["sidecar.istio.io/inject"];
  // Without a sidecar, PeerAuthentication and AuthorizationPolicy do nothing.
  if (inject === "false" || (inject !== "true" && nsLabels["istio-injection"] !== "enabled" && !nsLabels["istio.io/rev"])) {
    problems.push(`Deployment: the authflow-auth pods get no Istio sidecar (namespace ${ns} label istio-injection: enabled, pod label sidecar.istio.io/inject: "true"): nothing would enforce mTLS or the AuthorizationPolicy`);
  }
  if (pod.annotations?.["sidecar.istio.io/rewriteAppHTTPProbers"] === "false") {
    problems.push("Deployment: sidecar.istio.io/rewriteAppHTTPProbers \"false\": under STRICT mTLS the kubelet's plaintext probes would fail");
  }

  // PeerAuthentication: the namespace's is STRICT, and no workload-level one loosens it.
  const peers = all("PeerAuthentication").filter((p) => p.metadata?.namespace === ns && selects(p.spec?.selector?.matchLabels, labels));
  if (!peers.some((p) => !Object.keys(p.spec?.selector?.matchLabels ?? {}).length && p.spec?.mtls?.mode === "STRICT")) {
    problems.push(`no STRICT PeerAuthentication for namespace ${ns} (no selector, mtls.mode STRICT): Istio's default PERMISSIVE takes plaintext from any pod`);
  }
  for (const p of peers) {
    const modes = [p.spec?.mtls?.mode, ...Object.values(p.spec?.portLevelMtls ?? {}).map((m) => m?.mode)];
    if (modes.some((m) => m !== "STRICT")) {
      problems.push(`PeerAuthentication ${ns}/${p.metadata.name}: applies to the authflow-auth pods with mTLS ${modes.join("/")}; it must be STRICT (ports included)`);
    }
  }

  // AuthorizationPolicy: ALLOW policies add up, so every rule of every one that applies is checked.
  const applies = (p) => (p.metadata?.namespace === ns || p.metadata?.namespace === ROOT_NAMESPACE)
    && !p.spec?.targetRef && !p.spec?.targetRefs && selects(p.spec?.selector?.matchLabels, labels);
  const allows = all("AuthorizationPolicy").filter((p) => applies(p) && (p.spec?.action ?? "ALLOW") === "ALLOW");
  if (!allows.some((p) => p.metadata.namespace === ns && Object.keys(p.spec?.selector?.matchLabels ?? {}).length && p.spec?.action === "ALLOW")) {
    problems.push(`no ALLOW AuthorizationPolicy in ${ns} selecting the authflow-auth pods: any pod can call the auth service past the filter`);
  }
  if (!GATEWAY_PRINCIPAL) problems.push("deploy/targets.json: no istio.gateway_principal");
  let gatewayAdmitted = false;
  const gatewayPaths = [];
  for (const p of allows) {
    (p.spec.rules ?? []).forEach((rule, i) => {
      const where = `AuthorizationPolicy ${p.metadata.namespace}/${p.metadata.name} rules[${i}]`;
      const sources = (rule.from ?? []).map((f) => f.source ?? {});
      if (!sources.length) return problems.push(`${where}: no \`from\`: admits every caller`);
      const principals = sources.flatMap((s) => s.principals ?? []);
      if (sources.some((s) => !(s.principals ?? []).length)) problems.push(`${where}: a source without principals admits callers other than the gateway`);
      const others = principals.filter((pr) => pr !== GATEWAY_PRINCIPAL);
      if (others.some((pr) => pr.includes("*"))) problems.push(`${where}: wildcard principal ${others.find((pr) => pr.includes("*"))}`);
      // Callers other than the gateway: every operation within one of otherCallerRequests().
      const ops = (rule.to ?? []).map((t) => t.operation ?? {});
      const within = (o) => otherCallerRequests().some((r) => (o.methods ?? []).length && (o.paths ?? []).length
        && o.methods.every((m) => r.methods.includes(m)) && o.paths.every((x) => r.paths.includes(x)));
      if (others.length && !(ops.length && ops.every(within))) {
        problems.push(`${where}: admits ${others.join(", ")}; only the gateway (${GATEWAY_PRINCIPAL}) may call the auth service (others: exactly ${otherCallerRequests().map((r) => `${r.methods} ${r.paths.join(" ")}`).join(", or ")})`);
      }
      // The gateway with no condition: everything, or the paths its operations name (any
      // method, no other restriction).
      if (!rule.when && sources.some((s) => Object.keys(s).join() === "principals" && s.principals.includes(GATEWAY_PRINCIPAL))) {
        if (!rule.to) gatewayAdmitted = true;
        for (const o of ops) {
          if (Object.keys(o).join() === "paths") gatewayPaths.push(...o.paths);
        }
      }
    });
  }
  const admitted = (path) => gatewayAdmitted || gatewayPaths.some((p) => (p.endsWith("*") ? path.startsWith(p.slice(0, -1)) : p === path));
  if (allows.length && !gatewayAdmitted && !gatewayPaths.length) {
    problems.push(`AuthorizationPolicy: no rule admits the gateway (${GATEWAY_PRINCIPAL}) unconditionally: its routes and the filter's JWKS / revocation callouts would be refused`);
  } else if (allows.length) {
    for (const path of gatewayRequests()) {
      if (!admitted(path)) problems.push(`AuthorizationPolicy: the gateway (${GATEWAY_PRINCIPAL}) is not admitted to ${path}: a shipped route or the filter's callout there would be refused`);
    }
  }
  return problems;
}

// The gateway the filter runs on: its principal is the admitted one, it serves HTTPS only, and it
// rejects underscore headers and normalizes paths.
function edgeProblems(plugin) {
  const problems = [];
  const pluginNs = plugin.metadata?.namespace;
  const pluginLabels = plugin.spec?.selector?.matchLabels;
  // The callouts leave from the WasmPlugin's workloads: the principal must be theirs.
  const principalNs = /^[^/]+\/ns\/([^/]+)\/sa\/[^/]+$/.exec(GATEWAY_PRINCIPAL ?? "")?.[1];
  if (principalNs !== pluginNs) {
    problems.push(`deploy/targets.json istio.gateway_principal ${GATEWAY_PRINCIPAL} is not an identity in ${pluginNs}, where the WasmPlugin's gateway runs: its callouts would be refused`);
  }
  const gateways = all("Gateway");
  if (!gateways.length) problems.push("no Gateway shipped");
  for (const gw of gateways) {
    const name = `Gateway ${gw.metadata?.namespace}/${gw.metadata?.name}`;
    if (!sameLabels(gw.spec?.selector, pluginLabels)) problems.push(`${name}: selector differs from the WasmPlugin's: requests would reach routes the filter does not run on`);
    const servers = gw.spec?.servers ?? [];
    const httpsOk = (s) => s.port?.protocol === "HTTPS" && ["SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"].includes(s.tls?.mode)
      && Boolean(s.tls?.credentialName || (s.tls?.credentialNames ?? []).length);
    servers.forEach((s, i) => {
      const where = `${name} servers[${i}] (port ${s.port?.number} ${s.port?.protocol})`;
      if (s.port?.protocol === "HTTPS") {
        if (!httpsOk(s)) problems.push(`${where}: needs tls.mode SIMPLE (or MUTUAL) and a credentialName`);
      } else if (s.port?.protocol === "HTTP") {
        if (s.tls?.httpsRedirect !== true) problems.push(`${where}: plain HTTP: set tls.httpsRedirect: true (passwords, codes and tokens must not cross in cleartext)`);
      } else {
        problems.push(`${where}: only HTTPS with a credentialName, or HTTP redirecting to https`);
      }
    });
    if (!servers.some(httpsOk)) problems.push(`${name}: no HTTPS server`);
  }

  // Patches of every HTTP connection manager of the gateway (no port or listener name to narrow them).
  const hcmPatches = all("EnvoyFilter")
    .filter((f) => f.metadata?.namespace === pluginNs && sameLabels(f.spec?.workloadSelector?.labels, pluginLabels))
    .flatMap((f) => f.spec?.configPatches ?? [])
    .filter((p) => p.applyTo === "NETWORK_FILTER" && p.match?.listener?.filterChain?.filter?.name === HCM
      && p.patch?.value?.typed_config?.["@type"] === HCM_TYPE);
  const everyHcm = hcmPatches.filter((p) => p.patch.operation === "MERGE" && [undefined, "ANY", "GATEWAY"].includes(p.match.context)
    && !p.match.listener.portNumber && !p.match.listener.name && !p.match.listener.filterChain.name && !p.match.listener.filterChain.sni)
    .map((p) => p.patch.value.typed_config);
  const settings = hcmPatches.map((p) => p.patch.value.typed_config);
  const underscores = settings.map((c) => c.common_http_protocol_options?.headers_with_underscores_action).filter((v) => v !== undefined);
  if (!everyHcm.some((c) => c.common_http_protocol_options?.headers_with_underscores_action === "REJECT_REQUEST") || underscores.some((v) => v !== "REJECT_REQUEST")) {
    problems.push(`no EnvoyFilter on the WasmPlugin's workloads (${pluginNs}, ${JSON.stringify(pluginLabels)}) sets headers_with_underscores_action: REJECT_REQUEST on every HTTP connection manager (x_auth_user would reach CGI-style backends as x-auth-user)`);
  }
  for (const key of ["normalize_path", "merge_slashes"]) {
    if (!everyHcm.some((c) => c[key] === true) || settings.some((c) => c[key] !== undefined && c[key] !== true)) {
      problems.push(`no EnvoyFilter on the WasmPlugin's workloads sets ${key}: true on every HTTP connection manager`);
    }
  }
  // Kept (Istio's default), `/admin%2Fusers` matches no `paths: ["/admin/*"]` of an
  // AuthorizationPolicy behind the gateway, and a backend decoding it serves `/admin/users`.
  const escaped = ["REJECT_REQUEST", "UNESCAPE_AND_FORWARD", "UNESCAPE_AND_REDIRECT"];
  const escapedActions = settings.map((c) => c.path_with_escaped_slashes_action).filter((v) => v !== undefined);
  if (!everyHcm.some((c) => escaped.includes(c.path_with_escaped_slashes_action)) || escapedActions.some((v) => !escaped.includes(v))) {
    problems.push(`no EnvoyFilter on the WasmPlugin's workloads sets path_with_escaped_slashes_action (${escaped.join(" or ")}) on every HTTP connection manager`);
  }
  // A client's own `forwarded` / `x-real-ip` would name any address to a backend reading those.
  const removed = all("EnvoyFilter")
    .filter((f) => f.metadata?.namespace === pluginNs && sameLabels(f.spec?.workloadSelector?.labels, pluginLabels))
    .flatMap((f) => f.spec?.configPatches ?? [])
    .filter((p) => p.applyTo === "ROUTE_CONFIGURATION" && p.patch?.operation === "MERGE" && [undefined, "ANY", "GATEWAY"].includes(p.match?.context)
      && !p.match?.routeConfiguration)
    .flatMap((p) => p.patch.value?.request_headers_to_remove ?? []);
  for (const name of CLIENT_ADDRESS_HEADERS) {
    if (!removed.includes(name)) {
      problems.push(`no EnvoyFilter on the WasmPlugin's workloads removes ${name} from every route configuration (request_headers_to_remove): a client's own would name any address to a backend`);
    }
  }
  // A gateway taking any host lets the client choose `:authority`: DPoP proofs must name listed origins.
  const anyHost = gateways.some((gw) => (gw.spec?.servers ?? []).some((s) => (s.hosts ?? []).some((h) => h === "*" || h.endsWith("/*"))));
  for (const p of plugin.spec?.pluginConfig?.providers ?? []) {
    if (anyHost && (p.dpop ?? "off") !== "off" && !(p.dpop_origins ?? []).length) {
      problems.push(`WasmPlugin provider ${p.name}: dpop ${p.dpop} behind a Gateway taking any host ("*"): list the origins clients use in dpop_origins (deploy/targets.json → istio.dpop_origins), or name the hosts in the Gateway`);
    }
    // The auth service's own endpoints (admin, logout, authenticators) are reached through this
    // gateway at the issuer's origin, which the service's proofs name: a list without it refuses them.
    const issuerOrigin = (() => { try { return new URL(p.issuer).origin; } catch { return null; } })();
    if ((p.dpop ?? "off") !== "off" && (p.dpop_origins ?? []).length && issuerOrigin
        && !p.dpop_origins.some((o) => { try { return new URL(o).origin === issuerOrigin; } catch { return false; } })) {
      problems.push(`WasmPlugin provider ${p.name}: dpop_origins leaves out the issuer's origin ${issuerOrigin}, where clients reach the auth service's own endpoints through this gateway: a bound token's proofs there would be refused (deploy/targets.json → istio.dpop_origins)`);
    }
  }
  return problems;
}

// Each password hash in flight holds `passwords.hash_memory_kib`; by default the service runs two
// per core it sees, which without a CPU limit is every core of the node: a burst of sign-ins
// would take the pod past its memory limit (OOM-killed, the filters' feed gone with it).
function memoryProblems(container, val) {
  const limit = kubernetesBytes(container.resources?.limits?.memory);
  if (limit === undefined) return ["Deployment: set resources.limits.memory"];
  const concurrency = Number(val("AUTHFLOW_LIMITS__PASSWORD_HASH_CONCURRENCY"));
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    return ["Deployment: set AUTHFLOW_LIMITS__PASSWORD_HASH_CONCURRENCY (its default follows the node's cores, not the pod's memory limit)"];
  }
  const hashKib = Number(val("AUTHFLOW_PASSWORDS__HASH_MEMORY_KIB") ?? 19456);
  const baselineMib = 128; // what the service holds besides hashing: caches, buffers, the runtime
  const needed = concurrency * hashKib * 1024 + baselineMib * 2 ** 20;
  return needed > limit
    ? [`Deployment: AUTHFLOW_LIMITS__PASSWORD_HASH_CONCURRENCY ${concurrency} × ${hashKib} KiB of hashing plus ${baselineMib} MiB for the rest exceeds limits.memory ${container.resources.limits.memory}`]
    : [];
}

function kubernetesBytes(quantity) {
  const m = /^([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(String(quantity ?? ""));
  if (!m) return undefined;
  const unit = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 }[m[2]] ?? 1;
  return Number(m[1]) * unit;
}

// Several replicas on one PostgreSQL, and what keeps them available (point 4 above).
function availabilityProblems(deployment, container, env) {
  const problems = [];
  const podSpec = deployment.spec.template.spec;
  const replicas = deployment.spec.replicas ?? 1;
  if (replicas < 2) problems.push(`Deployment: ${replicas} replica(s); run at least 2 (on PostgreSQL)`);
  const url = setting(env, "AUTHFLOW_DATABASE__URL");
  if (!url) problems.push("Deployment: no AUTHFLOW_DATABASE__URL: several replicas need the PostgreSQL store");
  else if (!url.valueFrom?.secretKeyRef) problems.push("Deployment: AUTHFLOW_DATABASE__URL must come from a Secret (secretKeyRef), not a literal value");
  if ((podSpec.volumes ?? []).some((v) => v.persistentVolumeClaim)) {
    problems.push("Deployment: mounts a PersistentVolumeClaim; replicas on PostgreSQL need none (a ReadWriteOnce volume holds one pod)");
  }
  const dataDir = setting(env, "AUTHFLOW_SERVER__DATA_DIR")?.value;
  if (dataDir && !(container.volumeMounts ?? []).some((m) => m.mountPath === dataDir)) {
    problems.push("Deployment: AUTHFLOW_SERVER__DATA_DIR must be a mounted volume (the root filesystem is read-only)");
  }
  for (const probe of ["readinessProbe", "livenessProbe"]) {
    if (!container[probe]?.httpGet?.path) problems.push(`Deployment: no HTTP ${probe}`);
  }
  if (container.readinessProbe?.httpGet?.path !== "/readyz") problems.push("Deployment: readinessProbe must be /readyz (it checks the database)");
  const preStop = container.lifecycle?.preStop;
  const pause = preStop?.sleep?.seconds
    ?? (preStop?.exec?.command?.[0] === "sleep" ? Number(preStop.exec.command[1]) : undefined);
  const grace = podSpec.terminationGracePeriodSeconds ?? 30;
  if (!(pause >= 1) || pause >= grace) {
    problems.push("Deployment: the auth container needs a preStop sleep (a few seconds, within terminationGracePeriodSeconds): without it a stopping replica refuses the requests routed to it before its endpoint is withdrawn");
  }
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
if (process.argv.length <= 2) selfTest();

// ---- the checks themselves ------------------------------------------------------------------------
// Each case alters a copy of the shipped manifests; the validator, run on that copy, must fail
// with `expect` in its report (or pass, for expect === null). The unaltered copy must pass.
function selfTest() {
  const of = (files, kind, name) => files.flatMap((f) => f.docs).find((d) => d.kind === kind && (!name || d.metadata?.name === name));
  const drop = (files, kind, name) => files.forEach((f) => {
    f.docs = f.docs.filter((d) => !(d.kind === kind && (!name || d.metadata?.name === name)));
  });
  const rules = (files) => of(files, "AuthorizationPolicy", "authflow-auth").spec.rules;
  const server = (files, protocol) => of(files, "Gateway").spec.servers.find((s) => s.port.protocol === protocol);
  const authEnv = (files, name) => of(files, "Deployment", "authflow-auth").spec.template.spec.containers[0].env.find((e) => e.name === name);
  const hardening = (files) => of(files, "EnvoyFilter", "authflow-gateway-hardening").spec.configPatches[0].patch.value.typed_config;
  const routePatch = (files) => of(files, "EnvoyFilter", "authflow-gateway-hardening").spec.configPatches.find((p) => p.applyTo === "ROUTE_CONFIGURATION");
  const cases = [
    ["unaltered", () => {}, null],
    ["no preStop sleep", (f) => { delete of(f, "Deployment").spec.template.spec.containers[0].lifecycle; }, "needs a preStop sleep"],
    ["a preStop sleep past the grace period", (f) => { of(f, "Deployment").spec.template.spec.terminationGracePeriodSeconds = 5; }, "needs a preStop sleep"],
    ["no PeerAuthentication", (f) => drop(f, "PeerAuthentication"), "no STRICT PeerAuthentication"],
    ["mTLS PERMISSIVE", (f) => { of(f, "PeerAuthentication").spec.mtls.mode = "PERMISSIVE"; }, "no STRICT PeerAuthentication"],
    ["a workload PeerAuthentication loosening a port", (f) => {
      f[0].docs.push({ apiVersion: "security.istio.io/v1", kind: "PeerAuthentication", metadata: { name: "auth-port", namespace: "authflow-system" },
        spec: { selector: { matchLabels: { "app.kubernetes.io/name": "authflow-auth" } }, mtls: { mode: "STRICT" }, portLevelMtls: { 8081: { mode: "PERMISSIVE" } } } });
    }, "must be STRICT"],
    ["no AuthorizationPolicy", (f) => drop(f, "AuthorizationPolicy"), "no ALLOW AuthorizationPolicy"],
    ["AuthorizationPolicy on other pods", (f) => { of(f, "AuthorizationPolicy").spec.selector.matchLabels = { app: "other" }; }, "no ALLOW AuthorizationPolicy"],
    ["a rule without from", (f) => rules(f).push({ to: [{ operation: { paths: ["/metrics"] } }] }), "admits every caller"],
    ["a source by namespace", (f) => rules(f).push({ from: [{ source: { namespaces: ["default"] } }] }), "source without principals"],
    ["a misspelt principals", (f) => rules(f).push({ from: [{ source: { principal: ["x"] } }] }), "unknown keys"],
    ["another principal on /metrics", (f) => rules(f).push({
      from: [{ source: { principals: ["cluster.local/ns/default/sa/app"] } }], to: [{ operation: { paths: ["/metrics"], methods: ["GET"] } }],
    }), "only the gateway"],
    ["another principal on /v1/revocations, any method", (f) => rules(f).push({
      from: [{ source: { principals: ["cluster.local/ns/default/sa/app"] } }], to: [{ operation: { paths: ["/v1/revocations"] } }],
    }), "only the gateway"],
    ["a sidecar running the filter: its callouts (allowed)", (f) => rules(f).push({
      from: [{ source: { principals: ["cluster.local/ns/shop/sa/shop"] } }],
      to: [{ operation: { paths: ["/.well-known/jwks.json", "/v1/revocations"], methods: ["GET"] } }],
    }), null],
    ["another principal on POST /v1/oauth/token (allowed)", (f) => rules(f).push({
      from: [{ source: { principals: ["cluster.local/ns/billing/sa/billing"] } }], to: [{ operation: { paths: ["/v1/oauth/token"], methods: ["POST"] } }],
    }), null],
    ["gateway not admitted", (f) => { rules(f)[0].from[0].source.principals = ["cluster.local/ns/istio-system/sa/other"]; }, "no rule admits the gateway"],
    ["gateway limited to some paths", (f) => { rules(f)[0].to = [{ operation: { paths: ["/v1/auth/*"] } }]; }, "not admitted to /auth/"],
    ["no sidecar", (f) => { of(f, "Deployment").spec.template.metadata.labels["sidecar.istio.io/inject"] = "false"; }, "no Istio sidecar"],
    ["plain HTTP server", (f) => { delete server(f, "HTTP").tls; }, "set tls.httpsRedirect: true"],
    ["HTTPS without credentialName", (f) => { delete server(f, "HTTPS").tls.credentialName; }, "needs tls.mode SIMPLE"],
    ["no HTTPS server", (f) => { const g = of(f, "Gateway"); g.spec.servers = g.spec.servers.filter((s) => s.port.protocol !== "HTTPS"); }, "no HTTPS server"],
    ["a misspelt httpsRedirect", (f) => { server(f, "HTTP").tls = { httpRedirect: true }; }, "unknown keys"],
    ["unpinned WasmPlugin", (f) => { Object.assign(of(f, "WasmPlugin").spec, { url: "oci://ghcr.io/you/authflow-wasm:0.1.0", sha256: "" }); }, "is not pinned"],
    ["pinned WasmPlugin (allowed)", (f) => { Object.assign(of(f, "WasmPlugin").spec, { url: "oci://ghcr.io/you/authflow-wasm:0.1.0", sha256: "0".repeat(64) }); }, null],
    ["no hardening EnvoyFilter", (f) => drop(f, "EnvoyFilter", "authflow-gateway-hardening"), "headers_with_underscores_action: REJECT_REQUEST"],
    ["underscore headers allowed", (f) => { hardening(f).common_http_protocol_options.headers_with_underscores_action = "ALLOW"; }, "headers_with_underscores_action: REJECT_REQUEST"],
    ["slashes not merged", (f) => { delete hardening(f).merge_slashes; }, "merge_slashes: true"],
    ["a client's x-real-ip kept", (f) => { routePatch(f).patch.value.request_headers_to_remove = ["forwarded"]; }, "removes x-real-ip"],
    ["client address headers removed on one route configuration only", (f) => { routePatch(f).match.routeConfiguration = { portNumber: 443 }; }, "removes forwarded"],
    ["escaped slashes kept", (f) => { delete hardening(f).path_with_escaped_slashes_action; }, "path_with_escaped_slashes_action"],
    ["escaped slashes kept explicitly", (f) => { hardening(f).path_with_escaped_slashes_action = "KEEP_UNCHANGED"; }, "path_with_escaped_slashes_action"],
    ["DPoP behind any host without dpop_origins", (f) => { delete of(f, "WasmPlugin").spec.pluginConfig.providers[0].dpop_origins; }, "dpop_origins"],
    ["the service without the filter's DPoP origins", (f) => {
      const c = of(f, "Deployment", "authflow-auth").spec.template.spec.containers[0];
      c.env = c.env.filter((e) => e.name !== "AUTHFLOW_DPOP__ORIGINS");
    }, "AUTHFLOW_DPOP__ORIGINS leaves out"],
    ["DPoP origins without the issuer's", (f) => {
      const p = of(f, "WasmPlugin").spec.pluginConfig.providers[0];
      p.dpop_origins = p.dpop_origins.filter((o) => o !== new URL(p.issuer).origin);
    }, "leaves out the issuer's origin"],
    ["DPoP without dpop_origins, the Gateway naming its hosts (allowed)", (f) => {
      delete of(f, "WasmPlugin").spec.pluginConfig.providers[0].dpop_origins;
      for (const s of of(f, "Gateway").spec.servers) s.hosts = ["api.authflow.example"];
    }, null],
    ["password hashing concurrency left to the node's cores", (f) => {
      const c = of(f, "Deployment", "authflow-auth").spec.template.spec.containers[0];
      c.env = c.env.filter((e) => e.name !== "AUTHFLOW_LIMITS__PASSWORD_HASH_CONCURRENCY");
    }, "set AUTHFLOW_LIMITS__PASSWORD_HASH_CONCURRENCY"],
    ["password hashing past the memory limit", (f) => { authEnv(f, "AUTHFLOW_LIMITS__PASSWORD_HASH_CONCURRENCY").value = "32"; }, "exceeds limits.memory"],
    ["a deprecated flat name", (f) => { authEnv(f, "AUTHFLOW_TOKENS__ISSUER").name = "AUTHFLOW_ISSUER"; },
      "env AUTHFLOW_ISSUER is a deprecated flat name, use AUTHFLOW_TOKENS__ISSUER"],
    ["a flat name is still read (its value checked)", (f) => {
      Object.assign(authEnv(f, "AUTHFLOW_TOKENS__ISSUER"), { name: "AUTHFLOW_ISSUER", value: "https://other.example" });
    }, "AUTHFLOW_TOKENS__ISSUER https://other.example != pluginConfig issuer"],
    ["the database URL by its flat name, literal", (f) => {
      Object.assign(authEnv(f, "AUTHFLOW_DATABASE__URL"), { name: "AUTHFLOW_DATABASE_URL", value: "postgres://u:p@db/authflow", valueFrom: undefined });
    }, "AUTHFLOW_DATABASE__URL must come from a Secret"],
    ["a writable root filesystem", (f) => { of(f, "Deployment").spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem = false; }, "readOnlyRootFilesystem"],
    ["privilege escalation allowed", (f) => { delete of(f, "Deployment").spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation; }, "allowPrivilegeEscalation"],
    ["the KEK as a literal", (f) => { Object.assign(authEnv(f, "AUTHFLOW_KEK__KEY"), { value: "a2VrCg==", valueFrom: undefined }); }, "AUTHFLOW_KEK__KEY must come from a Secret"],
    ["the SMTP password as a literal", (f) => { Object.assign(authEnv(f, "AUTHFLOW_SMTP__PASSWORD"), { value: "hunter2", valueFrom: undefined }); }, "AUTHFLOW_SMTP__PASSWORD must come from a Secret"],
    ["dev endpoints on", (f) => { authEnv(f, "AUTHFLOW_SERVER__DEV_ENDPOINTS").value = "true"; }, "DEV_ENDPOINTS must be off"],
    ["issuer wrong", (f) => { authEnv(f, "AUTHFLOW_TOKENS__ISSUER").value = "https://other.example"; }, "!= pluginConfig issuer"],
    ["the gateway kept from a route's prefix", (f) => {
      rules(f)[0].to[0].operation.paths = rules(f)[0].to[0].operation.paths.filter((p) => p !== "/v1/admin/*");
    }, "not admitted to /v1/admin/"],
    ["the gateway kept from the revocation callout", (f) => {
      rules(f)[0].to[0].operation.paths = rules(f)[0].to[0].operation.paths.filter((p) => p !== "/v1/revocations");
    }, "not admitted to /v1/revocations"],
    ["the gateway admitted everywhere (allowed)", (f) => { delete rules(f)[0].to; }, null],
    ["an auth image by tag", (f) => { of(f, "Deployment").spec.template.spec.containers[0].image = "ghcr.io/you/authflow-auth:0.1.0"; }, "is not pinned"],
    ["an auth image by digest (allowed)", (f) => {
      of(f, "Deployment").spec.template.spec.containers[0].image = `ghcr.io/you/authflow-auth:0.1.0@sha256:${"0".repeat(64)}`;
    }, null],
    ["the demo's audience", (f) => {
      authEnv(f, "AUTHFLOW_TOKENS__AUDIENCES").value = DEMO_AUDIENCE;
      of(f, "WasmPlugin").spec.pluginConfig.providers[0].audiences = [DEMO_AUDIENCE];
    }, "the demo's audience"],
  ];
  const shipped = SHIPPED_DIRS.flatMap((d) => yamlFiles(resolve(root, d)).sort())
    .map((file) => ({ rel: relative(root, file), docs: yaml.loadAll(readFileSync(file, "utf8")).filter((d) => d != null) }));
  const failures = [];
  for (const [name, alter, expect] of cases) {
    const files = structuredClone(shipped);
    alter(files);
    const dir = mkdtempSync(join(tmpdir(), "authflow-manifests-"));
    try {
      for (const f of files) {
        mkdirSync(dirname(join(dir, f.rel)), { recursive: true });
        writeFileSync(join(dir, f.rel), f.docs.map((d) => yaml.dump(d, { noRefs: true })).join("---\n"));
      }
      const run = spawnSync(process.execPath, [fileURLToPath(import.meta.url), dir], { encoding: "utf8" });
      const ok = expect === null ? run.status === 0 : run.status === 1 && run.stderr.includes(expect);
      if (!ok) failures.push(`${name}: expected ${expect === null ? "a pass" : `a failure naming "${expect}"`}, got exit ${run.status}:\n${run.stderr}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  if (failures.length) {
    console.error("validator self-test FAILED:\n" + failures.map((e) => `  - ${e}`).join("\n"));
    process.exit(1);
  }
  console.log(`validator self-test: ${cases.length} altered copies judged as expected`);
}

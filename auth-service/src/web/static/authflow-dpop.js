// authflow-dpop.js — DPoP (RFC 9449) for a browser client of authflow.
//
// The proof key is an ECDSA P-256 key made by WebCrypto with
// `extractable: false`: scripts on the page (including an injected one) can
// sign with it but can never read the private key, so a stolen access token
// is useless anywhere else. The key pair is kept in IndexedDB (structured
// clone keeps a CryptoKey non-extractable) so it survives a reload.
//
// An ES module, no dependencies:
//   import * as dpop from "/auth/static/authflow-dpop.js";
//   const challenge = await dpop.startSignIn(email, password);          // mails a code
//   const session = await dpop.completeSignIn(challenge, code, {issuer}); // token bound to the key
//   const response = await dpop.fetchWithDpop("/api/hello", {}, session.access_token);
//   const renewed = await dpop.refresh(session.refresh_token, {issuer});  // same key, new tokens
//
// `issuer` is the auth service's public URL (the token endpoint's `htu` is
// the issuer followed by the path, as the service checks it); it defaults
// to this page's origin.

const DB_NAME = "authflow-dpop";
const STORE = "keys";
const KEY_ID = "proof-key";
const NONCE_HEADER = "DPoP-Nonce";

// --- the key -------------------------------------------------------------------------------

function openDb() {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(DB_NAME, 1);
    open.onupgradeneeded = () => open.result.createObjectStore(STORE);
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error);
  });
}

function stored(db, mode, action) {
  return new Promise((resolve, reject) => {
    const request = action(db.transaction(STORE, mode).objectStore(STORE));
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

// The pair this page signs with, once read or made: proofs made at once (the
// page's first requests) all wait for the same one.
let pairInUse = null;

/** The device's proof key pair: the stored one, or a new non-extractable one. */
export function proofKey() {
  if (!pairInUse) {
    pairInUse = storedOrNewKey().catch((e) => {
      pairInUse = null;
      throw e;
    });
  }
  return pairInUse;
}

async function storedOrNewKey() {
  const db = await openDb();
  try {
    const existing = await stored(db, "readonly", (s) => s.get(KEY_ID));
    if (existing) return existing;
    const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
    try {
      // `add`, not `put`: another tab that made one first keeps it, and this
      // tab takes that one, so no token is ever bound to a key then replaced.
      await stored(db, "readwrite", (s) => s.add(pair, KEY_ID));
      return pair;
    } catch (e) {
      const theirs = await stored(db, "readonly", (s) => s.get(KEY_ID));
      if (theirs) return theirs;
      throw e;
    }
  } finally {
    db.close();
  }
}

/** Forgets the key (e.g. at logout): tokens bound to it stop working here. */
export async function forgetKey() {
  const db = await openDb();
  try {
    await stored(db, "readwrite", (s) => s.delete(KEY_ID));
  } finally {
    db.close();
  }
  pairInUse = null;
}

// --- proofs --------------------------------------------------------------------------------

function base64url(bytes) {
  let text = "";
  for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

const utf8 = (text) => new TextEncoder().encode(text);

/** `htu` (RFC 9449 §4.2): the absolute URL without query and fragment. */
export function targetUri(url) {
  const u = new URL(url, location.href);
  return u.origin + u.pathname;
}

/**
 * A fresh proof for `method` `url`: `typ` dpop+jwt, ES256, the public `jwk`,
 * `htm`, `htu`, `iat`, a random `jti`, and `ath` when it goes with an access
 * token (`nonce` when the server asked for one).
 */
export async function proof(method, url, accessToken, nonce) {
  const pair = await proofKey();
  const { kty, crv, x, y } = await crypto.subtle.exportKey("jwk", pair.publicKey);
  const header = { typ: "dpop+jwt", alg: "ES256", jwk: { kty, crv, x, y } };
  const claims = {
    jti: base64url(crypto.getRandomValues(new Uint8Array(16))),
    htm: method.toUpperCase(),
    htu: targetUri(url),
    iat: Math.floor(Date.now() / 1000),
  };
  if (accessToken) claims.ath = base64url(await crypto.subtle.digest("SHA-256", utf8(accessToken)));
  if (nonce) claims.nonce = nonce;
  const input = `${base64url(utf8(JSON.stringify(header)))}.${base64url(utf8(JSON.stringify(claims)))}`;
  // WebCrypto's ECDSA signature is r || s, which is what JWS ES256 wants.
  const signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, pair.privateKey, utf8(input));
  return `${input}.${base64url(signature)}`;
}

// The latest nonce each server gave (§8, §9: on a refusal or with an answer), by origin: the
// next proof for it carries that one, so a server requiring nonces is asked once, not twice.
const nonces = new Map();

// A server that wants a nonce says so: `use_dpop_nonce` in `WWW-Authenticate` (a resource) or
// as the error of a 400 (a token endpoint). Any other refusal is not tried again.
async function wantsNonce(response) {
  if (!response.headers.get(NONCE_HEADER)) return false;
  if ((response.headers.get("WWW-Authenticate") || "").includes("use_dpop_nonce")) return true;
  if (response.status !== 400) return false;
  const body = await response.clone().json().catch(() => ({}));
  return body.error === "use_dpop_nonce";
}

async function withProof(method, url, proofUrl, init, accessToken) {
  const origin = new URL(proofUrl, location.href).origin;
  const send = async () => {
    const headers = new Headers(init.headers || {});
    headers.set("DPoP", await proof(method, proofUrl, accessToken, nonces.get(origin)));
    if (accessToken) headers.set("Authorization", `DPoP ${accessToken}`);
    const response = await fetch(url, { ...init, method, headers, credentials: "same-origin" });
    const nonce = response.headers.get(NONCE_HEADER);
    if (nonce) nonces.set(origin, nonce);
    return response;
  };
  const first = await send();
  return (await wantsNonce(first)) ? send() : first;
}

/** `fetch` with `Authorization: DPoP <token>` and a fresh proof for this request. */
export function fetchWithDpop(url, init = {}, accessToken) {
  return withProof(init.method || "GET", url, url, init, accessToken);
}

// --- sign-in through the JSON API -----------------------------------------------------------

async function json(response, what) {
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${what}: ${response.status} ${body.error || ""}`.trim());
  return body;
}

/** Password step: the service mails a code (or expects the TOTP); returns the challenge id. */
export async function startSignIn(email, password) {
  const response = await fetch("/v1/auth/signin", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, password }),
    credentials: "same-origin",
  });
  return (await json(response, "sign-in")).challenge_id;
}

/** Second factor, with a proof: the tokens come back bound to this device's key (`token_type` DPoP). */
export async function completeSignIn(challengeId, code, { issuer = location.origin } = {}) {
  const path = "/v1/auth/signin/verify";
  const init = { headers: { "content-type": "application/json" }, body: JSON.stringify({ challenge_id: challengeId, code }) };
  return json(await withProof("POST", path, issuer + path, init, undefined), "second factor");
}

/** Rotates the refresh token with a proof from the same key (a bound session refreshes only so). */
export async function refresh(refreshToken, { issuer = location.origin } = {}) {
  const path = "/v1/auth/refresh";
  const init = { headers: { "content-type": "application/json" }, body: JSON.stringify({ refresh_token: refreshToken }) };
  return json(await withProof("POST", path, issuer + path, init, undefined), "refresh");
}

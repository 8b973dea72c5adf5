// The peer: oidc-provider 9 (the most complete certified OpenID provider library),
// configured as close to Latchkey as it allows, on the fastest store it can have.
//
//   node bench/peer/server.mjs --listen 127.0.0.1:0 --fixture FILE [--clients 100] [--users 1000] [--id-token-alg EdDSA]
//
// Prints `listening on URL` once it serves, after writing FILE: the credentials and
// signed-in session cookies the load generator uses (the same shape as
// `latchkey-bench gen` writes for Latchkey). bench/run starts it; see docs/PERFORMANCE.md.
//
// Equivalence with Latchkey:
// - access tokens for the resource https://api.example/ are JWTs signed with EdDSA
//   (RFC 8707 resource indicators with accessTokenFormat 'jwt'); ID tokens signed as
//   --id-token-alg says (EdDSA or RS256), as Latchkey's clients register them;
// - client_secret_basic; PKCE S256 required; refresh tokens issued to every client
//   allowed the grant and rotated on every use; introspection on;
// - user U has a session and a grant of `openid profile email` + `api` on the resource
//   to client U mod C, so /authorize answers with a code at once;
// - lifetimes: access token 300 s, code 60 s, ID token 3600 s.
// What it cannot do like Latchkey: introspect a JWT access token or accept one at
// userinfo (JWTs are for resource servers only there), so those two workloads use the
// opaque access token it stores for requests without a resource.
//
// Store: a plain Map in this process (no eviction, no serialization), which is as fast
// as oidc-provider can be; it also means one process, since nothing is shared. Users
// are not stored: findAccount builds the claims from the id.
// With BENCH_PEER_COUNT=1 the store counts its writes and their JSON size, served at
// GET /__bench/stats.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';

import { exportJWK, generateKeyPair } from 'jose';
import Provider, { errors } from 'oidc-provider';

const REDIRECT_URI = 'https://app.example/cb';
const RESOURCE = 'https://api.example/';
const SCOPE = 'openid profile email api';

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const listen = arg('--listen', '127.0.0.1:0');
const fixturePath = arg('--fixture', null);
const CLIENTS = Number(arg('--clients', '100'));
// How the clients register their ID tokens to be signed (EdDSA or RS256), as Latchkey's.
const ID_TOKEN_ALG = arg('--id-token-alg', 'EdDSA');
const USERS = Number(arg('--users', '1000'));

// Derived like latchkey-bench's generator, so both hold the same kind of data.
const b64url = (buf) => buf.toString('base64url');
const derive = (kind, i) => crypto.createHash('sha256').update(`latchkey-bench/${kind}/${i}`).digest();
const clientId = (i) => `bench-client-${String(i).padStart(6, '0')}`;
const clientSecret = (i) => b64url(derive('client', i));
const userId = (j) => derive('user', j).subarray(0, 16).toString('hex');

// --- the store -------------------------------------------------------------------
const COUNT = process.env.BENCH_PEER_COUNT === '1';
const stats = { writes: {}, bytes: {} };
function counted(model, op, payload) {
  if (!COUNT) return;
  const k = `${model} ${op}`;
  stats.writes[k] = (stats.writes[k] ?? 0) + 1;
  if (payload) stats.bytes[model] = (stats.bytes[model] ?? 0) + Buffer.byteLength(JSON.stringify(payload));
}

const store = new Map();
const grantable = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest']);

class MapAdapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    counted(this.model, 'upsert', payload);
    const key = this.key(id);
    const exp = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    store.set(key, { payload, exp });
    if (this.model === 'Session') store.set(`sessionUid:${payload.uid}`, { payload: id, exp });
    if (payload.userCode) store.set(`userCode:${payload.userCode}`, { payload: id, exp });
    if (payload.grantId && grantable.has(this.model)) {
      const members = store.get(`grant:${payload.grantId}`);
      if (members) members.payload.add(key);
      else store.set(`grant:${payload.grantId}`, { payload: new Set([key]), exp: Infinity });
    }
  }

  async find(id) {
    const key = this.key(id);
    const e = store.get(key);
    if (!e) return undefined;
    if (e.exp <= Date.now()) {
      store.delete(key);
      return undefined;
    }
    return e.payload;
  }

  async findByUid(uid) {
    const e = store.get(`sessionUid:${uid}`);
    return e ? this.find(e.payload) : undefined;
  }

  async findByUserCode(userCode) {
    const e = store.get(`userCode:${userCode}`);
    return e ? this.find(e.payload) : undefined;
  }

  async consume(id) {
    counted(this.model, 'consume');
    const e = store.get(this.key(id));
    if (e) e.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    counted(this.model, 'destroy');
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    counted(this.model, 'revokeByGrantId');
    const members = store.get(`grant:${grantId}`);
    if (members) for (const k of members.payload) store.delete(k);
    store.delete(`grant:${grantId}`);
  }
}

// --- the provider ----------------------------------------------------------------
const { privateKey: ed } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
const { privateKey: rsa } = await generateKeyPair('RS256', { modulusLength: 2048, extractable: true });
const jwks = {
  keys: [
    { ...(await exportJWK(ed)), kid: 'bench-eddsa', alg: 'EdDSA', use: 'sig' },
    { ...(await exportJWK(rsa)), kid: 'bench-rs256', alg: 'RS256', use: 'sig' },
  ],
};
const cookieKey = b64url(crypto.randomBytes(32));

const [host, port] = listen.split(':');
const server = http.createServer();
await new Promise((resolve) => server.listen(Number(port), host, resolve));
const issuer = `http://${host}:${server.address().port}`;

const provider = new Provider(issuer, {
  adapter: MapAdapter,
  jwks,
  cookies: { keys: [cookieKey] },
  clients: Array.from({ length: CLIENTS }, (_, i) => ({
    client_id: clientId(i),
    client_secret: clientSecret(i),
    redirect_uris: [REDIRECT_URI],
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: ID_TOKEN_ALG,
  })),
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return { sub, email: `${sub}@bench.example`, email_verified: true, name: `Bench User ${sub}`, preferred_username: sub };
      },
    };
  },
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      async getResourceServerInfo(ctx, resourceIndicator) {
        if (resourceIndicator !== RESOURCE) throw new errors.InvalidTarget();
        return {
          scope: 'api',
          audience: RESOURCE,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'EdDSA' } },
        };
      },
    },
  },
  pkce: { required: () => true },
  rotateRefreshToken: true,
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  ttl: {
    AccessToken: 300,
    AuthorizationCode: 60,
    ClientCredentials: 300,
    IdToken: 3600,
    RefreshToken: 30 * 86400,
    Grant: 30 * 86400,
    Session: 8 * 3600,
    Interaction: 3600,
  },
  routes: {
    authorization: '/authorize',
    token: '/token',
    introspection: '/introspect',
    userinfo: '/userinfo',
    jwks: '/jwks.json',
    revocation: '/revoke',
    end_session: '/logout',
  },
});

// --- signed-in users with a grant each ---------------------------------------------
const sign = (data) => crypto.createHmac('sha1', cookieKey).update(data).digest('base64url');
const now = Math.floor(Date.now() / 1000);
const flows = [];
for (let j = 0; j < USERS; j += 1) {
  const i = j % CLIENTS;
  const grant = new provider.Grant({ accountId: userId(j), clientId: clientId(i) });
  grant.addOIDCScope('openid profile email');
  grant.addResourceScope(RESOURCE, 'api');
  const grantId = await grant.save();
  const session = new provider.Session({
    accountId: userId(j),
    loginTs: now,
    authorizations: { [clientId(i)]: { grantId, sid: b64url(crypto.randomBytes(16)) } },
  });
  await session.save(8 * 3600);
  const value = session.jti;
  flows.push({
    client: { id: clientId(i), secret: clientSecret(i) },
    cookie: `_session=${value}; _session.sig=${sign(`_session=${value}`)}`,
  });
}
const fixture = {
  redirect_uri: REDIRECT_URI,
  resource: RESOURCE,
  scope: SCOPE,
  clients: Array.from({ length: CLIENTS }, (_, i) => ({ id: clientId(i), secret: clientSecret(i) })),
  flows,
  stored: null,
};
if (fixturePath) fs.writeFileSync(fixturePath, JSON.stringify(fixture));
for (const k of Object.keys(stats.writes)) delete stats.writes[k];
for (const k of Object.keys(stats.bytes)) delete stats.bytes[k];

const app = provider.callback();
server.on('request', (req, res) => {
  if (req.url === '/__bench/stats') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(stats));
    return;
  }
  app(req, res);
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
console.log(`listening on ${issuer}`);

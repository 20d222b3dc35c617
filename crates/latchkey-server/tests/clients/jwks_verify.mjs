// Verifies a token against a JWKS fetched over HTTP, as any service of the
// operator's would, with npm `jose` (createRemoteJWKSet + jwtVerify).
// Usage: node jwks_verify.mjs <jwks url> <token> <now: unix seconds, the
// test server's clock> [<issuer required, or ""> [<audience required, or "">]]
// Prints {"payload": {...}, "header": {...}} or {"error": "<code>"}.
import { createRemoteJWKSet, jwtVerify } from 'jose';

const [url, token, now, issuer, audience] = process.argv.slice(2);
const jwks = createRemoteJWKSet(new URL(url));
try {
  const { payload, protectedHeader } = await jwtVerify(token, jwks, {
    algorithms: ['EdDSA', 'Ed25519'],
    currentDate: new Date(Number(now) * 1000),
    requiredClaims: ['exp'],
    ...(issuer ? { issuer } : {}),
    ...(audience ? { audience } : {}),
  });
  console.log(JSON.stringify({ payload, header: protectedHeader }));
} catch (e) {
  console.log(JSON.stringify({ error: e.code ?? String(e) }));
}

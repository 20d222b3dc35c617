// Verifies a token against a JWKS fetched over HTTP, as any service of the
// operator's would, with npm `jose` (createRemoteJWKSet + jwtVerify).
// Usage: node jwks_verify.mjs <jwks url> <token> <now: unix seconds, the
// test server's clock>
// Prints {"payload": {...}, "header": {...}} or {"error": "<code>"}.
import { createRemoteJWKSet, jwtVerify } from 'jose';

const [url, token, now] = process.argv.slice(2);
const jwks = createRemoteJWKSet(new URL(url));
try {
  const { payload, protectedHeader } = await jwtVerify(token, jwks, {
    algorithms: ['EdDSA', 'Ed25519'],
    currentDate: new Date(Number(now) * 1000),
    requiredClaims: ['exp'],
  });
  console.log(JSON.stringify({ payload, header: protectedHeader }));
} catch (e) {
  console.log(JSON.stringify({ error: e.code ?? String(e) }));
}

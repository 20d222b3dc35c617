// The README's Node example for signed requests (RFC 9421, hmac-sha256),
// with nothing but Node's own crypto and fetch; run by
// tests/signed_requests.rs so that the example stays true.
// Usage: node signed_fetch.mjs <url> <keyId> <secret> <created: unix seconds> [json body]
import { createHash, createHmac, randomUUID } from 'node:crypto';

async function signedFetch(url, { method = 'GET', body, keyId, secret, created = Math.floor(Date.now() / 1000) }) {
  const u = new URL(url);
  const headers = {};
  const components = ['@method', '@target-uri'];
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-digest'] = `sha-256=:${createHash('sha256').update(body).digest('base64')}:`;
    components.push('content-digest');
  }
  const params = `(${components.map((c) => `"${c}"`).join(' ')});created=${created}` +
    `;keyid="${keyId}";alg="hmac-sha256";nonce="${randomUUID()}"`;
  const value = { '@method': method, '@target-uri': u.href, 'content-digest': headers['content-digest'] };
  const base = components.map((c) => `"${c}": ${value[c]}`).join('\n') + `\n"@signature-params": ${params}`;
  headers['signature-input'] = `sig1=${params}`;
  headers['signature'] = `sig1=:${createHmac('sha256', secret).update(base).digest('base64')}:`;
  return fetch(u, { method, body, headers });
}

const [url, keyId, secret, created, body] = process.argv.slice(2);
const resp = await signedFetch(url, {
  method: body === undefined ? 'GET' : 'POST', body, keyId, secret, created: Number(created),
});
console.log(JSON.stringify({ status: resp.status, body: await resp.json() }));

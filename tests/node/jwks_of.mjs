// jwks_of.mjs: the public JWKS of PEM keys (private or public), each with its RFC 7638
// thumbprint as kid, computed by jose — independently of the C signer, so an end-to-end test
// can write a JWKS file for tagproof-factory and compare our kids with jose's.
//
// Usage: node jwks_of.mjs KEY.pem [KEY.pem ...] > jwks.json
// RSA keys get "alg":"RS256", P-256 keys "alg":"ES256"; both "use":"sig".
import { readFileSync } from 'node:fs';
import crypto from 'node:crypto';
import * as jose from 'jose';

const keys = [];
for (const file of process.argv.slice(2)) {
  const jwk = crypto.createPublicKey(readFileSync(file, 'utf8')).export({ format: 'jwk' });
  let alg;
  if (jwk.kty === 'RSA') alg = 'RS256';
  else if (jwk.kty === 'EC' && jwk.crv === 'P-256') alg = 'ES256';
  else throw new Error(`${file}: neither RSA nor EC P-256`);
  keys.push({ ...jwk, use: 'sig', alg, kid: await jose.calculateJwkThumbprint(jwk) });
}
process.stdout.write(`${JSON.stringify({ keys })}\n`);

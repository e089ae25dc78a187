// hostile_tokens.mjs: the token table of tests/unit/test_jwt_hostile.c, made with an
// independent JOSE implementation (jose, pinned in package.json) from our key material.
//
// Usage: node hostile_tokens.mjs INPUT.json > OUTPUT.json
// INPUT: {now, issuer, audience, factory_id,
//         rsa: {pem_file, kid}, ec: {pem_file, kid},   (private keys, PKCS#8 PEM, ours)
//         jwks: "<the JWKS text we publish>",
//         ours: ["<tokens made by jwt_sign>", ...]}
// OUTPUT: {cases: [{name, expect, token}], thumbprints: {rsa, ec}, ours_verified: [bool]}
// expect is the jwt_result name the C verifier must answer ("ok" for the controls, which
// show that each refusal is for the stated reason and not a general mismatch).
// Where jose refuses to produce a malformed token (alg none in other cases, duplicate
// members, crit, non-canonical base64url), the bytes are assembled here and signed with
// node:crypto, which is said next to each such case.
import { readFileSync } from 'node:fs';
import crypto from 'node:crypto';
import * as jose from 'jose';

const input = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { now, issuer, audience } = input;
const factoryId = input.factory_id;
const enc = new TextEncoder();
const b64u = (x) => jose.base64url.encode(typeof x === 'string' ? enc.encode(x) : x);

const rsaPem = readFileSync(input.rsa.pem_file, 'utf8');
const ecPem = readFileSync(input.ec.pem_file, 'utf8');
const rsaKey = crypto.createPrivateKey(rsaPem);
const ecKey = crypto.createPrivateKey(ecPem);
const rsaKid = input.rsa.kid;
const ecKid = input.ec.kid;
const jwks = JSON.parse(input.jwks);
const rsaJwk = jwks.keys.find((k) => k.kid === rsaKid);
const rsaPublicPem = crypto.createPublicKey(rsaKey).export({ type: 'spki', format: 'pem' });
const rsaPublicPkcs1 = crypto.createPublicKey(rsaKey).export({ type: 'pkcs1', format: 'pem' });

// An attacker's keys.
const other = await jose.generateKeyPair('RS256', { modulusLength: 2048 });
const otherEc = await jose.generateKeyPair('ES256');
const otherEd = await jose.generateKeyPair('EdDSA');
const otherP384 = await jose.generateKeyPair('ES384');
const otherPublicJwk = await jose.exportJWK(other.publicKey);

const claims = (extra = {}) => ({
  iss: issuer,
  aud: audience,
  sub: 'user-42',
  role: 'factory_user',
  factory_id: factoryId,
  iat: now - 10,
  nbf: now - 10,
  exp: now + 590,
  jti: 'c3d1c8a8-6f0e-4b8e-9a4e-6b1e2f0d7a11',
  ...extra,
});
const without = (obj, ...names) => {
  const o = { ...obj };
  for (const n of names) delete o[n];
  return o;
};

// jose signs the bytes given: the payload may be any text, even invalid JSON.
async function sign(header, payload, key) {
  const bytes = typeof payload === 'string' ? enc.encode(payload) : enc.encode(JSON.stringify(payload));
  return new jose.CompactSign(bytes).setProtectedHeader(header).sign(key);
}
const rs = (payload, extraHeader = {}) =>
  sign({ alg: 'RS256', kid: rsaKid, typ: 'JWT', ...extraHeader }, payload, rsaKey);
const es = (payload, extraHeader = {}) =>
  sign({ alg: 'ES256', kid: ecKid, typ: 'JWT', ...extraHeader }, payload, ecKey);

// Raw assembly with node:crypto for headers jose will not emit (duplicates, crit, none).
function rawRS256(headerText, payloadText) {
  const signingInput = `${b64u(headerText)}.${b64u(payloadText)}`;
  return `${signingInput}.${b64u(crypto.sign('sha256', Buffer.from(signingInput), rsaKey))}`;
}
const rawNone = (alg, payload, sig = '') =>
  `${b64u(JSON.stringify({ alg, kid: rsaKid, typ: 'JWT' }))}.${b64u(JSON.stringify(payload))}.${sig}`;

const cases = [];
const add = (name, expect, token) => cases.push({ name, expect, token });

// Controls: these must verify, or the refusals below prove nothing.
const good = await rs(claims());
const goodEs = await es(claims());
const [gh, gp, gs] = good.split('.');
add('ok_rs256', 'ok', good);
add('ok_es256', 'ok', goodEs);
add('ok_jose_signjwt', 'ok',
  await new jose.SignJWT({ role: 'viewer', factory_id: factoryId })
    .setProtectedHeader({ alg: 'RS256', kid: rsaKid, typ: 'JWT' })
    .setIssuer(issuer).setAudience(audience).setSubject('viewer-7')
    .setIssuedAt(now).setExpirationTime(now + 900).sign(rsaKey));
add('ok_admin', 'ok', await rs(without(claims({ role: 'admin' }), 'factory_id')));
add('ok_aud_array', 'ok', await rs(claims({ aud: ['someone-else', audience] })));
add('ok_typ_at_jwt', 'ok', await rs(claims(), { typ: 'at+jwt' }));
add('ok_typ_application_at_jwt_mixed_case', 'ok', await rs(claims(), { typ: 'application/AT+JWT' }));
add('ok_no_typ', 'ok', await sign({ alg: 'RS256', kid: rsaKid }, claims(), rsaKey));
add('ok_factory_id_upper_case', 'ok', await rs(claims({ factory_id: factoryId.toUpperCase() })));
add('ok_exp_within_leeway', 'ok', await rs(claims({ iat: now - 659, nbf: now - 659, exp: now - 59 })));
add('ok_nbf_within_leeway', 'ok', await rs(claims({ iat: now + 60, nbf: now + 60, exp: now + 660 })));
add('ok_lifetime_exactly_900', 'ok', await rs(claims({ iat: now - 100, nbf: now - 100, exp: now + 800 })));
add('ok_no_iat_no_nbf', 'ok', await rs(without(claims(), 'iat', 'nbf')));
add('ok_unknown_claims_ignored', 'ok', await rs(claims({ scope: 'x', 'http://example.com/is_root': true })));

// alg none, in every case, with an empty signature and with a real one attached.
for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
  add(`alg_${alg}_empty_signature`, 'malformed', rawNone(alg, claims()));
  add(`alg_${alg}_with_signature`, 'bad_header', rawNone(alg, claims(), gs));
}
add('alg_none_jose_unsecured', 'malformed',
  new jose.UnsecuredJWT(claims()).encode());
add('alg_none_jose_unsecured_with_signature', 'bad_header',
  new jose.UnsecuredJWT(claims()).encode() + gs);

// HMAC keyed with our public key, the classic algorithm confusion.
const hs = (alg, secret, header = {}) =>
  sign({ alg, kid: rsaKid, typ: 'JWT', ...header }, claims(), enc.encode(secret));
add('hs256_secret_public_pem_spki', 'bad_header', await hs('HS256', rsaPublicPem));
add('hs256_secret_public_pem_pkcs1', 'bad_header', await hs('HS256', rsaPublicPkcs1));
add('hs256_secret_public_jwk_bytes', 'bad_header', await hs('HS256', JSON.stringify(rsaJwk)));
add('hs256_secret_published_jwks_bytes', 'bad_header', await hs('HS256', input.jwks));
add('hs384_secret_public_pem', 'bad_header', await hs('HS384', rsaPublicPem));
add('hs512_secret_public_pem', 'bad_header', await hs('HS512', rsaPublicPem));
add('hs256_no_kid', 'bad_header',
  await sign({ alg: 'HS256' }, claims(), enc.encode(rsaPublicPem)));

// Other algorithms with our keys, or keys of other kinds.
add('rs512_our_rsa_key', 'bad_header', await sign({ alg: 'RS512', kid: rsaKid }, claims(), rsaKey));
add('rs384_our_rsa_key', 'bad_header', await sign({ alg: 'RS384', kid: rsaKid }, claims(), rsaKey));
add('ps256_our_rsa_key', 'bad_header', await sign({ alg: 'PS256', kid: rsaKid }, claims(), rsaKey));
add('alg_lower_case_rs256', 'bad_header', rawRS256(JSON.stringify({ alg: 'rs256', kid: rsaKid }), JSON.stringify(claims())));
add('alg_missing', 'bad_header', rawRS256(JSON.stringify({ kid: rsaKid }), JSON.stringify(claims())));
add('alg_array', 'bad_header', rawRS256(JSON.stringify({ alg: ['RS256'], kid: rsaKid }), JSON.stringify(claims())));
add('es256_signed_by_ec_key_with_rsa_kid', 'bad_header', await sign({ alg: 'ES256', kid: rsaKid }, claims(), ecKey));
add('rs256_signed_by_rsa_key_with_ec_kid', 'bad_header', await sign({ alg: 'RS256', kid: ecKid }, claims(), rsaKey));
add('eddsa_attacker_key_our_kid', 'bad_header', await sign({ alg: 'EdDSA', kid: rsaKid }, claims(), otherEd.privateKey));
add('es384_attacker_key_our_ec_kid', 'bad_header', await sign({ alg: 'ES384', kid: ecKid }, claims(), otherP384.privateKey));

// Someone else's key under our kid.
add('other_rsa_key_with_our_kid', 'bad_signature', await sign({ alg: 'RS256', kid: rsaKid }, claims(), other.privateKey));
add('other_ec_key_with_our_ec_kid', 'bad_signature', await sign({ alg: 'ES256', kid: ecKid }, claims(), otherEc.privateKey));

// Key ids that try to be paths, queries or something else.
add('kid_path_traversal', 'unknown_key', await sign({ alg: 'RS256', kid: '../../../../../../etc/passwd' }, claims(), other.privateKey));
add('kid_path_traversal_to_our_key_file', 'unknown_key', await sign({ alg: 'RS256', kid: `../keys/${rsaKid}.pem` }, claims(), rsaKey));
add('kid_dev_null', 'unknown_key', await sign({ alg: 'RS256', kid: '/dev/null' }, claims(), other.privateKey));
add('kid_sql', 'unknown_key', await sign({ alg: 'RS256', kid: "x'OR'1'='1'--" }, claims(), other.privateKey));
add('kid_sql_with_spaces', 'bad_header', await sign({ alg: 'RS256', kid: "x' OR '1'='1" }, claims(), other.privateKey));
add('kid_with_nul', 'malformed', await sign({ alg: 'RS256', kid: `${rsaKid}\u0000.pem` }, claims(), rsaKey));
add('kid_with_newline', 'bad_header', await sign({ alg: 'RS256', kid: `${rsaKid}\n` }, claims(), rsaKey));
add('kid_empty', 'bad_header', await sign({ alg: 'RS256', kid: '' }, claims(), rsaKey));
add('kid_too_long', 'bad_header', await sign({ alg: 'RS256', kid: 'k'.repeat(129) }, claims(), rsaKey));
add('kid_number', 'bad_header', rawRS256(JSON.stringify({ alg: 'RS256', kid: 7 }), JSON.stringify(claims())));
add('kid_missing_two_keys', 'bad_header', await sign({ alg: 'RS256' }, claims(), rsaKey));

// Key material carried by the token itself.
add('jku_attacker', 'bad_header', await sign({ alg: 'RS256', kid: 'attacker', jku: 'https://attacker.example/jwks.json' }, claims(), other.privateKey));
add('jku_with_our_key', 'bad_header', await rs(claims(), { jku: `https://attacker.example/jwks.json` }));
add('x5u_attacker', 'bad_header', await sign({ alg: 'RS256', kid: 'attacker', x5u: 'https://attacker.example/cert.pem' }, claims(), other.privateKey));
add('jwk_embedded_attacker', 'bad_header', await sign({ alg: 'RS256', jwk: otherPublicJwk }, claims(), other.privateKey));
add('jwk_embedded_with_our_kid', 'bad_header', await sign({ alg: 'RS256', kid: rsaKid, jwk: otherPublicJwk }, claims(), other.privateKey));
add('x5c_embedded', 'bad_header', await sign({ alg: 'RS256', kid: rsaKid, x5c: ['MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA'] }, claims(), rsaKey));

// crit (jose refuses to emit extensions it does not know: raw node:crypto signature).
add('crit_unknown_extension', 'bad_header', rawRS256(JSON.stringify({ alg: 'RS256', kid: rsaKid, crit: ['urn:x:policy'], 'urn:x:policy': 1 }), JSON.stringify(claims())));
add('crit_b64_false', 'bad_header', rawRS256(JSON.stringify({ alg: 'RS256', kid: rsaKid, b64: false, crit: ['b64'] }), JSON.stringify(claims())));
add('crit_registered_exp', 'bad_header', rawRS256(JSON.stringify({ alg: 'RS256', kid: rsaKid, crit: ['exp'] }), JSON.stringify(claims())));
add('crit_empty', 'bad_header', rawRS256(JSON.stringify({ alg: 'RS256', kid: rsaKid, crit: [] }), JSON.stringify(claims())));

// typ and cty.
add('typ_dpop', 'bad_header', await rs(claims(), { typ: 'dpop+jwt' }));
add('typ_jose', 'bad_header', await rs(claims(), { typ: 'JOSE' }));
add('typ_number', 'bad_header', rawRS256(JSON.stringify({ alg: 'RS256', kid: rsaKid, typ: 1 }), JSON.stringify(claims())));
add('cty_nested_jwt', 'bad_header', await rs(claims(), { cty: 'JWT' }));

// Time.
add('expired', 'expired', await rs(claims({ iat: now - 900, nbf: now - 900, exp: now - 300 })));
add('expired_at_leeway_edge', 'expired', await rs(claims({ iat: now - 660, nbf: now - 660, exp: now - 60 })));
add('nbf_future', 'expired', await rs(claims({ iat: now - 10, nbf: now + 120, exp: now + 600 })));
add('nbf_just_beyond_leeway', 'expired', await rs(claims({ iat: now - 10, nbf: now + 61, exp: now + 600 })));
add('iat_future', 'expired', await rs(claims({ iat: now + 120, nbf: now - 10, exp: now + 700 })));
add('lifetime_one_hour', 'bad_claims', await rs(claims({ iat: now, nbf: now, exp: now + 3600 })));
add('lifetime_901', 'bad_claims', await rs(claims({ iat: now - 100, nbf: now - 100, exp: now + 801 })));
add('lifetime_one_hour_no_iat_no_nbf', 'bad_claims', await rs(without(claims({ exp: now + 3600 }), 'iat', 'nbf')));
add('lifetime_backdated_iat', 'bad_claims', await rs(claims({ iat: now - 3000, nbf: now - 3000, exp: now + 600 })));
add('lifetime_exp_before_iat', 'bad_claims', await rs(claims({ iat: now, nbf: now, exp: now - 5 })));
add('exp_missing', 'bad_claims', await rs(without(claims(), 'exp')));
add('exp_string', 'bad_claims', await rs(claims({ exp: String(now + 600) })));
add('exp_fractional', 'bad_claims', await rs(`${JSON.stringify(without(claims(), 'exp')).slice(0, -1)},"exp":${now + 600}.5}`));
add('exp_exponent_form', 'bad_claims', await rs(`${JSON.stringify(without(claims(), 'exp')).slice(0, -1)},"exp":1.7e9}`));
add('exp_null', 'bad_claims', await rs(claims({ exp: null })));
add('exp_bool', 'bad_claims', await rs(claims({ exp: true })));
add('exp_negative', 'bad_claims', await rs(claims({ exp: -1 })));
add('exp_far_future', 'bad_claims', await rs(claims({ exp: 99999999999999 })));
add('exp_int64_overflow', 'malformed', await rs(`${JSON.stringify(without(claims(), 'exp')).slice(0, -1)},"exp":99999999999999999999}`));
add('iat_string', 'bad_claims', await rs(claims({ iat: String(now) })));
add('nbf_string', 'bad_claims', await rs(claims({ nbf: String(now) })));

// Issuer and audience.
add('iss_wrong', 'bad_claims', await rs(claims({ iss: 'https://attacker.example' })));
add('iss_case', 'bad_claims', await rs(claims({ iss: issuer.toUpperCase() })));
add('iss_missing', 'bad_claims', await rs(without(claims(), 'iss')));
add('iss_array', 'bad_claims', await rs(claims({ iss: [issuer] })));
add('aud_wrong', 'bad_claims', await rs(claims({ aud: 'some-other-api' })));
add('aud_missing', 'bad_claims', await rs(without(claims(), 'aud')));
add('aud_array_without_ours', 'bad_claims', await rs(claims({ aud: ['a', 'b'] })));
add('aud_array_empty', 'bad_claims', await rs(claims({ aud: [] })));
add('aud_array_with_number', 'bad_claims', await rs(claims({ aud: [audience, 5] })));
add('aud_prefix', 'bad_claims', await rs(claims({ aud: `${audience}x` })));

// Identity claims.
add('sub_missing', 'bad_claims', await rs(without(claims(), 'sub')));
add('sub_empty', 'bad_claims', await rs(claims({ sub: '' })));
add('sub_number', 'bad_claims', await rs(claims({ sub: 42 })));
add('sub_too_long', 'bad_claims', await rs(claims({ sub: 's'.repeat(128) })));
add('sub_control_char', 'bad_claims', await rs(claims({ sub: 'user\r\nX-Evil: 1' })));
add('role_missing', 'bad_claims', await rs(without(claims(), 'role')));
add('role_unknown', 'bad_claims', await rs(claims({ role: 'superadmin' })));
add('role_case', 'bad_claims', await rs(claims({ role: 'Admin' })));
add('role_array', 'bad_claims', await rs(claims({ role: ['admin'] })));
add('admin_with_factory_id', 'bad_claims', await rs(claims({ role: 'admin' })));
add('admin_with_factory_id_null', 'bad_claims', await rs(claims({ role: 'admin', factory_id: null })));
add('factory_user_without_factory_id', 'bad_claims', await rs(without(claims(), 'factory_id')));
add('viewer_without_factory_id', 'bad_claims', await rs(without(claims({ role: 'viewer' }), 'factory_id')));
add('factory_id_not_uuid', 'bad_claims', await rs(claims({ factory_id: 'factory-1' })));
add('factory_id_braces', 'bad_claims', await rs(claims({ factory_id: `{${factoryId}}` })));
add('factory_id_number', 'bad_claims', await rs(claims({ factory_id: 12 })));

// JSON: duplicates (jose serialises objects, so these payloads are written out by hand).
const body = JSON.stringify(claims());
add('duplicate_claim_role', 'malformed', await rs(`${body.slice(0, -1)},"role":"admin"}`));
add('duplicate_claim_sub', 'malformed', await rs(`{"sub":"admin-0",${body.slice(1)}`));
add('duplicate_claim_escaped_name', 'malformed', await rs(`${body.slice(0, -1)},"r\\u006fle":"admin"}`));
add('duplicate_claim_exp', 'malformed', await rs(`${body.slice(0, -1)},"exp":${now + 86400}}`));
add('duplicate_header_alg', 'malformed', rawRS256(`{"alg":"RS256","kid":"${rsaKid}","alg":"none"}`, body));
add('duplicate_header_kid', 'malformed', rawRS256(`{"alg":"RS256","kid":"${rsaKid}","kid":"${ecKid}"}`, body));
add('payload_array', 'malformed', await rs('[1,2,3]'));
add('payload_null', 'malformed', await rs('null'));
add('payload_text', 'malformed', await rs('hello'));
add('payload_trailing_garbage', 'malformed', await rs(`${body} x`));
add('payload_two_objects', 'malformed', await rs(`${body}{}`));
add('payload_nul_in_string', 'malformed', await rs(claims({ sub: 'a\u0000b' })));
add('payload_invalid_utf8', 'malformed',
  await new jose.CompactSign(Buffer.concat([Buffer.from(body.slice(0, -1)), Buffer.from(',"x":"\xff\xfe"}', 'latin1')]))
    .setProtectedHeader({ alg: 'RS256', kid: rsaKid }).sign(rsaKey));
add('payload_nested_2100_deep', 'malformed', await rs(`${body.slice(0, -1)},"x":${'['.repeat(2100)}${']'.repeat(2100)}}`));
add('header_array', 'malformed', rawRS256('["RS256"]', body));
add('header_not_json', 'malformed', rawRS256('alg=RS256', body));

// Signatures.
const tamper = (claimsObj) => `${gh}.${b64u(JSON.stringify(claimsObj))}.${gs}`;
add('tampered_payload_role_admin', 'bad_signature', tamper(without(claims({ role: 'admin' }), 'factory_id')));
add('tampered_payload_exp', 'bad_signature', tamper(claims({ exp: now + 600 + 1 })));
add('tampered_header_typ', 'bad_signature', `${b64u(JSON.stringify({ alg: 'RS256', kid: rsaKid, typ: 'at+jwt' }))}.${gp}.${gs}`);
add('signature_of_another_token', 'bad_signature', `${gh}.${gp}.${(await rs(claims({ jti: 'other' }))).split('.')[2]}`);
const sigBytes = jose.base64url.decode(gs);
add('signature_truncated', 'bad_signature', `${gh}.${gp}.${b64u(sigBytes.subarray(0, 255))}`);
add('signature_extended', 'bad_signature', `${gh}.${gp}.${b64u(Buffer.concat([sigBytes, Buffer.from([0])]))}`);
add('signature_zero', 'bad_signature', `${gh}.${gp}.${b64u(new Uint8Array(256))}`);
const [eh, ep] = goodEs.split('.');
const esInput = `${eh}.${ep}`;
add('es256_der_signature', 'bad_signature', `${esInput}.${b64u(crypto.sign('sha256', Buffer.from(esInput), { key: ecKey, dsaEncoding: 'der' }))}`);
add('es256_r_s_zero', 'bad_signature', `${esInput}.${b64u(new Uint8Array(64))}`);
const p256n = Buffer.from('ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551', 'hex');
add('es256_r_s_order', 'bad_signature', `${esInput}.${b64u(Buffer.concat([p256n, p256n]))}`);

// Base64url that is not the one canonical encoding.
const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
function flipSpareBits(seg) {
  const slack = { 2: 4, 3: 2 }[seg.length % 4];
  if (!slack) throw new Error('segment has no spare bits');
  const v = alphabet.indexOf(seg[seg.length - 1]);
  return seg.slice(0, -1) + alphabet[v | 1];
}
add('noncanonical_signature_spare_bits', 'malformed', `${gh}.${gp}.${flipSpareBits(gs)}`);
const esSig = goodEs.split('.')[2];
add('noncanonical_es256_signature_spare_bits', 'malformed', `${esInput}.${flipSpareBits(esSig)}`);
add('signature_padded', 'malformed', `${gh}.${gp}.${gs}==`);
add('header_padded', 'malformed', `${gh}${'='.repeat((4 - (gh.length % 4)) % 4 || 4)}.${gp}.${gs}`);
let stdSig = gs;
for (let i = 0; !/[-_]/.test(stdSig) && i < 50; i++)
  stdSig = (await rs(claims({ jti: `std-${i}` }))).split('.')[2];
if (!/[-_]/.test(stdSig)) throw new Error('no signature with - or _ found');
add('signature_standard_alphabet', 'malformed', `${gh}.${gp}.${stdSig.replace(/-/g, '+').replace(/_/g, '/')}`);
const stdPayload = Buffer.from(JSON.stringify(claims())).toString('base64');
if (!/[+/=]/.test(stdPayload)) throw new Error('payload encodes the same in both alphabets');
add('payload_standard_base64', 'malformed', `${gh}.${stdPayload}.${gs}`);
add('whitespace_inside', 'malformed', `${gh}.${gp.slice(0, 10)} ${gp.slice(10)}.${gs}`);
add('newline_inside', 'malformed', `${gh}.${gp}\n.${gs}`);
add('trailing_space', 'malformed', `${good} `);
add('bearer_prefix', 'malformed', `Bearer ${good}`);

// Shape.
add('empty', 'malformed', '');
add('one_dot', 'malformed', '.');
add('two_dots', 'malformed', '..');
add('two_segments', 'malformed', `${gh}.${gp}`);
add('four_segments', 'malformed', `${good}.${gs}`);
add('jwe_shape', 'malformed', `${gh}.${gp}.${gs}.${gp}.${gs}`);
add('trailing_dot', 'malformed', `${good}.`);
add('empty_payload_segment', 'malformed', `${gh}..${gs}`);

// Size: the limit is 8192 bytes, checked before anything is decoded.
const base = (await rs(claims({ pad: '' }))).length;
add('token_64kib', 'malformed', await rs(claims({ pad: 'A'.repeat(Math.floor(((65536 - base) * 3) / 4)) })));
let atLimit = null;
let overLimit = null;
for (let n = Math.floor(((8192 - base) * 3) / 4) - 8; !overLimit; n++) {
  const t = await rs(claims({ pad: 'A'.repeat(n) }));
  if (t.length <= 8192) atLimit = t;
  else overLimit = t;
}
add(`size_${atLimit.length}_at_limit`, 'ok', atLimit);
add(`size_${overLimit.length}_over_limit`, 'malformed', overLimit);

// Cross-checks the other way: our kids are RFC 7638 thumbprints, and our signer's tokens
// verify with jose against the JWKS we publish.
const thumbprints = {
  rsa: await jose.calculateJwkThumbprint(rsaJwk),
  ec: await jose.calculateJwkThumbprint(jwks.keys.find((k) => k.kid === ecKid)),
};
const jwkSet = jose.createLocalJWKSet(jwks);
const oursVerified = [];
for (const t of input.ours ?? []) {
  try {
    await jose.jwtVerify(t, jwkSet, {
      issuer, audience, algorithms: ['RS256', 'ES256'], currentDate: new Date(now * 1000), maxTokenAge: '15m',
    });
    oursVerified.push(true);
  } catch (e) {
    process.stderr.write(`jose refused our token: ${e.code ?? e.message}\n`);
    oursVerified.push(false);
  }
}

process.stdout.write(`${JSON.stringify({ cases, thumbprints, ours_verified: oursVerified })}\n`);

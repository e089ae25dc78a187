// fake_upstream.mjs PORT — a stand-in for a Tagproof service that answers a few paths right
// and a few wrong, so test_prism_verdict.sh can show that the contract check catches what it
// should (and lets pass what it should). Node's standard library only.
import http from 'node:http';

const port = Number(process.argv[2]);
const rid = { 'X-Request-Id': 'fake-0001' };
const json = (res, status, body, headers = {}) => {
  res.writeHead(status, { 'Content-Type': 'application/json', ...rid, ...headers });
  res.end(JSON.stringify(body));
};
const problem = (res, status, detail, headers = {}) => {
  res.writeHead(status, { 'Content-Type': 'application/problem+json', ...rid, ...headers });
  res.end(JSON.stringify({ type: 'about:blank', title: 'x', status, detail, request_id: 'fake-0001' }));
};

http
  .createServer((req, res) => {
    const url = new URL(req.url, 'http://fake');
    switch (url.pathname) {
      case '/v1/health': // right
        return json(res, 200, { status: 'ok', service: 'fake' });
      case '/v1/ready': // wrong: a member of the wrong type, a state the document does not know
        return json(res, 200, { status: 'ready', service: 'fake', dependencies: { redis: { state: 'sideways', latency_ms: 'fast', breaker: 'closed' } } });
      case '/.well-known/jwks.json': // wrong: no X-Request-Id header
        res.writeHead(200, { 'Content-Type': 'application/json' });
        return res.end(JSON.stringify({ keys: [{ kty: 'RSA', kid: 'k', use: 'sig', alg: 'RS256', n: 'x', e: 'AQAB' }] }));
      case '/v1/factories':
        if (!req.headers['x-api-key'] && !req.headers.authorization)
          // wrong: a 401 without WWW-Authenticate
          return problem(res, 401, 'no credential');
        if (url.searchParams.get('limit') === '0')
          // accepting what the document calls invalid is a mismatch; refusing it is not
          return url.searchParams.get('lenient') === '1'
            ? json(res, 200, { items: [], next_cursor: null })
            : problem(res, 400, 'limit must be 1 to 1000');
        if (url.searchParams.get('status') === '418') // wrong: a status the document does not list
          return problem(res, 418, 'teapot');
        return json(res, 200, { items: [{ id: '0192f0c4-5a6b-7c8d-9e0f-a1b2c3d4e5f6', name: 'F', created_at: '2026-11-22T10:00:00.123456+00:00' }], next_cursor: null });
      default:
        return problem(res, 404, 'there is no resource at this path');
    }
  })
  .listen(port, '127.0.0.1');

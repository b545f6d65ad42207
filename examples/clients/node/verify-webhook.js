// Verifies a Quayside completion webhook (docs/protocol.md, "Completion webhooks").
//
// Use verify(secret, signatureHeader, rawBody) in your receiver, on the raw request body (a
// Buffer, before any JSON parsing). Node's standard library only. As a script: SECRET and
// SIGNATURE in the environment, the raw body on stdin; exits 0 when the webhook is authentic
// and fresh, 1 otherwise.
'use strict';
const crypto = require('crypto');

const TOLERANCE_S = 300; // refuse signatures older (or newer) than five minutes: no replays

function verify(secret, header, body, nowS = Date.now() / 1000) {
  const parts = Object.fromEntries(
    header.split(',').filter((p) => p.includes('=')).map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)]),
  );
  const t = Number.parseInt(parts.t, 10);
  if (!Number.isSafeInteger(t) || String(t) !== parts.t) return false;
  if (Math.abs(nowS - t) > TOLERANCE_S) return false;
  const expected = crypto.createHmac('sha256', secret).update(`${t}.`).update(body).digest();
  const given = Buffer.from(parts.v1 || '', 'hex');
  return given.length === expected.length && crypto.timingSafeEqual(given, expected);
}

module.exports = { verify };

if (require.main === module) {
  const chunks = [];
  process.stdin.on('data', (c) => chunks.push(c));
  process.stdin.on('end', () => {
    const ok = verify(process.env.SECRET, process.env.SIGNATURE, Buffer.concat(chunks));
    console.log(ok ? 'valid' : 'invalid');
    process.exit(ok ? 0 : 1);
  });
}

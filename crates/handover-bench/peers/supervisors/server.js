// The Node.js `http` server of the supervisor matrix (handover-bench --supervisors). The bench
// writes a copy with @GREETING@ and @DRAIN@ filled in for each version:
// - DRAIN `snippet`: the handshake and drain of crates/handover-cli/README.md ("Node.js"),
//   for the socket that `handover run --listen` passes on fd 3;
// - DRAIN `stock`: a plain `server.close()`, what a Node server does without help (behind
//   `handover run --proxy`, under PM2).
// It listens on fd 3 when LISTEN_FDS is set, else on 127.0.0.1:$PORT (PM2 cluster mode
// shares that port between its workers).
'use strict';
const http = require('http');
const net = require('net');

const GREETING = '@GREETING@';
const DRAIN = '@DRAIN@';
const IDLE_GRACE_MS = 1000;

let draining = false;
const server = http.createServer((req, res) => {
  // While draining (snippet), every answer closes its connection: a busy keep-alive client
  // reconnects, to the new version, between two requests.
  if (draining && DRAIN === 'snippet') res.setHeader('Connection', 'close');
  res.end(`${GREETING} pid=${process.pid}\n`);
});

let sync = null;
if (process.env.LISTEN_FDS) {
  // The supervisor's handshake (the CLI README, "Node.js"): `R` once ready, accept after its
  // `A` (sent once the old version has stopped accepting), `C` at the stop once this one has.
  // backlog: Node's listen() on fd 3 sets the shared socket's backlog again, to 511 unless
  // told (the CLI README: a burst of reconnects beyond it waits seconds for SYN-ACK retries).
  sync = new net.Socket({ fd: Number(process.env.HANDOVER_SYNC_FD), readable: true, writable: true });
  sync.once('data', (byte) => {
    if (byte[0] !== 0x41) process.exit(1);
    server.listen({ fd: 3 }, 1024);
    sync.unref();
  });
  sync.write('R');
} else {
  server.listen(Number(process.env.PORT), '127.0.0.1');
}

// SIGTERM from handover, SIGINT from PM2 (its default kill signal).
const stop = () => {
  if (draining) return;
  draining = true;
  if (DRAIN !== 'snippet') {
    server.close(() => process.exit(0));
    return;
  }
  // Stop accepting without closing idle keep-alive connections at once (Node >= 19's
  // `server.close()` does, and a request already on its way is lost).
  net.Server.prototype.close.call(server, () => process.exit(0));
  if (sync) sync.write('C');
  setTimeout(() => server.closeIdleConnections(), IDLE_GRACE_MS).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

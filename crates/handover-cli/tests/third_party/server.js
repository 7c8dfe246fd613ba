// A Node.js `http` server under `handover run`: the socket from fd 3 with the drain of
// crates/handover-cli/README.md ("Node.js"), or, under `--proxy`, a port of its own. On fd 3
// it speaks the supervisor's handshake when it has one (`--ready notify`, the default:
// HANDOVER_SYNC_FD), else it is ready by its own health port (`--ready http:/healthz`). The
// test writes a copy with VERSION and DRAIN filled in (DRAIN `snippet`: the drain below;
// `close`: plain `server.close()`, which loses requests on fd 3, and which the proxy makes
// harmless).
'use strict';
const http = require('http');
const net = require('net');

const VERSION = '@VERSION@';
const DRAIN = '@DRAIN@';
const IDLE_GRACE_MS = 1000;

let draining = false;
const server = http.createServer((req, res) => {
  // While draining, every answer closes its connection: a busy keep-alive client reconnects,
  // to the new version, between two requests.
  if (draining) res.setHeader('Connection', 'close');
  res.end(`${VERSION} pid=${process.pid}\n`);
});

const ready = () => console.log(`node ${VERSION} pid ${process.pid}: serving`);
// fd 3 is the listening socket `handover run --listen` passes (LISTEN_FDS=1).
// backlog: Node's listen() on fd 3 sets the shared socket's backlog again, to 511 unless
// told (the README: a burst of reconnects beyond it waits seconds for SYN-ACK retries).
const listenOnFd3 = (then) => server.listen({ fd: 3 }, 1024, then);
let sync = null;
if (process.env.LISTEN_FDS && process.env.HANDOVER_SYNC_FD) {
  // The handshake: `R` once ready, accept only after the supervisor's `A` (it comes once the
  // old version has stopped accepting), `C` at the stop once accepting has stopped.
  sync = new net.Socket({
    fd: Number(process.env.HANDOVER_SYNC_FD),
    readable: true,
    writable: true,
  });
  sync.once('data', (byte) => {
    if (byte[0] !== 0x41) process.exit(1);
    listenOnFd3(ready);
    sync.unref();
  });
  sync.write('R');
} else if (process.env.LISTEN_FDS) {
  listenOnFd3(() => {
    // Ready once we accept: `--ready http:/healthz` asks this port, ours alone.
    http.createServer((req, res) => res.end('ok\n'))
      .listen(Number(process.env.HANDOVER_HEALTH_PORT), '127.0.0.1', ready)
      .unref();
  });
} else {
  // `handover run --proxy`: our own port, in $PORT; ready when it accepts.
  server.listen(Number(process.env.PORT), '127.0.0.1', ready);
}

process.on('SIGTERM', () => {
  draining = true;
  if (DRAIN === 'close') {
    server.close(() => process.exit(0));
    if (sync) sync.write('C');
    return;
  }
  // Stop accepting without closing idle keep-alive connections: since Node 19,
  // `server.close()` closes them at once, and a request already on its way is lost.
  net.Server.prototype.close.call(server, () => process.exit(0));
  // Closed at once: nothing more is accepted here, the new version may begin.
  if (sync) sync.write('C');
  // A connection still idle after the grace was not being used: close it now.
  setTimeout(() => server.closeIdleConnections(), IDLE_GRACE_MS).unref();
});

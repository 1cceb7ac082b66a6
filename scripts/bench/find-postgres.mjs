// Prints the admin URL of a PostgreSQL answering on 127.0.0.1:5432 (as on developer and CI
// machines), or nothing: `make bench` then measures SQLite only.
import { connect } from 'node:net';

const socket = connect(5432, '127.0.0.1');
socket.setTimeout(1000);
socket.on('connect', () => {
  process.stdout.write('postgres://postgres@127.0.0.1:5432/postgres');
  socket.destroy();
});
socket.on('timeout', () => socket.destroy());
socket.on('error', () => undefined);

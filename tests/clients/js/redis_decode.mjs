// Decodes what edgelive wrote into Redis with protobufjs (the library the centrifuge npm package
// builds its protobuf client on), independently of edgelive's own prost definitions. The
// centrifuge package keeps its compiled messages private to its bundle, so the two messages are
// declared here from centrifugal/protocol's client.proto (field numbers as there).
// stdin: {"publications": [hex...], "client_infos": [hex...]}; stdout: the decoded JSON.
import protobuf from 'protobufjs';

const root = protobuf.parse(`syntax = "proto3";
package centrifugal.centrifuge.protocol;
message ClientInfo { string user = 1; string client = 2; bytes conn_info = 3; bytes chan_info = 4; }
message Publication { reserved 1, 2, 3; bytes data = 4; ClientInfo info = 5; uint64 offset = 6;
  map<string, string> tags = 7; bool delta = 8; int64 time = 9; string channel = 10; string key = 11; }`,
  { keepCase: true }).root;
const Publication = root.lookupType('centrifugal.centrifuge.protocol.Publication');
const ClientInfo = root.lookupType('centrifugal.centrifuge.protocol.ClientInfo');

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const input = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const text = (b) => (b && b.length ? JSON.parse(Buffer.from(b).toString('utf8')) : null);
const info = (i) => i && { user: i.user, client: i.client, conn_info: text(i.conn_info) };
const out = {
  publications: input.publications.map((h) => {
    const p = Publication.decode(Buffer.from(h, 'hex'));
    return { data: text(p.data), info: info(p.info), time: Number(p.time), offset: Number(p.offset) };
  }),
  client_infos: input.client_infos.map((h) => info(ClientInfo.decode(Buffer.from(h, 'hex')))),
};
process.stdout.write(JSON.stringify(out));

// Interop test: two real Tinode JS clients (the `tinode-sdk` npm package, over the `ws` package)
// talk to a running kefu gateway through its Tinode-compatible JSON dialect.
//
//   KEFU_WS=127.0.0.1:PORT node interop.mjs      (or: node interop.mjs 127.0.0.1:PORT)
//
// Steps: A and B each create an account with `acc` (basic scheme, login: true), reconnect and
// log in with `login` (basic); B subscribes to `me` and to A's p2p topic; A subscribes to B's
// p2p topic and publishes "hello from A"; B receives the {data}, fetches the history with a
// `get data` (getMessagesPage's request), marks the message read (noteRead); A sees the
// {info what=read}. Each step prints a line. Exit 0 when all pass; 1 with a message on the
// first failure or after 20 s; 2 on bad usage. Only ever connects to 127.0.0.1.

import WebSocket from 'ws';
import tinode from 'tinode-sdk';

const { Tinode } = tinode;

const TIMEOUT_MS = 20_000;
const TEXT = 'hello from A';

let step = 'start';

function fail(message) {
  console.error(`FAIL at step "${step}": ${message}`);
  process.exit(1);
}

function describe(err) {
  if (!err) return 'unknown error';
  const msg = err.message || (err.error && err.error.message) || String(err);
  if (/ECONNREFUSED/.test(msg)) return `connection refused (${msg})`;
  if (err.code) return `${err.code} ${msg}`;
  return msg;
}

function begin(name) {
  step = name;
}

function ok(line) {
  console.log(`ok   ${step}: ${line}`);
}

const target = process.argv[2] || process.env.KEFU_WS || '';
if (!/^127\.0\.0\.1:\d{1,5}$/.test(target)) {
  console.error('usage: KEFU_WS=127.0.0.1:PORT node interop.mjs  (or pass 127.0.0.1:PORT as argument)');
  process.exit(2);
}

setTimeout(() => fail(`timeout after ${TIMEOUT_MS / 1000} s`), TIMEOUT_MS).unref();
process.on('unhandledRejection', (err) => fail(`unhandled rejection: ${describe(err)}`));

// Node has no global WebSocket / indexedDB: hand the SDK the `ws` package, and an indexedDB
// stand-in for the one call a non-persistent client makes (deleting the cache at start-up).
Tinode.setNetworkProviders(WebSocket, null);
Tinode.setDatabaseProvider({
  deleteDatabase() {
    const req = {};
    setTimeout(() => req.onsuccess && req.onsuccess({}), 0);
    return req;
  },
});

/** A Tinode client, ready once its (empty) cache is set up. */
function client(appName) {
  return new Promise((resolve, reject) => {
    const t = new Tinode({ appName, host: target, apiKey: 'kefu', secure: false, transport: 'ws' },
      (err) => (err ? reject(err) : resolve(t)));
  });
}

/** Opens the connection and waits for the answer to `hi`. */
function connect(t) {
  return new Promise((resolve, reject) => {
    t.onConnect = () => resolve(t.getServerInfo());
    // The socket's own error (e.g. ECONNREFUSED) says more than the SDK's generic 503 that
    // follows it, so the latter waits a moment.
    t.onDisconnect = (err) => setTimeout(() => reject(err || new Error('disconnected')), 50);
    t.connect().catch(reject);
  }).finally(() => {
    t.onConnect = undefined;
    t.onDisconnect = undefined;
  });
}

/** Resolves with the first value `check` returns that is not undefined. */
function waitFor(register) {
  return new Promise((resolve) => register((value) => {
    if (value !== undefined) resolve(value);
  }));
}

function p2pName(uid) {
  return uid.startsWith('usr') ? uid : `usr${uid}`;
}

async function account(name, login, password) {
  const t = await client(`kefu-interop-${name}`);
  begin(`${name}: hi`);
  const info = await connect(t);
  if (!info || !info.ver) fail(`hi answer without params.ver: ${JSON.stringify(info)}`);
  ok(`server ver ${info.ver}, build ${info.build}`);

  begin(`${name}: acc`);
  const acc = await t.createAccountBasic(login, password, { public: { fn: name } });
  if (!acc.params || !acc.params.user) fail(`acc answer without params.user: ${JSON.stringify(acc)}`);
  const uid = acc.params.user;
  ok(`account ${uid} created (code ${acc.code})`);

  begin(`${name}: login`);
  t.disconnect();
  await connect(t);
  const ctrl = await t.loginBasic(login, password);
  if (!ctrl.params || ctrl.params.user !== uid) {
    fail(`login answered user ${ctrl.params && ctrl.params.user}, want ${uid}`);
  }
  ok(`logged in as ${uid} (code ${ctrl.code}, authlvl ${ctrl.params.authlvl})`);
  return { t, uid };
}

async function main() {
  const run = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
  const a = await account('A', `alice${run}`, 'alice-password');
  const b = await account('B', `bob${run}`, 'bob-password');

  begin('B: sub me');
  const me = b.t.getMeTopic();
  await me.subscribe(me.startMetaQuery().withLaterSub().withDesc().build());
  ok('subscribed to me');

  begin("B: sub A's p2p topic");
  const atB = b.t.getTopic(p2pName(a.uid));
  const received = waitFor((done) => {
    atB.onData = (data) => done(data && data.content === TEXT && data.from === a.uid ? data : undefined);
  });
  await atB.subscribe(atB.startMetaQuery().withLaterDesc().withLaterSub().withLaterData(24).build());
  ok(`subscribed to ${atB.name}`);

  begin("A: sub B's p2p topic");
  const atA = a.t.getTopic(p2pName(b.uid));
  await atA.subscribe(atA.startMetaQuery().withLaterDesc().withLaterSub().withLaterData(24).build());
  ok(`subscribed to ${atA.name}`);

  begin('A: pub');
  const pub = await atA.publish(TEXT);
  const seq = pub && pub.params && pub.params.seq;
  if (!(seq >= 1)) fail(`pub answer without params.seq: ${JSON.stringify(pub)}`);
  ok(`"${TEXT}" stored at seq ${seq} (code ${pub.code})`);

  begin('B: data');
  const data = await received;
  if (data.seq !== seq) fail(`B got seq ${data.seq}, A was told ${seq}`);
  ok(`B received {data} seq ${data.seq} from ${data.from}`);

  begin('B: history');
  const pulled = [];
  b.t.onDataMessage = (d) => {
    if (d.topic === atB.name) pulled.push(d.seq);
  };
  const page = await atB.getMeta(atB.startMetaQuery().withData(undefined, undefined, 24).build());
  // The SDK settles the promise on the ctrl at once but routes the {data} before it on a timer.
  await new Promise((resolve) => setTimeout(resolve, 50));
  b.t.onDataMessage = undefined;
  if (!pulled.includes(seq)) fail(`history page (code ${page.code}) did not bring seq ${seq}: got [${pulled}]`);
  ok(`history page brought seqs [${pulled}] (code ${page.code})`);

  begin('B: read, A: info');
  const read = waitFor((done) => {
    atA.onInfo = (info) => done(info.what === 'read' && info.from === b.uid && info.seq >= seq ? info : undefined);
  });
  atB.noteRead(seq);
  const info = await read;
  ok(`A saw {info what=read seq=${info.seq}} from ${info.from}`);

  a.t.disconnect();
  b.t.disconnect();
  console.log('PASS: Tinode JS client interop');
  process.exit(0);
}

main().catch((err) => fail(describe(err)));

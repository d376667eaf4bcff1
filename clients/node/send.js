// Send a broadcast through the gRPC API and print every delivery result as it happens.
//
//   TGB_API_TOKEN=demo-token-0123456789 node send.js 111 222
//   TGB_API_TOKEN=demo-token-0123456789 node send.js --message "Hello from Node.js!" 111
//
// Environment:
//   TGB_API_TOKEN    the service's API token (required)
//   TGB_GRPC_TARGET  host:port of the gRPC API (default localhost:50051)
//   TGB_GRPC_TLS     "true" to connect with TLS (default: plaintext), checking the server's
//                    certificate against the system's roots
//   TGB_GRPC_CA_FILE the PEM CA that signed the server's certificate (implies TLS)
//   TGB_GRPC_CERT_FILE, TGB_GRPC_KEY_FILE
//                    the PEM client certificate and its key, for a server that requires
//                    mutual TLS (both or neither; imply TLS)
//   TGB_PROTO_DIR    the folder holding tgbroadcast/v1/broadcast.proto (default: this
//                    repository's proto/)
//
// Prints one line per recipient as its outcome arrives, then the final status. Exits 0 when the
// broadcast completed (whatever each recipient's outcome), 1 when it was stopped as failed or a
// call failed, 2 on a usage error.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PROTO_DIR = process.env.TGB_PROTO_DIR || path.resolve(HERE, "..", "..", "proto");

function usage(problem) {
  console.error(`send.js: ${problem}`);
  console.error("usage: TGB_API_TOKEN=... node send.js [--message TEXT] USER_ID [USER_ID ...]");
  process.exit(2);
}

function loadService() {
  // The import of google/protobuf/timestamp.proto needs no file here: proto-loader's protobufjs
  // bundles the well-known types. longs: String keeps 64-bit ids exact (a JavaScript number
  // is exact only up to 2**53).
  const definition = protoLoader.loadSync("tgbroadcast/v1/broadcast.proto", {
    includeDirs: [PROTO_DIR],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).tgbroadcast.v1.BroadcastService;
}

// Plaintext unless TLS is asked for: by TGB_GRPC_TLS=true or by naming any PEM file.
function channelCredentials(env) {
  const { TGB_GRPC_CA_FILE: ca, TGB_GRPC_CERT_FILE: cert, TGB_GRPC_KEY_FILE: key } = env;
  if (Boolean(cert) !== Boolean(key)) {
    usage("set TGB_GRPC_CERT_FILE and TGB_GRPC_KEY_FILE together (the client certificate and its key)");
  }
  if (env.TGB_GRPC_TLS !== "true" && !ca && !cert) return grpc.credentials.createInsecure();
  const read = (file) => (file ? fs.readFileSync(file) : null);
  try {
    return grpc.credentials.createSsl(read(ca), read(key), read(cert));
  } catch (error) {
    usage(`cannot read a TLS file: ${error.message}`);
  }
}

// "DELIVERY_OUTCOME_SENT" -> "SENT", "BROADCAST_STATUS_COMPLETED" -> "COMPLETED".
const shortName = (value, prefix) => String(value).replace(prefix, "");

function sendMessage(client, request, metadata) {
  return new Promise((resolve, reject) => {
    client.SendMessage(request, metadata, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

// Resolves with the closing message (the final progress) when the stream ends with OK.
function watchBroadcast(client, broadcastId, metadata, onResult) {
  return new Promise((resolve, reject) => {
    let last = null;
    const call = client.WatchBroadcast({ broadcast_id: broadcastId }, metadata);
    call.on("data", (update) => {
      last = update;
      if (update.result) onResult(update.result, update.progress);
    });
    call.on("error", reject);
    call.on("end", () => resolve(last));
  });
}

// Recipients may be negative (groups, channels), so they are told from options by their shape.
function parseCommandLine(args) {
  let message = "Hello from Node.js!";
  const userIds = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "-m" || arg === "--message") {
      if (i + 1 === args.length) usage(`${arg} needs the text to send`);
      message = args[++i];
    } else if (arg.startsWith("--message=")) {
      message = arg.slice("--message=".length);
    } else if (/^-?\d+$/.test(arg)) {
      userIds.push(arg);
    } else {
      usage(`not a Telegram chat id: ${arg}`);
    }
  }
  if (userIds.length === 0) usage("name at least one recipient (a Telegram chat id)");
  return { message, userIds };
}

// One line per recipient: "123 SENT message_id=42 (...)" or "456 BLOCKED error="..." (...)".
function printResult(result, progress) {
  const outcome = shortName(result.outcome, "DELIVERY_OUTCOME_");
  const detail =
    outcome === "SENT"
      ? `message_id=${result.message_id}`
      : `error=${JSON.stringify(result.error)}`;
  const counts = `${progress.sent} sent, ${progress.failed} failed, ${progress.pending} pending`;
  console.log(`${result.user_id} ${outcome} ${detail} (${counts})`);
}

async function main() {
  const token = process.env.TGB_API_TOKEN;
  if (!token) usage("set TGB_API_TOKEN to the service's API token");
  const { message, userIds } = parseCommandLine(process.argv.slice(2));

  const target = process.env.TGB_GRPC_TARGET || "localhost:50051";
  const credentials = channelCredentials(process.env);
  const BroadcastService = loadService();
  const client = new BroadcastService(target, credentials);
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);

  try {
    // Ids travel as decimal strings: int64 fields accept them, and nothing is rounded.
    const sent = await sendMessage(client, { message, user_ids: userIds }, metadata);
    const queued = shortName(sent.status, "BROADCAST_STATUS_");
    console.log(`broadcast ${sent.broadcast_id}: ${queued}, ${sent.total} recipients`);

    const closing = await watchBroadcast(client, sent.broadcast_id, metadata, printResult);
    if (!closing || closing.result) throw new Error("the stream ended before its closing message");
    const { total, sent: delivered, failed } = closing.progress;
    const status = shortName(closing.progress.status, "BROADCAST_STATUS_");
    console.log(
      `broadcast ${sent.broadcast_id} ${status}: total=${total} sent=${delivered} failed=${failed}`,
    );
    process.exitCode = status === "COMPLETED" ? 0 : 1;
  } catch (error) {
    // A failed call has error.code (a grpc.status number) and error.details (the server's text).
    const code = grpc.status[error.code] ?? "ERROR";
    console.error(`send.js: ${code}: ${error.details ?? error.message}`);
    process.exitCode = 1;
  } finally {
    client.close();
  }
}

await main();

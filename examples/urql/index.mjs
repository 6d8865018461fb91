// urql 6 against Threadline: @urql/exchange-graphcache (normalised cache, schema-aware for the
// ConversationStreamEvent and Node interfaces), graphql-ws for subscriptions, `since` on reconnect.
//
//   npm ci
//   THREADLINE_URL=http://127.0.0.1:8000/graphql THREADLINE_API_KEY=tl_... node index.mjs
//
// Exits 0 once a reply's event arrived and a second one arrived on a stream resumed with `since`.
import { readFileSync } from "node:fs";
import { Client, fetchExchange, gql, subscriptionExchange } from "@urql/core";
import { cacheExchange } from "@urql/exchange-graphcache";
import { buildSchema, introspectionFromSchema } from "graphql";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const url = process.env.THREADLINE_URL ?? "http://127.0.0.1:8000/graphql";
const apiKey = process.env.THREADLINE_API_KEY;
if (!apiKey) {
  console.error("set THREADLINE_API_KEY");
  process.exit(2);
}
const authorization = `Bearer ${apiKey}`;

// Graphcache reads interfaces and unions from the schema (the file the server ships). Stream events have
// no id: key them as embedded data (null) so they are not normalised and graphcache does not warn.
const schemaPath = process.env.THREADLINE_SCHEMA ?? new URL("../../schema.graphql", import.meta.url);
const schema = buildSchema(readFileSync(schemaPath, "utf8"));
const events = schema.getPossibleTypes(schema.getType("ConversationStreamEvent"));
const keys = Object.fromEntries(events.map((type) => [type.name, () => null]));

const wsClient = createClient({
  url: url.replace(/^http/, "ws"),
  webSocketImpl: WebSocket, // Node 20 has no global WebSocket; browsers and Node 22+ do not need this.
  connectionParams: { authorization }, // the key travels in connection_init
});
const client = new Client({
  url,
  fetchOptions: { headers: { authorization } },
  exchanges: [
    cacheExchange({ schema: introspectionFromSchema(schema), keys }),
    fetchExchange,
    subscriptionExchange({
      forwardSubscription(request) {
        const input = { ...request, query: request.query || "" };
        return { subscribe: (sink) => ({ unsubscribe: wsClient.subscribe(input, sink) }) };
      },
    }),
  ],
});

const CREATE = gql`mutation Create($i: ConversationCreateInput!) { conversationCreate(input: $i) { id title } }`;
const START = gql`mutation Start($c: ID!, $i: MessageInput!) { threadStart(conversationId: $c, input: $i) { id } }`;
const REPLY = gql`mutation Reply($p: ID!, $i: MessageInput!) { messageReply(parentId: $p, input: $i) { id } }`;
const STREAM_CURSOR = gql`query StreamCursor { streamCursor }`;
const EVENTS = gql`
  subscription Events($c: ID!, $since: String) {
    conversationEvents(conversationId: $c, since: $since) {
      __typename cursor type conversationId rootId
      ... on ThreadActivityEvent { action changedMessage { id content } }
    }
  }
`;

async function run(operation) {
  const result = await operation.toPromise();
  if (result.error) throw result.error;
  return result.data;
}

// Follows the conversation from `since` until the event of `messageId` arrives.
function nextReply(conversationId, since, messageId) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no event within 30 s")), 30_000);
    const { unsubscribe } = client.subscription(EVENTS, { c: conversationId, since }).subscribe((result) => {
      if (result.error) {
        clearTimeout(timer);
        return reject(result.error);
      }
      const event = result.data?.conversationEvents;
      if (event?.__typename === "ThreadActivityEvent" && event.changedMessage.id === messageId) {
        clearTimeout(timer);
        setTimeout(unsubscribe); // not from inside the callback that delivers the result
        resolve(event);
      }
    });
  });
}

const created = await run(client.mutation(CREATE, { i: { title: "urql example" } }));
const conversationId = created.conversationCreate.id;
const root = (await run(client.mutation(START, { c: conversationId, i: { content: "hello" } }))).threadStart.id;
const position = await run(client.query(STREAM_CURSOR, {}, { requestPolicy: "network-only" }));

// Reply, then subscribe from the position taken before it: `since` replays what was committed before the
// subscription was live, so the event arrives whatever the timing.
const reply = async (content) => (await run(client.mutation(REPLY, { p: root, i: { content } }))).messageReply.id;
const firstId = await reply("first reply");
const event = await nextReply(conversationId, position.streamCursor, firstId);
let lastCursor = event.cursor; // keep the last cursor seen: it is where a reconnect resumes
console.log(`received ${event.type} ${event.action} at ${lastCursor}`);

// Reconnect: drop the socket (as a network loss would), reply meanwhile, resume with `since` = lastCursor.
wsClient.terminate();
const secondId = await reply("second reply");
const resumed = await nextReply(conversationId, lastCursor, secondId);
lastCursor = resumed.cursor;
console.log(`resumed with since: ${resumed.type} ${resumed.action} at ${lastCursor}`);

await wsClient.dispose();
console.log("ok");
process.exit(0);

// Apollo Client 4 against Threadline: possibleTypes from the schema, a split link (HTTP for queries and
// mutations, graphql-ws for subscriptions), and a subscription resumed with `since` after a reconnect.
//
//   npm ci
//   THREADLINE_URL=http://127.0.0.1:8000/graphql THREADLINE_API_KEY=tl_... node index.mjs
//
// Exits 0 once a reply's event arrived live and a second one arrived on a stream resumed with `since`.
import { readFileSync } from "node:fs";
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { getMainDefinition } from "@apollo/client/utilities";
import { buildSchema, isAbstractType } from "graphql";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const url = process.env.THREADLINE_URL ?? "http://127.0.0.1:8000/graphql";
const apiKey = process.env.THREADLINE_API_KEY;
if (!apiKey) {
  console.error("set THREADLINE_API_KEY");
  process.exit(2);
}
const authorization = `Bearer ${apiKey}`;

// possibleTypes: which concrete types implement each interface (ConversationStreamEvent, Node), so that
// fragments on an interface match in the cache. Generated from the schema file the server ships.
export function possibleTypesOf(sdl) {
  const schema = buildSchema(sdl);
  const result = {};
  for (const type of Object.values(schema.getTypeMap())) {
    if (isAbstractType(type) && !type.name.startsWith("__")) {
      result[type.name] = schema.getPossibleTypes(type).map((t) => t.name);
    }
  }
  return result;
}
const schemaPath = process.env.THREADLINE_SCHEMA ?? new URL("../../schema.graphql", import.meta.url);
const possibleTypes = possibleTypesOf(readFileSync(schemaPath, "utf8"));

// Subscriptions go over graphql-ws (subprotocol graphql-transport-ws) on the same path; the key goes in
// the connection_init payload (browsers cannot set headers on a WebSocket).
const wsClient = createClient({
  url: url.replace(/^http/, "ws"),
  webSocketImpl: WebSocket, // Node 20 has no global WebSocket; browsers and Node 22+ do not need this.
  connectionParams: { authorization },
  lazy: true,
});
const link = ApolloLink.split(
  ({ query }) => {
    const definition = getMainDefinition(query);
    return definition.kind === "OperationDefinition" && definition.operation === "subscription";
  },
  new GraphQLWsLink(wsClient),
  new HttpLink({ uri: url, headers: { authorization } }),
);
const client = new ApolloClient({ link, cache: new InMemoryCache({ possibleTypes }) });

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

// Follows the conversation from `since` until the event of `messageId` arrives. Stream events carry no id:
// they are not cached (fetchPolicy "no-cache"), each one is handled as it comes.
function nextReply(conversationId, since, messageId) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no event within 30 s")), 30_000);
    const subscription = client
      .subscribe({ query: EVENTS, variables: { c: conversationId, since }, fetchPolicy: "no-cache" })
      .subscribe({
        next: ({ data, error }) => {
          if (error) return reject(error);
          const event = data?.conversationEvents;
          if (event?.__typename === "ThreadActivityEvent" && event.changedMessage.id === messageId) {
            clearTimeout(timer);
            subscription.unsubscribe();
            resolve(event);
          }
        },
        error: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
  });
}

const { data: created } = await client.mutate({ mutation: CREATE, variables: { i: { title: "apollo example" } } });
const conversationId = created.conversationCreate.id;
const { data: started } = await client.mutate({ mutation: START, variables: { c: conversationId, i: { content: "hello" } } });
const root = started.threadStart.id;
const { data: position } = await client.query({ query: STREAM_CURSOR, fetchPolicy: "network-only" });

// Reply, then subscribe from the position taken before it: `since` replays what was committed before the
// subscription was live, so the event arrives whatever the timing.
const reply = async (content) =>
  (await client.mutate({ mutation: REPLY, variables: { p: root, i: { content } } })).data.messageReply.id;
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
client.stop();
console.log("ok");
process.exit(0);

// The official `openai` npm package against Threadline's OpenAI-compatible gateway: list the models, then a
// completion and a streamed completion that continue a stored conversation (session_id).
//   THREADLINE_GATEWAY_URL=http://127.0.0.1:8000/v1 THREADLINE_API_KEY=... THREADLINE_SESSION=... node index.mjs
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.THREADLINE_GATEWAY_URL ?? "http://127.0.0.1:8000/v1",
  apiKey: process.env.THREADLINE_API_KEY,
  maxRetries: 0,
});
const session = process.env.THREADLINE_SESSION;

const models = await client.models.list();
if (!models.data.some((m) => m.id === "echo")) throw new Error("no echo model");

const completion = await client.chat.completions.create({
  model: "echo",
  messages: [{ role: "user", content: "Say hi" }],
  session_id: session, // Threadline's own field: keep both sides in the conversation
});
console.log(completion.choices[0].message.content);
if (completion.choices[0].message.content !== "echo: Say hi") throw new Error("unexpected completion");

const stream = await client.chat.completions.create(
  { model: "echo", messages: [{ role: "user", content: "Stream it" }], stream: true },
  { headers: { "X-Threadline-Session": session } },
);
let text = "";
for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
console.log(text);
if (text !== "echo: Stream it") throw new Error("unexpected stream");

try {
  await client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "x" }] });
  throw new Error("an unknown model was accepted");
} catch (error) {
  if (!(error instanceof OpenAI.NotFoundError)) throw error;
}
console.log("ok");

// Server-Sent Events over fetch(): the playground and the operator console both load this one
// module (fetch, unlike EventSource, sends the Authorization header). readSse(resp, onEvent) calls
// onEvent(id, data) for each event of the response body, `id` being its `id:` field or null.
"use strict";

async function readSse(resp, onEvent) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let match;
    while ((match = /\r\n\r\n|\n\n|\r\r/.exec(buffer))) {
      const block = buffer.slice(0, match.index);
      buffer = buffer.slice(match.index + match[0].length);
      let id = null;
      const data = [];
      for (const line of block.split(/\r\n|\n|\r/)) {
        if (line.startsWith("id:")) id = line.slice(3).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(id, JSON.parse(data.join("\n")));
    }
  }
}

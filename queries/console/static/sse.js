// A text/event-stream parser (the WHATWG "event stream interpretation"), fed decoded text in chunks.
// Used with fetch(), so the token travels in the Authorization header and never in a URL.

export class EventStreamParser {
  constructor(onMessage) {
    this.onMessage = onMessage;
    this.buffer = "";
    this.data = [];
    this.event = "";
    this.lastEventId = "";
    this.retry = null;
  }

  feed(text) {
    this.buffer += text;
    const breaks = /\r\n|\n|\r/g;
    let start = 0;
    let found;
    while ((found = breaks.exec(this.buffer)) !== null) {
      if (found[0] === "\r" && found.index === this.buffer.length - 1) break; // may be half of a \r\n
      this.line(this.buffer.slice(start, found.index));
      start = breaks.lastIndex;
    }
    this.buffer = this.buffer.slice(start);
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return undefined;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    else if (field === "retry" && /^[0-9]+$/.test(value)) this.retry = Number(value);
    return undefined;
  }

  dispatch() {
    const message = {event: this.event || "message", data: this.data.join("\n"), id: this.lastEventId};
    const hasData = this.data.length > 0;
    this.data = [];
    this.event = "";
    if (hasData) this.onMessage(message);
  }
}

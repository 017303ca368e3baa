// The tab's one stream: every channel the open views follow, multiplexed on /v1/streams/multiplex.
//
// fetch() rather than EventSource, so the token is sent in the Authorization header (EventSource
// cannot set headers; it would need the token in the URL). Reconnection is ours: after a drop, the
// id of the last message seen goes back as Last-Event-ID, and the server continues every channel
// exactly after it. Changing what is followed reopens the one connection with the positions known.
import {EventStreamParser} from "./sse.js";

const RETRY_MS = 2000;
// A channel the server does not know is tried again on this schedule (about 30 s in all) before the view is told
// it does not exist: a run opened by its link right after it was requested may not be in the channels model yet.
const ABSENT_RETRY_MS = [1000, 2000, 4000, 8000, 15000];

export class Multiplex {
  constructor(api, onState = () => {}) {
    this.api = api;
    this.onState = onState;
    this.positions = new Map(); // channel → the position after which it resumes ("" = live only)
    this.handlers = new Map(); // channel → Set of functions
    this.highestSeq = 0; // the highest chain_seq seen: the stream waits for its read model to reach it
    this.retryMs = RETRY_MS;
    this.generation = 0;
    this.controller = null;
    this.absent = new Map(); // channel → how many times in a row the server answered 404 for it
    this.retries = new Map(); // channel → the timer that will ask for it again
  }

  on(channel, handler) {
    if (!this.handlers.has(channel)) this.handlers.set(channel, new Set());
    this.handlers.get(channel).add(handler);
    return () => this.handlers.get(channel)?.delete(handler);
  }

  emit(channel, message) {
    for (const handler of this.handlers.get(channel) || []) handler(message);
  }

  // wanted: channel → "keep" (where it is, or live from now if new) or a position to replay after (0: all).
  follow(wanted) {
    const next = new Map();
    for (const [channel, from] of Object.entries(wanted)) {
      next.set(channel, from === "keep" ? (this.positions.get(channel) ?? "") : String(from));
    }
    const same = next.size === this.positions.size &&
      [...next.keys()].every((channel) => this.positions.has(channel) && wanted[channel] === "keep");
    if (same && this.controller) return;
    for (const channel of next.keys()) {
      // a view asking anew for a channel given up on gets the whole retry schedule again
      if (!this.positions.has(channel) && !this.retries.has(channel)) this.absent.delete(channel);
      this.cancelRetry(channel); // asked for now, not later
    }
    this.positions = next;
    this.restart();
  }

  // Sign-out: nothing is followed any more, and nothing is asked for again later.
  close() {
    for (const channel of [...this.retries.keys()]) this.cancelRetry(channel);
    this.positions = new Map();
    this.stop();
  }

  stop() {
    this.generation += 1;
    this.controller?.abort();
    this.controller = null;
    this.onState("off");
  }

  // The next connection opens only once the last one has ended: never two at once.
  restart() {
    const previous = this.running || Promise.resolve();
    this.stop();
    const generation = this.generation;
    this.running = previous.then(() => (generation === this.generation && this.positions.size
      ? this.loop(generation) : undefined));
  }

  seen(seq) {
    if (Number.isInteger(seq) && seq > this.highestSeq) this.highestSeq = seq;
  }

  async loop(generation) {
    while (generation === this.generation && this.positions.size) {
      const controller = this.controller = new AbortController();
      const channels = [...this.positions.keys()];
      let body = null;
      try {
        this.onState("connecting");
        const response = await fetch(this.url(channels), {headers: this.headers(channels), cache: "no-store",
                                                          signal: controller.signal});
        if (!response.ok) {
          await this.refused(response);
        } else {
          this.onState("live");
          body = response.body;
          await this.read(body, channels, generation);
        }
      } catch (error) {
        if (controller.signal.aborted) return;
      } finally {
        await body?.cancel().catch(() => {});
      }
      if (generation !== this.generation) return;
      this.onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, this.retryMs));
    }
  }

  url(channels) {
    return this.api.url("/v1/streams/multiplex", {channel: channels, min_seq: this.highestSeq || null,
                                                  wait_ms: this.highestSeq ? 5000 : null});
  }

  headers(channels) {
    const resume = channels.map((channel) => this.positions.get(channel)).join(".");
    const headers = this.api.headers({Accept: "text/event-stream"});
    if (resume.replaceAll(".", "") !== "") headers["Last-Event-ID"] = resume;
    return headers;
  }

  async refused(response) {
    const body = await response.json().catch(() => null);
    const channel = body?.details?.channel;
    if (response.status === 401) {
      this.api.onUnauthorized(body);
      this.stop();
    } else if ((response.status === 404 || response.status === 403) && channel && this.positions.has(channel)) {
      const position = this.positions.get(channel);
      this.positions.delete(channel); // follow the others; the view of that channel says why
      const tries = this.absent.get(channel) ?? 0;
      const retrying = response.status === 404 && tries < ABSENT_RETRY_MS.length;
      this.emit(channel, {kind: "refused", status: response.status, code: body.code, reason: body.reason, retrying});
      if (retrying) {
        this.absent.set(channel, tries + 1);
        this.retries.set(channel, setTimeout(() => this.askAgain(channel, position), ABSENT_RETRY_MS[tries]));
      }
    }
  }

  // Follow a refused channel again where it was, if a view still listens to it and nothing asked for it since.
  askAgain(channel, position) {
    this.retries.delete(channel);
    if (!this.handlers.get(channel)?.size || this.positions.has(channel)) return;
    this.positions.set(channel, position);
    this.restart();
  }

  cancelRetry(channel) {
    clearTimeout(this.retries.get(channel));
    this.retries.delete(channel);
  }

  async read(body, channels, generation) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new EventStreamParser((message) => this.message(channels, message));
    while (generation === this.generation) {
      const {value, done} = await reader.read();
      if (done) return;
      parser.feed(value);
      if (parser.retry !== null) this.retryMs = Math.min(parser.retry, 10000);
    }
  }

  message(channels, message) {
    if (message.id) this.resumeAt(channels, message.id);
    const data = JSON.parse(message.data);
    if (message.event === "subscribed") {
      this.seen(data.chain_seq);
      for (const channel of channels) {
        this.absent.delete(channel);
        this.emit(channel, {kind: "subscribed", chainSeq: data.chain_seq});
      }
    } else if (message.event === "replay_incomplete") {
      this.emit(data.channel, {kind: "notice", ...data});
    } else if (message.event === "overflow") {
      this.resumeAt(channels, data.resume_after); // the server ends the stream; the loop reconnects from here
    } else {
      this.seen(data.chain_seq);
      this.emit(message.event, {kind: "event", envelope: data});
    }
  }

  resumeAt(channels, id) {
    const parts = id.split(".");
    if (parts.length !== channels.length) return;
    channels.forEach((channel, i) => {
      if (this.positions.has(channel)) this.positions.set(channel, parts[i]);
    });
  }
}

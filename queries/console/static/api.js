// The API as the page uses it: every request carries the bearer token in the Authorization header.

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.reason || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code || `http_${status}`;
    this.details = body?.details;
    this.body = body;
  }
}

export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16)); // outside a secure context, randomUUID is missing
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export class Api {
  constructor(token, onUnauthorized) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  url(path, params = {}) {
    const url = new URL(path, location.origin);
    for (const [name, value] of Object.entries(params)) {
      for (const one of [value].flat()) {
        if (one !== null && one !== undefined && one !== "") url.searchParams.append(name, String(one));
      }
    }
    return url;
  }

  headers(extra = {}) {
    return {Authorization: `Bearer ${this.token}`, ...extra};
  }

  async request(method, path, {params, body, headers, answers = []} = {}) {
    const init = {method, cache: "no-store", headers: this.headers({Accept: "application/json", ...headers})};
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(this.url(path, params), init);
    const data = await response.json().catch(() => null);
    if (response.status === 401) this.onUnauthorized(new ApiError(401, data));
    if (!response.ok && !answers.includes(response.status)) throw new ApiError(response.status, data);
    return data;
  }

  get(path, params, options = {}) {
    return this.request("GET", path, {params, ...options});
  }

  post(path, body, options = {}) {
    return this.request("POST", path, {body, ...options});
  }

  // A command through POST /v1/commands; the same key on a retry returns the first outcome.
  command(body, idempotencyKey = uuid()) {
    return this.post("/v1/commands", body, {headers: {"Idempotency-Key": idempotencyKey}});
  }
}

export function lastSeq(outcome) {
  return Math.max(0, ...(outcome?.events || []).map((e) => e.chain_seq));
}

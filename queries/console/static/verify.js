// Checking, in the browser, an inclusion proof the API serves (GET /v1/evidence/inclusion):
// the event's hash leads, by the RFC 9162 audit path, to the root of a tree the checkpoint note
// states, and the note is signed by the key it names (C2SP signed note, Ed25519, WebCrypto).
// The server checks each proof before serving it; this checks it again, here, from the bytes.

const encoder = new TextEncoder();

function hex(bytes) {
  return [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function unhex(text) {
  return new Uint8Array(text.match(/../g).map((pair) => parseInt(pair, 16)));
}

function unbase64(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

async function sha256(...parts) {
  const length = parts.reduce((n, p) => n + p.length, 0);
  const joined = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    joined.set(part, at);
    at += part.length;
  }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", joined));
}

// RFC 9162 section 2.1.3.2: the root an inclusion proof leads to from a leaf hash.
export async function rootFromProof(leafHash, index, size, proof) {
  let fn = BigInt(index);
  let sn = BigInt(size) - 1n;
  let r = leafHash;
  for (const p of proof) {
    if (sn === 0n) throw new Error("the proof is longer than the tree is deep");
    if ((fn & 1n) === 1n || fn === sn) {
      r = await sha256(Uint8Array.of(1), p, r);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      r = await sha256(Uint8Array.of(1), r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new Error("the proof is shorter than the tree is deep");
  return r;
}

// A signed note: text (ending in a newline), a blank line, lines "— <name> <base64(key ID ‖ signature)>".
function parseNote(note) {
  const split = note.lastIndexOf("\n\n");
  if (split < 0) throw new Error("the checkpoint note has no signature block");
  const body = note.slice(0, split + 1);
  const signatures = note.slice(split + 2).split("\n").filter(Boolean).map((line) => {
    const [name, blob] = line.replace(/^— /, "").split(" ");
    return {name, blob: unbase64(blob)};
  });
  return {body, signatures};
}

async function checkSignature(note, vkey) {
  const first = vkey.indexOf("+");
  const second = vkey.indexOf("+", first + 1); // base64 may hold "+" too: split at the first two only
  const [name, keyIdHex, keyBase64] = [vkey.slice(0, first), vkey.slice(first + 1, second), vkey.slice(second + 1)];
  const key = unbase64(keyBase64); // 0x01 ‖ Ed25519 public key
  const keyId = (await sha256(encoder.encode(name), Uint8Array.of(0x0a), key)).slice(0, 4);
  if (hex(keyId) !== keyIdHex.toLowerCase()) throw new Error("the key's ID does not match its bytes");
  const {body, signatures} = parseNote(note);
  const mine = signatures.find((s) => s.name === name && hex(s.blob.slice(0, 4)) === hex(keyId));
  if (!mine) throw new Error(`the note carries no signature by ${name}`);
  let publicKey;
  try {
    publicKey = await crypto.subtle.importKey("raw", key.slice(1), {name: "Ed25519"}, false, ["verify"]);
  } catch {
    return {signature: "not checked: this browser has no Ed25519 in WebCrypto", key: `${name}+${keyIdHex}`};
  }
  const ok = await crypto.subtle.verify({name: "Ed25519"}, publicKey, mine.blob.slice(4), encoder.encode(body));
  if (!ok) throw new Error("the checkpoint's signature does not verify");
  return {signature: "valid", key: `${name}+${keyIdHex}`, body};
}

// What was checked, or throws naming what did not hold. eventHash: the hash the stream delivered.
export async function verifyInclusion(answer, eventHash) {
  if (!crypto.subtle) throw new Error("checking needs a secure context (https or localhost)");
  if (answer.event_hash !== eventHash) throw new Error("the proof is for another event hash");
  const leaf = await sha256(Uint8Array.of(0), unhex(answer.event_hash));
  if (hex(leaf) !== answer.leaf_hash) throw new Error("the leaf hash is not SHA-256(0x00 ‖ event hash)");
  const root = await rootFromProof(leaf, answer.leaf_index, answer.tree_size, answer.proof.map(unhex));
  const checkpoint = answer.checkpoint;
  if (hex(root) !== hex(unbase64(checkpoint.root))) throw new Error("the proof does not lead to the checkpoint's root");
  const signed = await checkSignature(checkpoint.note, checkpoint.key);
  const [origin, size, rootLine] = (signed.body || checkpoint.note).split("\n");
  if (origin !== checkpoint.origin || Number(size) !== answer.tree_size || rootLine !== checkpoint.root) {
    throw new Error("the note does not state this tree");
  }
  return {treeSize: answer.tree_size, root: hex(root), signature: signed.signature, key: signed.key};
}

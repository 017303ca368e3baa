package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// Fixed keys and signatures from golang.org/x/mod/sumdb/note's note_test.go (TestSign, TestOpen).
const (
	peterSkey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
	peterVkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
	enochVkey = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
	goText    = "If you think cryptography is the answer to your problem,\n" +
		"then you don't know what your problem is.\n"
	peterSig = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
	enochSig = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)

type key struct {
	Name  string `json:"name"`
	Seed  string `json:"seed,omitempty"` // hex Ed25519 seed (RFC 8032 private key)
	Skey  string `json:"skey,omitempty"` // note.NewSigner's text form
	Vkey  string `json:"vkey"`
	KeyID string `json:"key_id"`
}

// ourKey derives a test key from its name: seed = SHA-256("runledger/vector/key/" + name).
func ourKey(name string) (key, note.Signer) {
	seed := seed32("runledger/vector/key/" + name)
	pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(name, pub)
	check(err)
	id := strings.Split(vkey, "+")[1]
	skey := fmt.Sprintf("PRIVATE+KEY+%s+%s+%s", name, id, base64.StdEncoding.EncodeToString(append([]byte{1}, seed...)))
	signer, err := note.NewSigner(skey)
	check(err)
	return key{name, hx(seed), skey, vkey, id}, signer
}

func verifier(vkey string) note.Verifier {
	v, err := note.NewVerifier(vkey)
	check(err)
	return v
}

type signed struct {
	Text    string   `json:"text"`
	Signers []string `json:"signers"`
	Note    string   `json:"note"`
}

func sign(text string, signers ...note.Signer) signed {
	msg, err := note.Sign(&note.Note{Text: text}, signers...)
	check(err)
	var names []string
	for _, s := range signers {
		names = append(names, s.Name())
	}
	return signed{text, names, string(msg)}
}

type opened struct {
	Case       string   `json:"case"`
	Note       string   `json:"note,omitempty"`
	NoteBase64 string   `json:"note_base64,omitempty"` // instead of note, when it is not UTF-8
	Vkeys      []string `json:"vkeys"`
	Error      string   `json:"error,omitempty"`
	Text       string   `json:"text,omitempty"`
	Verified   []string `json:"verified,omitempty"`
	Unverified []string `json:"unverified,omitempty"`
}

func sigNames(sigs []note.Signature) []string {
	var out []string
	for _, s := range sigs {
		out = append(out, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
	}
	return out
}

// open records what note.Open says of msg with those verifier keys.
func open(what, msg string, vkeys ...string) opened {
	var vs []note.Verifier
	for _, k := range vkeys {
		vs = append(vs, verifier(k))
	}
	o := opened{Case: what, Note: msg, Vkeys: append([]string{}, vkeys...)}
	if !utf8.ValidString(msg) {
		o.Note, o.NoteBase64 = "", base64.StdEncoding.EncodeToString([]byte(msg))
	}
	n, err := note.Open([]byte(msg), note.VerifierList(vs...))
	var unverified *note.UnverifiedNoteError
	if errors.As(err, &unverified) {
		o.Unverified = sigNames(unverified.Note.UnverifiedSigs)
	}
	if err != nil {
		o.Error = err.Error()
		return o
	}
	o.Text, o.Verified, o.Unverified = n.Text, sigNames(n.Sigs), sigNames(n.UnverifiedSigs)
	return o
}

type checkpoint struct {
	Origin     string   `json:"origin"`
	Size       uint64   `json:"size"`
	Root       string   `json:"root"`
	Extensions []string `json:"extensions"`
	Text       string   `json:"text"`
	Note       string   `json:"note"`
}

func signCheckpoint(origin string, size uint64, root []byte, ext []string, signers ...note.Signer) checkpoint {
	text := string(log.Checkpoint{Origin: origin, Size: size, Hash: root}.Marshal())
	for _, e := range ext {
		text += e + "\n"
	}
	s := sign(text, signers...)
	return checkpoint{origin, size, hx(root), append([]string{}, ext...), text, s.Note}
}

func noteVectors() map[string]any {
	peter, err := note.NewSigner(peterSkey)
	check(err)
	acmeKey, acme := ourKey("runledger/test/acme")
	witnessKey, witness := ourKey("witness.example/w1")
	keys := []key{
		{Name: "PeterNeumann", Skey: peterSkey, Vkey: peterVkey, KeyID: "c74f20a3"},
		{Name: "EnochRoot", Vkey: enochVkey, KeyID: "af0cfe78"},
		acmeKey, witnessKey,
	}
	goNote := sign(goText, peter)
	must(goNote.Note == goText+"\n"+peterSig, "Sign no longer gives note_test.go's note")
	notes := []signed{
		goNote,
		sign("one line\n", acme),
		sign("a text\n\nwith an empty line\nand ünïcödé — and a dash\n", acme, witness),
		sign("runledger/test/acme\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n", acme, peter),
	}

	tree := build([][]byte{leafValue(0), leafValue(1), leafValue(2)})
	checkpoints := []checkpoint{
		signCheckpoint("runledger/test/acme", 0, hasher.EmptyRoot(), nil, acme),
		signCheckpoint("runledger/test/acme", 3, tree.root(3), nil, acme),
		signCheckpoint("runledger/test/acme", 3, tree.root(3), []string{"extension one", "x=1"}, acme, witness),
		signCheckpoint("runledger/prod/tenant-42", 18446744073709551615, tree.root(1), nil, acme),
	}
	for _, c := range checkpoints {
		cp, _, _, err := log.ParseCheckpoint([]byte(c.Note), c.Origin, verifier(acmeKey.Vkey))
		check(err)
		must(cp.Size == c.Size && hx(cp.Hash) == c.Root, "formats/log disagrees on %q", c.Text)
	}

	text := goText
	both := text + "\n" + peterSig + enochSig
	var cases []opened
	add := func(o opened) { cases = append(cases, o) }
	// The cases of note_test.go's TestOpen.
	add(open("one verified, one unknown", both, peterVkey))
	add(open("both verified", both, peterVkey, enochVkey))
	add(open("no known key", both))
	add(open("duplicated verifier, used", text+"\n"+enochSig, enochVkey, peterVkey, enochVkey))
	add(open("duplicated verifier, unused", text+"\n"+peterSig, enochVkey, peterVkey, enochVkey))
	add(open("101 signatures", text+"\n"+strings.Repeat(peterSig, 101), peterVkey))
	add(open("101 unknown signatures", text+"\n"+strings.Repeat(peterSig, 101)))
	add(open("invalid signature", text+"\n"+peterSig[:60]+"ABCD"+peterSig[60:], peterVkey))
	add(open("duplicated verified and unverified signatures",
		text+"\n"+peterSig+peterSig+enochSig+enochSig+enochSig[:60]+"ABCD"+enochSig[60:], peterVkey))
	for i, msg := range []string{
		text,
		text + "\n",
		text + "\n" + peterSig[:len(peterSig)-1],
		"\x01" + text + "\n" + peterSig,
		"\xff" + text + "\n" + peterSig,
		text + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
		text + "\n" + peterSig + "Unexpected line.\n",
	} {
		add(open(fmt.Sprintf("note_test.go bad message %d", i), msg, peterVkey))
	}
	// Cases of our own.
	cp := checkpoints[2].Note
	acmeVkey, witnessVkey := acmeKey.Vkey, witnessKey.Vkey
	add(open("checkpoint, log key", cp, acmeVkey))
	add(open("checkpoint, both keys", cp, acmeVkey, witnessVkey))
	add(open("checkpoint, witness key only", cp, witnessVkey))
	add(open("checkpoint, size changed", strings.Replace(cp, "\n3\n", "\n4\n", 1), acmeVkey))
	add(open("checkpoint, extension changed", strings.Replace(cp, "x=1", "x=2", 1), acmeVkey))
	at := strings.Index(cp, "— witness.example/w1 ") + 60
	broken := cp[:at] + "ABCD" + cp[at:]
	add(open("checkpoint, witness signature broken, log key only", broken, acmeVkey))
	add(open("checkpoint, witness signature broken, both keys", broken, acmeVkey, witnessVkey))
	add(open("checkpoint, witness key id changed", strings.Replace(cp, "— witness.example/w1 UVF0", "— witness.example/w1 AAAA", 1), acmeVkey, witnessVkey))
	add(open("CRLF line ends", strings.ReplaceAll(cp, "\n", "\r\n"), acmeVkey))
	add(open("tab in the text", strings.Replace(cp, "extension one", "extension\tone", 1), acmeVkey))
	add(open("hyphen instead of em dash", strings.Replace(goNote.Note, "— ", "- ", 1), peterVkey))
	add(open("signature of four bytes", text+"\n— PeterNeumann x08go/8=\n", peterVkey))
	add(open("unpadded base64", text+"\n"+strings.Replace(peterSig, "=\n", "\n", 1), peterVkey))
	add(open("empty name", text+"\n—  x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n", peterVkey))
	add(open("name with a plus", text+"\n— Peter+Neumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n", peterVkey))
	add(open("known name, other key id", text+"\n— PeterNeumann AAAAAAZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"+peterSig, peterVkey))
	add(open("empty text", sign("\n", acme).Note, acmeVkey))
	add(open("signature over another text", "\n\n"+strings.TrimPrefix(sign("x\n", acme).Note, "x\n\n"), acmeVkey))
	add(open("signed by a truncated signature", text+"\n"+peterSig[:len(peterSig)-6]+"=\n", peterVkey))
	add(open("blank line after signatures", both+"\n", peterVkey))
	add(open("no blank line before the signatures", text+peterSig, peterVkey))
	add(open("trailing space after the signature", text+"\n"+strings.Replace(peterSig, "=\n", "= \n", 1), peterVkey))
	add(open("two spaces after the name", text+"\n"+strings.Replace(peterSig, "Neumann ", "Neumann  ", 1), peterVkey))

	// vkey manglings that note.NewVerifier refuses (from TestNewVerifier) and some it takes.
	var vkeys []map[string]any
	for _, k := range []string{
		peterVkey, enochVkey, acmeVkey, witnessVkey,
		"PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
		"PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
		"PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
		"PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
		"PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
		"PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW+",
		"Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
		"+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
	} {
		_, err := note.NewVerifier(k)
		entry := map[string]any{"vkey": k, "ok": err == nil}
		if err != nil {
			entry["error"] = err.Error()
		}
		vkeys = append(vkeys, entry)
	}
	must(bytes.Contains([]byte(checkpoints[0].Note), []byte("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")), "empty root")

	return map[string]any{
		"source":      source(),
		"keys":        keys,
		"notes":       notes,
		"checkpoints": checkpoints,
		"open":        cases,
		"vkeys":       vkeys,
	}
}

// Command oracle writes the test vectors of runledger's evidence primitives (schemas/merkle.py,
// schemas/notes.py) from the reference Go implementations, so the Python tests can hold our code
// to them without Go:
//
//	github.com/transparency-dev/merkle  rfc6962 hasher, proof (Inclusion, Consistency, Verify*),
//	                                    compact ranges and the testonly reference tree and constants
//	golang.org/x/mod/sumdb/tlog         a second, independent RFC 6962 tree (TreeHash, ProveRecord, ProveTree)
//	golang.org/x/mod/sumdb/note         C2SP signed notes (Sign, Open, vkeys)
//	github.com/transparency-dev/formats log.Checkpoint (C2SP tlog-checkpoint)
//
// Usage, from the repository root: (cd tests/oracle && go run . -out ../vectors)
// The output is deterministic: the same modules give the same bytes.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
)

func main() {
	out := flag.String("out", "../vectors", "directory to write merkle.json and notes.json into")
	flag.Parse()
	write(filepath.Join(*out, "merkle.json"), merkleVectors())
	write(filepath.Join(*out, "notes.json"), noteVectors())
}

// source names the generator and the exact module versions that produced a file.
func source() map[string]any {
	mods := map[string]string{}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, m := range info.Deps {
			mods[m.Path] = m.Version
		}
	}
	return map[string]any{
		"generator": "tests/oracle: (cd tests/oracle && go run . -out ../vectors)",
		"modules":   mods,
	}
}

func write(path string, v any) {
	body, err := json.MarshalIndent(v, "", " ")
	check(err)
	check(os.WriteFile(path, append(body, '\n'), 0o644))
	fmt.Fprintf(os.Stderr, "wrote %s (%d bytes)\n", path, len(body)+1)
}

func check(err error) {
	if err != nil {
		panic(err)
	}
}

func must(ok bool, format string, args ...any) {
	if !ok {
		panic(fmt.Sprintf(format, args...))
	}
}

func hx(b []byte) string { return hex.EncodeToString(b) }

func hxs(bs [][]byte) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = hx(b)
	}
	return out
}

// seed32 is SHA-256 of a text: how every leaf value and key seed in the vectors is made.
func seed32(text string) []byte {
	sum := sha256.Sum256([]byte(text))
	return sum[:]
}

package main

import (
	"bytes"
	"fmt"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/tlog"
)

const (
	exhaustive = 32      // every inclusion and consistency proof of every tree up to this size
	large      = 100_003 // a deeper tree: roots and proofs at chosen sizes
)

var hasher = rfc6962.DefaultHasher

// leafValue is the i-th leaf value: 32 bytes, like the event hashes runledger puts in its trees.
func leafValue(i int) []byte { return seed32(fmt.Sprintf("runledger/vector/%d", i)) }

type inclusion struct {
	Index uint64   `json:"index"`
	Size  uint64   `json:"size"`
	Proof []string `json:"proof"`
}

type consistency struct {
	Old   uint64   `json:"old"`
	New   uint64   `json:"new"`
	Proof []string `json:"proof"`
}

// built is a tree from both reference implementations, checked against each other as it grows.
type built struct {
	tree   *testonly.Tree
	stored []tlog.Hash
	roots  []string
}

func build(values [][]byte) *built {
	b := &built{tree: testonly.New(hasher), roots: []string{hx(hasher.EmptyRoot())}}
	rf := compact.RangeFactory{Hash: hasher.HashChildren}
	cr := rf.NewEmptyRange(0)
	for i, v := range values {
		b.tree.AppendData(v)
		check(cr.Append(hasher.HashLeaf(v), nil))
		hashes, err := tlog.StoredHashes(int64(i), v, b)
		check(err)
		b.stored = append(b.stored, hashes...)
		root := b.tree.Hash()
		compactRoot, err := cr.GetRootHash(nil)
		check(err)
		tlogRoot, err := tlog.TreeHash(int64(i+1), b)
		check(err)
		must(bytes.Equal(root, compactRoot) && bytes.Equal(root, tlogRoot[:]), "roots disagree at size %d", i+1)
		b.roots = append(b.roots, hx(root))
	}
	return b
}

func (b *built) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		out[i] = b.stored[x]
	}
	return out, nil
}

func (b *built) root(size uint64) []byte { return b.tree.HashAt(size) }

// inclusion proves leaf index in the tree of size, checked by proof.VerifyInclusion and tlog.CheckRecord.
func (b *built) inclusion(index, size uint64) inclusion {
	p, err := b.tree.InclusionProof(index, size)
	check(err)
	check(proof.VerifyInclusion(hasher, index, size, b.tree.LeafHash(index), p, b.root(size)))
	rp, err := tlog.ProveRecord(int64(size), int64(index), b)
	check(err)
	must(len(rp) == len(p), "tlog and merkle inclusion proofs differ at %d/%d", index, size)
	for i := range p {
		must(bytes.Equal(rp[i][:], p[i]), "tlog and merkle inclusion proofs differ at %d/%d", index, size)
	}
	var th, lh tlog.Hash
	copy(th[:], b.root(size))
	copy(lh[:], b.tree.LeafHash(index))
	check(tlog.CheckRecord(rp, int64(size), th, int64(index), lh))
	return inclusion{index, size, hxs(p)}
}

// consistency proves old is a prefix of new, checked by proof.VerifyConsistency and tlog.CheckTree.
func (b *built) consistency(old, new uint64) consistency {
	p, err := b.tree.ConsistencyProof(old, new)
	check(err)
	check(proof.VerifyConsistency(hasher, old, new, p, b.root(old), b.root(new)))
	if old > 0 {
		tp, err := tlog.ProveTree(int64(new), int64(old), b)
		check(err)
		must(len(tp) == len(p), "tlog and merkle consistency proofs differ at %d/%d", old, new)
		for i := range p {
			must(bytes.Equal(tp[i][:], p[i]), "tlog and merkle consistency proofs differ at %d/%d", old, new)
		}
		var newRoot, oldRoot tlog.Hash
		copy(newRoot[:], b.root(new))
		copy(oldRoot[:], b.root(old))
		check(tlog.CheckTree(tp, int64(new), newRoot, int64(old), oldRoot))
	}
	return consistency{old, new, hxs(p)}
}

func merkleVectors() map[string]any {
	values := make([][]byte, exhaustive)
	for i := range values {
		values[i] = leafValue(i)
	}
	small := build(values)
	var incl []inclusion
	var cons []consistency
	for n := uint64(1); n <= exhaustive; n++ {
		for i := uint64(0); i < n; i++ {
			incl = append(incl, small.inclusion(i, n))
		}
		for m := uint64(0); m <= n; m++ {
			cons = append(cons, small.consistency(m, n))
		}
	}

	values = make([][]byte, large)
	for i := range values {
		values[i] = leafValue(i)
	}
	big := build(values)
	sizes := []uint64{1023, 1024, 1025, 65535, 65536, 65537, 99_999, 100_000, 100_003}
	roots := map[string]string{}
	for _, s := range sizes {
		roots[fmt.Sprint(s)] = big.roots[s]
	}
	var bigIncl []inclusion
	for _, p := range [][2]uint64{{0, 100_003}, {1, 100_003}, {65535, 100_003}, {65536, 100_003},
		{100_002, 100_003}, {99_999, 100_000}, {12_345, 65537}, {65536, 65537}, {1023, 1025}} {
		bigIncl = append(bigIncl, big.inclusion(p[0], p[1]))
	}
	var bigCons []consistency
	for _, p := range [][2]uint64{{1, 100_003}, {1024, 100_003}, {65536, 100_003}, {65537, 100_003},
		{99_999, 100_000}, {100_000, 100_003}, {12_345, 65_537}, {1023, 1025}, {3, 100_003}} {
		bigCons = append(bigCons, big.consistency(p[0], p[1]))
	}

	// The fixed RFC 6962 vectors the merkle module ships (testonly/constants.go), re-derived here
	// with its reference tree: every root, inclusion and consistency proof of the 8-leaf tree.
	ref := build(testonly.LeafInputs())
	for s, want := range testonly.RootHashes() {
		must(ref.roots[s] == hx(want), "testonly root %d", s)
	}
	var refIncl []inclusion
	var refCons []consistency
	for n := uint64(1); n <= 8; n++ {
		for i := uint64(0); i < n; i++ {
			refIncl = append(refIncl, ref.inclusion(i, n))
		}
		for m := uint64(1); m <= n; m++ {
			refCons = append(refCons, ref.consistency(m, n))
		}
	}
	var nodes [][]string
	for _, level := range testonly.NodeHashes() {
		nodes = append(nodes, hxs(level))
	}
	var compacts [][]string
	for _, c := range testonly.CompactTrees() {
		compacts = append(compacts, hxs(c))
	}

	return map[string]any{
		"source":     source(),
		"leaf_value": "leaf value i = SHA-256(UTF-8 of \"runledger/vector/\" + decimal i), 32 bytes like an event hash",
		"exhaustive": map[string]any{
			"size": exhaustive, "leaves": hxs(values[:exhaustive]), "roots": small.roots,
			"inclusion": incl, "consistency": cons,
		},
		"large": map[string]any{
			"size": large, "roots": roots, "inclusion": bigIncl, "consistency": bigCons,
		},
		"testonly": map[string]any{
			"what":        "github.com/transparency-dev/merkle testonly.LeafInputs/NodeHashes/RootHashes/CompactTrees, and every proof of that tree",
			"leaf_inputs": hxs(testonly.LeafInputs()), "node_hashes": nodes, "roots": hxs(testonly.RootHashes()),
			"compact_trees": compacts, "empty_root": hx(testonly.EmptyRootHash()),
			"inclusion": refIncl, "consistency": refCons,
		},
	}
}

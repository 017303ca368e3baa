"""The evidence benchmark: `python -m bench.evidence [--quick|--smoke]` (bench/evidence/README.md).

No broker, no database: one process measures the Merkle tree a projector grows per event
(schemas/merkle_trees.py CompactTree), the stored tree that answers proofs (TreeStore), inclusion and
consistency proofs of a tree of 1,000,000 events (size, time to make, time to verify, schemas/merkle.py),
and signing and verifying C2SP checkpoints (schemas/notes.py). It only reports; it exits 1 only if
something breaks (a root that disagrees, a proof or a checkpoint that does not verify).
"""

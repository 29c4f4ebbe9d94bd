"""Verifiable provenance: the server's signing key, signed checkpoints of the log's
Merkle tree, inclusion and consistency proofs, the auditor's checks, and portable
attestations (in-toto / SLSA in DSSE, and PROV-JSON). docs/provenance.md tells an
auditor how to use them."""

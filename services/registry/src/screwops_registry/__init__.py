"""Registry: every approved model becomes a numbered version with its lineage, is exported to
Triton's model repository, loaded, checked with a real inference and only then named
``production``; operators promote and roll back through its gRPC API."""
